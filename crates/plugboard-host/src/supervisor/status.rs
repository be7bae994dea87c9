//! The worker's state model: where a plugin is in its life, how its last
//! process ended, and the status reported to clients (the same shape for
//! every execution mode).

use std::path::PathBuf;

use serde::Serialize;

pub use crate::backend::ExitInfo;
use crate::ledger::ResourceHandle;

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Being created or started, not ready yet.
    Starting,
    /// Its resource is being provisioned (cloud instances, pods).
    Provisioning,
    /// Ready.
    Running,
    /// Stopped answering but not known to be gone; never restarted, since
    /// a second billed resource is worse than a late one.
    Lost,
    /// Being stopped.
    Stopping,
    /// Stopped on request.
    Stopped,
    /// Exited by itself with code 0.
    Exited,
    /// Exited with a failure or a signal.
    Crashed,
    /// Could not be started.
    Failed,
}

impl RunState {
    /// True while the worker has (or is getting) a resource.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RunState::Starting | RunState::Provisioning | RunState::Running | RunState::Lost | RunState::Stopping
        )
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Starting => "starting",
            RunState::Provisioning => "provisioning",
            RunState::Running => "running",
            RunState::Lost => "lost",
            RunState::Stopping => "stopping",
            RunState::Stopped => "stopped",
            RunState::Exited => "exited",
            RunState::Crashed => "crashed",
            RunState::Failed => "failed",
        }
    }

    /// The state an unrequested exit leads to from `self`, or `None` when
    /// the exit is not this worker's to record (a start records its own
    /// failure, a stop its own end).
    pub fn after_exit(self, exit: ExitInfo) -> Option<RunState> {
        match self {
            RunState::Running | RunState::Lost => Some(if exit.success() {
                RunState::Exited
            } else {
                RunState::Crashed
            }),
            _ => None,
        }
    }

    /// The state a periodic probe leads to from `self`: a failure makes a
    /// running worker lost, a success brings a lost one back.
    pub fn after_probe(self, ok: bool) -> RunState {
        match (self, ok) {
            (RunState::Running, false) => RunState::Lost,
            (RunState::Lost, true) => RunState::Running,
            (s, _) => s,
        }
    }
}

/// A worker's state as reported to clients.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerStatus {
    /// The plugin.
    pub plugin_id: String,
    /// Where it is in its life.
    pub state: RunState,
    /// The backend running it (`process`, `external`…).
    pub backend: Option<String>,
    /// What identifies its resource (pid, container, instance, service…).
    pub resource: Option<ResourceHandle>,
    /// Where its worker answers (`unix:/…`, `tcp://…`, `http://…`).
    pub endpoint: Option<String>,
    /// The worker's root pid, for process plugins.
    pub pid: Option<u32>,
    /// Its start time (clock ticks since boot), for process plugins.
    pub pid_start_time: Option<u64>,
    /// Its ledger row.
    pub resource_id: Option<i64>,
    /// The protocol socket a local worker was told to serve on.
    pub listen: Option<PathBuf>,
    /// Its log file.
    pub log_path: PathBuf,
    /// When the current resource was created (ms since epoch).
    pub started_at_ms: Option<i64>,
    /// When it became ready (ms since epoch).
    pub ready_at_ms: Option<i64>,
    /// Restarts by policy so far.
    pub restarts: u32,
    /// True while a restart by policy waits out its backoff.
    pub restart_pending: bool,
    /// How the last process ended.
    pub last_exit: Option<ExitInfo>,
    /// The last start error, when it failed.
    pub error: Option<String>,
    /// Why it is lost, when it is.
    pub note: Option<String>,
    /// The last lines of its stderr (bounded, control characters removed).
    pub stderr_tail: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: ExitInfo = ExitInfo {
        code: Some(0),
        signal: None,
    };
    const KILLED: ExitInfo = ExitInfo {
        code: None,
        signal: Some(9),
    };

    #[test]
    fn only_running_or_lost_workers_record_their_own_exit() {
        assert_eq!(RunState::Running.after_exit(OK), Some(RunState::Exited));
        assert_eq!(RunState::Running.after_exit(KILLED), Some(RunState::Crashed));
        assert_eq!(RunState::Lost.after_exit(KILLED), Some(RunState::Crashed));
        for s in [
            RunState::Starting,
            RunState::Stopping,
            RunState::Stopped,
            RunState::Failed,
        ] {
            assert_eq!(s.after_exit(KILLED), None, "{s:?}");
        }
    }

    #[test]
    fn probes_move_between_running_and_lost_only() {
        assert_eq!(RunState::Running.after_probe(false), RunState::Lost);
        assert_eq!(RunState::Lost.after_probe(true), RunState::Running);
        assert_eq!(RunState::Lost.after_probe(false), RunState::Lost);
        assert_eq!(RunState::Stopping.after_probe(false), RunState::Stopping);
        assert_eq!(RunState::Starting.after_probe(false), RunState::Starting);
    }

    #[test]
    fn active_states() {
        let active: Vec<_> = [
            RunState::Starting,
            RunState::Provisioning,
            RunState::Running,
            RunState::Lost,
            RunState::Stopping,
            RunState::Stopped,
            RunState::Exited,
            RunState::Crashed,
            RunState::Failed,
        ]
        .into_iter()
        .filter(|s| s.is_active())
        .collect();
        assert_eq!(active.len(), 5);
    }
}
