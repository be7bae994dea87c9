//! gc: ends resources whose owning host is gone, and sweeps what carries a
//! marker of this ledger with no live row (the crash window between create
//! and the ledger write).
//!
//! It first builds a [plan](plan::plan) (what it will end and why; a dry
//! run prints just that), then carries it out through each resource's
//! backend. A row is marked reaped only when its backend confirmed the
//! resource gone; otherwise it stays live with the reason in its note and
//! the next gc tries again. It trusts nothing but identity: a recorded pid
//! is only signalled while its start time still matches, and a resource is
//! only taken by its marker when the marker names this ledger.

pub mod plan;

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

pub use plan::{GcAction, GcOp, GcPlan, GcReason};

use crate::backend::{Backends, Stopped};
use crate::error::HostError;
use crate::ledger::{Ledger, ResourceStatus};

/// How far back ended rows are looked at for where their backends must
/// sweep (a week).
const SWEEP_LOOKBACK_MS: i64 = 7 * 24 * 3600 * 1000;

/// What to reap.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// Reap live resources of every host, including running ones.
    pub all: bool,
    /// Report the plan only; signal and change nothing.
    pub dry_run: bool,
    /// Grace between the graceful stop and the forced one.
    pub grace: Duration,
    /// How long past a recorded deadline a running host's own governor has
    /// to act before anyone's gc ends the resource for it (the deadline in
    /// the ledger may lag a call that began since; the host is then taken
    /// to be hung).
    pub deadline_grace: Duration,
}

/// The default [`GcOptions::deadline_grace`]: several governor ticks.
pub const DEFAULT_DEADLINE_GRACE: Duration = Duration::from_secs(10);

impl Default for GcOptions {
    /// No `all`, no dry run, no stop grace, and [`DEFAULT_DEADLINE_GRACE`].
    fn default() -> GcOptions {
        GcOptions {
            all: false,
            dry_run: false,
            grace: Duration::ZERO,
            deadline_grace: DEFAULT_DEADLINE_GRACE,
        }
    }
}

/// One resource gc acted on (or would have).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Reaped {
    /// Ledger row (None when the marker names no row).
    pub resource_id: Option<i64>,
    /// The plugin, when known.
    pub plugin_id: Option<String>,
    /// Resource kind.
    pub kind: String,
    /// The backend that stopped it.
    pub backend: String,
    /// Why it was reaped, in words.
    pub reason: String,
    /// What was done (`end`, `detach`, `sweep`).
    pub op: GcOp,
    /// True once its backend confirmed it gone (always false in a dry run).
    pub confirmed: bool,
    /// Why it could not be confirmed gone (it stays for the next gc).
    pub error: Option<String>,
    /// Pids that were (or would be) signalled, for processes.
    pub pids: Vec<u32>,
    /// Pids that needed SIGKILL.
    pub killed: Vec<u32>,
    /// Recorded pid left alone because it now belongs to another process.
    pub pid_reused: Option<u32>,
    /// What the sweep found carrying its marker.
    pub found: Option<String>,
}

/// What a gc run did.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct GcReport {
    /// True for a dry run.
    pub dry_run: bool,
    /// Resources reaped (or that would be), confirmed or not.
    pub reaped: Vec<Reaped>,
    /// Resources whose stop could not be confirmed (kept for the next gc).
    pub unconfirmed: usize,
    /// Hosts found gone and marked ended.
    pub hosts_ended: Vec<i64>,
    /// Live resources left alone because their host runs.
    pub kept: usize,
}

fn reason_text(a: &GcAction) -> String {
    match a.reason {
        GcReason::HostGone => "owning host is gone".into(),
        GcReason::All => "gc --all".into(),
        GcReason::MarkedAfterEnd => format!("marked {} outlived its ended row", a.kind),
        GcReason::MarkedWithoutRow => format!("marked {} has no ledger row", a.kind),
        GcReason::DeadlinePassed => {
            "its deadline passed (budget, max duration or idle) and its host did not stop it".into()
        }
    }
}

fn pids_of(v: &[String]) -> Vec<u32> {
    v.iter().filter_map(|s| s.parse().ok()).collect()
}

/// Plans and (unless a dry run) carries out gc over `ledger` with
/// `backends`. `self_host` is the calling host's id (its own resources are
/// kept unless `all`).
pub async fn gc(
    ledger: &mut Ledger,
    opts: GcOptions,
    self_host: Option<i64>,
    backends: &Backends,
) -> Result<GcReport, HostError> {
    let hosts = ledger.hosts()?;
    let live = ledger.live()?;
    let ledger_id = ledger.ledger_id().to_owned();
    let mut swept = Vec::new();
    let mut swept_ok = HashSet::new();
    let since = crate::ledger::now_ms() - SWEEP_LOOKBACK_MS;
    for b in backends.all() {
        let recorded = ledger.recorded_details(b.name(), since)?;
        match b.sweep(&ledger_id, &recorded).await {
            Ok(found) => {
                swept_ok.insert(b.name().to_owned());
                swept.extend(found.into_iter().map(|m| (b.name().to_owned(), m)));
            }
            Err(e) => {
                tracing::warn!(backend = b.name(), error = %e, "sweep failed; its marked resources wait for the next gc")
            }
        }
    }
    let mut ended = HashSet::new();
    for (_, m) in &swept {
        if let Some(r) = ledger.get(m.resource_id)?
            && !r.is_live()
        {
            ended.insert(r.id);
        }
    }
    let plan = plan::plan_at(
        &ledger_id,
        &hosts,
        |h| h.is_alive(),
        &live,
        &ended,
        &swept,
        &swept_ok,
        self_host,
        opts.all,
        // A deadline counts as passed for others only after the grace.
        crate::ledger::now_ms().saturating_sub(opts.deadline_grace.as_millis().min(i64::MAX as u128) as i64),
    );
    let mut plan = plan;
    // A swept resource's row (ended, or never finished) still says where it is.
    for a in &mut plan.actions {
        if a.target.details.is_null()
            && let Some(id) = a.resource_id
            && let Some(r) = ledger.get(id)?
        {
            a.target.details = r.details;
        }
    }
    let mut report = GcReport {
        dry_run: opts.dry_run,
        kept: plan.kept,
        hosts_ended: plan.hosts_to_end.clone(),
        ..Default::default()
    };
    let mut ends: Vec<(i64, ResourceStatus)> = Vec::new();
    let mut notes: Vec<(i64, String)> = Vec::new();
    for a in &plan.actions {
        let mut r = Reaped {
            resource_id: a.resource_id,
            plugin_id: a.plugin_id.clone(),
            kind: a.kind.clone(),
            backend: a.backend.clone(),
            reason: reason_text(a),
            op: a.op,
            confirmed: false,
            error: None,
            pids: Vec::new(),
            killed: Vec::new(),
            pid_reused: None,
            found: a.found.clone(),
        };
        if a.op == GcOp::Detach {
            r.confirmed = !opts.dry_run;
            if let Some(id) = a.resource_id.filter(|_| !opts.dry_run) {
                ends.push((id, ResourceStatus::Detached));
            }
            report.reaped.push(r);
            continue;
        }
        let Some(backend) = backends.by_name(&a.backend) else {
            r.error = Some(format!("no {} backend is built into this plugboard", a.backend));
            if let (Some(id), GcOp::End) = (a.resource_id, a.op) {
                notes.push((id, r.error.clone().unwrap_or_default()));
            }
            report.unconfirmed += 1;
            report.reaped.push(r);
            continue;
        };
        if opts.dry_run {
            r.pids = backend
                .inspect(&a.target)
                .get("pids")
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(|p| p.as_u64().map(|p| p as u32)).collect())
                .unwrap_or_default();
            report.reaped.push(r);
            continue;
        }
        match backend.stop(&a.target, opts.grace).await {
            Ok(Stopped {
                ended: gone,
                forced,
                identity_reused,
            }) => {
                r.confirmed = true;
                r.pids = pids_of(&gone);
                r.killed = pids_of(&forced);
                r.pid_reused = identity_reused
                    .as_deref()
                    .and_then(|s| s.strip_prefix("pid "))
                    .and_then(|p| p.parse().ok());
                if let (Some(id), GcOp::End) = (a.resource_id, a.op) {
                    ends.push((id, ResourceStatus::Reaped));
                }
            }
            Err(e) => {
                r.error = Some(e.to_string());
                report.unconfirmed += 1;
                if let (Some(id), GcOp::End) = (a.resource_id, a.op) {
                    notes.push((id, e.to_string()));
                }
            }
        }
        report.reaped.push(r);
    }
    if !opts.dry_run {
        ledger.transaction(|l| {
            for (id, status) in &ends {
                l.end(*id, *status, None, None)?;
            }
            for (id, note) in &notes {
                l.set_note(*id, Some(&format!("gc could not confirm it gone: {note}")))?;
            }
            for h in &plan.hosts_to_end {
                l.end_host(*h)?;
            }
            Ok(())
        })?;
    } else {
        report.hosts_ended.clear();
        report.hosts_ended.extend(plan.hosts_to_end.iter().copied());
    }
    Ok(report)
}
