//! Starting a worker: plan, intent, launch, readiness, the manifest check,
//! the saved config. Every step is bounded in time and every failure leaves
//! nothing running and the ledger row ended.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use super::output::pump;
use super::ready::wait_ready;
use super::{Inner, Live, RunState, Slot, WorkerStatus, apply_config, governor, lock, monitor};
use crate::backend::{ChargeHook, CreatedHook, LaunchContext, Target};
use crate::client::WorkerClient;
use crate::error::HostError;
use crate::handle::PluginHandle;
use crate::ledger::{Intent, ResourceHandle, ResourceStatus, now_ms};
use crate::manifest::{Manifest, Ready};

/// Starts the slot's worker; the caller holds `slot.op`. `by_policy` keeps
/// the restart count and the config in force.
pub(super) async fn start_locked(
    inner: &Arc<Inner>,
    slot: &Arc<Slot>,
    manifest: Arc<Manifest>,
    config: Option<Value>,
    by_policy: bool,
) -> Result<WorkerStatus, HostError> {
    let (generation, cancel_rx) = {
        let mut s = slot.st();
        if s.state.is_active() {
            return Err(HostError::AlreadyRunning {
                plugin: slot.id.clone(),
                state: s.state.as_str().into(),
            });
        }
        s.manifest = manifest;
        if !by_policy {
            s.config = config;
            s.restarts = 0;
        }
        s.generation += 1;
        s.state = RunState::Starting;
        s.restart_pending = false;
        s.error = None;
        s.note = None;
        s.handle = None;
        s.ready_at_ms = None;
        let (tx, rx) = watch::channel(false);
        s.cancel = Some(tx);
        (s.generation, rx)
    };
    let result = attempt(inner, slot, generation, cancel_rx).await;
    let mut s = slot.st();
    s.cancel = None;
    match result {
        Ok(()) => {
            drop(s);
            Ok(slot.status())
        }
        Err(e) => {
            if s.generation == generation {
                s.state = if matches!(e, HostError::StoppedDuringStart { .. }) {
                    RunState::Stopped
                } else {
                    RunState::Failed
                };
                s.error = Some(e.to_string());
            }
            Err(e)
        }
    }
}

/// [`start_locked`] as a boxed `Send` future, for the restart by policy
/// (the monitor that restarts is itself spawned by a start).
pub(super) fn restart_by_policy(
    inner: Arc<Inner>,
    slot: Arc<Slot>,
    manifest: Arc<Manifest>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<WorkerStatus, HostError>> + Send>> {
    Box::pin(async move { start_locked(&inner, &slot, manifest, None, true).await })
}

/// Records a resource's handle the moment its backend reports it exists
/// (and starts billing when the provider bills from creation).
fn created_hook(inner: &Arc<Inner>, rid: i64) -> CreatedHook {
    let weak = Arc::downgrade(inner);
    CreatedHook(Arc::new(move |handle: &ResourceHandle, bills_now: bool| {
        let Some(inner) = weak.upgrade() else { return };
        let ledger = lock(&inner.ledger);
        if let Err(e) = ledger.set_handle(rid, handle, None) {
            tracing::error!(resource = rid, error = %e, "cannot record a created resource's handle");
        }
        if bills_now && let Err(e) = ledger.start_billing(rid) {
            tracing::error!(resource = rid, error = %e, "cannot start billing");
        }
    }))
}

/// Records per-call charges (serverless jobs) against the resource.
fn charge_hook(inner: &Arc<Inner>, rid: i64, plugin: &str) -> ChargeHook {
    let weak = Arc::downgrade(inner);
    let plugin = plugin.to_owned();
    ChargeHook(Arc::new(move |usd: f64, what: &str| {
        let Some(inner) = weak.upgrade() else { return };
        if let Err(e) = lock(&inner.ledger).add_charge(Some(rid), &plugin, usd, what) {
            tracing::error!(resource = rid, error = %e, "cannot record a charge");
        }
    }))
}

fn new_token() -> String {
    let mut bytes = [0u8; 24];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: fall back to a v4 UUID (also OS-random, but a
        // second source); a token is still required.
        return uuid::Uuid::new_v4().simple().to_string();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The schema a manifest gets when it declares none.
fn default_schema() -> Value {
    json!({"type": "object", "properties": {}})
}

async fn cancelled(mut rx: watch::Receiver<bool>) {
    loop {
        if *rx.borrow() {
            return;
        }
        if rx.changed().await.is_err() {
            // The sender is gone: nobody can cancel any more.
            std::future::pending::<()>().await;
        }
    }
}

async fn attempt(
    inner: &Arc<Inner>,
    slot: &Arc<Slot>,
    generation: u64,
    cancel: watch::Receiver<bool>,
) -> Result<(), HostError> {
    let (m, config) = {
        let s = slot.st();
        (Arc::clone(&s.manifest), s.config.clone())
    };
    let id = slot.id.clone();
    let backend = inner.backends.for_mode(&id, m.execution_mode)?;
    let plan = backend.plan(&m, &inner.cfg.launch_vars)?;
    governor::check_start(inner, &m, &plan)?;
    {
        let mut s = slot.st();
        s.backend_name = Some(backend.name().into());
        s.charges_per_call = plan.budget.charges_per_call;
    }
    let mut details = plan.details.clone();
    if let Value::Object(d) = &mut details {
        d.insert("log".into(), json!(slot.log_path));
        d.insert("category".into(), json!(m.category));
    }
    let (rid, marker) = {
        let ledger = lock(&inner.ledger);
        let rid = ledger.intent(
            inner.host.id,
            &Intent {
                kind: plan.kind,
                backend: backend.name(),
                plugin_id: &id,
                owned: plan.owned,
                cost_per_hour: plan.price.map(|p| p.0),
                price_source: plan.price.map(|p| p.1),
                details: details.clone(),
            },
        )?;
        (rid, ledger.marker(rid))
    };
    slot.st().resource_id = Some(rid);
    let listen = inner.cfg.data.run_dir().join(format!("{rid}.sock"));
    if listen.as_os_str().len() >= 104 {
        lock(&inner.ledger).end(rid, ResourceStatus::Failed, None, None)?;
        return Err(HostError::SocketPathTooLong { path: listen });
    }
    let _ = std::fs::remove_file(&listen);
    lock(&slot.stderr_tail).clear();
    let ctx = LaunchContext {
        plugin_id: id.clone(),
        resource_id: rid,
        marker: marker.clone(),
        listen: listen.clone(),
        token: new_token(),
        created: Some(created_hook(inner, rid)),
        charge: Some(charge_hook(inner, rid, &id)),
    };
    let provision_limit = Duration::from_secs_f64(m.provision_timeout_s);
    if backend.provisions() {
        slot.st().state = RunState::Provisioning;
        if let Err(e) = lock(&inner.ledger).set_status(rid, ResourceStatus::Provisioning) {
            tracing::error!(plugin = %id, error = %e, "cannot record provisioning");
        }
    }
    let marker_only = Target {
        resource_id: Some(rid),
        marker: marker.clone(),
        handle: None,
        details: details.clone(),
        marker_found: None,
    };
    let launched = tokio::select! {
        r = tokio::time::timeout(provision_limit, backend.launch(&plan, &ctx)) => match r {
            Ok(r) => r,
            Err(_) => Err(HostError::ProvisionTimeout { plugin: id.clone(), secs: m.provision_timeout_s }),
        },
        _ = cancelled(cancel.clone()) => Err(HostError::StoppedDuringStart { plugin: id.clone() }),
    };
    let mut launched = match launched {
        Ok(l) => l,
        Err(e) => {
            // Whatever a half-done launch created carries the marker.
            let stopped = match backend.stop(&marker_only, Duration::ZERO).await {
                Ok(_) => true,
                Err(se) => {
                    tracing::error!(plugin = %id, error = %se, "cannot confirm a failed launch left nothing");
                    let _ = lock(&inner.ledger).set_note(rid, Some(&se.to_string()));
                    false
                }
            };
            if stopped {
                let status = if matches!(e, HostError::StoppedDuringStart { .. }) {
                    ResourceStatus::Stopped
                } else {
                    ResourceStatus::Failed
                };
                lock(&inner.ledger).end(rid, status, None, None)?;
            }
            return Err(e);
        }
    };
    // From here on the resource exists: a ledger failure is logged, never
    // returned, so it stays tracked (and its marker finds it).
    if let Err(e) = lock(&inner.ledger).set_handle(rid, &launched.handle, Some(&launched.endpoint.to_string())) {
        tracing::error!(plugin = %id, error = %e, "cannot record the resource's handle");
    }
    if let Some((price, source)) = launched.price
        && let Err(e) = lock(&inner.ledger).set_price(rid, price, source)
    {
        tracing::error!(plugin = %id, error = %e, "cannot record the provider's price");
    }
    let (ready_tx, ready_rx) = watch::channel(false);
    let regex = match &m.ready {
        Ready::LogLine(r) => regex::Regex::new(r).ok(),
        _ => None,
    };
    for out in std::mem::take(&mut launched.output) {
        let tail = (out.tag == "err").then(|| Arc::clone(&slot.stderr_tail));
        tokio::spawn(pump(
            out.reader,
            out.tag,
            Arc::clone(&slot.log),
            tail,
            regex.clone(),
            ready_tx.clone(),
        ));
    }
    drop(ready_tx);
    let exit_rx = launched.exit.clone();
    let lost_rx = launched.lost.take();
    let notify_rx = launched.notify.take();
    let endpoint = launched.endpoint.clone();
    let token = launched.token.clone();
    {
        let mut s = slot.st();
        s.state = RunState::Starting;
        s.started_at_ms = Some(now_ms());
        s.live = Some(Live {
            rid,
            marker,
            backend: Arc::clone(&backend),
            owned: plan.owned,
            handle: Some(launched.handle.clone()),
            details,
            endpoint: Some(endpoint.clone()),
            listen: listen.clone(),
            keepalive: launched.keepalive.take(),
            exit_rx: exit_rx.clone(),
        });
    }

    let ready = async {
        wait_ready(
            &m,
            &endpoint,
            token.as_deref(),
            exit_rx.clone(),
            ready_rx,
            notify_rx.clone(),
            &slot.stderr_tail,
        )
        .await?;
        if m.ready != Ready::Protocol {
            return Ok(None);
        }
        // A protocol worker must be the plugin its manifest describes.
        let target = endpoint.protocol_target().map_err(|e| HostError::BadEndpoint {
            plugin: id.clone(),
            source: e,
        })?;
        let handle = PluginHandle::worker(WorkerClient::new(&id, target, token.clone()));
        let declared = (m.config_schema != default_schema()).then_some(&m.config_schema);
        // The SDKs send their manifest with the notification; others are
        // asked for it.
        let notified = notify_rx.as_ref().and_then(|rx| rx.borrow().manifest.clone());
        match notified {
            Some(manifest) => handle.check_manifest(&manifest, &m.name, m.version.as_deref(), declared),
            None => handle.verify(&m.name, m.version.as_deref(), declared).await,
        }
        .map_err(|source| HostError::Worker { source })?;
        apply_config(&handle, &id, config.as_ref()).await?;
        Ok(Some(handle))
    };
    let ready: Result<Option<PluginHandle>, HostError> = tokio::select! {
        r = ready => r,
        _ = cancelled(cancel) => Err(HostError::StoppedDuringStart { plugin: id.clone() }),
    };
    match ready {
        Ok(handle) => {
            if let Err(e) = lock(&inner.ledger).set_status(rid, ResourceStatus::Running) {
                tracing::error!(plugin = %id, error = %e, "cannot record the worker as running");
            }
            {
                let mut s = slot.st();
                if s.generation == generation && s.state == RunState::Starting {
                    s.state = RunState::Running;
                    s.ready_at_ms = Some(now_ms());
                    s.handle = handle.map(|h| h.with_activity(Arc::clone(&slot.activity)));
                    s.deadline = None;
                    slot.activity.reset();
                }
            }
            tokio::spawn(monitor::monitor(
                Arc::downgrade(inner),
                Arc::clone(slot),
                generation,
                exit_rx,
                lost_rx,
                backend.polls(),
                endpoint,
                token,
            ));
            Ok(())
        }
        Err(e) => {
            // Leave nothing behind: end the resource, then record why.
            let live = slot.st().live.take();
            let status = if matches!(e, HostError::StoppedDuringStart { .. }) {
                ResourceStatus::Stopped
            } else {
                ResourceStatus::Failed
            };
            if let Some(mut live) = live {
                live.keepalive = None;
                let grace = Duration::from_millis(500);
                match live.backend.stop(&live.target(), grace).await {
                    Ok(_) => {
                        let exit = super::stop::wait_exit(live.exit_rx.clone(), Duration::from_secs(5)).await;
                        if let Err(le) = lock(&inner.ledger).end(
                            rid,
                            if live.owned { status } else { ResourceStatus::Detached },
                            exit.and_then(|x| x.code),
                            exit.and_then(|x| x.signal),
                        ) {
                            tracing::error!(plugin = %id, error = %le, "cannot record the failed start");
                        }
                        if let Some(x) = exit {
                            slot.st().last_exit = Some(x);
                        }
                    }
                    Err(se) => {
                        tracing::error!(plugin = %id, error = %se, "a failed start's resource is not confirmed gone; gc retries");
                        let _ = lock(&inner.ledger).set_note(rid, Some(&se.to_string()));
                    }
                }
            }
            let _ = std::fs::remove_file(&listen);
            Err(e)
        }
    }
}
