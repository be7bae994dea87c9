//! The supervisor: starts subprocess and conda workers until ready, stops
//! their whole trees, watches for crashes, restarts by policy, and keeps the
//! ledger true at every step.
//!
//! Order matters for "zero orphans": the ledger row is written before the
//! spawn, the process carries its row's marker, it gets a parent-death
//! signal and its own process group, and the host is a child subreaper, so
//! whatever happens to the host its workers' processes can be found and
//! ended. Every lifecycle step has a timeout that escalates to SIGKILL.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use plugboard_core::{CapabilityError, Lifecycle, Plugin, PluginMetadata};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::watch;

use crate::client::{Target, WorkerClient};
use crate::error::HostError;
use crate::handle::PluginHandle;
use crate::launch;
use crate::ledger::{HostRecord, Intent, Ledger, MARKER_ENV};
use crate::logs::RotatingLog;
use crate::manifest::{Manifest, Ready, RestartPolicy};
use crate::paths::DataDir;
use crate::probe;
use crate::tree::{self, TreeSpec};

/// The env var that tells a worker where to serve the protocol.
pub const LISTEN_ENV: &str = "PLUGBOARD_LISTEN";
/// The env var that tells a worker its plugin id.
pub const PLUGIN_ID_ENV: &str = "PLUGBOARD_PLUGIN_ID";

const STDERR_TAIL: usize = 20;
const MAX_LINE: usize = 64 * 1024;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Pids of live worker processes owned by a `Child` handle somewhere in this
/// process; the zombie reaper must leave them to their handle.
fn worker_pids() -> MutexGuard<'static, HashSet<u32>> {
    static PIDS: OnceLock<Mutex<HashSet<u32>>> = OnceLock::new();
    lock(PIDS.get_or_init(Default::default))
}

/// True when `pid` is a worker whose `Child` handle will wait for it.
pub fn is_worker_pid(pid: u32) -> bool {
    worker_pids().contains(&pid)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere; the data is still whole.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Spawned, not ready yet.
    Starting,
    /// Ready.
    Running,
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
    /// True while the worker has (or is getting) a process.
    pub fn is_active(self) -> bool {
        matches!(self, RunState::Starting | RunState::Running | RunState::Stopping)
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Starting => "starting",
            RunState::Running => "running",
            RunState::Stopping => "stopping",
            RunState::Stopped => "stopped",
            RunState::Exited => "exited",
            RunState::Crashed => "crashed",
            RunState::Failed => "failed",
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExitInfo {
    /// Exit code, when it exited.
    pub code: Option<i32>,
    /// Signal number, when one ended it.
    pub signal: Option<i32>,
}

impl ExitInfo {
    fn from_status(s: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        ExitInfo {
            code: s.code(),
            signal: s.signal(),
        }
    }

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

/// A worker's state as reported to clients.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerStatus {
    /// The plugin.
    pub plugin_id: String,
    /// Where it is in its life.
    pub state: RunState,
    /// The worker's pid while it has one.
    pub pid: Option<u32>,
    /// Its start time (clock ticks since boot).
    pub pid_start_time: Option<u64>,
    /// Its ledger row.
    pub resource_id: Option<i64>,
    /// The protocol socket the worker was told to serve on.
    pub listen: Option<PathBuf>,
    /// Its log file.
    pub log_path: PathBuf,
    /// When the current process was spawned (ms since epoch).
    pub started_at_ms: Option<i64>,
    /// When it became ready (ms since epoch).
    pub ready_at_ms: Option<i64>,
    /// Restarts by policy so far.
    pub restarts: u32,
    /// How the last process ended.
    pub last_exit: Option<ExitInfo>,
    /// The last start error, when it failed.
    pub error: Option<String>,
}

struct WorkerState {
    state: RunState,
    pid: Option<u32>,
    pid_start_time: Option<u64>,
    resource_id: Option<i64>,
    marker: Option<String>,
    listen: Option<PathBuf>,
    started_at_ms: Option<i64>,
    ready_at_ms: Option<i64>,
    restarts: u32,
    last_exit: Option<ExitInfo>,
    error: Option<String>,
    stdin: Option<ChildStdin>,
    exit_rx: Option<watch::Receiver<Option<ExitInfo>>>,
    generation: u64,
    token: Option<String>,
    handle: Option<PluginHandle>,
}

struct Worker {
    manifest: Arc<Manifest>,
    /// Config applied after every (re)start of a protocol worker.
    config: Option<Value>,
    state: Mutex<WorkerState>,
    log: Arc<Mutex<RotatingLog>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    log_path: PathBuf,
}

impl Worker {
    fn status(&self) -> WorkerStatus {
        let s = lock(&self.state);
        WorkerStatus {
            plugin_id: self.manifest.unique_id(),
            state: s.state,
            pid: s.pid,
            pid_start_time: s.pid_start_time,
            resource_id: s.resource_id,
            listen: s.listen.clone(),
            log_path: self.log_path.clone(),
            started_at_ms: s.started_at_ms,
            ready_at_ms: s.ready_at_ms,
            restarts: s.restarts,
            last_exit: s.last_exit,
            error: s.error.clone(),
        }
    }

    fn tree_spec(&self) -> TreeSpec {
        let s = lock(&self.state);
        TreeSpec {
            root: s.pid.map(|p| (p, s.pid_start_time)),
            pgid: s.pid,
            marker: s.marker.clone(),
        }
    }

    fn grace(&self) -> Duration {
        Duration::from_secs_f64(self.manifest.stop_grace_s)
    }
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
        }
    }
}

struct Inner {
    cfg: SupervisorConfig,
    ledger: Mutex<Ledger>,
    host: HostRecord,
    workers: Mutex<HashMap<String, Arc<Worker>>>,
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
            .finish()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Supervisor {
    /// Opens the ledger in the data dir, records this process as a host and
    /// makes it a child subreaper.
    pub fn new(cfg: SupervisorConfig) -> Result<Supervisor, HostError> {
        cfg.data.ensure().map_err(|source| HostError::Io {
            op: "create data dir",
            path: cfg.data.root().to_path_buf(),
            source,
        })?;
        if let Err(e) = tree::become_subreaper() {
            tracing::warn!(error = %e, "cannot become a child subreaper; orphans of workers go to init");
        }
        let ledger = Ledger::open(&cfg.data.ledger_path())?;
        let host = ledger.register_current_host()?;
        Ok(Supervisor {
            inner: Arc::new(Inner {
                cfg,
                ledger: Mutex::new(ledger),
                host,
                workers: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// This host's ledger record.
    pub fn host(&self) -> &HostRecord {
        &self.inner.host
    }

    /// The data dir.
    pub fn data_dir(&self) -> &DataDir {
        &self.inner.cfg.data
    }

    /// Runs `f` with the ledger (locked: `f` must not call back into the
    /// supervisor).
    pub fn with_ledger<T>(&self, f: impl FnOnce(&mut Ledger) -> T) -> T {
        f(&mut lock(&self.inner.ledger))
    }

    /// Starts `manifest`'s worker and waits until it is ready (or fails,
    /// leaving nothing running).
    pub async fn start(&self, manifest: Arc<Manifest>) -> Result<WorkerStatus, HostError> {
        self.start_with_config(manifest, None).await
    }

    /// Starts a worker like [`start`](Self::start) and, for protocol workers,
    /// applies `config` once it is ready, and again after every restart by
    /// policy; a config the worker refuses fails the start.
    pub async fn start_with_config(
        &self,
        manifest: Arc<Manifest>,
        config: Option<Value>,
    ) -> Result<WorkerStatus, HostError> {
        let id = manifest.unique_id();
        let worker = {
            let mut workers = lock(&self.inner.workers);
            if let Some(w) = workers.get(&id) {
                let mut old = lock(&w.state);
                if old.state.is_active() {
                    return Err(HostError::AlreadyRunning {
                        plugin: id,
                        state: old.state.as_str().into(),
                    });
                }
                // A restart by policy may be pending on the old worker: this
                // start supersedes it.
                old.generation += 1;
            }
            let log_path = self.inner.cfg.data.log_path(&id);
            let w = Arc::new(Worker {
                manifest: Arc::clone(&manifest),
                config,
                state: Mutex::new(WorkerState {
                    state: RunState::Starting,
                    pid: None,
                    pid_start_time: None,
                    resource_id: None,
                    marker: None,
                    listen: None,
                    started_at_ms: None,
                    ready_at_ms: None,
                    restarts: 0,
                    last_exit: None,
                    error: None,
                    stdin: None,
                    exit_rx: None,
                    generation: 0,
                    token: None,
                    handle: None,
                }),
                log: Arc::new(Mutex::new(RotatingLog::new(
                    &log_path,
                    self.inner.cfg.log_max_bytes,
                    self.inner.cfg.log_keep,
                ))),
                stderr_tail: Arc::new(Mutex::new(VecDeque::new())),
                log_path,
            });
            workers.insert(id, Arc::clone(&w));
            w
        };
        spawn_attempt(Arc::clone(&self.inner), worker).await
    }

    /// Stops a plugin's worker: stdin closed, SIGTERM to its whole tree, the
    /// manifest's grace period, SIGKILL to what is left. Returns when nothing
    /// of the tree is alive.
    pub async fn stop(&self, unique_id: &str) -> Result<WorkerStatus, HostError> {
        let worker = self.worker(unique_id)?;
        stop_worker(&self.inner, &worker, RunState::Stopped).await?;
        Ok(worker.status())
    }

    /// Stops (if running) and starts again.
    pub async fn restart(&self, manifest: Arc<Manifest>) -> Result<WorkerStatus, HostError> {
        let id = manifest.unique_id();
        let mut config = None;
        if let Ok(w) = self.worker(&id) {
            config = w.config.clone();
            if lock(&w.state).state.is_active() {
                stop_worker(&self.inner, &w, RunState::Stopped).await?;
            }
        }
        self.start_with_config(manifest, config).await
    }

    fn worker(&self, unique_id: &str) -> Result<Arc<Worker>, HostError> {
        lock(&self.inner.workers)
            .get(unique_id)
            .cloned()
            .ok_or_else(|| HostError::NotRunning {
                plugin: unique_id.to_owned(),
            })
    }

    /// The status of one plugin's worker, if it was ever started by this host.
    pub fn status(&self, unique_id: &str) -> Option<WorkerStatus> {
        self.worker(unique_id).ok().map(|w| w.status())
    }

    /// The status of every worker this host started.
    pub fn statuses(&self) -> Vec<WorkerStatus> {
        let workers: Vec<Arc<Worker>> = lock(&self.inner.workers).values().cloned().collect();
        let mut out: Vec<WorkerStatus> = workers.iter().map(|w| w.status()).collect();
        out.sort_by(|a, b| a.plugin_id.cmp(&b.plugin_id));
        out
    }

    /// The handle to call a running protocol worker.
    pub fn handle(&self, unique_id: &str) -> Result<PluginHandle, HostError> {
        let w = self.worker(unique_id)?;
        let s = lock(&w.state);
        match (&s.handle, s.state) {
            (Some(h), RunState::Running) => Ok(h.clone()),
            (_, RunState::Running) => Err(HostError::NoProtocol {
                plugin: unique_id.to_owned(),
                ready: w.manifest.ready.to_string(),
            }),
            _ => Err(HostError::NotRunning {
                plugin: unique_id.to_owned(),
            }),
        }
    }

    /// The live pids of a plugin's worker tree.
    pub fn tree_pids(&self, unique_id: &str) -> Vec<u32> {
        match self.worker(unique_id) {
            Ok(w) if lock(&w.state).state.is_active() => tree::collect(&w.tree_spec()),
            _ => Vec::new(),
        }
    }

    /// The plugin's metadata with `spawned_pids` and `conda_env_name` as they
    /// are right now.
    pub fn metadata(&self, manifest: &Manifest) -> PluginMetadata {
        let mut m = manifest.metadata();
        m.spawned_pids = self.tree_pids(&manifest.unique_id());
        m
    }

    /// A core plugin view of a started worker, exposing the lifecycle
    /// capability.
    pub fn plugin(&self, unique_id: &str) -> Option<SupervisedPlugin> {
        let worker = self.worker(unique_id).ok()?;
        Some(SupervisedPlugin {
            inner: Arc::downgrade(&self.inner),
            worker,
        })
    }

    /// Stops every worker (concurrently) and marks this host ended in the
    /// ledger.
    pub async fn shutdown(&self) -> Result<(), HostError> {
        let workers: Vec<Arc<Worker>> = lock(&self.inner.workers).values().cloned().collect();
        let mut tasks = Vec::new();
        for w in workers {
            if lock(&w.state).state.is_active() {
                let inner = Arc::clone(&self.inner);
                tasks.push(tokio::spawn(
                    async move { stop_worker(&inner, &w, RunState::Stopped).await },
                ));
            }
        }
        let mut first_err = None;
        for t in tasks {
            if let Ok(Err(e)) = t.await {
                first_err.get_or_insert(e);
            }
        }
        lock(&self.inner.ledger).end_host(self.inner.host.id)?;
        first_err.map_or(Ok(()), Err)
    }
}

fn spawn_attempt(inner: Arc<Inner>, worker: Arc<Worker>) -> BoxFuture<Result<WorkerStatus, HostError>> {
    Box::pin(async move {
        match try_spawn(&inner, &worker).await {
            Ok(()) => Ok(worker.status()),
            Err(e) => {
                let mut s = lock(&worker.state);
                s.state = RunState::Failed;
                s.error = Some(e.to_string());
                s.pid = None;
                Err(e)
            }
        }
    })
}

async fn try_spawn(inner: &Arc<Inner>, worker: &Arc<Worker>) -> Result<(), HostError> {
    let m = &worker.manifest;
    let id = m.unique_id();
    let resolved = launch::resolve(m, inner.cfg.conda_tool.as_deref(), &inner.cfg.launch_vars)?;
    let details = json!({
        "command": resolved.program.to_string_lossy(),
        "args": resolved.args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>(),
        "cwd": resolved.cwd,
        "log": worker.log_path,
        "mode": m.execution_mode,
    });
    let (rid, marker) = {
        let ledger = lock(&inner.ledger);
        let rid = ledger.intent(
            inner.host.id,
            &Intent {
                kind: "process",
                plugin_id: &id,
                cost_per_hour: m.resources.estimated_cost_per_hour,
                details,
            },
        )?;
        (rid, ledger.marker(rid))
    };
    let listen = inner.cfg.data.run_dir().join(format!("{rid}.sock"));
    if listen.as_os_str().len() >= 104 {
        lock(&inner.ledger).end(rid, "failed", None, None)?;
        return Err(HostError::SocketPathTooLong { path: listen });
    }
    let _ = std::fs::remove_file(&listen);
    lock(&worker.stderr_tail).clear();
    let token = new_token();

    let mut cmd = Command::new(&resolved.program);
    cmd.args(&resolved.args)
        .envs(&resolved.env)
        .env(MARKER_ENV, &marker)
        .env(LISTEN_ENV, &listen)
        .env(PLUGIN_ID_ENV, &id)
        .env(plugboard_protocol::TOKEN_ENV, &token)
        .current_dir(&resolved.cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe system calls (prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(std::io::Error::from)?;
            // The host may have died between fork and prctl.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                nix::libc::_exit(1);
            }
            Ok(())
        });
    }
    let mut child: Child = match cmd.spawn() {
        Ok(c) => c,
        Err(source) => {
            lock(&inner.ledger).end(rid, "failed", None, None)?;
            return Err(HostError::Spawn {
                plugin: id,
                command: resolved.program.to_string_lossy().into(),
                source,
            });
        }
    };
    let pid = child.id().unwrap_or(0);
    worker_pids().insert(pid);
    let start_time = plugboard_core::process::read_process(pid).map(|p| p.start_time);
    // From here on the process exists: a ledger failure is logged, never
    // returned, so the process stays tracked (and its marker finds it).
    if let Err(e) = lock(&inner.ledger).set_process(rid, pid, start_time.unwrap_or(0)) {
        tracing::error!(plugin = %id, error = %e, "cannot record the worker's pid");
    }

    let (ready_tx, ready_rx) = watch::channel(false);
    let regex = match &m.ready {
        Ready::LogLine(r) => regex::Regex::new(r).ok(),
        _ => None,
    };
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump(
            out,
            "out",
            Arc::clone(&worker.log),
            None,
            regex.clone(),
            ready_tx.clone(),
        ));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump(
            err,
            "err",
            Arc::clone(&worker.log),
            Some(Arc::clone(&worker.stderr_tail)),
            regex,
            ready_tx,
        ));
    }
    let (exit_tx, exit_rx) = watch::channel(None);
    let generation = {
        let mut s = lock(&worker.state);
        s.state = RunState::Starting;
        s.pid = Some(pid);
        s.pid_start_time = start_time;
        s.resource_id = Some(rid);
        s.marker = Some(marker);
        s.listen = Some(listen.clone());
        s.started_at_ms = Some(crate::ledger::now_ms());
        s.ready_at_ms = None;
        s.error = None;
        s.stdin = child.stdin.take();
        s.exit_rx = Some(exit_rx.clone());
        s.generation += 1;
        s.token = Some(token.clone());
        s.handle = None;
        s.generation
    };
    tokio::spawn(monitor(
        Arc::downgrade(inner),
        Arc::clone(worker),
        child,
        exit_tx,
        generation,
    ));

    let ready = match wait_ready(m, &listen, &token, exit_rx, ready_rx, &worker.stderr_tail).await {
        Ok(()) if m.ready == Ready::Protocol => {
            // A protocol worker must be the plugin its manifest describes.
            let handle = PluginHandle::worker(WorkerClient::new(
                &id,
                Target::Unix(listen.clone()),
                Some(token.clone()),
            ));
            let declared = (m.config_schema != default_schema()).then_some(&m.config_schema);
            match handle.verify(&m.name, m.version.as_deref(), declared).await {
                Ok(()) => match apply_config(&handle, &id, worker.config.as_ref()).await {
                    Ok(()) => {
                        lock(&worker.state).handle = Some(handle);
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
                Err(source) => Err(HostError::Worker { source }),
            }
        }
        other => other,
    };
    match ready {
        Ok(()) => {
            if let Err(e) = lock(&inner.ledger).set_status(rid, "running") {
                tracing::error!(plugin = %id, error = %e, "cannot record the worker as running");
            }
            let mut s = lock(&worker.state);
            if s.generation == generation && s.state == RunState::Starting {
                s.state = RunState::Running;
                s.ready_at_ms = Some(crate::ledger::now_ms());
            }
            Ok(())
        }
        Err(e) => {
            // Leave nothing behind: end the tree, then record the failure.
            lock(&worker.state).state = RunState::Stopping;
            let spec = worker.tree_spec();
            let _ = tokio::task::spawn_blocking(move || tree::terminate(&spec, Duration::from_millis(500), true)).await;
            let exit = wait_exit(worker, Duration::from_secs(5)).await;
            if let Err(le) =
                lock(&inner.ledger).end(rid, "failed", exit.and_then(|x| x.code), exit.and_then(|x| x.signal))
            {
                tracing::error!(plugin = %id, error = %le, "cannot record the failed start");
            }
            let _ = std::fs::remove_file(&listen);
            Err(e)
        }
    }
}

async fn wait_ready(
    m: &Manifest,
    listen: &Path,
    token: &str,
    exit_rx: watch::Receiver<Option<ExitInfo>>,
    ready_rx: watch::Receiver<bool>,
    stderr_tail: &Mutex<VecDeque<String>>,
) -> Result<(), HostError> {
    let id = m.unique_id();
    let deadline = Instant::now() + Duration::from_secs_f64(m.ready_timeout_s);
    let attempt = Duration::from_millis(500);
    let mut last_error: Option<String> = None;
    let mut pause = Duration::from_micros(500);
    let tail = || lock(stderr_tail).iter().cloned().collect::<Vec<_>>();
    loop {
        let ok = match &m.ready {
            Ready::None => true,
            Ready::LogLine(_) => *ready_rx.borrow(),
            Ready::Protocol => match probe::http_get_unix(listen, probe::HEALTH_PATH, Some(token), attempt).await {
                Ok(200) => true,
                Ok(code) => {
                    last_error = Some(format!("health answered HTTP {code}"));
                    false
                }
                Err(e) => {
                    last_error = Some(e.to_string());
                    false
                }
            },
            Ready::HttpGet(url) => match probe::http_get_url(url, attempt).await {
                Ok(code) if (200..300).contains(&code) => true,
                Ok(code) => {
                    last_error = Some(format!("{url} answered HTTP {code}"));
                    false
                }
                Err(e) => {
                    last_error = Some(e.to_string());
                    false
                }
            },
            Ready::Tcp(addr) => match probe::tcp(addr, attempt).await {
                Ok(()) => true,
                Err(e) => {
                    last_error = Some(e.to_string());
                    false
                }
            },
        };
        if ok {
            return Ok(());
        }
        let exited = *exit_rx.borrow();
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
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = exit_wait.changed() => {}
            _ = ready_wait.changed() => {}
        }
    }
}

async fn pump<R: AsyncRead + Unpin>(
    stream: R,
    tag: &'static str,
    log: Arc<Mutex<RotatingLog>>,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
    ready: Option<regex::Regex>,
    ready_tx: watch::Sender<bool>,
) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut reader).take(MAX_LINE as u64).read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        if let Err(e) = lock(&log).write_line(&format!("{tag}| {line}")) {
            tracing::warn!(error = %e, "cannot write plugin log");
        }
        if let Some(t) = &tail {
            let mut t = lock(t);
            if t.len() == STDERR_TAIL {
                t.pop_front();
            }
            t.push_back(line.to_owned());
        }
        if let Some(re) = &ready
            && re.is_match(line)
        {
            let _ = ready_tx.send(true);
        }
    }
}

use tokio::io::AsyncReadExt as _;

async fn monitor(
    inner: Weak<Inner>,
    worker: Arc<Worker>,
    mut child: Child,
    exit_tx: watch::Sender<Option<ExitInfo>>,
    generation: u64,
) {
    let status = child.wait().await;
    let pid = child.id();
    let exit = match status {
        Ok(s) => ExitInfo::from_status(s),
        Err(_) => ExitInfo {
            code: None,
            signal: None,
        },
    };
    if let Some(p) = pid {
        worker_pids().remove(&p);
    }
    {
        let mut s = lock(&worker.state);
        if let Some(p) = s.pid {
            worker_pids().remove(&p);
        }
        s.last_exit = Some(exit);
    }
    let _ = exit_tx.send(Some(exit));
    let crashed = !exit.success();
    let new_state = if crashed { RunState::Crashed } else { RunState::Exited };
    // Claim the transition: only an exit nobody asked for, of the current
    // generation, of a worker that was running (a failed start is recorded by
    // the starter, a stop by the stopper).
    let Some(inner) = inner.upgrade() else { return };
    let restarts = {
        let mut s = lock(&worker.state);
        if s.generation != generation || s.state != RunState::Running {
            return;
        }
        s.state = new_state;
        s.stdin = None;
        s.handle = None;
        // Recorded under the state lock, so whoever sees the new state also
        // finds the ledger row ended. Leftover descendants are ended below;
        // should the host die first, gc finds them by their marker.
        if let Some(rid) = s.resource_id {
            let status = if crashed { "crashed" } else { "exited" };
            if let Err(e) = lock(&inner.ledger).end(rid, status, exit.code, exit.signal) {
                tracing::error!(error = %e, "cannot record worker exit");
            }
        }
        s.restarts
    };
    // End what the worker left behind.
    let spec = worker.tree_spec();
    let grace = worker.grace();
    let _ = tokio::task::spawn_blocking(move || tree::terminate(&spec, grace, true)).await;
    {
        let mut s = lock(&worker.state);
        if s.generation == generation {
            s.pid = None;
        }
    }
    tracing::warn!(plugin = %worker.manifest.unique_id(), %exit, "worker exited");
    let r = &worker.manifest.restart;
    let wanted = match r.policy {
        RestartPolicy::Never => false,
        RestartPolicy::OnFailure => crashed,
        RestartPolicy::Always => true,
    };
    if !wanted || restarts >= r.max_restarts {
        return;
    }
    let backoff = Duration::from_millis(r.backoff_ms.saturating_mul(1u64 << restarts.min(16))).min(MAX_BACKOFF);
    tokio::time::sleep(backoff).await;
    {
        let mut s = lock(&worker.state);
        if s.generation != generation || s.state != new_state {
            return; // started or stopped by someone meanwhile
        }
        s.restarts += 1;
        s.state = RunState::Starting;
    }
    if let Err(e) = spawn_attempt(inner, Arc::clone(&worker)).await {
        tracing::error!(plugin = %worker.manifest.unique_id(), error = %e, "restart failed");
    }
}

async fn wait_exit(worker: &Worker, limit: Duration) -> Option<ExitInfo> {
    let rx = lock(&worker.state).exit_rx.clone();
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

async fn stop_worker(inner: &Arc<Inner>, worker: &Arc<Worker>, final_state: RunState) -> Result<(), HostError> {
    let (spec, rid, listen) = {
        let mut s = lock(&worker.state);
        if !s.state.is_active() {
            return Err(HostError::NotRunning {
                plugin: worker.manifest.unique_id(),
            });
        }
        s.state = RunState::Stopping;
        s.stdin = None; // closing stdin tells SDK workers to exit
        (
            TreeSpec {
                root: s.pid.map(|p| (p, s.pid_start_time)),
                pgid: s.pid,
                marker: s.marker.clone(),
            },
            s.resource_id,
            s.listen.clone(),
        )
    };
    if let Some(rid) = rid {
        lock(&inner.ledger).set_status(rid, "stopping")?;
    }
    let grace = worker.grace();
    let outcome = tokio::task::spawn_blocking(move || tree::terminate(&spec, grace, true))
        .await
        .unwrap_or_default();
    if !outcome.survivors.is_empty() {
        tracing::error!(plugin = %worker.manifest.unique_id(), survivors = ?outcome.survivors, "processes survived SIGKILL");
    }
    let exit = wait_exit(worker, Duration::from_secs(5)).await;
    if let Some(rid) = rid {
        lock(&inner.ledger).end(
            rid,
            final_state.as_str(),
            exit.and_then(|x| x.code),
            exit.and_then(|x| x.signal),
        )?;
    }
    if let Some(l) = listen {
        let _ = std::fs::remove_file(l);
    }
    let mut s = lock(&worker.state);
    s.state = final_state;
    s.pid = None;
    if exit.is_some() {
        s.last_exit = exit;
    }
    Ok(())
}

/// A started worker seen as a core [`Plugin`] with the lifecycle capability.
pub struct SupervisedPlugin {
    inner: Weak<Inner>,
    worker: Arc<Worker>,
}

impl Plugin for SupervisedPlugin {
    fn lifecycle(&self) -> Option<&dyn Lifecycle> {
        Some(self)
    }
}

impl Lifecycle for SupervisedPlugin {
    fn execution_mode(&self) -> plugboard_core::ExecutionMode {
        self.worker.manifest.execution_mode
    }

    fn child_pids(&self) -> Vec<u32> {
        if lock(&self.worker.state).state.is_active() {
            tree::collect(&self.worker.tree_spec())
        } else {
            Vec::new()
        }
    }

    fn managed_resources(&self) -> Map<String, Value> {
        let st = self.worker.status();
        let mut m = Map::new();
        m.insert("state".into(), json!(st.state));
        m.insert("pids".into(), json!(self.child_pids()));
        m.insert("pid".into(), json!(st.pid));
        m.insert("pgid".into(), json!(st.pid));
        m.insert("resource_id".into(), json!(st.resource_id));
        m.insert("marker".into(), json!(lock(&self.worker.state).marker.clone()));
        m.insert("listen".into(), json!(st.listen));
        m.insert("log_path".into(), json!(st.log_path));
        if let Some(env) = &self.worker.manifest.launch.conda_env {
            m.insert("conda_env".into(), json!(env));
        }
        m
    }

    fn force_cleanup(&self) -> Result<(), CapabilityError> {
        let (spec, rid) = {
            let mut s = lock(&self.worker.state);
            if !s.state.is_active() {
                return Ok(());
            }
            s.state = RunState::Stopping;
            s.stdin = None;
            (
                TreeSpec {
                    root: s.pid.map(|p| (p, s.pid_start_time)),
                    pgid: s.pid,
                    marker: s.marker.clone(),
                },
                s.resource_id,
            )
        };
        let outcome = tree::terminate(&spec, Duration::ZERO, true);
        if let (Some(inner), Some(rid)) = (self.inner.upgrade(), rid) {
            lock(&inner.ledger).end(rid, "stopped", None, None)?;
        }
        let mut s = lock(&self.worker.state);
        s.state = RunState::Stopped;
        s.pid = None;
        if outcome.survivors.is_empty() {
            Ok(())
        } else {
            Err(format!("processes survived SIGKILL: {:?}", outcome.survivors).into())
        }
    }
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
