//! Call round trips through one [`PluginHandle`]: the in-process plugin, the
//! Rust worker and the Python worker over a Unix socket, next to a raw
//! Unix-socket 64-byte round trip to another process, measured in the same
//! run. Every process inherits the same CPU pinning:
//! `taskset -c 0 cargo bench -p plugboard-host --bench calls`.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plugboard_host::{DataDir, Manifest, PluginHandle, Supervisor, SupervisorConfig};
use plugboard_protocol::Typed;
use serde_json::json;

const ROLE: &str = "PLUGBOARD_BENCH_ROLE";

fn stats(name: &str, mut s: Vec<Duration>, total: Duration, reference: Option<Duration>) -> Duration {
    s.sort();
    let p50 = s[s.len() / 2];
    let p99 = s[(s.len() * 99 / 100).min(s.len() - 1)];
    let rate = s.len() as f64 / total.as_secs_f64();
    let ratio = reference
        .map(|r| format!("  ({:.1}x raw)", p50.as_secs_f64() / r.as_secs_f64()))
        .unwrap_or_default();
    println!(
        "{name:<44} p50 {:>8.1} us  p99 {:>8.1} us  {:>9.0} calls/s{ratio}",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        rate
    );
    p50
}

fn echo_server(path: &str) {
    let l = UnixListener::bind(path).unwrap_or_else(|e| panic!("bind: {e}"));
    if let Ok((mut s, _)) = l.accept() {
        let mut buf = [0u8; 64];
        while s.read_exact(&mut buf).is_ok() {
            if s.write_all(&buf).is_err() {
                break;
            }
        }
    }
}

fn manifest(dir: &Path, name: &str, body: &str) -> Arc<Manifest> {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(d.join("plugin.toml"), body).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(Manifest::load(&d.join("plugin.toml")).unwrap_or_else(|e| panic!("{e}")))
}

async fn run_calls(h: &PluginHandle, input: serde_json::Value, n: usize) -> (Vec<Duration>, Duration) {
    for _ in 0..100 {
        h.execute(input.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let mut s = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        h.execute(input.clone()).await.unwrap_or_else(|e| panic!("{e}"));
        s.push(t.elapsed());
    }
    (s, start.elapsed())
}

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("echo") => return echo_server(&std::env::var("ECHO_PATH").unwrap_or_default()),
        Ok("worker") => {
            let _ = plugboard_worker::run(Typed::new(plugboard_examples::Reverse));
            return;
        }
        _ => {}
    }
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));

    // Reference: raw 64-byte round trips to an echo process.
    let sock = tmp.path().join("echo.sock");
    let mut echo = std::process::Command::new(&exe)
        .env(ROLE, "echo")
        .env("ECHO_PATH", &sock)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    while !sock.exists() {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut c = UnixStream::connect(&sock).unwrap_or_else(|e| panic!("{e}"));
    let msg = [7u8; 64];
    let mut buf = [0u8; 64];
    let n = 20_000;
    for _ in 0..1000 {
        let _ = c.write_all(&msg);
        let _ = c.read_exact(&mut buf);
    }
    let mut s = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let _ = c.write_all(&msg);
        let _ = c.read_exact(&mut buf);
        s.push(t.elapsed());
    }
    let raw = stats(
        "reference: raw Unix socket 64-byte round trip",
        s,
        start.elapsed(),
        None,
    );
    drop(c);
    let _ = echo.wait();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let input = json!({"text": "hello"});
        let inproc = PluginHandle::in_process("text_reverse", Arc::new(Typed::new(plugboard_examples::Reverse)));
        let (s, t) = run_calls(&inproc, input.clone(), 20_000).await;
        stats("in-process plugin (execute)", s, t, Some(raw));

        let sup = Supervisor::new(SupervisorConfig::new(DataDir::new(tmp.path().join("d"))))
            .unwrap_or_else(|e| panic!("{e}"));
        let rust = manifest(
            tmp.path(),
            "reverse",
            &format!(
                "name = \"reverse\"\ncategory = \"text\"\nexecution_mode = \"subprocess\"\n[launch]\ncommand = \"{}\"\nenv = {{ {ROLE} = \"worker\" }}\n",
                exe.display()
            ),
        );
        sup.start(rust).await.unwrap_or_else(|e| panic!("{e}"));
        let h = sup.handle("text_reverse").unwrap_or_else(|e| panic!("{e}"));
        let (s, t) = run_calls(&h, input.clone(), 20_000).await;
        stats("Rust worker over Unix socket (execute)", s, t, Some(raw));

        let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins/slow_job/plugin.toml");
        sup.start(Arc::new(Manifest::load(&py).unwrap_or_else(|e| panic!("{e}")))).await.unwrap_or_else(|e| panic!("{e}"));
        let h = sup.handle("demo_slow_job").unwrap_or_else(|e| panic!("{e}"));
        let (s, t) = run_calls(&h, json!({"steps": 0}), 3_000).await;
        stats("Python worker over Unix socket (execute)", s, t, Some(raw));
        sup.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    });
}
