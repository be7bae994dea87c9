//! Host benchmarks, each next to a reference measured in the same run:
//!
//! * start-to-ready with `ready = "none"`, and with the protocol health and
//!   manifest checks for a minimal Rust worker (the SDK's `echo_worker`
//!   example, built by the bench) and a Python worker, next to
//!   fork+exec+wait of `/bin/true` and of `python3 -c pass`;
//! * stop latency of a ~50-process tree (grace 0.2 s, one process ignores
//!   SIGTERM), next to SIGKILL+wait of 50 plain children;
//! * gc over 10,000 ledger rows of a dead host, next to the ledger writes
//!   alone for the same rows.
//!
//! Run pinned, so subject and reference share one CPU:
//! `taskset -c 0 cargo bench -p plugboard-host --bench host`
//!
//! `PLUGBOARD_BENCH_ONLY=none,rust,python,tree,gc` runs only the named
//! parts (the references they need are always measured).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{pct, report};

use plugboard_host::ledger::{Intent, ResourceKind, ResourceStatus};
use plugboard_host::{DataDir, GcOptions, Ledger, Manifest, Supervisor, SupervisorConfig, gc};

/// gc with the built-in backends, on a runtime of its own.
fn run_gc(
    ledger: &mut Ledger,
    opts: GcOptions,
    self_host: Option<i64>,
) -> Result<plugboard_host::GcReport, plugboard_host::HostError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| plugboard_host::HostError::Internal(e.to_string()))?;
    rt.block_on(gc(ledger, opts, self_host, &plugboard_host::Backends::builtin(None)))
}

fn spawn_wait(cmd: &str, args: &[&str], n: usize) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let _ = Command::new(cmd).args(args).status();
            t.elapsed()
        })
        .collect()
}

fn manifest(dir: &Path, name: &str, body: &str) -> Arc<Manifest> {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir: {e}"));
    let p = d.join("plugin.toml");
    std::fs::write(&p, format!("name = \"{name}\"\ncategory = \"bench\"\n{body}"))
        .unwrap_or_else(|e| panic!("write: {e}"));
    Arc::new(Manifest::load(&p).unwrap_or_else(|e| panic!("{e}")))
}

/// Whether `PLUGBOARD_BENCH_ONLY` (a comma-separated list) selects `part`;
/// everything runs when it is unset.
fn selected(part: &str) -> bool {
    std::env::var("PLUGBOARD_BENCH_ONLY").map_or(true, |v| v.split(',').any(|p| p.trim() == part))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let sup =
        Supervisor::new(SupervisorConfig::new(DataDir::new(tmp.path().join("d")))).unwrap_or_else(|e| panic!("{e}"));

    // References: plain process start.
    let mut true_ref = spawn_wait("/bin/true", &[], 200);
    let true_p50 = pct(&mut true_ref, 0.5);
    // How much of a worker's spawn is fork instead of posix_spawn: a child
    // set-up hook (pre_exec, which the parent-death signal and the cgroup
    // join need) makes the standard library fork the whole host.
    let mut forked: Vec<Duration> = (0..200)
        .map(|_| {
            use std::os::unix::process::CommandExt;
            let t = Instant::now();
            let mut c = Command::new("/bin/true");
            // SAFETY: a no-op between fork and exec.
            unsafe { c.pre_exec(|| Ok(())) };
            let _ = c.status();
            t.elapsed()
        })
        .collect();
    report(
        "reference: /bin/true with a pre_exec hook (fork)",
        &mut forked,
        Some(("/bin/true", true_p50)),
    );
    report("reference: fork+exec+wait /bin/true", &mut true_ref, None);

    if selected("none") {
        // start-to-ready, ready = none.
        let none = manifest(
            tmp.path(),
            "none",
            "execution_mode = \"subprocess\"\nready = \"none\"\nstop_grace_s = 0\n[launch]\ncommand = \"/bin/sleep\"\nargs = [\"60\"]\n",
        );
        let (mut s, _) = support::start_call_stop(&rt, &sup, none, 100, 0);
        report(
            "start-to-ready, ready = none (/bin/sleep)",
            &mut s,
            Some(("/bin/true", true_p50)),
        );
    }
    if selected("rust") {
        // start-to-ready, protocol health + manifest check, minimal Rust
        // worker: the SDK's echo example, a binary of its own.
        let echo = support::echo_worker();
        let rust = manifest(
            tmp.path(),
            "echo",
            &format!(
                "execution_mode = \"subprocess\"\nversion = \"0.1.0\"\nstop_grace_s = 1\n[launch]\ncommand = \"{}\"\n",
                echo.display()
            ),
        );
        // Reference: the same binary exec'd with no address, so it builds
        // the SDK's runtime, finds nothing to serve and exits (the worker's
        // own floor).
        let mut floor: Vec<Duration> = (0..100)
            .map(|_| {
                let t = Instant::now();
                let _ = Command::new(&echo)
                    .env_remove("PLUGBOARD_LISTEN")
                    .stdin(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::null())
                    .status();
                t.elapsed()
            })
            .collect();
        let floor_p50 = pct(&mut floor, 0.5);
        report(
            "reference: fork+exec+wait of the worker binary, no address",
            &mut floor,
            Some(("/bin/true", true_p50)),
        );
        let (mut s, _) = support::start_call_stop(&rt, &sup, rust, 100, 0);
        let rust_p50 = pct(&mut s, 0.5);
        report(
            "start-to-ready, protocol (minimal Rust worker)",
            &mut s,
            Some(("/bin/true", true_p50)),
        );
        println!(
            "  = {:.1}x the worker binary's own exec + runtime",
            rust_p50.as_secs_f64() / floor_p50.as_secs_f64()
        );
    }
    if selected("python") {
        // start-to-ready of a Python worker written with the SDK (it
        // notifies), on the interpreter itself rather than a launcher shim,
        // with the SDK's bytecode compiled as an installed package has it.
        let py = String::from_utf8_lossy(
            &Command::new("python3")
                .args(["-c", "import sys; print(sys.executable)"])
                .output()
                .unwrap_or_else(|e| panic!("python3: {e}"))
                .stdout,
        )
        .trim()
        .to_owned();
        let sdk = root().join("sdk/python");
        // In the SDK's own (ignored) __pycache__: a cache prefix would also
        // move the standard library's bytecode away.
        let compiled = Command::new(&py)
            .args(["-m", "compileall", "-q"])
            .arg(sdk.join("plugboard_worker"))
            .status()
            .unwrap_or_else(|e| panic!("compileall: {e}"));
        assert!(compiled.success(), "compiling the SDK failed");
        let script = tmp.path().join("pyecho.py");
        std::fs::write(
            &script,
            format!(
                "import sys\nsys.path.insert(0, {sdk:?})\nfrom plugboard_worker import Worker, run\n\n\nclass Echo(Worker):\n    name = \"pyecho\"\n    version = \"0.1.0\"\n\n    def execute(self, input, ctx):\n        return {{\"echo\": input}}\n\n\nrun(Echo())\n",
                sdk = sdk.display().to_string()
            ),
        )
        .unwrap_or_else(|e| panic!("write: {e}"));
        let python = |code: &str| spawn_wait(&py, &["-c", code], 30);
        let mut bare = python("pass");
        let bare_p50 = pct(&mut bare, 0.5);
        report(
            "reference: fork+exec+wait python -c pass (interpreter)",
            &mut bare,
            None,
        );
        let import = format!(
            "import sys; sys.path.insert(0, {:?}); import plugboard_worker",
            sdk.display().to_string()
        );
        let mut imported = python(&import);
        let imported_p50 = pct(&mut imported, 0.5);
        report(
            "reference: the same importing the SDK",
            &mut imported,
            Some(("python -c pass", bare_p50)),
        );
        let proto = manifest(
            tmp.path(),
            "pyecho",
            &format!(
                "execution_mode = \"subprocess\"\nstop_grace_s = 1\n[launch]\ncommand = {py:?}\nargs = [{:?}]\n",
                script.display().to_string()
            ),
        );
        let (mut s, _) = support::start_call_stop(&rt, &sup, proto, 30, 0);
        report(
            "start-to-ready, protocol (Python worker, SDK)",
            &mut s,
            Some(("python -c + SDK import", imported_p50)),
        );
    }
    if selected("tree") {
        // Stop latency of a 52-process tree.
        let tree = root().join("examples/plugins/process_tree/tree.py");
        let grace = 0.2;
        let big = manifest(
            tmp.path(),
            "tree",
            &format!(
                "execution_mode = \"subprocess\"\nready = {{ log_line = \"^tree ready$\" }}\nstop_grace_s = {grace}\n[launch]\ncommand = \"python3\"\nargs = [\"-u\", \"{}\", \"7\", \"6\"]\n",
                tree.display()
            ),
        );
        let mut s = Vec::new();
        let mut sizes = Vec::new();
        for _ in 0..10 {
            rt.block_on(sup.start(Arc::clone(&big)))
                .unwrap_or_else(|e| panic!("{e}"));
            std::thread::sleep(Duration::from_millis(100));
            sizes.push(sup.tree_pids("bench_tree").len());
            let t = Instant::now();
            rt.block_on(sup.stop("bench_tree")).unwrap_or_else(|e| panic!("{e}"));
            s.push(t.elapsed().saturating_sub(Duration::from_secs_f64(grace)));
        }
        let mut kill_ref = Vec::new();
        for _ in 0..10 {
            let mut kids: Vec<_> = (0..50)
                .filter_map(|_| Command::new("/bin/sleep").arg("60").spawn().ok())
                .collect();
            let t = Instant::now();
            for k in &mut kids {
                let _ = k.kill();
            }
            for k in &mut kids {
                let _ = k.wait();
            }
            kill_ref.push(t.elapsed());
        }
        let kill_p50 = pct(&mut kill_ref, 0.5);
        report("reference: SIGKILL+wait 50 plain children", &mut kill_ref, None);
        println!("tree sizes seen: {sizes:?}");
        report(
            "stop of the tree, beyond the 0.2 s grace",
            &mut s,
            Some(("SIGKILL+wait 50", kill_p50)),
        );
    }
    if selected("gc") {
        // gc over 10,000 rows of a dead host.
        let db = tmp.path().join("gc.sqlite");
        let mut ledger = Ledger::open(&db).unwrap_or_else(|e| panic!("{e}"));
        let mut g = Vec::new();
        let mut r = Vec::new();
        for _ in 0..5 {
            let host = ledger
                .register_host(999_999, 1, "gone")
                .unwrap_or_else(|e| panic!("{e}"));
            let _ = ledger.transaction(|l| {
                for i in 0..10_000 {
                    let id = l.intent(
                        host.id,
                        &Intent {
                            cost_per_hour: None,
                            details: serde_json::json!({}),
                            ..Intent::new(ResourceKind::Process, "process", "bench_x")
                        },
                    )?;
                    l.set_process(id, 5_000_000 + i, 1)?;
                }
                Ok(())
            });
            let t = Instant::now();
            let rep = run_gc(&mut ledger, GcOptions::default(), None).unwrap_or_else(|e| panic!("{e}"));
            g.push(t.elapsed());
            assert_eq!(rep.reaped.len(), 10_000);
            // Reference: the same rows updated by one statement.
            let host = ledger
                .register_host(999_998, 1, "gone")
                .unwrap_or_else(|e| panic!("{e}"));
            let _ = ledger.transaction(|l| {
                for _ in 0..10_000 {
                    l.intent(
                        host.id,
                        &Intent {
                            cost_per_hour: None,
                            details: serde_json::json!({}),
                            ..Intent::new(ResourceKind::Process, "process", "bench_y")
                        },
                    )?;
                }
                Ok(())
            });
            let conn = rusqlite_free_update(&db);
            r.push(conn);
        }
        let ref_p50 = pct(&mut r, 0.5);
        report("reference: ending the same 10,000 rows (writes only)", &mut r, None);
        report(
            "gc over 10,000 rows of a dead host",
            &mut g,
            Some(("the writes alone", ref_p50)),
        );
    }
}

/// Times ending every live row in one transaction: the writes gc must do,
/// without its process-table scan and identity checks.
fn rusqlite_free_update(db: &Path) -> Duration {
    let mut ledger = Ledger::open(db).unwrap_or_else(|e| panic!("{e}"));
    let live = ledger.live().unwrap_or_default();
    let t = Instant::now();
    let _ = ledger.transaction(|l| {
        for r in &live {
            l.end(r.id, ResourceStatus::Reaped, None, None)?;
        }
        Ok(())
    });
    t.elapsed()
}
