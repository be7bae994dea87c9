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
