//! The remote_ssh backend: a worker on another machine, started and ended
//! over SSH (see [`crate::ssh`] for why the system client, as children of
//! the host).
//!
//! The worker's stdin is its SSH channel, so when the host dies (and its
//! `ssh` children with it) the channel closes and an SDK worker exits. It
//! serves on a remote Unix socket that the connection forwards to the
//! host's usual local socket: the bearer token travels only inside SSH, and
//! readiness, the manifest check and calls work as for a subprocess. It
//! carries the ledger marker in its environment; its pid, process group,
//! start time and the machine's boot id are read back and recorded, so a
//! stop never signals a reused pid. A dropped connection makes the plugin
//! `lost` (never restarted: the remote side may still run); the next
//! observation reconnects and either re-attaches (forward restored) or
//! confirms the tree gone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

use super::notice::{self, Notice};
use super::{
    Backend, BackendError, ExitInfo, LISTEN_ENV, LaunchContext, Launched, Marked, Observation, OutputStream,
    PLUGIN_ID_ENV, Plan, Stopped, Target,
};
use crate::endpoint::Endpoint;
use crate::error::HostError;
use crate::ledger::{ResourceHandle, ResourceKind};
use crate::manifest::Manifest;
use crate::ssh::master::{spawn_owned, watch_exit};
use crate::ssh::script::{self, RootIdentity, StartSpec};
use crate::ssh::{Connections, Destination, Master, SshError};

mod plan;

pub use plan::default_remote_socket;
use plan::plan_spec;
pub(crate) use plan::{RemoteSpec, WorkerParts, expand_path, worker_parts};

/// How long a remote command of the backend's own (check, stop, sweep) may
/// take beyond its grace.
const COMMAND_LIMIT: Duration = Duration::from_secs(15);

/// A worker this host started and watches.
struct Attached {
    master: Mutex<Arc<Master>>,
    local: PathBuf,
    remote: String,
    root: RootIdentity,
    /// Why it is lost, while it is (the supervisor watches it).
    lost: watch::Sender<Option<String>>,
    /// Kept so the exit watch never reads a lost connection as an exit.
    _exit_tx: Mutex<Option<watch::Sender<Option<ExitInfo>>>>,
}

/// The remote_ssh backend.
#[derive(Default)]
pub struct RemoteSshBackend {
    conns: Arc<Connections>,
    attached: Arc<Mutex<HashMap<String, Arc<Attached>>>>,
    /// Markers whose launch ran here and had not yet started anything on
    /// the remote side: a stop of those has nothing to end.
    not_started: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for RemoteSshBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSshBackend").finish_non_exhaustive()
    }
}

impl RemoteSshBackend {
    /// A backend with its own connection pool.
    pub fn new() -> RemoteSshBackend {
        RemoteSshBackend::default()
    }

    /// The SSH connections it holds (shared with other backends that start
    /// workers over SSH).
    pub fn connections(&self) -> &Arc<Connections> {
        &self.conns
    }

    fn not_started_set(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.not_started.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn attached(&self, marker: &str) -> Option<Arc<Attached>> {
        self.attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(marker)
            .cloned()
    }
}

fn remote_err(plugin: &str, e: SshError, dest: &Destination) -> HostError {
    HostError::Remote {
        plugin: plugin.to_owned(),
        destination: dest.display(),
        reason: e.to_string(),
    }
}

fn root_of(target: &Target) -> Option<RootIdentity> {
    match &target.handle {
        Some(ResourceHandle::RemoteProcess {
            pid,
            pgid,
            start_time,
            boot_id,
            ..
        }) => Some(RootIdentity {
            pid: *pid,
            pgid: if *pgid == 0 { *pid } else { *pgid },
            start_time: *start_time,
            boot_id: boot_id.clone(),
        }),
        _ => None,
    }
}

fn remote_socket_of(target: &Target) -> String {
    target
        .details
        .get("remote_socket")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| default_remote_socket(&target.marker))
}

/// Copies `local` to `remote` (relative to the remote workdir) over `m`.
async fn upload(m: &Master, workdir: Option<&str>, local: &Path, remote: &str) -> Result<(), SshError> {
    let bytes = tokio::fs::read(local).await.map_err(|e| SshError::Remote {
        destination: m.destination().display(),
        what: format!("upload of {}", local.display()),
        detail: e.to_string(),
    })?;
    use std::os::unix::fs::PermissionsExt;
    let exec = std::fs::metadata(local).is_ok_and(|md| md.permissions().mode() & 0o111 != 0);
    let cd = workdir
        .map(|w| format!("mkdir -p {w} && cd {w} || exit 125\n", w = script::quote(w)))
        .unwrap_or_default();
    let q = script::quote(remote);
    let s = format!(
        "umask 077\n{cd}mkdir -p \"$(dirname {q})\" && cat > {q}.part && chmod {mode} {q}.part && mv -f {q}.part {q}\n",
        mode = if exec { "700" } else { "600" },
    );
    // A minute, plus a second per MiB.
    let limit = Duration::from_secs(60 + bytes.len() as u64 / (1 << 20));
    m.run_ok(&format!("upload of {}", local.display()), &s, Some(&bytes), limit)
        .await
        .map(|_| ())
}

/// Decides what a worker's ended `ssh` client means: the worker's exit, or
/// a lost connection (the remote side may still run).
async fn after_client_exit(
    exit: ExitInfo,
    master: &Arc<Master>,
    marker: &str,
    root: &RootIdentity,
) -> Result<ExitInfo, String> {
    // A remote exit status arrives as the client's; 255 is ssh's own
    // failure (or a remote signal): ask the remote side.
    if exit.code.is_some() && exit.code != Some(255) {
        return Ok(exit);
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), master.closed()).await;
    if !master.alive() {
        return Err(format!(
            "the SSH connection to {} dropped; the remote worker may still run",
            master.destination().display()
        ));
    }
    let out = master
        .run(
            "checking the worker",
            &script::check_script(marker, Some(root)),
            None,
            COMMAND_LIMIT,
        )
        .await
        .map_err(|e| e.to_string())?;
    match script::parse_check(&out.stdout) {
        Some(c) if !c.root_alive => Ok(exit),
        Some(_) => Err(format!(
            "the SSH session to the worker on {} ended while it still runs",
            master.destination().display()
        )),
        None => Err(format!("the worker check printed {:?}", out.stdout.trim())),
    }
}

#[async_trait]
impl Backend for RemoteSshBackend {
    fn name(&self) -> &'static str {
        "remote_ssh"
    }

    fn plan(&self, manifest: &Manifest, vars: &BTreeMap<String, String>) -> Result<Plan, HostError> {
        let spec = plan_spec(manifest, vars)?;
        let mut details = spec.dest.to_details();
        if let Value::Object(d) = &mut details {
            d.insert("mode".into(), json!(manifest.execution_mode));
            d.insert("command".into(), json!(spec.argv));
            d.insert("workdir".into(), json!(spec.workdir));
            if let Some(s) = &spec.remote_socket {
                d.insert("remote_socket".into(), json!(s));
            }
            d.insert(
                "upload".into(),
                json!(
                    spec.uploads
                        .iter()
                        .map(|(l, r)| format!("{}:{r}", l.display()))
                        .collect::<Vec<_>>()
                ),
            );
        }
        Ok(Plan {
            kind: ResourceKind::RemoteProcess,
            owned: true,
            price: manifest.price_estimate(),
            details,
            budget: crate::backend::BudgetHints::default(),
            spec: Box::new(spec),
        })
    }

    async fn launch(&self, plan: &Plan, ctx: &LaunchContext) -> Result<Launched, HostError> {
        let spec = plan
            .spec
            .downcast_ref::<RemoteSpec>()
            .ok_or_else(|| HostError::Internal("remote_ssh backend given another backend's plan".into()))?;
        let dest = &spec.dest;
        let plugin = ctx.plugin_id.as_str();
        self.not_started_set().insert(ctx.marker.clone());
        let master = self.conns.get(dest).await.map_err(|e| remote_err(plugin, e, dest))?;
        for (local, remote) in &spec.uploads {
            upload(&master, spec.workdir.as_deref(), local, remote)
                .await
                .map_err(|e| remote_err(plugin, e, dest))?;
        }
        let remote_sock = spec
            .remote_socket
            .clone()
            .unwrap_or_else(|| default_remote_socket(&ctx.marker));
        master
            .forward(&ctx.listen, &remote_sock)
            .await
            .map_err(|e| remote_err(plugin, e, dest))?;
        let mut env = spec.env.clone();
        env.insert(LISTEN_ENV.into(), remote_sock.clone());
        env.insert(PLUGIN_ID_ENV.into(), ctx.plugin_id.clone());
        let start = StartSpec {
            marker: ctx.marker.clone(),
            env,
            workdir: spec.workdir.clone(),
            remove_first: Some(remote_sock.clone()),
            argv: spec.argv.clone(),
            stdin_secret_env: Some(plugboard_protocol::TOKEN_ENV.into()),
            notify_env: Some(plugboard_protocol::NOTIFY_FD_ENV.into()),
        };
        // From here a remote process may exist: only a stop on the remote
        // side can tell.
        self.not_started_set().remove(&ctx.marker);
        let mut cmd = master.client();
        cmd.arg("--")
            .arg(script::sh_c(&script::start_script(&start)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (mut child, pid) = spawn_owned(&mut cmd).map_err(|e| remote_err(plugin, e, dest))?;
        let (Some(mut stdin), Some(stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(HostError::Internal("ssh client spawned without pipes".into()));
        };
        let local_exit = watch_exit(child, pid);
        let secret = format!("{}\n", ctx.token);
        if let Err(e) = stdin.write_all(secret.as_bytes()).await {
            tracing::debug!(error = %e, "the ssh client closed its stdin early");
        }
        // The wrapper's first line: the worker's identity on the remote side.
        let mut out = BufReader::new(stdout);
        let limit = dest.connect_timeout + Duration::from_secs(20);
        let started = tokio::time::timeout(limit, async {
            let mut line = String::new();
            for _ in 0..100 {
                line.clear();
                match out.read_line(&mut line).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {
                        if let Some(s) = script::parse_started(&line) {
                            return Some(s);
                        }
                        tracing::debug!(line = %line.trim_end(), "remote output before the worker started");
                    }
                }
            }
            None
        })
        .await;
        let started = match started {
            Ok(Some(s)) => s,
            failed => {
                // Nothing may be left: end whatever carries the marker.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                let mut said = String::new();
                let _ = tokio::time::timeout(Duration::from_secs(2), stderr.read_to_string(&mut said)).await;
                let _ = master.cancel_forward(&ctx.listen, &remote_sock).await;
                let why = if failed.is_err() {
                    format!("the worker did not start within {} s", limit.as_secs())
                } else {
                    format!("the worker did not start: {}", said.trim())
                };
                return Err(HostError::Remote {
                    plugin: plugin.to_owned(),
                    destination: dest.display(),
                    reason: why,
                });
            }
        };
        let root = RootIdentity {
            pid: started.pid,
            pgid: started.pgid,
            start_time: started.start_time,
            boot_id: started.boot_id.clone(),
        };
        // stdout: `READY=1` on its own line is the worker's notification
        // (its descriptor 3 is a copy of stdout); the rest is its output. A
        // `MANIFEST=` line before it is dropped, not logged (a schema's
        // defaults may be secrets), and not used: over SSH the manifest is
        // asked for through the forward, the one request that shows the
        // forward works before the plugin is called running.
        let (notify_tx, notify_rx) = watch::channel(Notice::default());
        let (mut log_w, log_r) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let mut line = Vec::new();
            let mut notified = false;
            loop {
                line.clear();
                match out.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if !notified {
                            match notice::parse_line(&line) {
                                notice::Line::Ready => {
                                    notified = true;
                                    let _ = notify_tx.send(Notice {
                                        ready: true,
                                        manifest: None,
                                    });
                                    continue;
                                }
                                notice::Line::Manifest(_) | notice::Line::BadManifest(_) => continue,
                                notice::Line::Other => {}
                            }
                        }
                        if log_w.write_all(&line).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let (exit_tx, exit_rx) = watch::channel(None);
        let (lost_tx, lost_rx) = watch::channel(None);
        let attached = Arc::new(Attached {
            master: Mutex::new(Arc::clone(&master)),
            local: ctx.listen.clone(),
            remote: remote_sock.clone(),
            root: root.clone(),
            lost: lost_tx,
            _exit_tx: Mutex::new(None),
        });
        self.attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ctx.marker.clone(), Arc::clone(&attached));
        {
            let marker = ctx.marker.clone();
            let watched = Arc::clone(&attached);
            let master = Arc::clone(&master);
            let mut local_exit = local_exit;
            tokio::spawn(async move {
                let exit = loop {
                    if let Some(x) = *local_exit.borrow_and_update() {
                        break x;
                    }
                    if local_exit.changed().await.is_err() {
                        break ExitInfo {
                            code: None,
                            signal: None,
                        };
                    }
                };
                match after_client_exit(exit, &master, &marker, &watched.root).await {
                    Ok(x) => {
                        let _ = exit_tx.send(Some(x));
                    }
                    Err(reason) => {
                        tracing::warn!(marker = %marker, %reason, "remote worker lost");
                        watched.lost.send_replace(Some(reason));
                        *watched._exit_tx.lock().unwrap_or_else(|e| e.into_inner()) = Some(exit_tx);
                    }
                }
            });
        }
        struct KeepAlive {
            _stdin: tokio::process::ChildStdin,
        }
        Ok(Launched {
            handle: ResourceHandle::RemoteProcess {
                host: dest.host.clone(),
                port: dest.port,
                user: dest.user.clone(),
                pid: started.pid,
                pgid: started.pgid,
                start_time: started.start_time,
                boot_id: started.boot_id,
            },
            endpoint: Endpoint::Unix(ctx.listen.clone()),
            token: Some(ctx.token.clone()),
            output: vec![
                OutputStream {
                    tag: "out",
                    reader: Box::new(log_r),
                },
                OutputStream {
                    tag: "err",
                    reader: Box::new(stderr),
                },
            ],
            notify: Some(notify_rx),
            exit: Some(exit_rx),
            keepalive: Some(Box::new(KeepAlive { _stdin: stdin })),
            lost: Some(lost_rx),
            price: None,
        })
    }

    async fn stop(&self, target: &Target, grace: Duration) -> Result<Stopped, BackendError> {
        let not_gone = |reason: String| BackendError::NotGone {
            what: format!("remote worker {}", target.marker),
            reason,
        };
        if target.handle.is_none() && self.not_started_set().remove(&target.marker) {
            // The launch failed before anything was started remotely.
            return Ok(Stopped::default());
        }
        let dest = Destination::from_details(&target.details).map_err(not_gone)?;
        let root = root_of(target);
        let master = self.conns.get(&dest).await.map_err(|e| not_gone(e.to_string()))?;
        let sock = remote_socket_of(target);
        let s = format!(
            "rm -f {}\n{}",
            script::quote(&sock),
            script::stop_script(&target.marker, root.as_ref(), grace)
        );
        let out = master
            .run("stopping the remote worker", &s, None, grace + COMMAND_LIMIT)
            .await
            .map_err(|e| not_gone(e.to_string()))?;
        let report = script::parse_stop(&out.stdout);
        if !report.left.is_empty() {
            return Err(not_gone(format!(
                "remote pids {:?} on {} survived SIGKILL",
                report.left,
                dest.display()
            )));
        }
        if out.code != Some(0) {
            return Err(not_gone(format!(
                "the stop script on {} ended with {:?}: {}",
                dest.display(),
                out.code,
                out.stderr.trim()
            )));
        }
        let attached = self
            .attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&target.marker);
        if let Some(a) = attached {
            let m = Arc::clone(&*a.master.lock().unwrap_or_else(|e| e.into_inner()));
            if m.alive()
                && let Err(e) = m.cancel_forward(&a.local, &a.remote).await
            {
                tracing::debug!(error = %e, "forward already gone");
            }
            let _ = std::fs::remove_file(&a.local);
        }
        let host = &dest.host;
        Ok(Stopped {
            ended: report.termed.iter().map(|p| format!("{p}@{host}")).collect(),
            forced: report.killed.iter().map(|p| format!("{p}@{host}")).collect(),
            identity_reused: None,
        })
    }

    async fn observe(&self, target: &Target) -> Observation {
        let attached = self.attached(&target.marker);
        if let Some(a) = &attached {
            let up = a.master.lock().unwrap_or_else(|e| e.into_inner()).alive();
            if up && a.lost.borrow().is_none() {
                return Observation::Alive;
            }
        }
        let dest = match Destination::from_details(&target.details) {
            Ok(d) => d,
            Err(e) => return Observation::Lost(e),
        };
        let master = match self.conns.get(&dest).await {
            Ok(m) => m,
            Err(e) => return Observation::Lost(format!("cannot reconnect: {e}")),
        };
        let root = root_of(target);
        let out = match master
            .run(
                "checking the worker",
                &script::check_script(&target.marker, root.as_ref()),
                None,
                COMMAND_LIMIT,
            )
            .await
        {
            Ok(o) => o,
            Err(e) => return Observation::Lost(e.to_string()),
        };
        match script::parse_check(&out.stdout) {
            Some(c) if c.root_alive => {
                // Re-attach: the forward lived in the old connection.
                if let Some(a) = attached {
                    if let Err(e) = master.forward(&a.local, &a.remote).await {
                        return Observation::Lost(format!("reconnected, but the forward failed: {e}"));
                    }
                    *a.master.lock().unwrap_or_else(|e| e.into_inner()) = master;
                    a.lost.send_replace(None);
                    tracing::info!(marker = %target.marker, "remote worker re-attached");
                }
                Observation::Alive
            }
            Some(_) => Observation::Exited(ExitInfo {
                code: None,
                signal: None,
            }),
            None => Observation::Lost(format!("the worker check printed {:?}", out.stdout.trim())),
        }
    }

    fn polls(&self) -> bool {
        true
    }

    async fn sweep(&self, ledger_id: &str, recorded: &[Value]) -> Result<Vec<Marked>, BackendError> {
        let mut dests: Vec<Destination> = recorded
            .iter()
            .filter_map(|d| Destination::from_details(d).ok())
            .collect();
        dests.sort_by_key(Destination::display);
        dests.dedup();
        let mut found: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        let mut failures = Vec::new();
        for dest in &dests {
            let result = async {
                let m = self.conns.get(dest).await?;
                m.run_ok("sweeping", &script::sweep_script(ledger_id), None, COMMAND_LIMIT)
                    .await
            }
            .await;
            match result {
                Ok(out) => {
                    for (pid, row) in script::parse_sweep(&out) {
                        found
                            .entry(row)
                            .or_default()
                            .push(format!("pid {pid} on {}", dest.display()));
                    }
                }
                Err(e) => {
                    tracing::warn!(destination = %dest.display(), error = %e, "cannot sweep a remote machine; its marked processes wait for the next gc");
                    failures.push(e.to_string());
                }
            }
        }
        if !dests.is_empty() && failures.len() == dests.len() {
            return Err(BackendError::Unavailable {
                backend: "remote_ssh",
                reason: failures.join("; "),
            });
        }
        Ok(found
            .into_iter()
            .map(|(resource_id, what)| Marked {
                resource_id,
                description: what.join(", "),
            })
            .collect())
    }

    fn inspect(&self, target: &Target) -> Value {
        let lost = self.attached(&target.marker).and_then(|a| a.lost.borrow().clone());
        match &target.handle {
            Some(ResourceHandle::RemoteProcess {
                host,
                port,
                pid,
                boot_id,
                ..
            }) => json!({
                "host": host,
                "port": port,
                "remote_pid": pid,
                "boot_id": boot_id,
                "remote_socket": remote_socket_of(target),
                "lost": lost,
            }),
            _ => Value::Null,
        }
    }
}
