//! The reaper (`gc`): ends resources whose owning host is gone.
//!
//! It trusts nothing but identity: a recorded pid is only signalled when its
//! start time still matches, and a process is only taken by its marker when
//! the marker names this ledger. Processes whose row was never completed
//! (the host died between spawn and the ledger write) are found by marker.
//! A dry run lists what would be done and changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;

use crate::error::HostError;
use crate::ledger::{HostRecord, Ledger};
use crate::tree::{self, TreeSpec};

/// What to reap.
#[derive(Debug, Clone, Copy, Default)]
pub struct GcOptions {
    /// Reap live resources of every host, including running ones.
    pub all: bool,
    /// Report only; signal and change nothing.
    pub dry_run: bool,
    /// Grace between SIGTERM and SIGKILL.
    pub grace: Duration,
}

/// One resource the reaper acted on (or would have).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Reaped {
    /// Ledger row (None for marked processes whose row is missing).
    pub resource_id: Option<i64>,
    /// The plugin, when known.
    pub plugin_id: Option<String>,
    /// Resource kind.
    pub kind: String,
    /// Why it was reaped.
    pub reason: String,
    /// Pids that were (or would be) signalled.
    pub pids: Vec<u32>,
    /// Pids that needed SIGKILL.
    pub killed: Vec<u32>,
    /// Recorded pid left alone because it now belongs to another process.
    pub pid_reused: Option<u32>,
}

/// What a gc run did.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct GcReport {
    /// True for a dry run.
    pub dry_run: bool,
    /// Resources reaped (or that would be).
    pub reaped: Vec<Reaped>,
    /// Hosts found gone and marked ended.
    pub hosts_ended: Vec<i64>,
    /// Live resources left alone because their host runs.
    pub kept: usize,
}

/// Runs gc over `ledger`. `self_host` is the calling host's id (its own
/// resources are kept unless `all`).
pub fn gc(ledger: &mut Ledger, opts: GcOptions, self_host: Option<i64>) -> Result<GcReport, HostError> {
    let hosts: HashMap<i64, HostRecord> = ledger.hosts()?.into_iter().map(|h| (h.id, h)).collect();
    let alive: HashMap<i64, bool> = hosts
        .iter()
        .map(|(id, h)| (*id, Some(*id) == self_host || h.is_alive()))
        .collect();
    let live = ledger.live()?;
    let mut report = GcReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };

    let procs: HashMap<u32, plugboard_core::process::ProcessInfo> = plugboard_core::process::snapshot()
        .into_iter()
        .map(|p| (p.pid, p))
        .collect();
    // Marked processes of this ledger, grouped by row id.
    let prefix = format!("{}:", ledger.ledger_id());
    let mut by_row: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for (pid, marker) in tree::marked(|m| m.starts_with(&prefix)) {
        if let Some(id) = marker.strip_prefix(&prefix).and_then(|s| s.parse::<i64>().ok()) {
            by_row.entry(id).or_default().push(pid);
        }
    }

    let mut ends: Vec<(i64, &'static str)> = Vec::new();
    for r in &live {
        let host_alive = alive.get(&r.host_id).copied().unwrap_or(false);
        if host_alive && !opts.all {
            report.kept += 1;
            by_row.remove(&r.id);
            continue;
        }
        let reason = if host_alive { "gc --all" } else { "owning host is gone" };
        let proc_of = |p: u32| procs.get(&p).filter(|i| i.is_live());
        let root_ok = r
            .pid
            .and_then(proc_of)
            .is_some_and(|i| r.pid_start_time.is_none_or(|t| t == i.start_time));
        let pid_reused = r.pid.filter(|p| !root_ok && proc_of(*p).is_some());
        let spec = TreeSpec {
            root: r.pid.filter(|_| root_ok).map(|p| (p, r.pid_start_time)),
            pgid: r.pid.filter(|_| root_ok),
            marker: Some(r.marker.clone()),
        };
        let has_marked = by_row.remove(&r.id).is_some();
        // Only rows with something alive cost a tree walk.
        let pids = if root_ok || has_marked {
            tree::collect(&spec)
        } else {
            Vec::new()
        };
        let killed = if opts.dry_run || pids.is_empty() {
            Vec::new()
        } else {
            tree::terminate(&spec, opts.grace, false).killed
        };
        report.reaped.push(Reaped {
            resource_id: Some(r.id),
            plugin_id: Some(r.plugin_id.clone()),
            kind: r.kind.clone(),
            reason: reason.into(),
            pids,
            killed,
            pid_reused,
        });
        ends.push((r.id, "reaped"));
    }
    // Marked processes whose row has ended or is missing: survivors of a
    // crash, or spawned before their row was completed.
    for (row, pids) in by_row {
        let row_rec = ledger.get(row)?;
        if let Some(rec) = &row_rec
            && rec.is_live()
        {
            continue; // handled above (kept or reaped)
        }
        let spec = TreeSpec {
            root: None,
            pgid: None,
            marker: Some(format!("{prefix}{row}")),
        };
        let killed = if opts.dry_run {
            Vec::new()
        } else {
            tree::terminate(&spec, opts.grace, false).killed
        };
        report.reaped.push(Reaped {
            resource_id: row_rec.as_ref().map(|r| r.id),
            plugin_id: row_rec.as_ref().map(|r| r.plugin_id.clone()),
            kind: "process".into(),
            reason: if row_rec.is_some() {
                "marked process outlived its ended row"
            } else {
                "marked process has no ledger row"
            }
            .into(),
            pids,
            killed,
            pid_reused: None,
        });
    }
    let dead_hosts: Vec<i64> = hosts
        .values()
        .filter(|h| h.ended_at.is_none() && !alive.get(&h.id).copied().unwrap_or(false))
        .map(|h| h.id)
        .collect();
    report.hosts_ended = dead_hosts.clone();
    if !opts.dry_run {
        ledger.transaction(|l| {
            for (id, status) in &ends {
                l.end(*id, status, None, None)?;
            }
            for h in &dead_hosts {
                l.end_host(*h)?;
            }
            Ok(())
        })?;
    }
    report.hosts_ended.sort_unstable();
    Ok(report)
}
