//! What the host benches share: percentiles, the report line (each figure
//! beside its same-run reference), and start/call/stop rounds of a plugin.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use plugboard_host::{Manifest, Supervisor};
use serde_json::json;

/// The `p` percentile (0..=1) of `samples` (sorted in place).
pub fn pct(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i.min(samples.len() - 1)]
}

/// Prints p50 and p99 of `samples`, and their ratio to `reference`.
pub fn report(name: &str, samples: &mut [Duration], reference: Option<(&str, Duration)>) {
    let p50 = pct(samples, 0.5);
    let p99 = pct(samples, 0.99);
    let ratio = reference
        .map(|(r, d)| format!("  ({:.1}x {r})", p50.as_secs_f64() / d.as_secs_f64()))
        .unwrap_or_default();
    println!(
        "{name:<56} p50 {:>9.3} ms  p99 {:>9.3} ms{ratio}",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
}

/// Starts `m` until ready and stops it, `rounds` times; in the first round
/// also times `calls` trivial calls (`{"steps": 0}`; none asks for no
/// handle, so any readiness works). Returns
/// (start-to-ready times, call round trips).
pub fn start_call_stop(
    rt: &tokio::runtime::Runtime,
    sup: &Supervisor,
    m: Arc<Manifest>,
    rounds: usize,
    calls: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let id = m.unique_id();
    let mut starts = Vec::new();
    let mut call_times = Vec::new();
    for round in 0..rounds {
        let t = Instant::now();
        rt.block_on(sup.start(Arc::clone(&m))).unwrap_or_else(|e| panic!("{e}"));
        starts.push(t.elapsed());
        if round == 0 && calls > 0 {
            let h = sup.handle(&id).unwrap_or_else(|e| panic!("{e}"));
            rt.block_on(async {
                for _ in 0..calls {
                    let t = Instant::now();
                    let _ = h.execute(json!({"steps": 0})).await.unwrap_or_else(|e| panic!("{e}"));
                    call_times.push(t.elapsed());
                }
            });
        }
        rt.block_on(sup.stop(&id)).unwrap_or_else(|e| panic!("{e}"));
    }
    (starts, call_times)
}

/// Builds `plugboard-worker`'s `echo_worker` example in release mode (the
/// smallest Rust worker: the SDK and nothing else) with the cargo that
/// builds this bench, and returns its path.
pub fn echo_worker() -> std::path::PathBuf {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "plugboard-worker",
            "--example",
            "echo_worker",
            "--message-format=json",
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the echo worker: {e}"));
    assert!(out.status.success(), "building the echo worker failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "echo_worker")
        .find_map(|v| v["executable"].as_str().map(std::path::PathBuf::from))
        .unwrap_or_else(|| panic!("cargo built no echo_worker executable"))
}
