//! cloud_serverless: a plugin that is an existing RunPod serverless
//! endpoint, called through the same handle as every other plugin.
//!
//! Nothing is rented, so nothing can leak: the endpoint is someone's (the
//! user's) and is never ended; the row says it is not owned. What the
//! backend starts is an *adapter* inside the host: a protocol server on the
//! plugin's usual local socket (the worker SDK's own server, so the call
//! path, readiness, the manifest check, cancellation and streaming are
//! exactly a worker's) whose executor turns a call into a RunPod job:
//! `POST /run`, then `GET /status/{job}` until it ends (or `GET
//! /stream/{job}` for streaming calls, each streamed item becoming a
//! progress or log event), `POST /cancel/{job}` when the call is cancelled
//! or its caller goes away, `GET /health` as the probe. Each finished job
//! is charged in the ledger: its reported `executionTime` × the manifest's
//! `price_per_second`.
//!
//! The key is `RUNPOD_API_KEY` (environment, then the secret store); the
//! base URL `PLUGBOARD_RUNPOD_SERVERLESS_URL` (default
//! `https://api.runpod.ai/v2`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use plugboard_core::Violation;
use plugboard_protocol::{CallContext, Capabilities, ExecError, Executor, PROTOCOL_VERSION, WorkerManifest};
use reqwest::Method;
use serde_json::{Value, json};

use super::cloud::KeyLookup;
use super::{Backend, BackendError, ChargeHook, LaunchContext, Launched, Marked, Observation, Plan, Stopped, Target};
use crate::cloud::ProviderError;
use crate::cloud::http::RestApi;
use crate::endpoint::Endpoint;
use crate::error::HostError;
use crate::ledger::{ResourceHandle, ResourceKind};
use crate::manifest::Manifest;

/// The environment variable (or secret) holding the API key.
pub const KEY_ENV: &str = "RUNPOD_API_KEY";
/// The environment variable overriding the serverless API's base URL.
pub const URL_ENV: &str = "PLUGBOARD_RUNPOD_SERVERLESS_URL";
/// RunPod's serverless API.
pub const DEFAULT_URL: &str = "https://api.runpod.ai/v2";

const KEYS: &str = "provider, endpoint_id, price_per_second, stream, job_timeout_s";

struct Spec {
    endpoint_id: String,
    price_per_second: Option<f64>,
    stream: bool,
    job_timeout: Duration,
    manifest: WorkerManifest,
}

/// The serverless backend.
pub struct ServerlessBackend {
    keys: KeyLookup,
    base: Option<String>,
    adapters: Mutex<HashMap<String, Adapter>>,
    policy: crate::cloud::retry::RetryPolicy,
}

impl std::fmt::Debug for ServerlessBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerlessBackend").finish_non_exhaustive()
    }
}

impl ServerlessBackend {
    /// A backend whose keys come from `keys`.
    pub fn new(keys: KeyLookup) -> ServerlessBackend {
        ServerlessBackend {
            keys,
            base: None,
            adapters: Mutex::new(HashMap::new()),
            policy: crate::cloud::retry::RetryPolicy::default(),
        }
    }

    /// The same backend retrying a job's status, stream and cancel calls
    /// by `policy` (429 and 5xx answers; tests shorten the waits).
    pub fn with_retry_policy(mut self, policy: crate::cloud::retry::RetryPolicy) -> ServerlessBackend {
        self.policy = policy;
        self
    }

    /// The same backend talking to `base` instead of the environment's or
    /// RunPod's URL (private endpoints, tests).
    pub fn with_base_url(mut self, base: impl Into<String>) -> ServerlessBackend {
        self.base = Some(base.into());
        self
    }

    fn api(&self) -> Result<RestApi, ProviderError> {
        let key = (self.keys)(KEY_ENV).ok_or_else(|| ProviderError::NoCredentials {
            provider: "runpod",
            hint: format!("set {KEY_ENV} in the environment or with `plugboard secret set {KEY_ENV}`"),
        })?;
        let base = self
            .base
            .clone()
            .or_else(|| std::env::var(URL_ENV).ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        RestApi::new("runpod", &base, key)
    }

    fn adapters(&self) -> std::sync::MutexGuard<'_, HashMap<String, Adapter>> {
        self.adapters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// RunPod's error bodies: `{"error": "..."}` or `{"message": "..."}`.
fn message_of(body: &Value) -> Option<String> {
    body.get("error")
        .or_else(|| body.get("message"))
        .map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))
}

/// A RunPod job's status words: finished ones, and whether they succeeded.
fn job_end(status: &str) -> Option<Result<(), &'static str>> {
    match status {
        "COMPLETED" => Some(Ok(())),
        "FAILED" => Some(Err("failed")),
        "CANCELLED" => Some(Err("cancelled")),
        "TIMED_OUT" => Some(Err("timed out")),
        _ => None,
    }
}

/// A streamed item as a protocol event: `{"progress": f, "message": s}`
/// is progress, anything else a log line.
fn stream_item(ctx: &CallContext, item: &Value) {
    let out = item.get("output").unwrap_or(item);
    match out.get("progress").and_then(Value::as_f64) {
        Some(p) => ctx.progress(p, out.get("message").and_then(Value::as_str).map(str::to_owned)),
        None => ctx.log(
            "info",
            out.as_str().map(str::to_owned).unwrap_or_else(|| out.to_string()),
        ),
    }
}

/// The executor behind the adapter: one RunPod endpoint.
struct EndpointExecutor {
    api: RestApi,
    spec: Arc<Spec>,
    runtime: tokio::runtime::Handle,
    charge: Option<ChargeHook>,
    /// Set by a stop: connections a client kept open get an error, no job.
    stopped: Arc<std::sync::atomic::AtomicBool>,
    /// How idempotent calls are retried.
    policy: crate::cloud::retry::RetryPolicy,
}

/// A running adapter: its server task and its stop flag.
struct Adapter {
    task: tokio::task::JoinHandle<()>,
    stopped: Arc<std::sync::atomic::AtomicBool>,
    socket: std::path::PathBuf,
}

impl EndpointExecutor {
    /// A call sent once: submitting a job (`/run`) is not idempotent, and
    /// a retry after a lost answer would run the job twice.
    fn call(&self, what: &str, method: Method, path: &str, body: Option<&Value>) -> Result<Value, ExecError> {
        let path = format!("/{}{path}", self.spec.endpoint_id);
        self.runtime
            .block_on(self.api.call(what, method, &path, body, message_of, false))
            .map(Option::unwrap_or_default)
            .map_err(|e| ExecError::Failed(e.to_string()))
    }

    /// An idempotent call (a job's status, stream or cancel), retried on
    /// 429 and 5xx answers with backoff: one bad answer must not abandon
    /// a job that goes on running and billing.
    fn call_retrying(&self, what: &str, method: Method, path: &str) -> Result<Value, ExecError> {
        let path = format!("/{}{path}", self.spec.endpoint_id);
        self.runtime
            .block_on(crate::cloud::retry::with_retries(&self.policy, what, || {
                self.api.call(what, method.clone(), &path, None, message_of, false)
            }))
            .map(Option::unwrap_or_default)
            .map_err(|e| ExecError::Failed(e.to_string()))
    }

    /// Cancels `job` on RunPod and charges what it ran before the cancel
    /// (best effort: the provider bills it either way).
    fn cancel_and_charge(&self, job: &str) -> Result<(), ExecError> {
        let cancelled = self.call_retrying("cancelling a job", Method::POST, &format!("/cancel/{job}"));
        if let Ok(st) = self.call_retrying("reading a job's status", Method::GET, &format!("/status/{job}")) {
            self.charge_for(job, &st);
        }
        cancelled.map(|_| ())
    }

    /// Polls the job until it ends, the call is cancelled (the job is then
    /// cancelled on RunPod), or the job timeout passes.
    fn wait(&self, job: &str, ctx: &CallContext) -> Result<Value, ExecError> {
        let end = Instant::now() + self.spec.job_timeout;
        let mut every = Duration::from_millis(100);
        loop {
            if ctx.is_cancelled() || Instant::now() > end {
                let cancelled = ctx.is_cancelled();
                if let Err(e) = self.cancel_and_charge(job) {
                    tracing::error!(job, error = %e, "cannot cancel the RunPod job");
                }
                return Err(if cancelled {
                    ExecError::Cancelled
                } else {
                    ExecError::Failed(format!(
                        "RunPod job {job} did not finish within {} s (job_timeout_s); it was cancelled",
                        self.spec.job_timeout.as_secs()
                    ))
                });
            }
            let (path, what) = if self.spec.stream {
                (format!("/stream/{job}"), "reading a job's stream")
            } else {
                (format!("/status/{job}"), "reading a job's status")
            };
            let st = match self.call_retrying(what, Method::GET, &path) {
                Ok(st) => st,
                Err(e) => {
                    // The job cannot be followed any more: cancel it rather
                    // than leave it running unseen.
                    let how = match self.cancel_and_charge(job) {
                        Ok(()) => "it was cancelled".to_owned(),
                        Err(c) => format!("cancelling it failed too: {c}"),
                    };
                    return Err(ExecError::Failed(format!("{e}; RunPod job {job}: {how}")));
                }
            };
            if self.spec.stream
                && let Some(items) = st.get("stream").and_then(Value::as_array)
            {
                for item in items {
                    stream_item(ctx, item);
                }
            }
            let status = st.get("status").and_then(Value::as_str).unwrap_or("");
            if let Some(outcome) = job_end(status) {
                // The stream's last answer may not carry the output: read it.
                let st = if self.spec.stream {
                    self.call_retrying("reading a job's status", Method::GET, &format!("/status/{job}"))?
                } else {
                    st
                };
                self.charge_for(job, &st);
                return match outcome {
                    Ok(()) => Ok(st.get("output").cloned().unwrap_or(Value::Null)),
                    Err("cancelled") => Err(ExecError::Cancelled),
                    Err(how) => Err(ExecError::Failed(format!(
                        "RunPod job {job} {how}: {}",
                        st.get("error")
                            .map(|e| e.as_str().map(str::to_owned).unwrap_or_else(|| e.to_string()))
                            .unwrap_or_else(|| "no error message".into())
                    ))),
                };
            }
            std::thread::sleep(every);
            every = (every * 2).min(Duration::from_secs(2));
        }
    }

    /// Records the job's cost: reported execution time × price per second.
    fn charge_for(&self, job: &str, status: &Value) {
        let (Some(price), Some(hook)) = (self.spec.price_per_second, &self.charge) else {
            return;
        };
        let ms = status.get("executionTime").and_then(Value::as_f64).unwrap_or(0.0);
        hook.charge(price * ms / 1000.0, &format!("runpod job {job}: {ms} ms"));
    }
}

impl Executor for EndpointExecutor {
    fn manifest(&self) -> WorkerManifest {
        self.spec.manifest.clone()
    }

    /// Checked against the manifest's config schema: the endpoint itself
    /// takes no config, but a config the plugin declares invalid is
    /// refused here as it would be by any worker.
    fn validate_config(&self, config: &Value) -> Vec<Violation> {
        match plugboard_core::schema::CompiledSchema::compile(
            &self.spec.manifest.name,
            &self.spec.manifest.config_schema,
        ) {
            Ok(schema) => schema.violations(config),
            Err(e) => vec![Violation {
                pointer: String::new(),
                reason: format!("the plugin's config schema does not compile: {e}"),
            }],
        }
    }

    fn apply_config(&self, config: Value) -> Result<(), Vec<Violation>> {
        let v = self.validate_config(&config);
        if v.is_empty() { Ok(()) } else { Err(v) }
    }

    fn execute(&self, input: Value, ctx: &CallContext) -> Result<Value, ExecError> {
        if self.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ExecError::Failed("the plugin was stopped".into()));
        }
        let job = self.call(
            "submitting a job",
            Method::POST,
            "/run",
            Some(&json!({ "input": input })),
        )?;
        let id = job
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| ExecError::Failed(format!("RunPod answered /run without a job id: {job}")))?
            .to_owned();
        self.wait(&id, ctx)
    }
}

fn parse(m: &Manifest) -> Result<Spec, HostError> {
    let bad = |key: &str, reason: String| HostError::BadLaunch {
        plugin: m.unique_id(),
        manifest: m.path.clone(),
        key: key.to_owned(),
        reason,
    };
    let l = &m.launch;
    if l.command.is_some() || !l.args.is_empty() || !l.env.is_empty() || l.cwd.is_some() || l.conda_env.is_some() {
        return Err(bad(
            "command",
            format!("a serverless endpoint is not started by plugboard; its [launch] takes only {KEYS}"),
        ));
    }
    for key in l.extra.keys() {
        if !KEYS.split(", ").any(|k| k == key) {
            return Err(bad(key, format!("is not a cloud_serverless launch key ({KEYS})")));
        }
    }
    match l.extra.get("provider").and_then(|v| v.as_str()) {
        Some("runpod") => {}
        Some(other) => return Err(bad("provider", format!("{other:?} has no serverless backend (runpod)"))),
        None => {
            return Err(HostError::MissingLaunch {
                plugin: m.unique_id(),
                field: "provider",
                mode: m.execution_mode,
                manifest: m.path.clone(),
            });
        }
    }
    let endpoint_id = l
        .extra
        .get("endpoint_id")
        .and_then(|v| v.as_str())
        .ok_or_else(|| HostError::MissingLaunch {
            plugin: m.unique_id(),
            field: "endpoint_id",
            mode: m.execution_mode,
            manifest: m.path.clone(),
        })?
        .to_owned();
    if endpoint_id.is_empty()
        || !endpoint_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(bad(
            "endpoint_id",
            format!("{endpoint_id:?} is not a RunPod endpoint id"),
        ));
    }
    let price_per_second = match l.extra.get("price_per_second") {
        None => None,
        Some(v) => Some(
            v.as_float()
                .or_else(|| v.as_integer().map(|i| i as f64))
                .filter(|p| p.is_finite() && *p >= 0.0)
                .ok_or_else(|| bad("price_per_second", "must be a number of USD, 0 or more".into()))?,
        ),
    };
    let stream = match l.extra.get("stream") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| bad("stream", "must be true or false".into()))?,
    };
    let job_timeout = match l.extra.get("job_timeout_s") {
        None => Duration::from_secs(3600),
        Some(v) => v
            .as_integer()
            .filter(|s| (1..=86_400).contains(s))
            .map(|s| Duration::from_secs(s as u64))
            .ok_or_else(|| {
                bad(
                    "job_timeout_s",
                    "must be a whole number of seconds from 1 to 86400".into(),
                )
            })?,
    };
    Ok(Spec {
        manifest: WorkerManifest {
            protocol_version: PROTOCOL_VERSION,
            name: m.name.clone(),
            version: m.version.clone(),
            config_schema: m.config_schema.clone(),
            capabilities: Capabilities {
                streaming: stream,
                cancel: true,
            },
            input_example: None,
        },
        endpoint_id,
        price_per_second,
        stream,
        job_timeout,
    })
}

#[async_trait]
impl Backend for ServerlessBackend {
    fn name(&self) -> &'static str {
        "serverless"
    }

    fn plan(&self, manifest: &Manifest, _vars: &BTreeMap<String, String>) -> Result<Plan, HostError> {
        let spec = parse(manifest)?;
        Ok(Plan {
            kind: ResourceKind::Service,
            owned: false,
            price: None,
            details: json!({
                "provider": "runpod",
                "endpoint_id": spec.endpoint_id,
                "price_per_second": spec.price_per_second,
                "stream": spec.stream,
            }),
            budget: crate::backend::BudgetHints {
                worst_rate: None,
                charges_per_call: spec.price_per_second.is_some_and(|p| p > 0.0),
            },
            spec: Box::new(Arc::new(spec)),
        })
    }

    async fn launch(&self, plan: &Plan, ctx: &LaunchContext) -> Result<Launched, HostError> {
        let spec = plan
            .spec
            .downcast_ref::<Arc<Spec>>()
            .ok_or_else(|| HostError::Internal("serverless backend given another backend's plan".into()))?;
        let cloud_err = |e: ProviderError| HostError::Cloud {
            plugin: ctx.plugin_id.clone(),
            provider: "runpod".into(),
            reason: e.to_string(),
        };
        let api = self.api().map_err(cloud_err)?;
        // The endpoint must exist and answer before the plugin is "running".
        api.call(
            "checking the endpoint's health",
            Method::GET,
            &format!("/{}/health", spec.endpoint_id),
            None,
            message_of,
            false,
        )
        .await
        .map_err(cloud_err)?;
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let exec = EndpointExecutor {
            api: self.api().map_err(cloud_err)?,
            spec: Arc::clone(spec),
            runtime: tokio::runtime::Handle::current(),
            charge: ctx.charge.clone(),
            stopped: Arc::clone(&stopped),
            policy: self.policy,
        };
        let server = plugboard_worker::Server::new(
            Arc::new(exec),
            plugboard_worker::Listen::Unix(ctx.listen.clone()),
            Some(ctx.token.clone()),
        );
        let task = tokio::spawn(async move {
            if let Err(e) = server.serve().await {
                tracing::error!(error = %e, "the serverless adapter stopped");
            }
        });
        self.adapters().insert(
            ctx.marker.clone(),
            Adapter {
                task,
                stopped,
                socket: ctx.listen.clone(),
            },
        );
        Ok(Launched {
            handle: ResourceHandle::Service {
                endpoint: format!("runpod:{}", spec.endpoint_id),
            },
            endpoint: Endpoint::Unix(ctx.listen.clone()),
            token: Some(ctx.token.clone()),
            output: Vec::new(),
            notify: None,
            exit: None,
            keepalive: None,
            lost: None,
            price: None,
        })
    }

    async fn stop(&self, target: &Target, _grace: Duration) -> Result<Stopped, BackendError> {
        // The endpoint is not ours: only the adapter ends.
        if let Some(a) = self.adapters().remove(&target.marker) {
            a.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
            a.task.abort();
            let _ = std::fs::remove_file(&a.socket);
        }
        Ok(Stopped::default())
    }

    async fn observe(&self, target: &Target) -> Observation {
        let Some(endpoint) = target.details.get("endpoint_id").and_then(Value::as_str) else {
            return Observation::Unknown;
        };
        let api = match self.api() {
            Ok(a) => a,
            Err(e) => return Observation::Lost(e.to_string()),
        };
        match api
            .call(
                "checking the endpoint's health",
                Method::GET,
                &format!("/{endpoint}/health"),
                None,
                message_of,
                false,
            )
            .await
        {
            Ok(_) => Observation::Alive,
            Err(e) => Observation::Lost(e.to_string()),
        }
    }

    fn polls(&self) -> bool {
        true
    }

    async fn sweep(&self, _ledger_id: &str, _recorded: &[Value]) -> Result<Vec<Marked>, BackendError> {
        // Nothing is created: nothing can be left.
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_statuses_end_as_runpod_says() {
        assert_eq!(job_end("COMPLETED"), Some(Ok(())));
        assert_eq!(job_end("FAILED"), Some(Err("failed")));
        assert_eq!(job_end("CANCELLED"), Some(Err("cancelled")));
        assert_eq!(job_end("TIMED_OUT"), Some(Err("timed out")));
        assert_eq!(job_end("IN_QUEUE"), None);
        assert_eq!(job_end("IN_PROGRESS"), None);
    }

    #[test]
    fn error_bodies_in_both_shapes() {
        assert_eq!(message_of(&json!({"error": "bad input"})).as_deref(), Some("bad input"));
        assert_eq!(message_of(&json!({"message": "nope"})).as_deref(), Some("nope"));
        assert_eq!(message_of(&json!({"x": 1})), None);
    }
}
