//! The supervisor: starts plugins' workers through their mode's backend
//! until ready, stops them, watches them, restarts them by policy, and
//! keeps the ledger true at every step.
//!
//! What is generic lives here; what a resource *is* lives in its backend
//! ([`crate::backend`]). One plugin has one slot for its whole life in the
//! host, and every lifecycle operation on it (start, stop, restart, a
//! restart by policy) holds the slot's operation lock, so at most one
//! worker per plugin can exist. A stop does not wait behind a start: it
//! cancels it, and the start ends what it created and records a stop. A
//! stop also cancels a restart that is waiting out its backoff.
//!
//! * [`status`]: the state model and the status clients see;
//! * [`restart`]: the pure restart decision (backoff);
//! * `start`, `ready`, `monitor`, `stop`, `output`: the acts;
//! * [`lifecycle`]: a started worker as a core [`Lifecycle`](plugboard_core::Lifecycle) plugin.

pub mod deadline;
mod governor;
pub mod lifecycle;
mod monitor;
mod output;
mod ready;
pub mod restart;
mod start;
pub mod status;
mod stop;

use std::any::Any;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use plugboard_core::{PluginMetadata, RemoteResource};
use serde_json::Value;
use tokio::sync::watch;

pub use lifecycle::SupervisedPlugin;
pub use status::{ExitInfo, RunState, WorkerStatus};

use crate::backend::{Backend, Backends, Target};
use crate::budget::{Budget, BudgetStore};
use crate::endpoint::Endpoint;
use crate::error::HostError;
use crate::handle::{Activity, PluginHandle};
use crate::ledger::{HostRecord, Ledger, ResourceHandle};
use crate::logs::RotatingLog;
use crate::manifest::Manifest;
use crate::paths::DataDir;

pub use crate::backend::{LISTEN_ENV, PLUGIN_ID_ENV};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere; the data is still whole.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Supervisor settings.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// The data dir (ledger, logs, sockets).
    pub data: DataDir,
    /// The conda-compatible tool, if configured.
    pub conda_tool: Option<PathBuf>,
    /// Log rotation size.
    pub log_max_bytes: u64,
    /// Rotated logs kept.
    pub log_keep: usize,
    /// Values for `${NAME}` in manifests' launch tables (e.g. `PLUGBOARD_EXE`).
    pub launch_vars: BTreeMap<String, String>,
    /// The backends to use (default: [`Backends::builtin`]).
    pub backends: Option<Backends>,
    /// Reap every zombie child this process adopts (a process that is only
    /// a host, such as `plugboard serve`); otherwise only those of workers'
    /// process groups.
    pub reap_all_orphans: bool,
    /// How often budgets and `[lifecycle]` limits are enforced (default 1 s;
    /// `PLUGBOARD_GOVERNOR_TICK_MS` overrides it).
    pub governor_tick: Duration,
}

impl SupervisorConfig {
    /// Defaults over a data dir.
    pub fn new(data: DataDir) -> Self {
        SupervisorConfig {
            data,
            conda_tool: None,
            log_max_bytes: crate::logs::DEFAULT_MAX_BYTES,
            log_keep: crate::logs::DEFAULT_KEEP,
            launch_vars: BTreeMap::new(),
            backends: None,
            reap_all_orphans: false,
            governor_tick: std::env::var("PLUGBOARD_GOVERNOR_TICK_MS")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|ms| *ms > 0)
                .map_or(Duration::from_secs(1), Duration::from_millis),
        }
    }
}

/// The resource a worker has now.
pub(crate) struct Live {
    pub rid: i64,
    pub marker: String,
    pub backend: Arc<dyn Backend>,
    pub owned: bool,
    pub handle: Option<ResourceHandle>,
    pub details: Value,
    pub endpoint: Option<Endpoint>,
    pub listen: PathBuf,
    pub keepalive: Option<Box<dyn Any + Send + Sync>>,
    pub exit_rx: Option<watch::Receiver<Option<ExitInfo>>>,
}

impl Live {
    pub fn target(&self) -> Target {
        Target {
            resource_id: Some(self.rid),
            marker: self.marker.clone(),
            handle: self.handle.clone(),
            details: self.details.clone(),
            marker_found: None,
        }
    }
}

pub(crate) struct SlotState {
    pub manifest: Arc<Manifest>,
    pub config: Option<Value>,
    pub state: RunState,
    /// Bumped by every start and stop: a monitor or a pending restart of an
    /// older generation does nothing.
    pub generation: u64,
    /// Set while a start is in progress; a stop sends `true`.
    pub cancel: Option<watch::Sender<bool>>,
    pub restart_pending: bool,
    pub live: Option<Live>,
    pub backend_name: Option<String>,
    /// The ledger row of the current or last resource.
    pub resource_id: Option<i64>,
    pub started_at_ms: Option<i64>,
    pub ready_at_ms: Option<i64>,
    pub restarts: u32,
    pub last_exit: Option<ExitInfo>,
    pub error: Option<String>,
    pub note: Option<String>,
    pub handle: Option<PluginHandle>,
    /// The deadline last written to the ledger, and why.
    pub deadline: Option<(i64, String)>,
    /// Set while the governor stops the plugin (why).
    pub stopping_for: Option<String>,
    /// The current launch is charged per call (it counts against budgets
    /// with no hourly rate).
    pub charges_per_call: bool,
}

/// One plugin's place in the host, for the host's whole life.
pub(crate) struct Slot {
    pub id: String,
    /// Serialises start, stop, restart and restarts by policy.
    pub op: tokio::sync::Mutex<()>,
    pub st: Mutex<SlotState>,
    pub log: Arc<Mutex<RotatingLog>>,
    pub stderr_tail: Arc<Mutex<VecDeque<String>>>,
    pub log_path: PathBuf,
    /// Calls in flight and the last call, counted by its handles.
    pub activity: Arc<Activity>,
}

impl Slot {
    pub fn st(&self) -> MutexGuard<'_, SlotState> {
        lock(&self.st)
    }

    pub fn status(&self) -> WorkerStatus {
        let s = self.st();
        let live = s.live.as_ref();
        let handle = live.and_then(|l| l.handle.clone());
        let (pid, pid_start_time) = match &handle {
            Some(ResourceHandle::Process { pid, start_time, .. }) => (Some(*pid), Some(*start_time)),
            _ => (None, None),
        };
        WorkerStatus {
            plugin_id: self.id.clone(),
            state: s.state,
            backend: s.backend_name.clone(),
            resource: handle,
            endpoint: live.and_then(|l| l.endpoint.as_ref()).map(ToString::to_string),
            pid,
            pid_start_time,
            resource_id: live.map(|l| l.rid).or(s.resource_id),
            listen: live
                .filter(|l| matches!(l.endpoint, Some(Endpoint::Unix(_))))
                .map(|l| l.listen.clone()),
            log_path: self.log_path.clone(),
            started_at_ms: s.started_at_ms,
            ready_at_ms: s.ready_at_ms,
            restarts: s.restarts,
            restart_pending: s.restart_pending,
            last_exit: s.last_exit,
            error: s.error.clone(),
            note: s.note.clone(),
            stderr_tail: lock(&self.stderr_tail).iter().cloned().collect(),
        }
    }

    /// Live details of the active resource from its backend (`Null` when
    /// nothing is active).
    pub fn inspect(&self) -> Value {
        let (backend, target) = {
            let s = self.st();
            match s.live.as_ref().filter(|_| s.state.is_active()) {
                Some(l) => (Arc::clone(&l.backend), l.target()),
                None => return Value::Null,
            }
        };
        backend.inspect(&target)
    }

    /// The live pids the backend reports for the active resource.
    pub fn pids(&self) -> Vec<u32> {
        self.inspect()
            .get("pids")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|p| p.as_u64().map(|p| p as u32)).collect())
            .unwrap_or_default()
    }

    pub fn grace(&self) -> Duration {
        Duration::from_secs_f64(self.st().manifest.stop_grace_s)
    }
}

pub(crate) struct Inner {
    pub cfg: SupervisorConfig,
    pub backends: Backends,
    pub ledger: Mutex<Ledger>,
    pub host: HostRecord,
    pub slots: Mutex<HashMap<String, Arc<Slot>>>,
    pub budgets: BudgetStore,
    pub last_budgets: Mutex<Vec<Budget>>,
    pub budget_status: Mutex<Vec<crate::budget::Status>>,
    pub governor_started: std::sync::atomic::AtomicBool,
}

/// Runs plugins' workers. Cheap to clone; all clones share the workers.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("data", &self.inner.cfg.data)
            .field("host", &self.inner.host)
            .field("backends", &self.inner.backends)
            .finish()
    }
}

impl Supervisor {
    /// Opens the ledger in the data dir, records this process as a host and
    /// makes it a child subreaper.
    pub fn new(cfg: SupervisorConfig) -> Result<Supervisor, HostError> {
        cfg.data.ensure().map_err(|source| HostError::Io {
            op: "create data dir",
            path: cfg.data.root().to_path_buf(),
            source,
        })?;
        if let Err(e) = crate::tree::become_subreaper() {
            tracing::warn!(error = %e, "cannot become a child subreaper; orphans of workers go to init");
        }
        crate::zombies::start_reaper(cfg.reap_all_orphans);
        let ledger = Ledger::open(&cfg.data.ledger_path())?;
        let host = ledger.register_current_host()?;
        let backends = cfg
            .backends
            .clone()
            .unwrap_or_else(|| Backends::builtin_with_secrets(cfg.conda_tool.clone(), Some(cfg.data.secrets_path())));
        let budgets = BudgetStore::new(cfg.data.budgets_path());
        let inner = Arc::new(Inner {
            cfg,
            backends,
            ledger: Mutex::new(ledger),
            host,
            slots: Mutex::new(HashMap::new()),
            budgets,
            last_budgets: Mutex::new(Vec::new()),
            budget_status: Mutex::new(Vec::new()),
            governor_started: std::sync::atomic::AtomicBool::new(false),
        });
        governor::ensure_started(&inner);
        Ok(Supervisor { inner })
    }

    /// Every budget's status as of the governor's last tick (empty before
    /// the first, or with no budgets).
    pub fn budget_status(&self) -> Vec<crate::budget::Status> {
        lock(&self.inner.budget_status).clone()
    }

    /// Runs one round of budget and lifecycle enforcement now (the
    /// governor does every `governor_tick`).
    pub fn govern_now(&self) {
        governor::tick_once(&self.inner);
    }

    /// This host's ledger record.
    pub fn host(&self) -> &HostRecord {
        &self.inner.host
    }

    /// The data dir.
    pub fn data_dir(&self) -> &DataDir {
        &self.inner.cfg.data
    }

    /// The backends this supervisor uses.
    pub fn backends(&self) -> &Backends {
        &self.inner.backends
    }

    /// Runs `f` with the ledger (locked: `f` must not call back into the
    /// supervisor).
    pub fn with_ledger<T>(&self, f: impl FnOnce(&mut Ledger) -> T) -> T {
        f(&mut lock(&self.inner.ledger))
    }

    fn slot_for(&self, manifest: &Arc<Manifest>) -> Arc<Slot> {
        let id = manifest.unique_id();
        let mut slots = lock(&self.inner.slots);
        Arc::clone(slots.entry(id.clone()).or_insert_with(|| {
            let log_path = self.inner.cfg.data.log_path(&id);
            Arc::new(Slot {
                id,
                op: tokio::sync::Mutex::new(()),
                st: Mutex::new(SlotState {
                    manifest: Arc::clone(manifest),
                    config: None,
                    state: RunState::Stopped,
                    generation: 0,
                    cancel: None,
                    restart_pending: false,
                    live: None,
                    backend_name: None,
                    resource_id: None,
                    started_at_ms: None,
                    ready_at_ms: None,
                    restarts: 0,
                    last_exit: None,
                    error: None,
                    note: None,
                    handle: None,
                    deadline: None,
                    stopping_for: None,
                    charges_per_call: false,
                }),
                log: Arc::new(Mutex::new(RotatingLog::new(
                    &log_path,
                    self.inner.cfg.log_max_bytes,
                    self.inner.cfg.log_keep,
                ))),
                stderr_tail: Arc::new(Mutex::new(VecDeque::new())),
                log_path,
                activity: Arc::new(Activity::default()),
            })
        }))
    }

    fn slot(&self, unique_id: &str) -> Result<Arc<Slot>, HostError> {
        lock(&self.inner.slots)
            .get(unique_id)
            .cloned()
            .ok_or_else(|| HostError::NotRunning {
                plugin: unique_id.to_owned(),
            })
    }

    /// Starts `manifest`'s worker and waits until it is ready (or fails,
    /// leaving nothing running).
    pub async fn start(&self, manifest: Arc<Manifest>) -> Result<WorkerStatus, HostError> {
        self.start_with_config(manifest, None).await
    }

    /// Starts a worker like [`start`](Self::start) and, for protocol workers,
    /// applies `config` once it is ready, and again after every restart by
    /// policy; a config the worker refuses fails the start. A start waits
    /// for any stop or restart of the same plugin in progress, and
    /// supersedes a restart by policy that is waiting out its backoff.
    pub async fn start_with_config(
        &self,
        manifest: Arc<Manifest>,
        config: Option<Value>,
    ) -> Result<WorkerStatus, HostError> {
        governor::ensure_started(&self.inner);
        let slot = self.slot_for(&manifest);
        let _op = slot.op.lock().await;
        stop::cancel_pending_restart(&slot);
        start::start_locked(&self.inner, &slot, manifest, config, false).await
    }

    /// Stops a plugin's worker: a start in progress is cancelled (and
    /// recorded as stopped), a pending restart by policy is cancelled, the
    /// resource is stopped by its backend (for processes: stdin closed,
    /// SIGTERM to the whole tree and cgroup, the manifest's grace, SIGKILL
    /// to what is left). Returns once the backend confirmed it gone.
    pub async fn stop(&self, unique_id: &str) -> Result<WorkerStatus, HostError> {
        let slot = self.slot(unique_id)?;
        stop::stop(&self.inner, &slot).await?;
        Ok(slot.status())
    }

    /// Stops (if running) and starts again, as one operation: concurrent
    /// restarts run one after the other, each leaving exactly one worker.
    pub async fn restart(&self, manifest: Arc<Manifest>) -> Result<WorkerStatus, HostError> {
        self.restart_with_config(manifest, None).await
    }

    /// [`restart`](Self::restart) with a new config (`None` keeps the one in force).
    pub async fn restart_with_config(
        &self,
        manifest: Arc<Manifest>,
        config: Option<Value>,
    ) -> Result<WorkerStatus, HostError> {
        let slot = self.slot_for(&manifest);
        let _op = slot.op.lock().await;
        stop::cancel_pending_restart(&slot);
        match stop::stop_locked(&self.inner, &slot, false).await {
            Ok(()) | Err(HostError::NotRunning { .. }) => {}
            Err(e) => return Err(e),
        }
        let config = config.or_else(|| slot.st().config.clone());
        start::start_locked(&self.inner, &slot, manifest, config, false).await
    }

    /// The status of one plugin's worker, if it was ever started by this host.
    pub fn status(&self, unique_id: &str) -> Option<WorkerStatus> {
        self.slot(unique_id).ok().map(|s| s.status())
    }

    /// The status of every worker this host started.
    pub fn statuses(&self) -> Vec<WorkerStatus> {
        let slots: Vec<Arc<Slot>> = lock(&self.inner.slots).values().cloned().collect();
        let mut out: Vec<WorkerStatus> = slots.iter().map(|s| s.status()).collect();
        out.sort_by(|a, b| a.plugin_id.cmp(&b.plugin_id));
        out
    }

    /// The handle to call a running protocol worker.
    pub fn handle(&self, unique_id: &str) -> Result<PluginHandle, HostError> {
        let slot = self.slot(unique_id)?;
        let s = slot.st();
        match (&s.handle, s.state) {
            (Some(h), RunState::Running) => Ok(h.clone()),
            (_, RunState::Running) => Err(HostError::NoProtocol {
                plugin: unique_id.to_owned(),
                ready: s.manifest.ready.to_string(),
            }),
            (_, RunState::Lost) => Err(HostError::Lost {
                plugin: unique_id.to_owned(),
                reason: s.note.clone().unwrap_or_default(),
            }),
            _ => Err(HostError::NotRunning {
                plugin: unique_id.to_owned(),
            }),
        }
    }

    /// Live details of a plugin's resource from its backend (`pids`,
    /// `cgroups` for processes), `Null` when nothing is active.
    pub fn inspect(&self, unique_id: &str) -> Value {
        self.slot(unique_id).map_or(Value::Null, |s| s.inspect())
    }

    /// The config applied to a plugin's worker at its last start (schema
    /// defaults filled in), while that worker is active.
    pub fn config_in_force(&self, unique_id: &str) -> Option<Value> {
        let slot = self.slot(unique_id).ok()?;
        let s = slot.st();
        if s.state.is_active() { s.config.clone() } else { None }
    }

    /// The live pids of a plugin's worker tree (empty for other modes).
    pub fn tree_pids(&self, unique_id: &str) -> Vec<u32> {
        self.slot(unique_id).map(|s| s.pids()).unwrap_or_default()
    }

    /// The plugin's metadata with its live resources filled in the seed's
    /// fields: `spawned_pids`, `container_id`, `remote_resource`.
    pub fn metadata(&self, manifest: &Manifest) -> PluginMetadata {
        let mut m = manifest.metadata();
        self.fill_metadata(&mut m);
        m
    }

    /// Fills `m`'s live fields from this host's view of the plugin.
    pub fn fill_metadata(&self, m: &mut PluginMetadata) {
        let id = m.unique_id();
        m.spawned_pids = self.tree_pids(&id);
        let Some(st) = self.status(&id).filter(|s| s.state.is_active()) else {
            return;
        };
        match &st.resource {
            Some(ResourceHandle::Container { id }) => m.container_id = Some(id.clone()),
            Some(ResourceHandle::Instance {
                provider,
                region,
                id: instance,
            }) => {
                // The backend's view (type, GPUs, address, price, raw
                // fields) when it has one; what the handle says otherwise.
                let seen = self
                    .inspect(&id)
                    .get("remote_resource")
                    .and_then(|v| serde_json::from_value::<RemoteResource>(v.clone()).ok());
                // Its status is the provider's (normalised, the raw one in
                // `metadata.raw_status`), as last observed.
                let mut r = match seen {
                    Some(r) => r,
                    None => {
                        let mut r =
                            RemoteResource::new(provider.parse().unwrap_or(plugboard_core::CloudProvider::Custom));
                        r.status = st.state.as_str().into();
                        r
                    }
                };
                r.region = Some(region.clone());
                r.instance_id = Some(instance.clone());
                r.endpoint_url = st.endpoint.clone();
                m.remote_resource = Some(Box::new(r));
            }
            Some(ResourceHandle::RemoteProcess {
                host,
                port,
                pid,
                start_time,
                boot_id,
                ..
            }) => {
                let mut r = RemoteResource::new(plugboard_core::CloudProvider::Custom);
                r.ssh_host = Some(host.clone());
                if let Some(p) = port {
                    r.ssh_port = *p;
                }
                r.metadata.insert("remote_start_time".into(), Value::from(*start_time));
                r.status = st.state.as_str().into();
                r.endpoint_url = st.endpoint.clone();
                r.metadata.insert("remote_pid".into(), Value::from(*pid));
                r.metadata.insert("boot_id".into(), Value::from(boot_id.clone()));
                m.remote_resource = Some(Box::new(r));
            }
            _ => {}
        }
    }

    /// A core plugin view of a started worker, exposing the lifecycle
    /// capability.
    pub fn plugin(&self, unique_id: &str) -> Option<SupervisedPlugin> {
        let slot = self.slot(unique_id).ok()?;
        Some(SupervisedPlugin::new(Arc::downgrade(&self.inner), slot))
    }

    /// Stops every worker (concurrently, cancelling starts and pending
    /// restarts) and marks this host ended in the ledger.
    pub async fn shutdown(&self) -> Result<(), HostError> {
        let slots: Vec<Arc<Slot>> = lock(&self.inner.slots).values().cloned().collect();
        let mut tasks = Vec::new();
        for slot in slots {
            let inner = Arc::clone(&self.inner);
            tasks.push(tokio::spawn(async move { stop::stop(&inner, &slot).await }));
        }
        let mut first_err = None;
        for t in tasks {
            match t.await {
                Ok(Ok(())) | Ok(Err(HostError::NotRunning { .. })) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(e) => {
                    first_err.get_or_insert(HostError::Internal(format!("stop task failed: {e}")));
                }
            }
        }
        lock(&self.inner.ledger).end_host(self.inner.host.id)?;
        first_err.map_or(Ok(()), Err)
    }
}

/// Applies `config` (when given) to a freshly started worker.
pub(crate) async fn apply_config(handle: &PluginHandle, id: &str, config: Option<&Value>) -> Result<(), HostError> {
    let Some(config) = config else { return Ok(()) };
    let violations = handle
        .apply_config(config)
        .await
        .map_err(|source| HostError::Worker { source })?;
    if violations.is_empty() {
        Ok(())
    } else {
        Err(HostError::Config {
            plugin: id.to_owned(),
            source: plugboard_core::ConfigError::Invalid {
                unique_id: id.to_owned(),
                violations,
            },
        })
    }
}
