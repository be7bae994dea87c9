//! Readiness by notification: the host gives a process worker a pipe as
//! `PLUGBOARD_NOTIFY_FD`; both SDKs write `READY=1` to it once they serve,
//! and any program can (`ready = "notify"`). Workers that never notify are
//! still found ready by polling.

mod common;

use std::sync::Arc;

use common::*;
use plugboard_examples::SlowJob;
use plugboard_host::{HostError, RunState};
use plugboard_protocol::Typed;
use serde_json::json;

const RUST_WORKER_ENV: &str = "PLUGBOARD_TEST_NOTIFY_RUST_WORKER";

/// Runs as a Rust SDK worker process when the env var is set.
#[test]
fn notify_rust_worker_entry() {
    if std::env::var_os(RUST_WORKER_ENV).is_none() {
        return;
    }
    let code = plugboard_worker::run(Typed::new(SlowJob));
    std::process::exit(if code == std::process::ExitCode::SUCCESS { 0 } else { 1 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_program_can_say_it_is_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("data"));
    // The program marks the moment it says so in a file: ready must not
    // come before it (a check on the order, not on timing).
    let said = tmp.path().join("said");
    let m = manifest_in(
        tmp.path(),
        "shell",
        &format!(
            "name = \"shell\"\ncategory = \"n\"\nexecution_mode = \"subprocess\"\nready = \"notify\"\nready_timeout_s = 10\n[launch]\ncommand = \"sh\"\nargs = [\"-c\", \"sleep 0.3; touch {}; echo READY=1 >&$PLUGBOARD_NOTIFY_FD; exec sleep 1000\"]\n",
            said.display()
        ),
    );
    let st = sup.start(m).await.unwrap();
    assert_eq!(st.state, RunState::Running);
    assert!(said.exists(), "ready before the program said so");
    sup.stop("n_shell").await.unwrap();

    // A program that never says so is not ready, and the error says what was awaited.
    let mut silent = (*manifest_in(
        tmp.path(),
        "silent",
        "name = \"silent\"\ncategory = \"n\"\nexecution_mode = \"subprocess\"\nready = \"notify\"\n[launch]\ncommand = \"sleep\"\nargs = [\"1000\"]\n",
    ))
    .clone();
    silent.ready_timeout_s = 0.5;
    let e = sup.start(Arc::new(silent)).await.unwrap_err();
    assert!(matches!(e, HostError::ReadyTimeout { .. }), "{e}");
    assert!(e.to_string().contains("notify"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sdks_notify_once_they_serve() {
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("data"));
    // ready = "notify": only the SDK's own notification can make these ready.
    let rust = manifest_in(
        tmp.path(),
        "rust",
        &format!(
            "name = \"slow_job\"\ncategory = \"rust\"\nexecution_mode = \"subprocess\"\nready = \"notify\"\nready_timeout_s = 20\n[launch]\ncommand = \"{}\"\nargs = [\"--exact\", \"notify_rust_worker_entry\", \"--nocapture\", \"-q\"]\nenv = {{ {RUST_WORKER_ENV} = \"1\" }}\n",
            std::env::current_exe().unwrap().display()
        ),
    );
    assert_eq!(sup.start(rust).await.unwrap().state, RunState::Running);
    sup.stop("rust_slow_job").await.unwrap();
    if !python_available() {
        return;
    }
    let py = manifest_in(
        tmp.path(),
        "py",
        &format!(
            "name = \"slow_job\"\ncategory = \"py\"\nexecution_mode = \"subprocess\"\nready = \"notify\"\nready_timeout_s = 20\n[launch]\ncommand = \"python3\"\nargs = [\"-u\", \"{}\"]\n",
            workspace_root().join("examples/plugins/slow_job/slow_job.py").display()
        ),
    );
    assert_eq!(sup.start(py).await.unwrap().state, RunState::Running);
    sup.stop("py_slow_job").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_worker_that_notifies_is_callable_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("data"));
    let m = manifest_in(
        tmp.path(),
        "rust",
        &format!(
            "name = \"slow_job\"\ncategory = \"rust\"\nversion = \"0.1.0\"\nexecution_mode = \"subprocess\"\n[launch]\ncommand = \"{}\"\nargs = [\"--exact\", \"notify_rust_worker_entry\", \"--nocapture\", \"-q\"]\nenv = {{ {RUST_WORKER_ENV} = \"1\" }}\n",
            std::env::current_exe().unwrap().display()
        ),
    );
    sup.start(m).await.unwrap();
    let out = sup
        .handle("rust_slow_job")
        .unwrap()
        .execute(json!({"steps": 1, "step_ms": 0}))
        .await
        .unwrap();
    assert_eq!(out, json!({"steps_done": 1}));
    sup.stop("rust_slow_job").await.unwrap();
}

/// A stand-in worker: serves `/v1/manifest` (as plugin `served`) and
/// `/v1/health` on its socket, logging each path it is asked for, after
/// writing `line` and `READY=1` to its notification descriptor. Health is
/// answered late, so a probe sent before the notification arrived (a slow
/// start past the host's grace period) cannot decide the start before the
/// notification is read.
const STAND_IN: &str = r#"
import json, os, socket, sys, time
served, line, log = sys.argv[1], sys.argv[2], open(sys.argv[3], "a")
s = socket.socket(socket.AF_UNIX)
s.bind(os.environ["PLUGBOARD_LISTEN"])
s.listen(8)
fd = int(os.environ["PLUGBOARD_NOTIFY_FD"])
os.write(fd, line.encode() + b"\nREADY=1\n")
os.close(fd)
while True:
    c, _ = s.accept()
    f = c.makefile("rb")
    while True:
        head = f.readline()
        if not head:
            break
        while f.readline() not in (b"\r\n", b"\n", b""):
            pass
        path = head.split()[1].decode()
        log.write(path + "\n")
        log.flush()
        if path == "/v1/health":
            time.sleep(0.3)
        if path == "/v1/manifest":
            body = {"protocol_version": 1, "name": served, "config_schema": {"type": "object"}}
        else:
            body = {"status": "ok", "protocol_version": 1, "active_calls": 0}
        data = json.dumps(body).encode()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notified_manifest_is_checked_without_asking_for_it() {
    if !python_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("data"));
    let script = tmp.path().join("stand_in.py");
    std::fs::write(&script, STAND_IN).unwrap();
    let start = |name: &str, served: &str, line: &str| {
        let asked = tmp.path().join(format!("{name}.asked"));
        let m = manifest_in(
            tmp.path(),
            name,
            &format!(
                "name = \"{name}\"\ncategory = \"n\"\nexecution_mode = \"subprocess\"\nready_timeout_s = 20\n[launch]\ncommand = \"python3\"\nargs = [{:?}, {served:?}, {line:?}, {:?}]\n",
                script.display().to_string(),
                asked.display().to_string()
            ),
        );
        (m, asked)
    };
    let asked_for = |asked: &std::path::Path| std::fs::read_to_string(asked).unwrap_or_default();
    // The refusal of a start, with its cause, as text.
    let refusal = |e: HostError| format!("{e} {:?}", std::error::Error::source(&e));

    // The notified manifest is the one checked: the one the stand-in serves
    // names another plugin, and is never asked for.
    let (m, asked) = start(
        "told",
        "impostor",
        r#"MANIFEST={"protocol_version":1,"name":"told","config_schema":{"type":"object"}}"#,
    );
    assert_eq!(sup.start(m).await.unwrap().state, RunState::Running);
    assert!(!asked_for(&asked).contains("/v1/manifest"), "{}", asked_for(&asked));
    sup.stop("n_told").await.unwrap();

    // A notified manifest naming another plugin is refused, naming both.
    let (m, _) = start(
        "liar",
        "liar",
        r#"MANIFEST={"protocol_version":1,"name":"someone_else","config_schema":{"type":"object"}}"#,
    );
    let text = refusal(sup.start(m).await.unwrap_err());
    assert!(text.contains("someone_else") && text.contains("liar"), "{text}");

    // So is one from a protocol version the host does not speak.
    let (m, _) = start(
        "future",
        "future",
        r#"MANIFEST={"protocol_version":99,"name":"future","config_schema":{"type":"object"}}"#,
    );
    let text = refusal(sup.start(m).await.unwrap_err());
    assert!(text.contains("99"), "{text}");

    // A manifest line that does not parse is ignored, and the manifest asked for.
    let (m, asked) = start("garbled", "garbled", r#"MANIFEST={"protocol_version":1,"#);
    assert_eq!(sup.start(m).await.unwrap().state, RunState::Running);
    assert!(asked_for(&asked).contains("/v1/manifest"), "{}", asked_for(&asked));
    sup.stop("n_garbled").await.unwrap();
}
