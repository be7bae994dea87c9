//! Protocol v1 across versions: a host of this version against a worker
//! built before it, and a worker of this version against a host built
//! before it.
//!
//! `fixtures/skew_v1/` holds one conversation with the Rust worker SDK of
//! plugboard 0.1.0 as first released (the SDK that ran every call on
//! tokio's blocking pool): each `NAME.request` is the exact bytes its host
//! client sent, each `NAME.response` the exact bytes that worker answered
//! (SlowJob, token `tok`). Here a fake worker replays those answers to
//! today's host client, and today's worker is sent those requests and must
//! answer what the old one did (status, content type and body; the `date`
//! header is gone, which no client needs).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plugboard_host::PluginHandle;
use plugboard_host::handle::{Target, WorkerClient};
use plugboard_protocol::{ErrorCode, StreamEvent, Typed};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/skew_v1")
}

fn fixture(name: &str, ext: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(format!("{name}.{ext}"))).unwrap()
}

/// One HTTP/1.1 message read off `s`: the head (lower-cased header names)
/// and the body, de-chunked. `None` at a clean end of the connection.
fn read_message(s: &mut impl Read) -> Option<(String, HashMap<String, String>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8(buf).unwrap();
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap().to_owned();
    let headers: HashMap<String, String> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let mut body = Vec::new();
    if let Some(n) = headers.get("content-length") {
        body.resize(n.parse().unwrap(), 0);
        s.read_exact(&mut body).unwrap();
    } else if headers.get("transfer-encoding").is_some_and(|t| t == "chunked") {
        loop {
            let mut size = Vec::new();
            while !size.ends_with(b"\r\n") {
                s.read_exact(&mut byte).unwrap();
                size.push(byte[0]);
            }
            let n = usize::from_str_radix(std::str::from_utf8(&size).unwrap().trim(), 16).unwrap();
            let mut chunk = vec![0u8; n + 2];
            s.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    Some((start, headers, body))
}

/// Which recorded answer the old worker gave to a request like this one.
fn answer_for(start: &str, body: &[u8]) -> &'static str {
    let path = start.split(' ').nth(1).unwrap_or("");
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match path {
        "/v1/manifest" => "manifest",
        "/v1/health" => "health",
        "/v1/execute" if body["input"]["steps"].is_u64() => "execute",
        "/v1/execute" => "execute_invalid",
        "/v1/execute/stream" => "stream",
        "/v1/cancel" => "cancel_unknown",
        "/v1/config/validate" => "config_validate",
        "/v1/config/apply" => "config_apply",
        _ => "not_found",
    }
}

/// A worker that is only the old worker's recorded answers. It checks
/// every request carries what the old worker required.
fn replaying_worker(sock: &Path) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = UnixListener::bind(sock).unwrap();
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                while let Some((start, headers, body)) = read_message(&mut conn) {
                    assert_eq!(
                        headers.get("plugboard-protocol").map(String::as_str),
                        Some("1"),
                        "{start}"
                    );
                    assert_eq!(
                        headers.get("authorization").map(String::as_str),
                        Some("Bearer tok"),
                        "{start}"
                    );
                    let name = answer_for(&start, &body);
                    log.lock().unwrap().push(name.to_owned());
                    if conn.write_all(&fixture(name, "response")).is_err() {
                        return;
                    }
                }
            });
        }
    });
    seen
}

#[tokio::test]
async fn a_host_of_this_version_calls_a_worker_built_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("old.sock");
    let seen = replaying_worker(&sock);
    let h = PluginHandle::worker(WorkerClient::new(
        "demo_slow_job",
        Target::Unix(sock),
        Some("tok".into()),
    ));

    let m = h.manifest().await.unwrap();
    assert_eq!((m.name.as_str(), m.version.as_deref()), ("slow_job", Some("0.1.0")));
    assert!(m.capabilities.streaming && m.capabilities.cancel);
    h.verify("slow_job", Some("0.1.0"), None).await.unwrap();
    let health = h.health().await.unwrap();
    assert_eq!((health.status.as_str(), health.active_calls), ("ok", 0));

    let out = h.execute(json!({"steps": 2, "step_ms": 0})).await.unwrap();
    assert_eq!(out, json!({"steps_done": 2}));
    let err = h.execute(json!({"steps": "x"})).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidInput), "{err}");

    let mut progress = Vec::new();
    let out = h
        .execute_streaming(json!({"steps": 2, "step_ms": 0}), Some("r1".into()))
        .await
        .unwrap()
        .finish(|ev| {
            if let StreamEvent::Progress { progress: p, .. } = ev {
                progress.push(*p);
            }
        })
        .await
        .unwrap();
    assert_eq!(out, json!({"steps_done": 2}));
    assert_eq!(progress, vec![0.5, 1.0]);

    assert!(!h.cancel("nope").await.unwrap());
    let violations = h.validate_config(&json!({"step_ms": "slow"})).await.unwrap();
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].pointer, "/step_ms");
    assert!(h.apply_config(&json!({"step_ms": 5})).await.unwrap().is_empty());

    let seen = seen.lock().unwrap().clone();
    for want in [
        "manifest",
        "health",
        "execute",
        "execute_invalid",
        "stream",
        "cancel_unknown",
        "config_validate",
    ] {
        assert!(seen.iter().any(|s| s == want), "{want} never asked: {seen:?}");
    }
}

/// Sends one recorded request to `sock` and reads the answer.
fn exchange(sock: &Path, name: &str) -> (String, HashMap<String, String>, Vec<u8>) {
    let mut c = UnixStream::connect(sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(&fixture(name, "request")).unwrap();
    read_message(&mut c).unwrap_or_else(|| panic!("{name}: no answer"))
}

fn same_body(name: &str, content_type: &str, got: &[u8], want: &[u8]) {
    if content_type == "application/x-ndjson" {
        let lines = |b: &[u8]| -> Vec<Value> {
            std::str::from_utf8(b)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        assert_eq!(lines(got), lines(want), "{name}");
    } else {
        let got: Value = serde_json::from_slice(got).unwrap();
        let want: Value = serde_json::from_slice(want).unwrap();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn a_worker_of_this_version_answers_a_host_built_before_it() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("new.sock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = plugboard_worker::Server::new(
        Arc::new(Typed::new(plugboard_examples::SlowJob)),
        plugboard_worker::Listen::Unix(sock.clone()),
        Some("tok".into()),
    );
    let serving = std::thread::spawn(move || rt.block_on(server.serve()));
    let since = std::time::Instant::now();
    while !sock.exists() {
        assert!(since.elapsed() < Duration::from_secs(10), "the worker never listened");
        std::thread::sleep(Duration::from_millis(5));
    }

    let mut names: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".request").map(str::to_owned)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 10, "{names:?}");
    for name in &names {
        let (start, headers, body) = exchange(&sock, name);
        let (want_start, want_headers, want_body) =
            read_message(&mut std::io::Cursor::new(fixture(name, "response"))).unwrap();
        assert_eq!(start, want_start, "{name}");
        let ct = |h: &HashMap<String, String>| h.get("content-type").cloned().unwrap_or_default();
        assert_eq!(ct(&headers), ct(&want_headers), "{name}");
        same_body(name, &ct(&headers), &body, &want_body);
    }

    let mut c = UnixStream::connect(&sock).unwrap();
    c.write_all(
        b"POST /v1/shutdown HTTP/1.1\r\nhost: worker\r\nplugboard-protocol: 1\r\nauthorization: Bearer tok\r\ncontent-length: 0\r\n\r\n",
    )
    .unwrap();
    serving.join().unwrap().unwrap();
}
