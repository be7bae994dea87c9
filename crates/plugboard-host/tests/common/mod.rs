//! Helpers shared by the host's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plugboard_host::{DataDir, Manifest, Supervisor, SupervisorConfig};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn example(name: &str) -> PathBuf {
    workspace_root().join("examples/plugins").join(name).join("plugin.toml")
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Writes `toml` as `dir/name/plugin.toml` and loads it.
pub fn manifest_in(dir: &Path, name: &str, toml: &str) -> Arc<Manifest> {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join("plugin.toml");
    std::fs::write(&p, toml).unwrap();
    Arc::new(Manifest::load(&p).unwrap())
}

/// A manifest loaded from a file, with overrides applied.
pub fn load(path: &Path) -> Manifest {
    Manifest::load(path).unwrap()
}

pub fn supervisor(data: &Path) -> Supervisor {
    Supervisor::new(SupervisorConfig::new(DataDir::new(data))).unwrap()
}

pub async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn wait_until_blocking(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `(role, pid)` pairs the process_tree example printed into its log.
pub fn tree_pids(log: &Path) -> Vec<(String, u32)> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix("out| pid "))
        .filter_map(|rest| {
            let (role, pid) = rest.split_once(' ')?;
            Some((role.to_owned(), pid.trim().parse().ok()?))
        })
        .collect()
}

pub fn alive(pid: u32) -> bool {
    plugboard_core::process::read_process(pid).is_some_and(|p| p.is_live())
}

/// Live processes carrying a marker of this ledger.
pub fn marked_alive(ledger_id: &str) -> Vec<u32> {
    let prefix = format!("{ledger_id}:");
    plugboard_host::tree::marked(|m| m.starts_with(&prefix))
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}

pub fn python_available() -> bool {
    let ok = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("python3 is required under CI");
        }
        eprintln!("SKIP: python3 not found");
    }
    ok
}

/// Runs this test binary's `entry` test as a separate host process with
/// `env` set, and waits (up to 30 s) until it prints `line`.
pub fn child_host(entry: &str, env: (&str, &std::ffi::OsStr), line: &str) -> std::process::Child {
    use std::io::Read;
    let mut host = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", entry, "--nocapture", "--test-threads=1", "-q"])
        .env(env.0, env.1)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = host.stdout.take().unwrap();
    let mut buf = Vec::new();
    let ok = wait_until_blocking(Duration::from_secs(30), || {
        let mut chunk = [0u8; 256];
        if let Ok(n) = out.read(&mut chunk) {
            buf.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&buf).contains(line)
    });
    assert!(ok, "the host child {entry} never printed {line:?}");
    host
}

/// gc with the built-in backends, on a runtime of its own (for tests that
/// run outside one).
pub fn run_gc(
    ledger: &mut plugboard_host::Ledger,
    opts: plugboard_host::GcOptions,
    self_host: Option<i64>,
) -> Result<plugboard_host::GcReport, plugboard_host::HostError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| plugboard_host::HostError::Internal(e.to_string()))?;
    rt.block_on(plugboard_host::gc(
        ledger,
        opts,
        self_host,
        &plugboard_host::Backends::builtin(None),
    ))
}

/// A two-thread runtime, for test entry points that run as a host process.
pub fn host_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
pub mod sshd;
