//! Watching a running worker: its exit and its loss (events, for backends
//! that have them) and periodic probes (for backends that have none); an
//! unrequested exit is recorded and may be restarted by policy, a loss or
//! a failed probe makes the plugin `lost`, which is never restarted.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::ready::probe_once;
use super::restart::next_restart;
use super::{ExitInfo, Inner, RunState, Slot, lock, start};
use crate::backend::Observation;
use crate::endpoint::Endpoint;
use crate::ledger::ResourceStatus;

async fn next_exit(rx: &mut Option<watch::Receiver<Option<ExitInfo>>>) -> ExitInfo {
    let Some(rx) = rx.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        if let Some(x) = *rx.borrow() {
            return x;
        }
        if rx.changed().await.is_err() {
            return (*rx.borrow()).unwrap_or(ExitInfo {
                code: None,
                signal: None,
            });
        }
    }
}

/// The next loss a backend reports as an event (pending forever when it
/// reports none).
async fn next_lost(rx: &mut Option<watch::Receiver<Option<String>>>) -> String {
    let Some(r) = rx.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        if r.changed().await.is_err() {
            *rx = None;
            return std::future::pending().await;
        }
        if let Some(reason) = r.borrow_and_update().clone() {
            return reason;
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn monitor(
    inner: Weak<Inner>,
    slot: Arc<Slot>,
    generation: u64,
    mut exit_rx: Option<watch::Receiver<Option<ExitInfo>>>,
    mut lost_rx: Option<watch::Receiver<Option<String>>>,
    polls: bool,
    endpoint: Endpoint,
    token: Option<String>,
) {
    let interval = Duration::from_secs_f64(slot.st().manifest.probe_interval_s.max(0.01));
    let exit = loop {
        let result: Result<(), String> = tokio::select! {
            x = next_exit(&mut exit_rx) => break x,
            reason = next_lost(&mut lost_rx) => {
                if slot.st().generation != generation {
                    return;
                }
                Err(reason)
            }
            _ = tokio::time::sleep(interval), if polls => {
                let (ready, current) = {
                    let s = slot.st();
                    (s.manifest.ready.clone(), s.generation == generation && matches!(s.state, RunState::Running | RunState::Lost))
                };
                if !current {
                    return;
                }
                let observed = {
                    let live = slot.st().live.as_ref().map(|l| (Arc::clone(&l.backend), l.target()));
                    match live {
                        Some((backend, target)) => backend.observe(&target).await,
                        None => return,
                    }
                };
                match observed {
                    Observation::Alive => Ok(()),
                    Observation::Lost(reason) => Err(reason),
                    Observation::Exited(x) => break x,
                    Observation::Unknown => probe_once(&ready, &endpoint, token.as_deref(), interval.min(Duration::from_secs(5))).await,
                }
            }
        };
        let Some(inner) = inner.upgrade() else { return };
        let mut s = slot.st();
        if s.generation != generation {
            return;
        }
        let next = s.state.after_probe(result.is_ok());
        if next != s.state {
            s.state = next;
            s.note = result.err();
            if let Some(rid) = s.live.as_ref().map(|l| l.rid) {
                let status = if next == RunState::Lost {
                    ResourceStatus::Lost
                } else {
                    ResourceStatus::Running
                };
                let ledger = lock(&inner.ledger);
                if let Err(e) = ledger
                    .set_status(rid, status)
                    .and_then(|()| ledger.set_note(rid, s.note.as_deref()))
                {
                    tracing::error!(plugin = %slot.id, error = %e, "cannot record a probe result");
                }
            }
            tracing::warn!(plugin = %slot.id, state = next.as_str(), note = ?s.note, "the plugin's state changed by observation");
        }
    };
    on_exit(inner, slot, generation, exit).await;
}

async fn on_exit(inner: Weak<Inner>, slot: Arc<Slot>, generation: u64, exit: ExitInfo) {
    let Some(inner) = inner.upgrade() else { return };
    // Claim the transition: only an exit nobody asked for, of the current
    // generation, of a worker that was running (a failed start is recorded
    // by the starter, a stop by the stopper).
    let (live, restarts, manifest, next) = {
        let mut s = slot.st();
        if s.generation != generation {
            return;
        }
        let Some(next) = s.state.after_exit(exit) else { return };
        s.state = next;
        s.last_exit = Some(exit);
        s.handle = None;
        let live = s.live.take();
        // Recorded under the state lock, so whoever sees the new state also
        // finds the ledger row ended. Leftovers are ended below; should the
        // host die first, gc finds them by their marker. A provisioned
        // resource (an instance, a pod) outlives its worker and bills until
        // the provider confirms it gone: its row gets the exit's status
        // now and is ended only once the stop below is confirmed.
        if let Some(l) = &live {
            let ledger = lock(&inner.ledger);
            let recorded = if l.backend.provisions() {
                ledger.set_status(l.rid, exit_status(next))
            } else {
                ledger.end(l.rid, exit_status(next), exit.code, exit.signal)
            };
            if let Err(e) = recorded {
                tracing::error!(plugin = %slot.id, error = %e, "cannot record the worker's exit");
            }
        }
        (live, s.restarts, Arc::clone(&s.manifest), next)
    };
    tracing::warn!(plugin = %slot.id, %exit, "worker exited");
    if let Some(mut live) = live {
        live.keepalive = None;
        let stopped = live.backend.stop(&live.target(), slot.grace()).await;
        if live.backend.provisions() {
            let ledger = lock(&inner.ledger);
            let recorded = match &stopped {
                Ok(_) => ledger.end(live.rid, exit_status(next), exit.code, exit.signal),
                Err(e) => ledger.set_note(
                    live.rid,
                    Some(&format!(
                        "the worker exited; its resource is not confirmed gone ({e}): the row stays live \
                         (and billing) until gc ends it, once this host is gone or with --all"
                    )),
                ),
            };
            if let Err(e) = recorded {
                tracing::error!(plugin = %slot.id, error = %e, "cannot record the end of the worker's resource");
            }
        }
        if let Err(e) = stopped {
            tracing::error!(plugin = %slot.id, error = %e, "what the worker left is not confirmed gone; gc retries by marker");
        }
        let _ = std::fs::remove_file(&live.listen);
    }
    let Some(delay) = next_restart(&manifest.restart, exit, restarts) else {
        return;
    };
    {
        let mut s = slot.st();
        if s.generation != generation {
            return;
        }
        s.restart_pending = true;
    }
    tokio::time::sleep(delay).await;
    let _op = slot.op.lock().await;
    {
        let mut s = slot.st();
        if s.generation != generation || !s.restart_pending {
            return; // started or stopped by someone meanwhile
        }
        s.restart_pending = false;
        s.restarts += 1;
    }
    if let Err(e) = start::restart_by_policy(Arc::clone(&inner), Arc::clone(&slot), manifest).await {
        tracing::error!(plugin = %slot.id, error = %e, "restart failed");
    }
}

/// The ledger status of a worker's exit into `state`.
fn exit_status(state: RunState) -> ResourceStatus {
    if state == RunState::Crashed {
        ResourceStatus::Crashed
    } else {
        ResourceStatus::Exited
    }
}
