//! Readiness: how the host knows a worker is up, for any endpoint.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{ExitInfo, lock};
use crate::backend::notice::Notice;
use crate::endpoint::Endpoint;
use crate::error::HostError;
use crate::manifest::{Manifest, Ready};
use crate::probe;

/// One readiness attempt against `endpoint` (the protocol's health, an
/// HTTP(S) GET, a TCP connect); `Ok(true)` when ready. Log-line and none
/// readiness are not probes and answer `Ok(true)`.
pub(super) async fn probe_once(
    ready: &Ready,
    endpoint: &Endpoint,
    token: Option<&str>,
    limit: Duration,
) -> Result<(), String> {
    match ready {
        Ready::None | Ready::LogLine(_) | Ready::Notify => Ok(()),
        Ready::Protocol => match probe::http_get_endpoint(endpoint, probe::HEALTH_PATH, token, limit).await {
            Ok(200) => Ok(()),
            Ok(code) => Err(format!("health answered HTTP {code}")),
            Err(e) => Err(e.to_string()),
        },
        Ready::HttpGet(url) => match probe::http_get_url(url, limit).await {
            Ok(code) if (200..300).contains(&code) => Ok(()),
            Ok(code) => Err(format!("{url} answered HTTP {code}")),
            Err(e) => Err(e.to_string()),
        },
        Ready::Tcp(addr) => probe::tcp(addr, limit).await.map_err(|e| e.to_string()),
    }
}

/// How long a worker offered a notification descriptor is given before the
/// host also starts polling it.
pub const NOTIFY_GRACE: Duration = Duration::from_millis(100);

/// Waits until the worker is ready, it exits, or the manifest's ready
/// timeout passes.
pub(super) async fn wait_ready(
    m: &Manifest,
    endpoint: &Endpoint,
    token: Option<&str>,
    exit_rx: Option<watch::Receiver<Option<ExitInfo>>>,
    ready_rx: watch::Receiver<bool>,
    notify_rx: Option<watch::Receiver<Notice>>,
    stderr_tail: &Mutex<VecDeque<String>>,
) -> Result<(), HostError> {
    let id = m.unique_id();
    if m.ready == Ready::Notify && notify_rx.is_none() {
        return Err(HostError::NoNotify {
            plugin: id,
            mode: m.execution_mode,
        });
    }
    // A worker that can notify is not polled at first: probing competes with
    // its own start for the CPU. Workers that never notify (built before the
    // notification existed, or not with an SDK) are polled after this delay.
    let notified = |rx: &Option<watch::Receiver<Notice>>| rx.as_ref().is_some_and(|r| r.borrow().ready);
    let poll_from = Instant::now()
        + if notify_rx.is_some() && m.ready == Ready::Protocol {
            NOTIFY_GRACE
        } else {
            Duration::ZERO
        };
    let deadline = Instant::now() + Duration::from_secs_f64(m.ready_timeout_s);
    let attempt = Duration::from_millis(500);
    let mut last_error: Option<String> = None;
    let mut pause = Duration::from_micros(500);
    let tail = || lock(stderr_tail).iter().cloned().collect::<Vec<_>>();
    loop {
        let ok = match &m.ready {
            Ready::LogLine(_) => *ready_rx.borrow(),
            Ready::Notify => notified(&notify_rx),
            // The worker said it serves: the manifest check that follows is
            // the first request.
            Ready::Protocol if notified(&notify_rx) => true,
            Ready::Protocol if Instant::now() < poll_from => false,
            other => match probe_once(other, endpoint, token, attempt).await {
                Ok(()) => true,
                Err(e) => {
                    last_error = Some(e);
                    false
                }
            },
        };
        if ok {
            return Ok(());
        }
        let exited = exit_rx.as_ref().and_then(|rx| *rx.borrow());
        if let Some(exit) = exited {
            // Give the stderr pump a moment to catch the last lines.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Err(HostError::ExitedBeforeReady {
                plugin: id,
                exit: exit.to_string(),
                stderr_tail: tail(),
            });
        }
        if Instant::now() >= deadline {
            return Err(HostError::ReadyTimeout {
                plugin: id,
                secs: m.ready_timeout_s,
                probe: m.ready.to_string(),
                last_error,
                stderr_tail: tail(),
            });
        }
        // Poll quickly at first (a worker is often up within a few ms), then
        // back off to every 10 ms.
        pause = (pause * 2).min(Duration::from_millis(10));
        let mut exit_wait = exit_rx.clone();
        let mut ready_wait = ready_rx.clone();
        let mut notify_wait = notify_rx.clone();
        let pause = if Instant::now() < poll_from {
            poll_from.saturating_duration_since(Instant::now())
        } else {
            pause
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = async {
                match exit_wait.as_mut() {
                    Some(rx) => { let _ = rx.changed().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
            _ = async {
                if ready_wait.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => {}
            _ = async {
                match notify_wait.as_mut() {
                    Some(rx) => {
                        if rx.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    }
}
