//! One SSH control master per destination, as a child of the host, and the
//! commands and forwards multiplexed over it.
//!
//! Every `ssh` process started here gets the parent-death signal (SIGKILL)
//! and is registered with the [zombie reaper](crate::zombies) before it can
//! exit, so it dies with the host and its exit status is its waiter's.
//! Multiplexed clients are run with `ProxyCommand=false`: should the master
//! be gone, they fail at once instead of quietly opening a second,
//! unsupervised connection.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use super::script::sh_c;
use super::{Destination, SshError};
use crate::backend::ExitInfo;
use crate::zombies;

/// How many of the master's last stderr lines are kept for error messages.
const STDERR_KEPT: usize = 20;

/// A `Command` for the system `ssh` that dies with this process.
pub fn ssh_command() -> Command {
    let mut cmd = Command::new(std::env::var_os("PLUGBOARD_SSH").unwrap_or_else(|| "ssh".into()));
    let parent = std::process::id();
    cmd.kill_on_drop(false);
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe calls (prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            if nix::unistd::getppid().as_raw() as u32 != parent {
                nix::libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd
}

/// Spawns `cmd`, registered with the zombie reaper so only its waiter
/// collects it; `forget` must be called once it was waited for.
pub fn spawn_owned(cmd: &mut Command) -> Result<(Child, u32), SshError> {
    let mut guard = zombies::spawn_guard();
    let child = cmd.spawn().map_err(SshError::Spawn)?;
    let pid = child.id().unwrap_or(0);
    guard.register(pid);
    Ok((child, pid))
}

/// Waits for an owned child in the background: its exit, once known.
pub fn watch_exit(mut child: Child, pid: u32) -> watch::Receiver<Option<ExitInfo>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let exit = match child.wait().await {
            Ok(s) => {
                use std::os::unix::process::ExitStatusExt;
                ExitInfo {
                    code: s.code(),
                    signal: s.signal(),
                }
            }
            Err(_) => ExitInfo {
                code: None,
                signal: None,
            },
        };
        zombies::forget_worker(pid);
        let _ = tx.send(Some(exit));
    });
    rx
}

/// What a multiplexed command printed and how it ended.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// Exit code (`None` when a signal ended the local client).
    pub code: Option<i32>,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

/// A live SSH connection: a control master this host started and owns.
/// Dropping the last reference ends it (SIGTERM), and with it every
/// channel and forward it carries.
#[derive(Debug)]
pub struct Master {
    dest: Destination,
    ctl: PathBuf,
    pid: u32,
    exit: watch::Receiver<Option<ExitInfo>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Master {
    /// Connects to `dest` with a control socket at `ctl`; returns once the
    /// connection is authenticated, or the reason it is not.
    pub async fn connect(dest: &Destination, ctl: PathBuf) -> Result<Master, SshError> {
        let _ = std::fs::remove_file(&ctl);
        let mut cmd = ssh_command();
        cmd.arg("-M")
            .arg("-N")
            .arg("-S")
            .arg(&ctl)
            .args(["-o", "ControlPersist=no", "-o", "StreamLocalBindUnlink=yes"])
            .args(dest.args())
            .arg("--")
            .arg(&dest.host)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let (mut child, pid) = spawn_owned(&mut cmd)?;
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(err) = child.stderr.take() {
            let lines = Arc::clone(&stderr);
            tokio::spawn(async move {
                let mut r = BufReader::new(err).lines();
                while let Ok(Some(l)) = r.next_line().await {
                    tracing::debug!(line = %l, "ssh master");
                    let mut q = lines.lock().unwrap_or_else(|e| e.into_inner());
                    if q.len() == STDERR_KEPT {
                        q.pop_front();
                    }
                    q.push_back(l);
                }
            });
        }
        let mut master = Master {
            dest: dest.clone(),
            ctl,
            pid,
            exit: watch_exit(child, pid),
            stderr,
        };
        let deadline = Instant::now() + dest.connect_timeout + Duration::from_secs(5);
        let mut pause = Duration::from_millis(1);
        loop {
            if master.exit.borrow().is_some() {
                // Let the stderr pump catch ssh's last words.
                tokio::time::sleep(Duration::from_millis(20)).await;
                return Err(SshError::from_stderr(dest, &master.stderr_text()));
            }
            // The control socket appears once the connection is authenticated.
            if master.ctl.exists() {
                tracing::debug!(destination = %dest.display(), pid, "ssh connection up");
                return Ok(master);
            }
            if Instant::now() >= deadline {
                master.terminate();
                return Err(SshError::Timeout {
                    destination: dest.display(),
                    what: "connecting".into(),
                    secs: (dest.connect_timeout + Duration::from_secs(5)).as_secs_f64(),
                });
            }
            let mut exit = master.exit.clone();
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = exit.changed() => {}
            }
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// The destination.
    pub fn destination(&self) -> &Destination {
        &self.dest
    }

    /// The control socket.
    pub fn control_path(&self) -> &Path {
        &self.ctl
    }

    /// The master's local pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// True while the connection is up.
    pub fn alive(&self) -> bool {
        self.exit.borrow().is_none()
    }

    /// Resolves when the connection is gone.
    pub async fn closed(&self) {
        let mut rx = self.exit.clone();
        while rx.borrow_and_update().is_none() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// What the master printed last, for messages.
    pub fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn terminate(&mut self) {
        if self.alive() && self.pid > 0 {
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        }
        let _ = std::fs::remove_file(&self.ctl);
    }

    /// An `ssh` client multiplexed over this connection; the caller adds
    /// `--` and the remote command.
    pub fn client(&self) -> Command {
        let mut cmd = ssh_command();
        cmd.arg("-S")
            .arg(&self.ctl)
            .args([
                "-T",
                "-o",
                "ControlMaster=no",
                "-o",
                "ProxyCommand=false",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(&self.dest.host);
        cmd
    }

    /// Runs `script` with the remote `/bin/sh`, feeding it `stdin`, within `limit`.
    pub async fn run(
        &self,
        what: &str,
        script: &str,
        stdin: Option<&[u8]>,
        limit: Duration,
    ) -> Result<RunOutput, SshError> {
        let mut cmd = self.client();
        cmd.arg("--")
            .arg(sh_c(script))
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (mut child, pid) = spawn_owned(&mut cmd)?;
        let input = stdin.map(<[u8]>::to_vec);
        let mut pipe = child.stdin.take();
        let work = async move {
            if let (Some(p), Some(bytes)) = (pipe.as_mut(), input) {
                p.write_all(&bytes).await?;
                p.shutdown().await?;
            }
            drop(pipe);
            child.wait_with_output().await
        };
        let result = tokio::time::timeout(limit, work).await;
        zombies::forget_worker(pid);
        let out = match result {
            Err(_) => {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                return Err(SshError::Timeout {
                    destination: self.dest.display(),
                    what: what.to_owned(),
                    secs: limit.as_secs_f64(),
                });
            }
            Ok(Err(e)) => {
                return Err(SshError::Remote {
                    destination: self.dest.display(),
                    what: what.to_owned(),
                    detail: e.to_string(),
                });
            }
            Ok(Ok(o)) => o,
        };
        let out = RunOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        if out.code == Some(255) && !self.alive() {
            return Err(SshError::Connect {
                destination: self.dest.display(),
                detail: format!("the connection dropped during {what}"),
            });
        }
        Ok(out)
    }

    /// Runs `script` and fails unless it exits 0.
    pub async fn run_ok(
        &self,
        what: &str,
        script: &str,
        stdin: Option<&[u8]>,
        limit: Duration,
    ) -> Result<String, SshError> {
        let out = self.run(what, script, stdin, limit).await?;
        if out.code == Some(0) {
            Ok(out.stdout)
        } else {
            Err(SshError::Remote {
                destination: self.dest.display(),
                what: what.to_owned(),
                detail: format!(
                    "exit status {}: {}",
                    out.code.map_or("none (signal)".into(), |c| c.to_string()),
                    out.stderr.trim()
                ),
            })
        }
    }

    async fn control(&self, op: &str, spec: &str) -> Result<(), SshError> {
        let mut cmd = ssh_command();
        cmd.arg("-S")
            .arg(&self.ctl)
            .args(["-O", op, "-L", spec, "-o", "LogLevel=ERROR"])
            .arg(&self.dest.host)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let (child, pid) = spawn_owned(&mut cmd)?;
        let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output()).await;
        zombies::forget_worker(pid);
        match out {
            Ok(Ok(o)) if o.status.success() => Ok(()),
            Ok(Ok(o)) => Err(SshError::Remote {
                destination: self.dest.display(),
                what: format!("{op} of the forward {spec}"),
                detail: String::from_utf8_lossy(&o.stderr).trim().to_owned(),
            }),
            Ok(Err(e)) => Err(SshError::Spawn(e)),
            Err(_) => {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                Err(SshError::Timeout {
                    destination: self.dest.display(),
                    what: format!("{op} of a forward"),
                    secs: 10.0,
                })
            }
        }
    }

    /// Forwards the local Unix socket `local` to the remote one `remote`
    /// (connections to `local` are carried to `remote` inside the SSH
    /// connection).
    pub async fn forward(&self, local: &Path, remote: &str) -> Result<(), SshError> {
        self.control("forward", &forward_spec(local, remote)?).await
    }

    /// Removes a forward made by [`forward`](Self::forward).
    pub async fn cancel_forward(&self, local: &Path, remote: &str) -> Result<(), SshError> {
        let r = self.control("cancel", &forward_spec(local, remote)?).await;
        let _ = std::fs::remove_file(local);
        r
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// `LOCAL:REMOTE` as `ssh -L` takes it; neither path may hold a `:`.
fn forward_spec(local: &Path, remote: &str) -> Result<String, SshError> {
    let local = local.to_string_lossy();
    if local.contains(':') || remote.contains(':') {
        return Err(SshError::Remote {
            destination: String::new(),
            what: "a socket forward".into(),
            detail: format!("socket paths may not contain ':' ({local} -> {remote})"),
        });
    }
    Ok(format!("{local}:{remote}"))
}

/// The connections of this host, one master per destination, shared while
/// anyone holds it.
#[derive(Debug, Default)]
pub struct Connections {
    dir: OnceLock<PathBuf>,
    pool: tokio::sync::Mutex<HashMap<Destination, Weak<Master>>>,
}

/// Numbers control sockets across every [`Connections`] of the process:
/// they share one directory, so two pools (two supervisors in one
/// program) must never reuse a name.
static NEXT_MASTER: AtomicU64 = AtomicU64::new(0);

impl Connections {
    /// An empty pool.
    pub fn new() -> Connections {
        Connections::default()
    }

    /// This host's private directory for control sockets
    /// (`$TMPDIR/plugboard-ssh-PID`, mode 0700); directories of hosts that
    /// no longer run are removed the first time.
    pub fn dir(&self) -> &Path {
        self.dir.get_or_init(|| {
            let base = std::env::temp_dir();
            if let Ok(entries) = std::fs::read_dir(&base) {
                for e in entries.flatten() {
                    let name = e.file_name();
                    let Some(pid) = name
                        .to_str()
                        .and_then(|n| n.strip_prefix("plugboard-ssh-"))
                        .and_then(|p| p.parse::<u32>().ok())
                    else {
                        continue;
                    };
                    if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
            let dir = base.join(format!("plugboard-ssh-{}", std::process::id()));
            let _ = std::fs::create_dir_all(&dir);
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
            dir
        })
    }

    /// The live connection to `dest`, connecting when there is none.
    pub async fn get(&self, dest: &Destination) -> Result<Arc<Master>, SshError> {
        let mut pool = self.pool.lock().await;
        if let Some(m) = pool.get(dest).and_then(Weak::upgrade)
            && m.alive()
        {
            return Ok(m);
        }
        pool.retain(|_, w| w.strong_count() > 0);
        let n = NEXT_MASTER.fetch_add(1, Ordering::Relaxed);
        let ctl = self.dir().join(format!("m{n}"));
        let m = Arc::new(Master::connect(dest, ctl).await?);
        pool.insert(dest.clone(), Arc::downgrade(&m));
        Ok(m)
    }

    /// The connection to `dest` if one is up, without connecting.
    pub async fn existing(&self, dest: &Destination) -> Option<Arc<Master>> {
        self.pool
            .lock()
            .await
            .get(dest)
            .and_then(Weak::upgrade)
            .filter(|m| m.alive())
    }
}
