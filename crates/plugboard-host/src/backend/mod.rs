//! The backend seam: one module per execution mode, one trait for all.
//!
//! A backend owns the *resource* (what it creates, observes and destroys: a
//! process tree, a container, an instance, a remote process, a service it
//! only points at). The supervisor owns the *worker* (intent in the ledger,
//! readiness, the manifest check, the saved config, restarts, logs, the
//! call handle, cost). Everything a new mode needs is here; nothing in the
//! supervisor knows what a pid or a container is.
//!
//! | mode | module | marker | "gone" means |
//! | --- | --- | --- | --- |
//! | subprocess, conda_env | [`process`] | `PLUGBOARD_RESOURCE_ID` env var, cgroup name | tree and cgroup empty |
//! | external | [`external`] | none (not owned) | never ended by plugboard |
//! | docker | `docker` (feature `docker`) | container labels | removed (404) |
//! | remote_ssh | [`remote_ssh`] | `PLUGBOARD_RESOURCE_ID` env var on the remote machine | no remote process carries the marker |
//! | cloud_vm, cloud_gpu, cloud_cpu, cloud_container | [`cloud`] | EC2 tag / Lambda instance name / RunPod pod name / Vast.ai label | the provider says `terminated` or not found |

pub mod cloud;
#[cfg(feature = "docker")]
pub mod docker;
pub mod external;
pub mod notice;
pub mod process;
pub mod remote_ssh;
pub mod serverless;
#[cfg(feature = "test-backend")]
pub mod testing;

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use plugboard_core::ExecutionMode;
use serde::Serialize;
use serde_json::Value;
use tokio::io::AsyncRead;
use tokio::sync::watch;

use crate::endpoint::Endpoint;
use crate::error::HostError;
use crate::ledger::{PriceSource, ResourceHandle, ResourceKind};
use crate::manifest::Manifest;

/// The environment variable that tells a worker this host starts where to
/// serve the protocol.
pub const LISTEN_ENV: &str = "PLUGBOARD_LISTEN";
/// The environment variable that tells a worker its plugin id.
pub const PLUGIN_ID_ENV: &str = "PLUGBOARD_PLUGIN_ID";

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExitInfo {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal number, when one ended it.
    pub signal: Option<i32>,
}

impl ExitInfo {
    /// True for exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => write!(f, "killed by signal {s}"),
            _ => f.write_str("unknown exit"),
        }
    }
}

/// What a backend decided from a manifest, before anything exists.
pub struct Plan {
    /// What it will create.
    pub kind: ResourceKind,
    /// False when plugboard will not own it (never stopped, never reaped).
    pub owned: bool,
    /// Price per hour and where it came from, when known.
    pub price: Option<(f64, PriceSource)>,
    /// What the ledger records about it (never secrets).
    pub details: Value,
    /// What a start is checked against budgets with.
    pub budget: BudgetHints,
    /// The backend's own launch spec.
    pub spec: Box<dyn Any + Send + Sync>,
}

/// How a launch can spend, for the budget check before it (and the
/// governor while it runs), beyond [`Plan::price`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BudgetHints {
    /// The most it can bill per hour when that is known before launch but
    /// the price is not: a provider's quote capped by the manifest's
    /// `max_price_per_hour`. The start check projects with the higher of
    /// this and the price.
    pub worst_rate: Option<f64>,
    /// True when it is charged per call (serverless jobs): it counts
    /// against budgets with no hourly rate, and is refused once one is
    /// spent.
    pub charges_per_call: bool,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("kind", &self.kind)
            .field("owned", &self.owned)
            .field("details", &self.details)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// What the supervisor hands a backend to launch with.
#[derive(Debug, Clone)]
pub struct LaunchContext {
    /// The plugin.
    pub plugin_id: String,
    /// Its ledger row (already written).
    pub resource_id: i64,
    /// The marker the resource must carry.
    pub marker: String,
    /// Where a worker this host starts should serve the protocol.
    pub listen: PathBuf,
    /// The bearer token a worker this host starts must require.
    pub token: String,
    /// Told the moment a resource that takes a provider's time exists
    /// (before it is ready), so the ledger holds its handle through the
    /// rest of the launch.
    pub created: Option<CreatedHook>,
    /// Records a per-call charge in the ledger (a serverless job's cost).
    pub charge: Option<ChargeHook>,
}

/// Records a charge against the resource being launched: USD and what it
/// was for.
#[derive(Clone)]
pub struct ChargeHook(pub Arc<ChargeFn>);

/// What a [`ChargeHook`] calls.
pub type ChargeFn = dyn Fn(f64, &str) + Send + Sync;

impl ChargeHook {
    /// Records `usd` for `what`.
    pub fn charge(&self, usd: f64, what: &str) {
        (self.0)(usd, what)
    }
}

impl std::fmt::Debug for ChargeHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChargeHook")
    }
}

/// Called by a backend when its resource exists, before the launch ends:
/// the handle, and whether billing starts now (providers that bill from
/// creation).
#[derive(Clone)]
pub struct CreatedHook(pub Arc<CreatedFn>);

/// What a [`CreatedHook`] calls.
pub type CreatedFn = dyn Fn(&ResourceHandle, bool) + Send + Sync;

impl CreatedHook {
    /// Reports `handle` (see [`CreatedHook`]).
    pub fn report(&self, handle: &ResourceHandle, bills_now: bool) {
        (self.0)(handle, bills_now)
    }
}

impl std::fmt::Debug for CreatedHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CreatedHook")
    }
}

/// A stream of the resource's output, pumped into the plugin's log.
pub struct OutputStream {
    /// `out` or `err`.
    pub tag: &'static str,
    /// The bytes.
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
}

/// A resource that now exists.
pub struct Launched {
    /// What identifies it (goes into the ledger).
    pub handle: ResourceHandle,
    /// Where its worker answers.
    pub endpoint: Endpoint,
    /// The bearer token to send to it, if any.
    pub token: Option<String>,
    /// Output to pump into the plugin's log.
    pub output: Vec<OutputStream>,
    /// Becomes ready when the worker notifies that it is (see
    /// `PLUGBOARD_NOTIFY_FD`), with the manifest it sent, for backends that
    /// offer it.
    pub notify: Option<watch::Receiver<notice::Notice>>,
    /// Resolves when the resource ends by itself, for backends that see
    /// that as an event; others are observed by [`Backend::observe`].
    pub exit: Option<watch::Receiver<Option<ExitInfo>>>,
    /// Held while the resource should live (a process's stdin); dropped on
    /// stop, which tells workers to exit.
    pub keepalive: Option<Box<dyn Any + Send + Sync>>,
    /// Becomes `Some(reason)` when the backend sees the resource become
    /// unreachable (a dropped SSH connection), for backends that see that
    /// as an event: the plugin turns `lost` at once instead of at the next
    /// probe; [`Backend::observe`] then tells whether it came back.
    pub lost: Option<watch::Receiver<Option<String>>>,
    /// The provider's price quote, when it gave one at launch: it replaces
    /// the plan's estimate in the ledger (what accrued before keeps the
    /// old price).
    pub price: Option<(f64, PriceSource)>,
}

/// What identifies a resource to stop, observe or sweep: its marker, and
/// its handle once it had one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// The ledger row, when known.
    pub resource_id: Option<i64>,
    /// The marker it carries.
    pub marker: String,
    /// Its handle, if the row got one.
    pub handle: Option<ResourceHandle>,
    /// What the ledger row recorded at intent (the plan's details): where
    /// to look for a resource with no handle yet (an SSH destination, a
    /// region…).
    #[serde(skip)]
    pub details: Value,
    /// What a sweep just now found carrying the marker: `Some(false)` lets a
    /// backend skip searching by marker again (gc over many rows); `None`
    /// when unknown.
    #[serde(skip)]
    pub marker_found: Option<bool>,
}

/// A confirmed stop.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stopped {
    /// What was ended, in the backend's words (pids, container ids…).
    pub ended: Vec<String>,
    /// What needed force after the grace period.
    pub forced: Vec<String>,
    /// A recorded identity that now belongs to something else and was left alone.
    pub identity_reused: Option<String>,
}

/// How a resource looks right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// Running and answering.
    Alive,
    /// Ended by itself.
    Exited(ExitInfo),
    /// Not answering, but not known to be gone: never restarted.
    Lost(String),
    /// The backend cannot tell.
    Unknown,
}

/// A resource found by its marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Marked {
    /// The ledger row its marker names.
    pub resource_id: i64,
    /// What it is, in the backend's words (`pid 42`…).
    pub description: String,
}

/// Errors of a backend, each naming what failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The resource could not be confirmed gone.
    #[error("{what} is not confirmed gone: {reason}")]
    NotGone {
        /// The resource.
        what: String,
        /// Why.
        reason: String,
    },
    /// Talking to the engine/provider failed.
    #[error("{backend}: {reason}")]
    Unavailable {
        /// The backend.
        backend: &'static str,
        /// Why.
        reason: String,
    },
}

/// One execution mode's way to create, watch and destroy resources.
///
/// # Contract
///
/// * [`plan`](Backend::plan) reads only the manifest (and the host's launch
///   variables): no side effects, and every error names the manifest and
///   the key at fault.
/// * [`launch`](Backend::launch) is called only after the ledger intent row
///   exists; whatever it creates carries `ctx.marker` in the backend's own
///   form (env var, label, tag, name) *from the moment it exists*. If the
///   launch future is dropped or fails half-way, anything created is still
///   findable by [`sweep`](Backend::sweep) and ended by
///   [`stop`](Backend::stop) with a marker-only target.
/// * [`stop`](Backend::stop) is graceful then forced after `grace`, is
///   idempotent (stopping what is already gone succeeds), accepts a target
///   with no handle (marker only), never touches a resource whose recorded
///   identity now belongs to something else, and returns `Ok` only once the
///   resource is confirmed gone.
/// * [`observe`](Backend::observe) never changes anything.
/// * [`sweep`](Backend::sweep) lists what carries a marker of `ledger_id`,
///   whatever its row says; gc decides what to end. A backend that can
///   look only in some places reports what it found there and logs the
///   places it could not reach; it fails only when it could look nowhere.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The backend's name, stored in the ledger (`process`, `external`…).
    fn name(&self) -> &'static str;

    /// Reads the manifest's `[launch]` for this backend.
    fn plan(&self, manifest: &Manifest, vars: &BTreeMap<String, String>) -> Result<Plan, HostError>;

    /// Creates the resource (see the contract).
    async fn launch(&self, plan: &Plan, ctx: &LaunchContext) -> Result<Launched, HostError>;

    /// Ends the resource (see the contract).
    async fn stop(&self, target: &Target, grace: Duration) -> Result<Stopped, BackendError>;

    /// How the resource looks now.
    async fn observe(&self, target: &Target) -> Observation;

    /// True when creating the resource takes a provider's time (cloud
    /// instances, pods): the plugin shows `provisioning` meanwhile, bounded
    /// by the manifest's `provision_timeout_s`.
    fn provisions(&self) -> bool {
        false
    }

    /// True when the supervisor should probe the running worker
    /// periodically (backends with no exit event).
    fn polls(&self) -> bool {
        false
    }

    /// What carries a marker of `ledger_id`. `recorded` holds the details
    /// this backend's rows recorded (live ones and those ended lately), for
    /// backends that must know where to look (remote machines, regions);
    /// local backends ignore it.
    async fn sweep(&self, ledger_id: &str, recorded: &[Value]) -> Result<Vec<Marked>, BackendError>;

    /// Live details of a resource for status pages (pids, cgroup…).
    fn inspect(&self, target: &Target) -> Value {
        let _ = target;
        Value::Null
    }
}

/// The backends a host can use, by name and by execution mode.
#[derive(Clone, Default)]
pub struct Backends {
    by_name: HashMap<&'static str, Arc<dyn Backend>>,
    by_mode: HashMap<ExecutionMode, &'static str>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.by_name.keys().collect();
        names.sort();
        f.debug_struct("Backends").field("names", &names).finish()
    }
}

impl Backends {
    /// The backends built into this binary, with default settings; cloud
    /// provider keys from the environment only.
    pub fn builtin(conda_tool: Option<PathBuf>) -> Backends {
        Backends::builtin_with_secrets(conda_tool, None)
    }

    /// [`builtin`](Self::builtin), with cloud provider keys looked up in
    /// the environment, then in the secret store file `secrets`.
    pub fn builtin_with_secrets(conda_tool: Option<PathBuf>, secrets: Option<PathBuf>) -> Backends {
        let mut b = Backends::default();
        let process: Arc<dyn Backend> = Arc::new(process::ProcessBackend::new(conda_tool));
        b.register(process, &[ExecutionMode::Subprocess, ExecutionMode::CondaEnv]);
        b.register(Arc::new(external::ExternalBackend), &[ExecutionMode::ExternalService]);
        #[cfg(feature = "docker")]
        b.register(Arc::new(docker::DockerBackend), &[ExecutionMode::Docker]);
        b.register(
            Arc::new(remote_ssh::RemoteSshBackend::new()),
            &[ExecutionMode::RemoteSsh],
        );
        b.register(
            Arc::new(cloud::CloudBackend::new(Arc::new(
                cloud::Providers::from_env_and_store(secrets.clone()),
            ))),
            &[
                ExecutionMode::CloudVm,
                ExecutionMode::CloudGpu,
                ExecutionMode::CloudCpu,
                ExecutionMode::CloudContainer,
            ],
        );
        b.register(
            Arc::new(serverless::ServerlessBackend::new(cloud::key_lookup(secrets))),
            &[ExecutionMode::CloudServerless],
        );
        b
    }

    /// Adds (or replaces) a backend for `modes`.
    pub fn register(&mut self, backend: Arc<dyn Backend>, modes: &[ExecutionMode]) {
        let name = backend.name();
        self.by_name.insert(name, backend);
        for m in modes {
            self.by_mode.insert(*m, name);
        }
    }

    /// The backend for a mode, or an error naming the mode and what is missing.
    pub fn for_mode(&self, plugin: &str, mode: ExecutionMode) -> Result<Arc<dyn Backend>, HostError> {
        self.by_mode
            .get(&mode)
            .and_then(|n| self.by_name.get(n))
            .cloned()
            .ok_or_else(|| HostError::UnsupportedMode {
                plugin: plugin.to_owned(),
                mode,
                missing: missing_for(mode).into(),
            })
    }

    /// The backend called `name` (as stored in the ledger).
    pub fn by_name(&self, name: &str) -> Option<Arc<dyn Backend>> {
        self.by_name.get(name).cloned()
    }

    /// Every backend, by name.
    pub fn all(&self) -> Vec<Arc<dyn Backend>> {
        let mut v: Vec<_> = self.by_name.values().cloned().collect();
        v.sort_by_key(|b| b.name());
        v
    }
}

/// What a mode without a backend lacks, for its error message.
fn missing_for(mode: ExecutionMode) -> &'static str {
    match mode {
        ExecutionMode::InProcess => "in-process plugins are registered in code, not started by a backend",
        ExecutionMode::Docker => "no docker backend is built into this plugboard",
        ExecutionMode::RemoteSsh => "no remote_ssh backend is built into this plugboard",
        ExecutionMode::Kubernetes => "no kubernetes backend is built into this plugboard",
        _ => "no cloud backend is built into this plugboard",
    }
}
