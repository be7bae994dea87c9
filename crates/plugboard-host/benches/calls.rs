//! Call round trips through one [`PluginHandle`]: the in-process plugin, the
//! Rust worker and the Python worker over a Unix socket, next to a raw
//! Unix-socket 64-byte round trip to another process, measured in the same
//! run. Then concurrency: calls/s to one Rust worker with 1, 8 and 64
//! concurrent callers (pooled connections) next to raw round trips/s with
//! as many connections; streamed events/s; and a call to one plugin while
//! another has slow calls in flight (the host serialises nothing across
//! plugins). Every process inherits the same CPU pinning:
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

/// Echoes 64-byte messages on every connection (a thread each), until the
/// process is killed.
fn echo_server(path: &str) {
    let l = UnixListener::bind(path).unwrap_or_else(|e| panic!("bind: {e}"));
    for conn in l.incoming() {
        let Ok(mut s) = conn else { return };
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while s.read_exact(&mut buf).is_ok() {
                if s.write_all(&buf).is_err() {
                    break;
                }
            }
        });
    }
}

/// Round trips/s over `k` raw connections at once, for `secs`.
fn raw_rate(sock: &Path, k: usize, secs: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let threads: Vec<_> = (0..k)
        .map(|_| {
            let sock = sock.to_path_buf();
            std::thread::spawn(move || {
                let mut c = UnixStream::connect(&sock).unwrap_or_else(|e| panic!("{e}"));
                let (msg, mut buf, mut n) = ([7u8; 64], [0u8; 64], 0u64);
                while Instant::now() < deadline {
                    let _ = c.write_all(&msg);
                    let _ = c.read_exact(&mut buf);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

/// Calls/s through one handle with `k` concurrent callers, for `secs`.
async fn call_rate(h: &PluginHandle, k: usize, secs: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..k)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    h.execute(json!({"text": "hello"}))
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    total as f64 / start.elapsed().as_secs_f64()
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
    let raw_rates: Vec<(usize, f64)> = [1, 8, 64].into_iter().map(|k| (k, raw_rate(&sock, k, 2.0))).collect();
    let _ = echo.kill();
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

        // Concurrency: one worker, k callers sharing the handle's pool.
        for (k, raw_k) in &raw_rates {
            let rate = call_rate(&h, *k, 2.0).await;
            println!(
                "Rust worker, {k:>2} concurrent callers {:>21.0} calls/s  (raw, {k} connections: {raw_k:.0}/s; {:.2}x)",
                rate,
                rate / raw_k
            );
        }

        let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins/slow_job/plugin.toml");
        sup.start(Arc::new(Manifest::load(&py).unwrap_or_else(|e| panic!("{e}")))).await.unwrap_or_else(|e| panic!("{e}"));
        let h = sup.handle("demo_slow_job").unwrap_or_else(|e| panic!("{e}"));
        let (s, t) = run_calls(&h, json!({"steps": 0}), 3_000).await;
        stats("Python worker over Unix socket (execute)", s, t, Some(raw));

        // Streamed events/s: one call, 10,000 progress events.
        let steps = 10_000;
        let start = Instant::now();
        let mut events = 0u64;
        h.execute_streaming(json!({"steps": steps, "step_ms": 0}), None)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .finish(|_| events += 1)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let ev_rate = events as f64 / start.elapsed().as_secs_f64();
        println!(
            "streamed progress events, Python worker {:>17.0} events/s  ({:.2}x its own calls/s)",
            ev_rate,
            ev_rate / (3_000.0 / t.as_secs_f64())
        );

        // Independent plugins are not serialised: calls to the Rust worker
        // while the Python worker has 8 slow calls (300 ms each) in flight.
        let rust_h = sup.handle("text_reverse").unwrap_or_else(|e| panic!("{e}"));
        let (idle, _) = run_calls(&rust_h, input.clone(), 2_000).await;
        let slow: Vec<_> = (0..8)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move { h.execute(json!({"steps": 1, "step_ms": 300})).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut busy = Vec::new();
        let until = Instant::now() + Duration::from_millis(200);
        while Instant::now() < until {
            let t = Instant::now();
            rust_h.execute(input.clone()).await.unwrap_or_else(|e| panic!("{e}"));
            busy.push(t.elapsed());
        }
        for s in slow {
            let _ = s.await;
        }
        let mut idle = idle;
        idle.sort();
        busy.sort();
        let (idle_p50, busy_p50) = (idle[idle.len() / 2], busy[busy.len() / 2]);
        println!(
            "Rust worker call while another plugin has 8 slow calls in flight: p50 {:.1} us ({} calls; idle p50 {:.1} us; {:.2}x)",
            busy_p50.as_secs_f64() * 1e6,
            busy.len(),
            idle_p50.as_secs_f64() * 1e6,
            busy_p50.as_secs_f64() / idle_p50.as_secs_f64()
        );
        sup.shutdown().await.unwrap_or_else(|e| panic!("{e}"));
    });
}
