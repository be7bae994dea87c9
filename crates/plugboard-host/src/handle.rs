//! One way to call any plugin: [`PluginHandle`].
//!
//! The same methods (execute, execute_streaming, cancel, health, config)
//! work for an in-process Rust plugin, called directly with no network, and
//! for a worker process reached over protocol v1, whatever its language or
//! execution mode.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::Method;
use plugboard_core::Violation;
use plugboard_protocol::{
    CallContext, CancelRequest, CancelResponse, ConfigResult, ErrorCode, ExecError, ExecuteRequest, ExecuteResponse,
    Executor, Health, MAX_EVENT_BYTES, PROTOCOL_VERSION, StreamEvent, WorkerManifest, paths,
};
use serde_json::Value;
use tokio::sync::mpsc;

pub use crate::client::{CallError, Target, WorkerClient};

type Calls = Arc<Mutex<HashMap<String, Arc<AtomicBool>>>>;

/// A plugin's call activity, shared by every clone of its handle: calls in
/// flight and when the last one ended (for idle stop).
#[derive(Debug, Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    last_call_ms: AtomicI64,
}

impl Activity {
    /// Calls running now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// When the last call began or ended (ms since epoch), if any did.
    pub fn last_call_ms(&self) -> Option<i64> {
        Some(self.last_call_ms.load(Ordering::SeqCst)).filter(|t| *t > 0)
    }

    /// Forgets past calls (a new start).
    pub fn reset(&self) {
        self.last_call_ms.store(0, Ordering::SeqCst);
    }

    fn begin(self: &Arc<Self>) -> ActivityGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.last_call_ms.store(crate::ledger::now_ms(), Ordering::SeqCst);
        ActivityGuard(Some(Arc::clone(self)))
    }
}

/// Counts one call in flight until dropped.
#[derive(Debug)]
struct ActivityGuard(Option<Arc<Activity>>);

impl Drop for ActivityGuard {
    fn drop(&mut self) {
        if let Some(a) = self.0.take() {
            a.last_call_ms.store(crate::ledger::now_ms(), Ordering::SeqCst);
            a.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

enum Kind {
    InProcess { exec: Arc<dyn Executor>, calls: Calls },
    Worker(Arc<WorkerClient>),
}

/// A handle to call one plugin. Cheap to clone.
#[derive(Clone)]
pub struct PluginHandle {
    plugin: String,
    kind: Arc<Kind>,
    activity: Option<Arc<Activity>>,
}

impl std::fmt::Debug for PluginHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &*self.kind {
            Kind::InProcess { .. } => "in_process",
            Kind::Worker(_) => "worker",
        };
        f.debug_struct("PluginHandle")
            .field("plugin", &self.plugin)
            .field("kind", &kind)
            .finish()
    }
}

/// A streaming call in progress: events as they come, the last one being
/// `Result` or `Error`.
#[derive(Debug)]
pub struct CallStream {
    request_id: String,
    rx: mpsc::Receiver<Result<StreamEvent, CallError>>,
    _activity: ActivityGuard,
}

impl CallStream {
    /// The call's id (for [`PluginHandle::cancel`]).
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The next event; `None` after the last.
    pub async fn next(&mut self) -> Option<Result<StreamEvent, CallError>> {
        self.rx.recv().await
    }

    /// Consumes the rest of the stream, calling `on_event` for progress and
    /// log events, and returns the output.
    pub async fn finish(mut self, mut on_event: impl FnMut(&StreamEvent)) -> Result<Value, CallError> {
        while let Some(ev) = self.next().await {
            match ev? {
                StreamEvent::Result { output } => return Ok(output),
                StreamEvent::Error { error } => {
                    return Err(CallError::Remote {
                        plugin: String::new(),
                        status: error.code.http_status(),
                        code: error.code,
                        message: error.message,
                    });
                }
                other => on_event(&other),
            }
        }
        Err(CallError::Transport {
            plugin: String::new(),
            reason: "the stream ended without a result".into(),
        })
    }
}

fn exec_error(plugin: &str, e: ExecError) -> CallError {
    let info = e.to_info();
    CallError::Remote {
        plugin: plugin.to_owned(),
        status: info.code.http_status(),
        code: info.code,
        message: info.message,
    }
}

impl PluginHandle {
    /// A handle on an in-process plugin.
    pub fn in_process(plugin: impl Into<String>, exec: Arc<dyn Executor>) -> Self {
        PluginHandle {
            plugin: plugin.into(),
            kind: Arc::new(Kind::InProcess {
                exec,
                calls: Arc::new(Mutex::new(HashMap::new())),
            }),
            activity: None,
        }
    }

    /// The same handle, counting its calls in `activity`.
    pub fn with_activity(mut self, activity: Arc<Activity>) -> Self {
        self.activity = Some(activity);
        self
    }

    fn begin(&self) -> ActivityGuard {
        match &self.activity {
            Some(a) => a.begin(),
            None => ActivityGuard(None),
        }
    }

    /// A handle on a worker reached over the protocol.
    pub fn worker(client: WorkerClient) -> Self {
        PluginHandle {
            plugin: client.plugin().to_owned(),
            kind: Arc::new(Kind::Worker(Arc::new(client))),
            activity: None,
        }
    }

    /// The plugin's unique id.
    pub fn plugin_id(&self) -> &str {
        &self.plugin
    }

    /// True for in-process plugins.
    pub fn is_in_process(&self) -> bool {
        matches!(&*self.kind, Kind::InProcess { .. })
    }

    /// Who the plugin says it is.
    pub async fn manifest(&self) -> Result<WorkerManifest, CallError> {
        match &*self.kind {
            Kind::InProcess { exec, .. } => Ok(exec.manifest()),
            Kind::Worker(c) => {
                c.call(Method::GET, paths::MANIFEST, None, Some(c.control_timeout))
                    .await
            }
        }
    }

    /// Health; an error when the worker is unreachable.
    pub async fn health(&self) -> Result<Health, CallError> {
        match &*self.kind {
            Kind::InProcess { calls, .. } => Ok(Health {
                status: "ok".into(),
                protocol_version: PROTOCOL_VERSION,
                active_calls: calls.lock().unwrap_or_else(|e| e.into_inner()).len() as u32,
            }),
            Kind::Worker(c) => c.call(Method::GET, paths::HEALTH, None, Some(c.control_timeout)).await,
        }
    }

    /// Every violation of `config` according to the plugin itself.
    pub async fn validate_config(&self, config: &Value) -> Result<Vec<Violation>, CallError> {
        self.config_call(paths::CONFIG_VALIDATE, config).await
    }

    /// Validates and applies `config` in the plugin; the violations when invalid.
    pub async fn apply_config(&self, config: &Value) -> Result<Vec<Violation>, CallError> {
        self.config_call(paths::CONFIG_APPLY, config).await
    }

    async fn config_call(&self, path: &'static str, config: &Value) -> Result<Vec<Violation>, CallError> {
        match &*self.kind {
            Kind::InProcess { exec, .. } => {
                let exec = Arc::clone(exec);
                let config = config.clone();
                let apply = path == paths::CONFIG_APPLY;
                tokio::task::spawn_blocking(move || {
                    if apply {
                        exec.apply_config(config).err().unwrap_or_default()
                    } else {
                        exec.validate_config(&config)
                    }
                })
                .await
                .map_err(|e| CallError::Transport {
                    plugin: self.plugin.clone(),
                    reason: format!("plugin panicked: {e}"),
                })
            }
            Kind::Worker(c) => {
                let body = serde_json::to_vec(config).unwrap_or_default();
                let r: ConfigResult = c.call(Method::POST, path, Some(body), Some(c.control_timeout)).await?;
                Ok(r.violations)
            }
        }
    }

    /// Runs one call and returns its output.
    pub async fn execute(&self, input: Value) -> Result<Value, CallError> {
        let _activity = self.begin();
        match &*self.kind {
            Kind::InProcess { exec, calls } => {
                let id = uuid::Uuid::new_v4().to_string();
                let flag = register(calls, &id);
                let exec = Arc::clone(exec);
                let r = tokio::task::spawn_blocking(move || exec.execute(input, &CallContext::with(flag, None))).await;
                unregister(calls, &id);
                match r {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => Err(exec_error(&self.plugin, e)),
                    Err(e) => Err(exec_error(
                        &self.plugin,
                        ExecError::Failed(format!("the plugin panicked: {e}")),
                    )),
                }
            }
            Kind::Worker(c) => {
                let body = serde_json::to_vec(&ExecuteRequest {
                    input,
                    request_id: None,
                })
                .unwrap_or_default();
                let r: ExecuteResponse = c.call(Method::POST, paths::EXECUTE, Some(body), None).await?;
                Ok(r.output)
            }
        }
    }

    /// Starts a streaming call: progress and log events as they come, then
    /// the result. `request_id` (generated when `None`) names it for cancel.
    pub async fn execute_streaming(&self, input: Value, request_id: Option<String>) -> Result<CallStream, CallError> {
        let request_id = request_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let activity = self.begin();
        let (tx, rx) = mpsc::channel(256);
        match &*self.kind {
            Kind::InProcess { exec, calls } => {
                let flag = register(calls, &request_id);
                let exec = Arc::clone(exec);
                let calls = Arc::clone(calls);
                let id = request_id.clone();
                let sink_tx = tx.clone();
                let sink_flag = Arc::clone(&flag);
                tokio::spawn(async move {
                    let r = tokio::task::spawn_blocking(move || {
                        let ctx = CallContext::with(
                            flag,
                            Some(Box::new(move |ev| {
                                if sink_tx.blocking_send(Ok(ev)).is_err() {
                                    sink_flag.store(true, Ordering::SeqCst);
                                }
                            })),
                        );
                        exec.execute(input, &ctx)
                    })
                    .await;
                    unregister(&calls, &id);
                    let last = match r {
                        Ok(Ok(output)) => StreamEvent::Result { output },
                        Ok(Err(e)) => StreamEvent::Error { error: e.to_info() },
                        Err(e) => StreamEvent::Error {
                            error: ExecError::Failed(format!("the plugin panicked: {e}")).to_info(),
                        },
                    };
                    let _ = tx.send(Ok(last)).await;
                });
            }
            Kind::Worker(c) => {
                let body = serde_json::to_vec(&ExecuteRequest {
                    input,
                    request_id: Some(request_id.clone()),
                })
                .unwrap_or_default();
                let resp = c.send_streaming(paths::EXECUTE_STREAM, body).await?;
                let plugin = self.plugin.clone();
                tokio::spawn(read_ndjson(plugin, resp.into_body(), tx));
            }
        }
        Ok(CallStream {
            request_id,
            rx,
            _activity: activity,
        })
    }

    /// Asks the plugin to cancel call `request_id`; `Ok(false)` when no such
    /// call is running.
    pub async fn cancel(&self, request_id: &str) -> Result<bool, CallError> {
        match &*self.kind {
            Kind::InProcess { calls, .. } => {
                let flag = calls.lock().unwrap_or_else(|e| e.into_inner()).get(request_id).cloned();
                if let Some(f) = &flag {
                    f.store(true, Ordering::SeqCst);
                }
                Ok(flag.is_some())
            }
            Kind::Worker(c) => {
                let body = serde_json::to_vec(&CancelRequest {
                    request_id: request_id.to_owned(),
                })
                .unwrap_or_default();
                let r: CancelResponse = c
                    .call(Method::POST, paths::CANCEL, Some(body), Some(c.control_timeout))
                    .await?;
                Ok(r.cancelled)
            }
        }
    }

    /// Fetches the worker's manifest and checks it against what the host
    /// expects: protocol version, name, version (when given) and schema
    /// (when given; compared as canonical JSON).
    pub async fn verify(&self, name: &str, version: Option<&str>, schema: Option<&Value>) -> Result<(), CallError> {
        let m = self.manifest().await?;
        self.check_manifest(&m, name, version, schema)
    }

    /// Checks a manifest the worker sent by other means (its readiness
    /// notification) as [`verify`](Self::verify) checks a fetched one.
    pub fn check_manifest(
        &self,
        m: &WorkerManifest,
        name: &str,
        version: Option<&str>,
        schema: Option<&Value>,
    ) -> Result<(), CallError> {
        let mismatch = |reason: String| CallError::Mismatch {
            plugin: self.plugin.clone(),
            reason,
        };
        plugboard_protocol::check_version(m.protocol_version).map_err(mismatch)?;
        if m.name != name {
            return Err(mismatch(format!(
                "name: plugin.toml says {name:?}, the worker says {:?}",
                m.name
            )));
        }
        if let (Some(want), Some(got)) = (version, m.version.as_deref())
            && want != got
        {
            return Err(mismatch(format!(
                "version: plugin.toml says {want}, the worker says {got}"
            )));
        }
        if let Some(want) = schema
            && canonical(want) != canonical(&m.config_schema)
        {
            return Err(mismatch(format!(
                "config schema: plugin.toml's hashes to {:016x}, the worker's to {:016x}",
                hash(want),
                hash(&m.config_schema)
            )));
        }
        Ok(())
    }
}

fn canonical(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sort(&m[k]))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    sort(v).to_string()
}

fn hash(v: &Value) -> u64 {
    // FNV-1a over the canonical form: stable across runs and platforms.
    canonical(v)
        .bytes()
        .fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

fn register(calls: &Calls, id: &str) -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    calls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.to_owned(), Arc::clone(&flag));
    flag
}

fn unregister(calls: &Calls, id: &str) {
    calls.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
}

async fn read_ndjson(
    plugin: String,
    mut body: hyper::body::Incoming,
    tx: mpsc::Sender<Result<StreamEvent, CallError>>,
) {
    let mut buf: Vec<u8> = Vec::new();
    let mut finished = false;
    loop {
        let frame = match tokio::time::timeout(Duration::from_secs(24 * 3600), body.frame()).await {
            Ok(Some(Ok(f))) => f,
            Ok(Some(Err(e))) => {
                let _ = tx
                    .send(Err(CallError::Transport {
                        plugin: plugin.clone(),
                        reason: format!("the worker closed the stream mid-call (it may have crashed): {e}"),
                    }))
                    .await;
                return;
            }
            Ok(None) | Err(_) => break,
        };
        let Ok(data) = frame.into_data() else { continue };
        buf.extend_from_slice(&data);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let line = &line[..line.len() - 1];
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let ev = serde_json::from_slice::<StreamEvent>(line).map_err(|e| CallError::InvalidResponse {
                plugin: plugin.clone(),
                reason: format!("bad stream event: {e}"),
            });
            if matches!(ev, Ok(StreamEvent::Result { .. }) | Ok(StreamEvent::Error { .. })) {
                finished = true;
            }
            if tx.send(ev).await.is_err() {
                return;
            }
        }
        if buf.len() > MAX_EVENT_BYTES {
            let _ = tx
                .send(Err(CallError::InvalidResponse {
                    plugin: plugin.clone(),
                    reason: format!("a stream event is longer than {MAX_EVENT_BYTES} bytes"),
                }))
                .await;
            return;
        }
    }
    if !finished {
        let _ = tx
            .send(Err(CallError::Transport {
                plugin,
                reason: "the stream ended without a result (the worker may have crashed)".into(),
            }))
            .await;
    }
}

/// `Remote` errors with this code mean the call was cancelled.
pub fn is_cancelled(e: &CallError) -> bool {
    e.code() == Some(ErrorCode::Cancelled)
}
