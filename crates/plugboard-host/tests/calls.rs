//! One handle for every plugin: the same suite drives the in-process Rust
//! plugin, the Rust worker and the Python worker; then the protocol's
//! refusals (token, size, malformed, version) and crashes mid-call.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use plugboard_examples::SlowJob;
use plugboard_host::handle::{Target, WorkerClient, is_cancelled};
use plugboard_host::{CallError, HostError, Manifest, PluginHandle, Supervisor};
use plugboard_protocol::{ErrorCode, StreamEvent, Typed};
use serde_json::json;

const RUST_WORKER_ENV: &str = "PLUGBOARD_TEST_RUST_WORKER";

/// Runs as a Rust worker process (the SDK serving SlowJob) when the env var
/// is set.
#[test]
fn rust_worker_entry() {
    if std::env::var_os(RUST_WORKER_ENV).is_none() {
        return;
    }
    let code = plugboard_worker::run(Typed::new(SlowJob));
    std::process::exit(if code == std::process::ExitCode::SUCCESS { 0 } else { 1 });
}

fn rust_worker_manifest(dir: &std::path::Path) -> Arc<Manifest> {
    manifest_in(
        dir,
        "slow_job",
        &format!(
            "name = \"slow_job\"\ncategory = \"demo\"\nversion = \"0.1.0\"\nexecution_mode = \"subprocess\"\nstop_grace_s = 1\n[launch]\ncommand = \"{}\"\nargs = [\"--exact\", \"rust_worker_entry\", \"--nocapture\", \"-q\"]\nenv = {{ {RUST_WORKER_ENV} = \"1\" }}\n",
            std::env::current_exe().unwrap().display()
        ),
    )
}

async fn suite(h: &PluginHandle) {
    let who = h.plugin_id().to_owned();
    let m = h.manifest().await.unwrap();
    assert_eq!((m.protocol_version, m.name.as_str()), (1, "slow_job"), "{who}");
    assert!(m.capabilities.streaming && m.capabilities.cancel, "{who}");
    assert_eq!(h.health().await.unwrap().status.as_str(), "ok");

    // Plain execute.
    assert_eq!(
        h.execute(json!({"steps": 3, "step_ms": 1})).await.unwrap(),
        json!({"steps_done": 3}),
        "{who}"
    );
    // Invalid input is a 422 with the plugin's reason.
    let err = h.execute(json!({"steps": "many"})).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidInput), "{who}: {err}");
    assert!(err.to_string().contains("steps must be an integer"), "{who}: {err}");

    // Streaming: progress events in order, then the result.
    let stream = h
        .execute_streaming(json!({"steps": 4, "step_ms": 5}), None)
        .await
        .unwrap();
    let mut progress = Vec::new();
    let out = stream
        .finish(|ev| {
            if let StreamEvent::Progress { progress: p, message } = ev {
                progress.push((*p, message.clone().unwrap_or_default()));
            }
        })
        .await
        .unwrap();
    assert_eq!(out, json!({"steps_done": 4}), "{who}");
    let fractions: Vec<f64> = progress.iter().map(|p| p.0).collect();
    assert_eq!(fractions, [0.25, 0.5, 0.75, 1.0], "{who}");
    assert_eq!(progress[3].1, "step 4 of 4");

    // Cancel mid-stream.
    let mut stream = h
        .execute_streaming(json!({"steps": 1000, "step_ms": 10}), Some(format!("{who}-c1")))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(first, StreamEvent::Progress { .. }), "{who}: {first:?}");
    assert!(h.cancel(stream.request_id()).await.unwrap(), "{who}");
    let end = tokio::time::timeout(Duration::from_secs(5), stream.finish(|_| {}))
        .await
        .expect("cancel was not honoured");
    let err = end.unwrap_err();
    assert!(is_cancelled(&err), "{who}: {err}");
    assert!(!h.cancel("no-such-call").await.unwrap());

    // Config: violations listed, a valid one applied and used.
    let v = h.validate_config(&json!({"step_ms": -5})).await.unwrap();
    assert!(!v.is_empty() && v[0].pointer.contains("step_ms"), "{who}: {v:?}");
    assert!(
        h.validate_config(&json!({"nope": 1})).await.unwrap().len() == 1,
        "{who}"
    );
    assert!(h.apply_config(&json!({"step_ms": 1})).await.unwrap().is_empty());
    assert_eq!(h.execute(json!({"steps": 2})).await.unwrap(), json!({"steps_done": 2}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_suite_passes_in_process() {
    let h = PluginHandle::in_process("demo_slow_job", Arc::new(Typed::new(SlowJob)));
    assert!(h.is_in_process());
    suite(&h).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_suite_passes_against_the_rust_worker() {
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("d"));
    sup.start(rust_worker_manifest(tmp.path())).await.unwrap();
    let h = sup.handle("demo_slow_job").unwrap();
    suite(&h).await;
    sup.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_suite_passes_against_the_python_worker() {
    if !python_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("d"));
    sup.start(Arc::new(Manifest::load(&example("slow_job")).unwrap()))
        .await
        .unwrap();
    let h = sup.handle("demo_slow_job").unwrap();
    suite(&h).await;
    sup.shutdown().await.unwrap();
}

/// Sends a raw HTTP request over the worker's socket; returns (status, body).
fn raw(sock: &std::path::Path, request: &[u8]) -> (u16, String) {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read until the headers and Content-Length bytes are in.
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            });
            if len.is_some_and(|n| body.len() >= n) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn protocol_refusals(sup: &Supervisor, id: &str) {
    let st = sup.status(id).unwrap();
    let sock = st.listen.clone().unwrap();
    // Wrong token: 401 through the client, and without any token.
    let bad = PluginHandle::worker(WorkerClient::new(id, Target::Unix(sock.clone()), Some("wrong".into())));
    let err = bad.execute(json!({})).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized), "{err}");
    let (status, _) = raw(
        &sock,
        b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 401);
    let good = sup.handle(id).unwrap();
    assert_eq!(good.health().await.unwrap().status.as_str(), "ok");
}

async fn raw_refusals(sock: &std::path::Path, token: &str) {
    let auth = format!("Authorization: Bearer {token}\r\n");
    let req = |method: &str, path: &str, extra: &str, body: &[u8]| {
        let mut r = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}{extra}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let (s, b) = raw(sock, &req("POST", "/v1/execute", "", b"{not json"));
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("bad_request"), "{b}");
    let (s, b) = raw(sock, &req("POST", "/v1/execute", "", b"{\"no_input\": 1}"));
    assert_eq!(s, 400, "{b}");
    let (s, b) = raw(sock, &req("GET", "/v1/health", "plugboard-protocol: 2\r\n", b""));
    assert_eq!(s, 400, "{b}");
    assert!(
        b.contains("host speaks protocol 2") && b.contains("worker speaks protocol 1"),
        "{b}"
    );
    let (s, _) = raw(sock, &req("GET", "/v1/nothing", "", b""));
    assert_eq!(s, 404);
    let (s, _) = raw(sock, &req("GET", "/v1/execute", "", b""));
    assert_eq!(s, 405);
    // Oversized: the worker refuses by Content-Length before reading it all.
    let big = format!(
        "POST /v1/execute HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Length: {}\r\n\r\n",
        17 * 1024 * 1024
    );
    let mut r = big.into_bytes();
    r.extend_from_slice(&vec![b' '; 64 * 1024]);
    let (s, b) = raw(sock, &r);
    assert_eq!(s, 413, "{b}");
}

fn token_of(sup: &Supervisor, id: &str) -> String {
    let st = sup.status(id).unwrap();
    let pid = st.pid.unwrap();
    plugboard_core::process::environ_var(pid, "PLUGBOARD_TOKEN").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_refuse_bad_requests_with_4xx() {
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("d"));
    sup.start(rust_worker_manifest(tmp.path())).await.unwrap();
    protocol_refusals(&sup, "demo_slow_job").await;
    let sock = sup.status("demo_slow_job").unwrap().listen.unwrap();
    raw_refusals(&sock, &token_of(&sup, "demo_slow_job")).await;
    // The worker is still fine after all that.
    assert_eq!(
        sup.handle("demo_slow_job")
            .unwrap()
            .execute(json!({"steps": 1, "step_ms": 0}))
            .await
            .unwrap()["steps_done"],
        1
    );
    sup.shutdown().await.unwrap();

    if !python_available() {
        return;
    }
    let sup = supervisor(&tmp.path().join("d2"));
    sup.start(Arc::new(Manifest::load(&example("slow_job")).unwrap()))
        .await
        .unwrap();
    protocol_refusals(&sup, "demo_slow_job").await;
    let sock = sup.status("demo_slow_job").unwrap().listen.unwrap();
    raw_refusals(&sock, &token_of(&sup, "demo_slow_job")).await;
    sup.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_is_not_its_manifest_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("d"));
    let m = rust_worker_manifest(tmp.path());
    let text = std::fs::read_to_string(&m.path)
        .unwrap()
        .replace("version = \"0.1.0\"", "version = \"9.9.9\"");
    std::fs::write(&m.path, text).unwrap();
    let m = Arc::new(Manifest::load(&m.path).unwrap());
    let err = sup.start(m).await.unwrap_err();
    assert!(matches!(err, HostError::Worker { .. }), "{err}");
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(
        chain.contains("plugin.toml says 9.9.9, the worker says 0.1.0"),
        "{chain}"
    );
    // And nothing is left running.
    let lid = sup.with_ledger(|l| l.ledger_id().to_owned());
    assert!(marked_alive(&lid).is_empty());

    // A schema that differs from the worker's is refused too.
    let m2 = manifest_in(
        tmp.path(),
        "slow_job2",
        &format!(
            "{}[config_schema]\ntype = \"object\"\nrequired = [\"x\"]\n",
            std::fs::read_to_string(tmp.path().join("slow_job/plugin.toml"))
                .unwrap()
                .replace("version = \"9.9.9\"", "version = \"0.1.0\"")
        ),
    );
    let err = sup.start(m2).await.unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("config schema"), "{chain}");
}

/// The Rust worker runs a call on its connection's thread; a caller that
/// gives up (its connection closes) must still stop the call, through the
/// plugin's own cancel checks, not leave it running to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_caller_gives_up_is_cancelled_in_the_rust_worker() {
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("d"));
    sup.start(rust_worker_manifest(tmp.path())).await.unwrap();
    let h = sup.handle("demo_slow_job").unwrap();
    // 500 steps of 10 ms: 5 s when nobody stops it.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        h.execute(json!({"steps": 500, "step_ms": 10})),
    )
    .await;
    assert!(gave_up.is_err(), "the call should still have been running");
    let since = std::time::Instant::now();
    let mut active = u32::MAX;
    while since.elapsed() < Duration::from_secs(2) {
        active = h.health().await.unwrap().active_calls;
        if active == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(active, 0, "the abandoned call went on running");
    // The worker still serves.
    assert_eq!(
        h.execute(json!({"steps": 1, "step_ms": 0})).await.unwrap()["steps_done"],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_crash_mid_call_is_an_error_not_a_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("d"));
    sup.start(rust_worker_manifest(tmp.path())).await.unwrap();
    let h = sup.handle("demo_slow_job").unwrap();
    let pid = sup.status("demo_slow_job").unwrap().pid.unwrap();
    let mut stream = h
        .execute_streaming(json!({"steps": 1000, "step_ms": 10}), None)
        .await
        .unwrap();
    assert!(stream.next().await.unwrap().is_ok());
    let call = {
        let h = h.clone();
        tokio::spawn(async move { h.execute(json!({"steps": 1000, "step_ms": 10})).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let streamed = tokio::time::timeout(Duration::from_secs(10), stream.finish(|_| {}))
        .await
        .expect("stream hung");
    let err = streamed.unwrap_err();
    assert!(matches!(err, CallError::Transport { .. }), "{err}");
    let plain = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("call hung")
        .unwrap();
    let err = plain.unwrap_err();
    assert!(matches!(err, CallError::Transport { .. }), "{err}");
    assert!(err.to_string().contains("may have crashed"), "{err}");
    // The supervisor saw the crash too.
    assert!(
        wait_until(Duration::from_secs(5), || sup.status("demo_slow_job").unwrap().state
            == plugboard_host::RunState::Crashed)
        .await
    );
    assert!(matches!(sup.handle("demo_slow_job"), Err(HostError::NotRunning { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_servers_have_no_protocol_handle() {
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("d"));
    let m = manifest_in(
        tmp.path(),
        "plain",
        "name = \"plain\"\ncategory = \"demo\"\nexecution_mode = \"subprocess\"\nready = \"none\"\nstop_grace_s = 0.2\n[launch]\ncommand = \"sleep\"\nargs = [\"30\"]\n",
    );
    sup.start(m).await.unwrap();
    let err = sup.handle("demo_plain").unwrap_err().to_string();
    assert!(err.contains("does not speak the plugboard protocol"), "{err}");
    sup.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_workers_over_tcp_require_the_bearer_token() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let server = plugboard_worker::Server::new(
        Arc::new(Typed::new(SlowJob)),
        plugboard_worker::Listen::parse(&format!("tcp://{addr}")),
        Some("tcp-token".into()),
    );
    tokio::spawn(server.serve());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let anonymous = PluginHandle::worker(WorkerClient::new("remote_slow_job", Target::Tcp(addr.clone()), None));
    let err = anonymous.health().await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized), "{err}");
    let h = PluginHandle::worker(WorkerClient::new(
        "remote_slow_job",
        Target::Tcp(addr),
        Some("tcp-token".into()),
    ));
    suite(&h).await;
}

fn with_restart(dir: &std::path::Path, backoff_ms: u64) -> Arc<Manifest> {
    let m = rust_worker_manifest(dir);
    let text = std::fs::read_to_string(&m.path).unwrap();
    let text = text.replace(
        "[launch]",
        &format!("[restart]\npolicy = \"on-failure\"\nmax_restarts = 3\nbackoff_ms = {backoff_ms}\n[launch]"),
    );
    std::fs::write(&m.path, text).unwrap();
    Arc::new(Manifest::load(&m.path).unwrap())
}

fn kill9(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_is_applied_at_start_and_again_after_a_restart_by_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("d"));
    let m = with_restart(tmp.path(), 50);
    // A config the worker refuses fails the start and leaves nothing running.
    let err = sup
        .start_with_config(Arc::clone(&m), Some(json!({"step_ms": -1})))
        .await
        .unwrap_err();
    assert!(matches!(err, HostError::Config { .. }), "{err}");
    let lid = sup.with_ledger(|l| l.ledger_id().to_owned());
    assert!(marked_alive(&lid).is_empty());
    // A valid one is applied: 3 steps take 3 ms instead of 300.
    sup.start_with_config(Arc::clone(&m), Some(json!({"step_ms": 1})))
        .await
        .unwrap();
    let timed = |h: PluginHandle| async move {
        let t = std::time::Instant::now();
        h.execute(json!({"steps": 3})).await.unwrap();
        t.elapsed()
    };
    assert!(timed(sup.handle("demo_slow_job").unwrap()).await < Duration::from_millis(150));
    let first = sup.status("demo_slow_job").unwrap().pid.unwrap();
    kill9(first);
    assert!(
        wait_until(Duration::from_secs(10), || sup.status("demo_slow_job").is_some_and(
            |s| s.state == plugboard_host::RunState::Running && s.pid != Some(first)
        ))
        .await
    );
    assert!(
        timed(sup.handle("demo_slow_job").unwrap()).await < Duration::from_millis(150),
        "config lost on restart"
    );
    sup.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_during_restart_backoff_supersedes_the_pending_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("d"));
    let m = with_restart(tmp.path(), 600);
    sup.start(Arc::clone(&m)).await.unwrap();
    kill9(sup.status("demo_slow_job").unwrap().pid.unwrap());
    assert!(
        wait_until(Duration::from_secs(5), || sup.status("demo_slow_job").unwrap().state
            == plugboard_host::RunState::Crashed)
        .await
    );
    // Started by hand while the policy's restart waits out its backoff.
    sup.start(Arc::clone(&m)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let lid = sup.with_ledger(|l| l.ledger_id().to_owned());
    assert_eq!(marked_alive(&lid).len(), 1, "a second, untracked worker was started");
    sup.stop("demo_slow_job").await.unwrap();
    assert!(marked_alive(&lid).is_empty());
}
