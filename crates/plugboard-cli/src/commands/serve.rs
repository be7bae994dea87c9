//! `plugboard serve` and `plugboard demo`: run a host until SIGINT/SIGTERM,
//! then stop every plugin it started.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{Flock, FlockArg};
use plugboard_core::ExecutionMode;
use plugboard_host::{Backends, DataDir, GcOptions, Host, HostConfig, Ledger, gc};
use plugboard_web::{ServeOptions, Timeouts};

use super::runtime;
use crate::cli::ServeArgs;
use crate::{CmdResult, Dirs, Failure};

/// An exclusive lock on the data dir, held while a host serves it. The
/// kernel releases it when the process dies, so a dead host's lock is
/// simply taken over.
pub struct HostLock {
    _lock: Flock<File>,
}

impl HostLock {
    /// Takes the lock or explains who holds it.
    pub fn acquire(data: &Path) -> Result<HostLock, Failure> {
        let path = data.join("host.lock");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Failure::failed(format!("cannot open {}: {e}", path.display())))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                let _ = lock.set_len(0);
                let _ = lock.rewind();
                let _ = writeln!(lock, "{}", std::process::id());
                let _ = lock.sync_all();
                Ok(HostLock { _lock: lock })
            }
            Err((mut file, _)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                Err(Failure::failed(format!(
                    "another plugboard host (pid {}) is already serving data dir {}",
                    pid.trim(),
                    data.display()
                )))
            }
        }
    }
}

/// What a running host tells other commands about itself, in
/// `{data_dir}/host.json` (written when it starts serving, removed when it
/// stops): its pid and where it finds plugins and configs.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct HostInfo {
    pid: u32,
    pid_start_time: Option<u64>,
    plugin_dirs: Vec<PathBuf>,
    config_dir: PathBuf,
}

const HOST_INFO: &str = "host.json";

fn write_host_info(data: &Path, dirs: &Dirs) -> std::io::Result<()> {
    let pid = std::process::id();
    let info = HostInfo {
        pid,
        pid_start_time: plugboard_core::process::read_process(pid).map(|p| p.start_time),
        plugin_dirs: dirs.plugins.iter().map(|p| absolute(p)).collect(),
        config_dir: absolute(&dirs.config),
    };
    let tmp = data.join(format!(".{HOST_INFO}.{pid}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&info).unwrap_or_default())?;
    std::fs::rename(&tmp, data.join(HOST_INFO))
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// `dirs`, with the plugins dirs and config dir of a host that runs on its
/// data dir where they were not given explicitly (a note on stderr says so).
pub fn with_running_host_dirs(dirs: &Dirs) -> Dirs {
    let mut d = dirs.clone();
    let Ok(text) = std::fs::read(dirs.data.join(HOST_INFO)) else {
        return d;
    };
    let Ok(info) = serde_json::from_slice::<HostInfo>(&text) else {
        return d;
    };
    if !plugboard_core::process::is_same_live_process(info.pid, info.pid_start_time) {
        return d; // left by a host that is gone
    }
    let mut adopted = Vec::new();
    if !d.plugins_explicit && !info.plugin_dirs.is_empty() && d.plugins != info.plugin_dirs {
        d.plugins = info.plugin_dirs;
        adopted.push(format!("plugins from {}", join(&d.plugins)));
    }
    if !d.config_explicit && d.config != info.config_dir {
        d.config = info.config_dir;
        adopted.push(format!("configs in {}", d.config.display()));
    }
    if !adopted.is_empty() {
        eprintln!(
            "note: using the host running on {} (pid {}): {}",
            dirs.data.display(),
            info.pid,
            adopted.join(", ")
        );
    }
    d
}

/// A path or word as a POSIX shell reads it back: as is when it is plain,
/// else single-quoted.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | ':' | '@' | '%' | ',' | '=')
        });
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The bundled example plugins (the demo's plugins dir).
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins")
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut i), Ok(mut t)) => {
            tokio::select! {
                _ = i.recv() => {}
                _ = t.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

async fn run_host(dirs: &Dirs, bind: Option<SocketAddr>, token: Option<String>, demo: bool) -> CmdResult {
    let data = DataDir::new(&dirs.data);
    data.ensure()
        .map_err(|e| Failure::failed(format!("cannot create data dir {}: {e}", dirs.data.display())))?;
    let _lock = HostLock::acquire(data.root())?;
    super::check_plugin_dirs(dirs)?;
    // Reap what hosts that died on this data dir left behind.
    {
        let mut ledger = Ledger::open(&data.ledger_path()).map_err(Failure::failed)?;
        let report = gc(
            &mut ledger,
            GcOptions {
                grace: std::time::Duration::from_secs(2),
                ..Default::default()
            },
            None,
            &Backends::builtin_with_secrets(None, Some(data.secrets_path())),
        )
        .await
        .map_err(Failure::failed)?;
        if !report.reaped.is_empty() {
            eprintln!("reaped {} resource(s) left by hosts that are gone", report.reaped.len());
        }
    }
    let exe = std::env::current_exe().map_err(|e| Failure::failed(format!("cannot find this executable: {e}")))?;
    let launch_vars = BTreeMap::from([("PLUGBOARD_EXE".to_owned(), exe.display().to_string())]);
    let host = Host::open(HostConfig {
        // This process is only a host: every orphan it adopts is its to reap.
        reap_all_orphans: true,
        plugin_dirs: dirs.plugins.clone(),
        config_dir: dirs.config.clone(),
        data: data.clone(),
        launch_vars,
    })
    .map_err(Failure::failed)?;
    for p in host.problems() {
        if dirs.plugins_explicit || demo || !p.reason.contains("does not exist") {
            eprintln!("warning: {p}");
        }
    }
    // In-process plugins whose code is built into this binary.
    for info in host.plugins() {
        if info.metadata.execution_mode != ExecutionMode::InProcess {
            continue;
        }
        let builtin = host.manifest(&info.unique_id).ok().and_then(|m| {
            m.launch
                .extra
                .get("builtin")
                .and_then(|v| v.as_str().map(str::to_owned))
        });
        if let Some(exec) = builtin.as_deref().and_then(plugboard_examples::by_name) {
            host.register_in_process(&info.unique_id, exec);
        }
    }
    let host = Arc::new(host);
    let socket = data.root().join("host.sock");
    // Bind first: what is announced below is already reachable.
    let bound = match plugboard_web::bind(ServeOptions {
        socket,
        bind,
        token,
        timeouts: Timeouts::default(),
    })
    .await
    {
        Ok(b) => b,
        Err(e @ plugboard_web::ServeError::Bind { .. }) if matches!(&e, plugboard_web::ServeError::Bind { address, .. } if bind.is_some_and(|b| b.to_string() == *address)) =>
        {
            let hint = "pass --bind with another port (0 picks a free one), or --no-http";
            return Err(Failure::failed(format!("{}; {hint}", crate::error_chain(&e))));
        }
        Err(e) => return Err(Failure::failed(e)),
    };
    if let Err(e) = write_host_info(data.root(), dirs) {
        eprintln!("warning: cannot write {}: {e}", data.root().join(HOST_INFO).display());
    }
    println!(
        "plugboard host: {} plugin(s) from {}",
        host.plugin_count(),
        join(&dirs.plugins)
    );
    println!("  data dir:   {}", data.root().display());
    println!("  config dir: {}", dirs.config.display());
    println!("  API:        unix:{}", bound.socket().display());
    if let Some(b) = bound.tcp_addr() {
        println!("  dashboard:  http://{b}/");
        println!("  HTTP API:   http://{b}/api/v1/plugins");
    }
    if demo {
        // Commands that work as printed: this executable's full path (it
        // need not be on PATH) and this host's data dir.
        let cmd = format!(
            "{} --data-dir {}",
            shell_word(&exe.display().to_string()),
            shell_word(&data.root().display().to_string())
        );
        println!("try:  {cmd} list");
        println!("      {cmd} start text_word_count");
        println!(
            "      {cmd} call text_word_count --input {}",
            shell_word(r#"{"text": "to be or not to be"}"#)
        );
        println!("      {cmd} ps");
    }
    println!("press Ctrl-C to stop; every plugin started by this host is stopped with it");
    let served = bound.serve(Arc::clone(&host), shutdown_signal()).await;
    let running = host
        .supervisor()
        .statuses()
        .iter()
        .filter(|s| s.state.is_active())
        .count();
    let _ = std::fs::remove_file(data.root().join(HOST_INFO));
    let stopped = host.shutdown().await;
    eprintln!("stopped {running} plugin(s); host ended");
    served.map_err(Failure::failed)?;
    stopped.map_err(Failure::failed)
}

fn join(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `plugboard serve`.
pub fn serve(dirs: &Dirs, args: ServeArgs) -> CmdResult {
    let token = args
        .token
        .or_else(|| std::env::var("PLUGBOARD_TOKEN").ok())
        .filter(|t| !t.is_empty());
    let rt = runtime()?;
    let bind = (!args.no_http).then_some(args.bind);
    rt.block_on(run_host(dirs, bind, token, false))
}

/// `plugboard demo`: the bundled examples, a fresh data and config dir.
pub fn demo(dirs: &Dirs, bind: SocketAddr) -> CmdResult {
    let fresh = tempfile::Builder::new()
        .prefix("plugboard-demo-")
        .tempdir()
        .map_err(|e| Failure::failed(format!("cannot create a demo data dir: {e}")))?;
    let mut d = dirs.clone();
    if !d.plugins_explicit {
        d.plugins = vec![examples_dir().canonicalize().unwrap_or_else(|_| examples_dir())];
        d.plugins_explicit = true;
    }
    d.data = fresh.path().join("data");
    d.config = fresh.path().join("configs");
    let rt = runtime()?;
    let r = rt.block_on(run_host(&d, Some(bind), None, true));
    drop(fresh);
    r
}
