//! Ending whole process trees, and the settings that keep trees findable.
//!
//! A worker's processes are found three ways, because each alone misses
//! some: its process group (a plain `kill -TERM -pgid`), its descendants by
//! parent links (which also catches children that changed group or called
//! setsid, because the host is a child subreaper and so inherits orphans),
//! and the marker in their environment (which catches double-forked daemons
//! whatever their parent, and survivors of a crashed host). Every round of
//! signals re-collects, so processes forked during the grace period are hit
//! too.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use plugboard_core::process::{self, ProcessInfo};

use crate::ledger::MARKER_ENV;

/// What identifies one tree to end.
#[derive(Debug, Clone, Default)]
pub struct TreeSpec {
    /// The root process and its start time (`None`: no root check).
    pub root: Option<(u32, Option<u64>)>,
    /// The process group to include (usually the root's pid).
    pub pgid: Option<u32>,
    /// The marker value (`PLUGBOARD_RESOURCE_ID`) to include.
    pub marker: Option<String>,
}

/// How a tree ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TreeOutcome {
    /// Every pid that was signalled.
    pub signalled: Vec<u32>,
    /// Pids that needed SIGKILL after the grace period.
    pub killed: Vec<u32>,
    /// Pids still alive at the end (should be empty).
    pub survivors: Vec<u32>,
}

/// The live processes of a tree right now.
pub fn collect(spec: &TreeSpec) -> Vec<u32> {
    let procs = process::snapshot();
    collect_in(&procs, spec)
}

fn collect_in(procs: &[ProcessInfo], spec: &TreeSpec) -> Vec<u32> {
    let me = std::process::id();
    let mut set: BTreeSet<u32> = BTreeSet::new();
    let mut roots = Vec::new();
    if let Some((pid, start)) = spec.root {
        let ok = procs
            .iter()
            .any(|p| p.pid == pid && p.is_live() && start.is_none_or(|s| s == p.start_time));
        if ok {
            roots.push(pid);
        }
    }
    if let Some(pgid) = spec.pgid {
        // A group id is only trusted while its leader is ours or gone: the
        // group of a recycled pid is someone else's.
        let leader_ok = spec.root.is_none_or(|(pid, start)| {
            procs
                .iter()
                .find(|p| p.pid == pid)
                .is_none_or(|p| start.is_none_or(|s| s == p.start_time))
        });
        if leader_ok {
            roots.extend(procs.iter().filter(|p| p.pgid == pgid && p.is_live()).map(|p| p.pid));
        }
    }
    if let Some(marker) = &spec.marker {
        roots.extend(marked_in(procs, |m| m == marker));
    }
    set.extend(process::live_tree_in(procs, &roots));
    set.remove(&me);
    set.into_iter().collect()
}

/// Live processes whose marker satisfies `want`.
pub fn marked(want: impl Fn(&str) -> bool) -> Vec<(u32, String)> {
    let me = std::process::id();
    process::snapshot()
        .into_iter()
        .filter(|p| p.is_live() && p.pid != me)
        .filter_map(|p| {
            process::environ_var(p.pid, MARKER_ENV)
                .filter(|m| want(m))
                .map(|m| (p.pid, m))
        })
        .collect()
}

fn marked_in(procs: &[ProcessInfo], want: impl Fn(&str) -> bool) -> Vec<u32> {
    let me = std::process::id();
    procs
        .iter()
        .filter(|p| p.is_live() && p.pid != me)
        .filter(|p| process::environ_var(p.pid, MARKER_ENV).is_some_and(|m| want(&m)))
        .map(|p| p.pid)
        .collect()
}

fn signal_all(pids: &[u32], sig: Signal) {
    for &pid in pids {
        if let Ok(raw) = i32::try_from(pid) {
            let _ = kill(Pid::from_raw(raw), sig);
        }
    }
}

/// Ends a tree: SIGTERM to all of it, up to `grace` for it to exit, then
/// SIGKILL to whatever is left, re-collecting each round. Blocking; returns
/// when nothing of the tree is alive (or after a bounded number of SIGKILL
/// rounds). Dead children of this process are left to the host's zombie
/// reaper ([`crate::zombies`]).
pub fn terminate(spec: &TreeSpec, grace: Duration) -> TreeOutcome {
    terminate_with(spec, grace, Vec::new)
}

/// [`terminate`], with `extra()` adding pids to every round's collection
/// (the members of the tree's cgroup).
pub fn terminate_with(spec: &TreeSpec, grace: Duration, extra: impl Fn() -> Vec<u32>) -> TreeOutcome {
    let me = std::process::id();
    let collect_all = || {
        let mut live = collect(spec);
        live.extend(extra().into_iter().filter(|p| *p != me));
        live.sort_unstable();
        live.dedup();
        live
    };
    let mut out = TreeOutcome::default();
    let mut signalled: BTreeSet<u32> = BTreeSet::new();
    let start = Instant::now();
    let poll = Duration::from_millis(5);
    // SIGTERM phase: signal newcomers each round until empty or grace ends.
    loop {
        let live = collect_all();
        if live.is_empty() {
            out.signalled = signalled.into_iter().collect();
            return out;
        }
        let fresh: Vec<u32> = live.iter().copied().filter(|p| !signalled.contains(p)).collect();
        signal_all(&fresh, Signal::SIGTERM);
        signalled.extend(fresh);
        if start.elapsed() >= grace {
            break;
        }
        std::thread::sleep(poll.min(grace.saturating_sub(start.elapsed())));
    }
    // SIGKILL phase.
    let mut killed: BTreeSet<u32> = BTreeSet::new();
    for _ in 0..200 {
        let live = collect_all();
        if live.is_empty() {
            break;
        }
        signal_all(&live, Signal::SIGKILL);
        killed.extend(live.iter().copied());
        signalled.extend(live);
        std::thread::sleep(Duration::from_millis(2));
    }
    out.survivors = collect_all();
    out.killed = killed.into_iter().collect();
    out.signalled = signalled.into_iter().collect();
    out
}

/// Makes this process a child subreaper: orphaned descendants of its
/// workers are re-parented here instead of to init, so they stay in the tree.
pub fn become_subreaper() -> std::io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(std::io::Error::from)
}
