//! Reaping the orphans a host adopts.
//!
//! The host is a child subreaper, so processes its workers leave behind are
//! re-parented to it; when they exit they stay zombies until the host waits
//! for them. Workers' own pids are left to their `Child` handle (which
//! waits for them); every other zombie child is collected here, on SIGCHLD
//! and on a slow tick. In an embedding application only zombies of the
//! process groups of workers this process spawned are taken, so children
//! the application spawned itself stay its own; a process that is nothing
//! but a host (`plugboard serve`) reaps every adopted orphan.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

/// How many past worker process groups are remembered.
const GROUPS_KEPT: usize = 4096;

#[derive(Default)]
struct Registry {
    workers: HashSet<u32>,
    groups: HashSet<u32>,
    order: VecDeque<u32>,
}

fn registry() -> MutexGuard<'static, Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    R.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Held while spawning a worker and registering its pid, so the reaper
/// never takes a worker that has no registration yet.
pub struct SpawnGuard(MutexGuard<'static, Registry>);

impl SpawnGuard {
    /// Registers a worker's pid (its process group has the same id).
    pub fn register(&mut self, pid: u32) {
        let r = &mut self.0;
        r.workers.insert(pid);
        if r.groups.insert(pid) {
            r.order.push_back(pid);
            if r.order.len() > GROUPS_KEPT
                && let Some(old) = r.order.pop_front()
            {
                r.groups.remove(&old);
            }
        }
    }
}

/// Locks the registry for a spawn.
pub fn spawn_guard() -> SpawnGuard {
    SpawnGuard(registry())
}

/// Forgets a worker whose `Child` handle has waited for it.
pub fn forget_worker(pid: u32) {
    registry().workers.remove(&pid);
}

/// True when `pid` is a worker whose `Child` handle will wait for it.
pub fn is_worker(pid: u32) -> bool {
    registry().workers.contains(&pid)
}

/// Waits for every zombie child of this process that is not a worker
/// (with `all`), or that belongs to a worker's process group. Returns how
/// many were reaped.
pub fn reap_orphans(all: bool) -> usize {
    // Most SIGCHLDs are a worker's own exit, which its `Child` handle has
    // already waited for: with no exited child left, skip the scan of all
    // of /proc.
    if !any_exited_child() {
        return 0;
    }
    let me = std::process::id();
    let r = registry();
    let mut n = 0;
    for p in plugboard_core::process::snapshot() {
        if p.ppid != me || p.is_live() || r.workers.contains(&p.pid) {
            continue;
        }
        if !all && !r.groups.contains(&p.pgid) {
            continue;
        }
        if let Ok(raw) = i32::try_from(p.pid)
            && waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG)).is_ok()
        {
            n += 1;
        }
    }
    n
}

/// True when some child of this process has exited and not been waited
/// for (peeked at, not reaped).
fn any_exited_child() -> bool {
    use nix::sys::wait::{Id, WaitStatus, waitid};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    !matches!(waitid(Id::All, flags), Ok(WaitStatus::StillAlive) | Err(_))
}

/// Starts the reaper (once per process; a second call only widens it to
/// `all`). It runs on a thread of its own with a small runtime, so it
/// outlives any one tokio runtime of the embedding application: it waits
/// for SIGCHLD (or a 1 s tick) and scans this process's children.
pub fn start_reaper(all: bool) {
    static ALL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    static STARTED: OnceLock<()> = OnceLock::new();
    if all {
        ALL.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    STARTED.get_or_init(|| {
        let spawned = std::thread::Builder::new().name("plugboard-reaper".into()).spawn(|| {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::warn!(error = %e, "no runtime for the zombie reaper; adopted orphans stay zombies");
                    return;
                }
            };
            rt.block_on(async {
                let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
                loop {
                    match sigchld.as_mut() {
                        Some(s) => {
                            let _ = tokio::time::timeout(Duration::from_secs(1), s.recv()).await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(1)).await,
                    }
                    // Let a burst of exits settle into one scan.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    reap_orphans(ALL.load(std::sync::atomic::Ordering::Relaxed));
                }
            });
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the zombie reaper; adopted orphans stay zombies");
        }
    });
}
