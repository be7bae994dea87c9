//! Stopping a worker: cancel a start in progress or a pending restart,
//! then stop the resource through its backend and end the ledger row only
//! once the backend confirmed it gone.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{ExitInfo, Inner, RunState, Slot, lock};
use crate::error::HostError;
use crate::ledger::ResourceStatus;

/// How long a stop waits for a start it cancelled to clean up.
const CANCEL_WAIT: Duration = Duration::from_secs(60);

/// Waits up to `limit` for the resource's exit event, if it has one.
pub(super) async fn wait_exit(rx: Option<watch::Receiver<Option<ExitInfo>>>, limit: Duration) -> Option<ExitInfo> {
    let mut rx = rx?;
    let fut = async {
        loop {
            if let Some(x) = *rx.borrow() {
                return Some(x);
            }
            if rx.changed().await.is_err() {
                return *rx.borrow();
            }
        }
    };
    tokio::time::timeout(limit, fut).await.ok().flatten()
}

/// Cancels a restart by policy that waits out its backoff; true if there was one.
pub(super) fn cancel_pending_restart(slot: &Slot) -> bool {
    let mut s = slot.st();
    if s.restart_pending {
        s.restart_pending = false;
        s.generation += 1;
        true
    } else {
        false
    }
}

/// A stop from outside: cancels what is pending, then stops under the
/// slot's operation lock.
pub(super) async fn stop(inner: &Arc<Inner>, slot: &Arc<Slot>) -> Result<(), HostError> {
    let mut acted = cancel_pending_restart(slot);
    if acted {
        slot.st().state = RunState::Stopped;
    }
    if let Some(c) = &slot.st().cancel {
        let _ = c.send(true);
        acted = true;
    }
    let _op = tokio::time::timeout(CANCEL_WAIT, slot.op.lock())
        .await
        .map_err(|_| HostError::Busy {
            plugin: slot.id.clone(),
            secs: CANCEL_WAIT.as_secs_f64(),
        })?;
    stop_locked(inner, slot, acted).await
}

/// Stops the slot's resource; the caller holds `slot.op`. `acted` makes a
/// slot with nothing active a success (a start or restart was cancelled).
pub(super) async fn stop_locked(inner: &Arc<Inner>, slot: &Arc<Slot>, acted: bool) -> Result<(), HostError> {
    let live = {
        let mut s = slot.st();
        if !s.state.is_active() {
            return if acted {
                Ok(())
            } else {
                Err(HostError::NotRunning {
                    plugin: slot.id.clone(),
                })
            };
        }
        s.state = RunState::Stopping;
        s.generation += 1;
        s.handle = None;
        s.live.take()
    };
    let Some(mut live) = live else {
        slot.st().state = RunState::Stopped;
        return Ok(());
    };
    // Dropping the keepalive closes a worker's stdin: SDK workers exit.
    live.keepalive = None;
    if let Err(e) = lock(&inner.ledger).set_status(live.rid, ResourceStatus::Stopping) {
        tracing::error!(plugin = %slot.id, error = %e, "cannot record the stop");
    }
    match live.backend.stop(&live.target(), slot.grace()).await {
        Ok(_) => {
            let exit = wait_exit(live.exit_rx.clone(), Duration::from_secs(5)).await;
            let status = if live.owned {
                ResourceStatus::Stopped
            } else {
                ResourceStatus::Detached
            };
            let ended =
                lock(&inner.ledger).end(live.rid, status, exit.and_then(|x| x.code), exit.and_then(|x| x.signal));
            let _ = std::fs::remove_file(&live.listen);
            let mut s = slot.st();
            s.state = RunState::Stopped;
            if exit.is_some() {
                s.last_exit = exit;
            }
            ended?;
            Ok(())
        }
        Err(e) => {
            let reason = e.to_string();
            let _ = lock(&inner.ledger).set_note(live.rid, Some(&reason));
            let mut s = slot.st();
            s.state = RunState::Failed;
            s.error = Some(reason.clone());
            Err(HostError::StopUnconfirmed {
                plugin: slot.id.clone(),
                reason,
            })
        }
    }
}
