//! The process backend: subprocess and conda_env plugins as local process
//! trees.
//!
//! Order matters for "zero orphans": the ledger row exists before the
//! spawn; the process carries its row's marker in `PLUGBOARD_RESOURCE_ID`,
//! gets a parent-death signal (SIGKILL) set before exec, its own process
//! group, and joins its own cgroup before exec where the system allows one
//! (see [`crate::cgroup`]); the host is a child subreaper. A stop ends the
//! cgroup, the group, the descendants by parent links and everything
//! carrying the marker: SIGTERM, the grace, then SIGKILL, re-collected every
//! round.

use std::collections::BTreeMap;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tokio::process::Command;
use tokio::sync::watch;

use super::notice::{self, Chunk, LineSplitter, Notice};
use super::{
    Backend, BackendError, ExitInfo, LISTEN_ENV, LaunchContext, Launched, Marked, Observation, OutputStream,
    PLUGIN_ID_ENV, Plan, Stopped, Target,
};
use crate::cgroup::{Cgroup, Limits};
use crate::endpoint::Endpoint;
use crate::error::HostError;
use crate::launch::{self, Resolved};
use crate::ledger::{MARKER_ENV, ResourceHandle, ResourceKind};
use crate::manifest::Manifest;
use crate::tree::{self, TreeSpec};
use crate::zombies;

/// The process backend.
#[derive(Debug, Clone, Default)]
pub struct ProcessBackend {
    conda_tool: Option<std::path::PathBuf>,
    use_cgroups: bool,
}

struct ProcessSpec {
    resolved: Resolved,
    limits: Limits,
}

impl ProcessBackend {
    /// A process backend using `conda_tool` for conda_env plugins (else
    /// `PLUGBOARD_CONDA` or one found on PATH). Cgroups are used where
    /// writable unless `PLUGBOARD_NO_CGROUPS` is set.
    pub fn new(conda_tool: Option<std::path::PathBuf>) -> Self {
        ProcessBackend {
            conda_tool,
            use_cgroups: std::env::var_os("PLUGBOARD_NO_CGROUPS").is_none(),
        }
    }
}

/// The descriptor number a process worker finds the notification pipe at.
pub const NOTIFY_FD: i32 = 3;

/// Watches the read end of the notification pipe: ready once a line other
/// than a manifest arrives (any line: the SDKs write `READY=1`), with the
/// manifest line that came before it, if any. Nothing (or EOF) leaves it
/// not ready.
fn watch_notify(fd: std::os::fd::OwnedFd, plugin: String) -> Option<watch::Receiver<Notice>> {
    use tokio::io::AsyncReadExt;
    let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok()?;
    let (tx, out) = watch::channel(Notice::default());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut lines = LineSplitter::default();
        let mut manifest = None;
        loop {
            let n = match rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            for chunk in lines.push(&buf[..n]) {
                let line = match chunk {
                    Chunk::Line(l) => l,
                    Chunk::TooLong => {
                        tracing::warn!(plugin = %plugin, limit = notice::MAX_LINE_BYTES, "a notification line from the worker is too long; it is ignored");
                        continue;
                    }
                };
                match notice::parse_line(&line) {
                    notice::Line::Manifest(m) => manifest = Some(Arc::new(*m)),
                    notice::Line::BadManifest(why) => {
                        tracing::warn!(plugin = %plugin, error = %why, "a manifest line from the worker does not parse; it is ignored");
                    }
                    notice::Line::Ready | notice::Line::Other => {
                        let _ = tx.send(Notice { ready: true, manifest });
                        return;
                    }
                }
            }
        }
    });
    Some(out)
}

fn exit_info(s: ExitStatus) -> ExitInfo {
    use std::os::unix::process::ExitStatusExt;
    ExitInfo {
        code: s.code(),
        signal: s.signal(),
    }
}

/// `[launch] memory_mb` and `cpus`, checked.
fn limits(manifest: &Manifest) -> Result<Limits, HostError> {
    let bad = |key: &str, reason: &str| HostError::BadLaunch {
        plugin: manifest.unique_id(),
        manifest: manifest.path.clone(),
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    let mut l = Limits::default();
    if let Some(v) = manifest.launch.extra.get("memory_mb") {
        let mb = v
            .as_integer()
            .filter(|m| *m > 0)
            .ok_or_else(|| bad("memory_mb", "must be a positive whole number of MiB"))?;
        l.memory_bytes = Some(mb as u64 * 1024 * 1024);
    }
    if let Some(v) = manifest.launch.extra.get("cpus") {
        let c = v
            .as_float()
            .or_else(|| v.as_integer().map(|i| i as f64))
            .filter(|c| *c > 0.0 && *c <= 4096.0)
            .ok_or_else(|| bad("cpus", "must be a number of cores above 0"))?;
        l.cpus = Some(c);
    }
    for key in manifest.launch.extra.keys() {
        if !["memory_mb", "cpus"].contains(&key.as_str()) {
            return Err(bad(
                key,
                "is not a launch key of subprocess or conda_env plugins (command, args, env, cwd, conda_env, memory_mb, cpus)",
            ));
        }
    }
    Ok(l)
}

/// Whether the recorded root `pid` still is the process started at
/// `start_time`, and if another live process now holds that pid, its name.
fn root_identity(pid: u32, start_time: u64) -> (bool, Option<String>) {
    match plugboard_core::process::read_process(pid).filter(|p| p.is_live()) {
        Some(p) if p.start_time == start_time => (true, None),
        Some(_) => (false, Some(format!("pid {pid}"))),
        None => (false, None),
    }
}

fn tree_spec(target: &Target) -> (TreeSpec, Option<Cgroup>) {
    let (root, cgroup) = match &target.handle {
        Some(ResourceHandle::Process {
            pid,
            start_time,
            cgroups,
        }) => (Some((*pid, Some(*start_time))), Cgroup::from_dirs(cgroups)),
        _ => (None, None),
    };
    let spec = TreeSpec {
        root,
        pgid: root.map(|(p, _)| p),
        marker: Some(target.marker.clone()),
    };
    // A marker-only target may still have a cgroup named after it.
    let cgroup = cgroup.or_else(|| {
        let (ledger, row) = target.marker.split_once(':')?;
        let row: i64 = row.parse().ok()?;
        Cgroup::list(ledger)
            .into_iter()
            .find(|(r, _)| *r == row)
            .map(|(_, c)| c)
    });
    (spec, cgroup)
}

/// Ends a tree and its cgroup; blocking.
fn end_tree(spec: &TreeSpec, cgroup: Option<&Cgroup>, grace: Duration) -> (tree::TreeOutcome, Vec<u32>) {
    let outcome = tree::terminate_with(spec, grace, || cgroup.map(Cgroup::pids).unwrap_or_default());
    let mut survivors = outcome.survivors.clone();
    if let Some(cg) = cgroup {
        // Whatever escaped group, parents and marker is still in the cgroup.
        for _ in 0..50 {
            if cg.pids().is_empty() {
                break;
            }
            cg.signal_all(Signal::SIGKILL);
            std::thread::sleep(Duration::from_millis(5));
        }
        survivors.extend(cg.pids());
        if !cg.remove(Duration::from_secs(2)) {
            tracing::warn!(dirs = ?cg.dirs(), "cgroup not empty after SIGKILL; left in place for gc");
        }
    }
    survivors.sort_unstable();
    survivors.dedup();
    (outcome, survivors)
}

#[async_trait]
impl Backend for ProcessBackend {
    fn name(&self) -> &'static str {
        "process"
    }

    fn plan(&self, manifest: &Manifest, vars: &BTreeMap<String, String>) -> Result<Plan, HostError> {
        let resolved = launch::resolve(manifest, self.conda_tool.as_deref(), vars)?;
        let limits = limits(manifest)?;
        let details = json!({
            "command": resolved.program.to_string_lossy(),
            "args": resolved.args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>(),
            "cwd": resolved.cwd,
            "mode": manifest.execution_mode,
        });
        Ok(Plan {
            kind: ResourceKind::Process,
            owned: true,
            price: manifest.price_estimate(),
            details,
            budget: crate::backend::BudgetHints::default(),
            spec: Box::new(ProcessSpec { resolved, limits }),
        })
    }

    async fn launch(&self, plan: &Plan, ctx: &LaunchContext) -> Result<Launched, HostError> {
        let spec = plan
            .spec
            .downcast_ref::<ProcessSpec>()
            .ok_or_else(|| HostError::Internal("process backend given another backend's plan".into()))?;
        let r = &spec.resolved;
        let cgroup = if self.use_cgroups {
            Cgroup::create(&ctx.marker, spec.limits)
        } else {
            None
        };
        let procs_files = cgroup.as_ref().map(Cgroup::procs_files).unwrap_or_default();
        // The readiness notification pipe: the worker gets the write end as
        // fd NOTIFY_FD and writes a line once it serves. Both ends are
        // non-blocking: a worker's write never waits on the host (the SDKs
        // write at most PIPE_BUF bytes, which an empty pipe takes whole).
        let (notify_r, notify_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(|e| HostError::Spawn {
                plugin: ctx.plugin_id.clone(),
                command: r.program.to_string_lossy().into(),
                source: std::io::Error::from(e),
            })?;
        let notify_w_raw = std::os::fd::AsRawFd::as_raw_fd(&notify_w);
        let mut cmd = Command::new(&r.program);
        cmd.args(&r.args)
            .envs(&r.env)
            .env(MARKER_ENV, &ctx.marker)
            .env(LISTEN_ENV, &ctx.listen)
            .env(PLUGIN_ID_ENV, &ctx.plugin_id)
            .env(plugboard_protocol::TOKEN_ENV, &ctx.token)
            .env(plugboard_protocol::NOTIFY_FD_ENV, NOTIFY_FD.to_string())
            .current_dir(&r.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        let parent = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and only
        // makes async-signal-safe system calls (open/write/close, prctl,
        // getppid, _exit); `procs_files` was allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                crate::cgroup::join_in_child(&procs_files);
                // dup2 clears close-on-exec on the copy; if the write end
                // already is NOTIFY_FD, clear it by hand.
                if notify_w_raw == NOTIFY_FD {
                    nix::libc::fcntl(NOTIFY_FD, nix::libc::F_SETFD, 0);
                } else if nix::libc::dup2(notify_w_raw, NOTIFY_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
                // The host may have died between fork and prctl.
                if nix::unistd::getppid().as_raw() as u32 != parent {
                    nix::libc::_exit(1);
                }
                Ok(())
            });
        }
        let spawned = {
            let mut guard = zombies::spawn_guard();
            let child = cmd.spawn();
            if let Ok(c) = &child
                && let Some(pid) = c.id()
            {
                guard.register(pid);
            }
            child
        };
        let mut child = match spawned {
            Ok(c) => c,
            Err(source) => {
                if let Some(cg) = &cgroup {
                    cg.remove(Duration::ZERO);
                }
                return Err(HostError::Spawn {
                    plugin: ctx.plugin_id.clone(),
                    command: r.program.to_string_lossy().into(),
                    source,
                });
            }
        };
        drop(notify_w);
        let notify = watch_notify(notify_r, ctx.plugin_id.clone());
        let pid = child.id().unwrap_or(0);
        let start_time = plugboard_core::process::read_process(pid).map_or(0, |p| p.start_time);
        let mut output = Vec::new();
        if let Some(out) = child.stdout.take() {
            output.push(OutputStream {
                tag: "out",
                reader: Box::new(out),
            });
        }
        if let Some(err) = child.stderr.take() {
            output.push(OutputStream {
                tag: "err",
                reader: Box::new(err),
            });
        }
        let stdin = child.stdin.take();
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let exit = match child.wait().await {
                Ok(s) => exit_info(s),
                Err(_) => ExitInfo {
                    code: None,
                    signal: None,
                },
            };
            zombies::forget_worker(pid);
            let _ = tx.send(Some(exit));
        });
        Ok(Launched {
            handle: ResourceHandle::Process {
                pid,
                start_time,
                cgroups: cgroup.as_ref().map(Cgroup::dirs).unwrap_or_default(),
            },
            endpoint: Endpoint::Unix(ctx.listen.clone()),
            token: Some(ctx.token.clone()),
            output,
            notify,
            exit: Some(rx),
            keepalive: stdin.map(|s| Box::new(s) as Box<dyn std::any::Any + Send + Sync>),
            lost: None,
            price: None,
        })
    }

    async fn stop(&self, target: &Target, grace: Duration) -> Result<Stopped, BackendError> {
        // gc over many rows: a fresh sweep found nothing with this marker,
        // the recorded root is not alive (or is someone else) and no cgroup
        // of it exists, so there is nothing to end and no tree to walk.
        if target.marker_found == Some(false) {
            let (root_alive, reused, cgroups) = match &target.handle {
                Some(ResourceHandle::Process {
                    pid,
                    start_time,
                    cgroups,
                }) => {
                    let (alive, reused) = root_identity(*pid, *start_time);
                    (alive, reused, cgroups.iter().any(|d| std::path::Path::new(d).exists()))
                }
                _ => (false, None, true),
            };
            if !root_alive && !cgroups {
                return Ok(Stopped {
                    identity_reused: reused,
                    ..Default::default()
                });
            }
        }
        let target = target.clone();
        let done = tokio::task::spawn_blocking(move || {
            let (spec, cgroup) = tree_spec(&target);
            let reused = match spec.root {
                Some((pid, Some(start))) => root_identity(pid, start).1,
                _ => None,
            };
            let (outcome, survivors) = end_tree(&spec, cgroup.as_ref(), grace);
            (target, outcome, survivors, reused)
        })
        .await
        .map_err(|e| BackendError::Unavailable {
            backend: "process",
            reason: format!("stop task failed: {e}"),
        })?;
        let (target, outcome, survivors, identity_reused) = done;
        if !survivors.is_empty() {
            return Err(BackendError::NotGone {
                what: format!("process tree of {}", target.marker),
                reason: format!("pids {survivors:?} survived SIGKILL"),
            });
        }
        Ok(Stopped {
            ended: outcome.signalled.iter().map(u32::to_string).collect(),
            forced: outcome.killed.iter().map(u32::to_string).collect(),
            identity_reused,
        })
    }

    async fn observe(&self, target: &Target) -> Observation {
        match &target.handle {
            Some(ResourceHandle::Process { pid, start_time, .. }) => {
                if plugboard_core::process::is_same_live_process(*pid, Some(*start_time)) {
                    Observation::Alive
                } else {
                    Observation::Exited(ExitInfo {
                        code: None,
                        signal: None,
                    })
                }
            }
            _ => Observation::Unknown,
        }
    }

    async fn sweep(&self, ledger_id: &str, _recorded: &[Value]) -> Result<Vec<Marked>, BackendError> {
        let ledger_id = ledger_id.to_owned();
        tokio::task::spawn_blocking(move || {
            let prefix = format!("{ledger_id}:");
            let mut found: BTreeMap<i64, Vec<String>> = BTreeMap::new();
            for (pid, marker) in tree::marked(|m| m.starts_with(&prefix)) {
                if let Some(row) = marker.strip_prefix(&prefix).and_then(|s| s.parse::<i64>().ok()) {
                    found.entry(row).or_default().push(format!("pid {pid}"));
                }
            }
            for (row, cg) in Cgroup::list(&ledger_id) {
                let pids = cg.pids();
                let entry = found.entry(row).or_default();
                if pids.is_empty() {
                    entry.push(format!("empty cgroup {}", cg.dirs().join(",")));
                }
                entry.extend(pids.iter().map(|p| format!("pid {p}")));
            }
            found
                .into_iter()
                .map(|(resource_id, mut what)| {
                    what.sort();
                    what.dedup();
                    Marked {
                        resource_id,
                        description: what.join(", "),
                    }
                })
                .collect()
        })
        .await
        .map_err(|e| BackendError::Unavailable {
            backend: "process",
            reason: format!("sweep task failed: {e}"),
        })
    }

    fn inspect(&self, target: &Target) -> Value {
        let (spec, cgroup) = tree_spec(target);
        let mut pids = tree::collect(&spec);
        if let Some(cg) = &cgroup {
            pids.extend(cg.pids());
            pids.sort_unstable();
            pids.dedup();
        }
        json!({ "pids": pids, "cgroups": cgroup.map(|c| c.dirs()).unwrap_or_default() })
    }
}
