//! external mode against services the test starts itself (not plugboard):
//! a protocol worker (the Python SDK's slow job over TCP with a token) and
//! a plain HTTP server. plugboard uses them through the same handle, never
//! ends them (stop detaches; gc and host death leave them), and reports
//! `lost` when one stops answering.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use plugboard_host::{DataDir, GcOptions, Ledger, Manifest, ResourceStatus, RunState};
use serde_json::json;

const CHILD_ENV: &str = "PLUGBOARD_TEST_EXTERNAL_HOST";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Service(Child);
impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// The Python slow-job worker serving tcp://127.0.0.1:PORT, started by the
/// test with its stdin held open.
fn protocol_worker(port: u16, token: &str) -> Service {
    let dir = workspace_root().join("examples/plugins/slow_job");
    let child = Command::new("python3")
        .args(["-u", "slow_job.py"])
        .current_dir(&dir)
        .env("PLUGBOARD_LISTEN", format!("tcp://127.0.0.1:{port}"))
        .env("PLUGBOARD_TOKEN", token)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until_blocking(Duration::from_secs(20), || port_open(port)));
    Service(child)
}

fn http_server(port: u16, dir: &std::path::Path) -> Service {
    let child = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until_blocking(Duration::from_secs(20), || port_open(port)));
    Service(child)
}

fn external_worker_manifest(dir: &std::path::Path, port: u16, token_env: &str) -> Arc<Manifest> {
    let schema = workspace_root().join("examples/plugins/slow_job/schema.json");
    manifest_in(
        dir,
        "ext_worker",
        &format!(
            r#"
name = "slow_job"
category = "remote"
version = "0.1.0"
execution_mode = "external"
probe_interval_s = 0.2
config_schema_file = "{}"
[launch]
endpoint = "tcp://127.0.0.1:{port}"
token_env = "{token_env}"
"#,
            schema.display()
        ),
    )
}

fn plain_manifest(dir: &std::path::Path, port: u16) -> Arc<Manifest> {
    manifest_in(
        dir,
        "ext_plain",
        &format!(
            r#"
name = "files"
category = "remote"
execution_mode = "external"
ready = {{ http_get = "http://127.0.0.1:{port}/" }}
probe_interval_s = 0.2
[launch]
endpoint = "http://127.0.0.1:{port}"
"#
        ),
    )
}

async fn health(port: u16, token: &str) -> Option<u16> {
    plugboard_host::probe::http_get_endpoint(
        &format!("tcp://127.0.0.1:{port}").parse().unwrap(),
        plugboard_host::probe::HEALTH_PATH,
        Some(token),
        Duration::from_secs(2),
    )
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_worker_run_by_someone_else_is_called_and_only_detached() {
    if !python_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let token = "external-token-1";
    let worker = protocol_worker(port, token);
    // The token comes from the environment, never from the manifest.
    let var = "PLUGBOARD_TEST_EXT_TOKEN_A";
    // SAFETY: this test binary's only writer of this variable, set before
    // any thread reads it.
    unsafe { std::env::set_var(var, token) };
    let sup = supervisor(&tmp.path().join("data"));
    let m = external_worker_manifest(tmp.path(), port, var);
    let st = sup.start(Arc::clone(&m)).await.unwrap();
    assert_eq!(st.state, RunState::Running);
    assert_eq!(st.backend.as_deref(), Some("external"));
    assert_eq!(st.endpoint.as_deref(), Some(format!("tcp://127.0.0.1:{port}").as_str()));
    let out = sup
        .handle("remote_slow_job")
        .unwrap()
        .execute(json!({"steps": 2, "step_ms": 1}))
        .await
        .unwrap();
    assert_eq!(out, json!({"steps_done": 2}));
    let row = sup.with_ledger(|l| l.get(st.resource_id.unwrap()).unwrap().unwrap());
    assert!(!row.owned);
    assert_eq!(row.status, ResourceStatus::Running);
    assert!(!row.details.to_string().contains(token), "the token reached the ledger");

    let st = sup.stop("remote_slow_job").await.unwrap();
    assert_eq!(st.state, RunState::Stopped);
    let row = sup.with_ledger(|l| l.get(st.resource_id.unwrap()).unwrap().unwrap());
    assert_eq!(row.status, ResourceStatus::Detached);
    // Still there, still answering: plugboard does not own it.
    assert_eq!(health(port, token).await, Some(200));
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_token_is_a_clear_error() {
    if !python_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let _worker = protocol_worker(port, "the-right-one");
    let sup = supervisor(&tmp.path().join("data"));

    let missing = external_worker_manifest(tmp.path(), port, "PLUGBOARD_TEST_EXT_TOKEN_UNSET");
    let e = sup.start(missing).await.unwrap_err().to_string();
    assert!(
        e.contains("PLUGBOARD_TEST_EXT_TOKEN_UNSET") && e.contains("not set"),
        "{e}"
    );

    let var = "PLUGBOARD_TEST_EXT_TOKEN_WRONG";
    // SAFETY: see above.
    unsafe { std::env::set_var(var, "the-wrong-one") };
    let tmp2 = tempfile::tempdir().unwrap();
    let mut wrong = (*external_worker_manifest(tmp2.path(), port, var)).clone();
    wrong.ready_timeout_s = 1.0;
    let e = sup.start(Arc::new(wrong)).await.unwrap_err().to_string();
    assert!(e.contains("401"), "{e}");
    assert!(!e.contains("the-wrong-one"), "the token leaked into an error: {e}");
    // Nothing was recorded as running.
    let live = sup.with_ledger(|l| l.live().unwrap());
    assert!(live.is_empty(), "{live:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_server_that_stops_answering_is_lost_never_restarted_and_comes_back() {
    if !python_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = http_server(port, tmp.path());
    let sup = supervisor(&tmp.path().join("data"));
    let m = plain_manifest(tmp.path(), port);
    let st = sup.start(m).await.unwrap();
    assert_eq!(st.state, RunState::Running);
    let rid = st.resource_id.unwrap();

    drop(server);
    // One probe interval is 0.2 s; allow a few for a loaded machine.
    assert!(
        wait_until(Duration::from_secs(3), || sup.status("remote_files").unwrap().state
            == RunState::Lost)
        .await,
        "{:?}",
        sup.status("remote_files")
    );
    let st = sup.status("remote_files").unwrap();
    assert!(st.note.is_some(), "a lost plugin says why");
    assert_eq!(st.restarts, 0);
    let row = sup.with_ledger(|l| l.get(rid).unwrap().unwrap());
    assert_eq!(row.status, ResourceStatus::Lost);
    assert!(row.note.is_some());
    assert!(sup.handle("remote_files").unwrap_err().to_string().contains("lost"));

    let _server = http_server(port, tmp.path());
    assert!(
        wait_until(Duration::from_secs(3), || sup.status("remote_files").unwrap().state
            == RunState::Running)
        .await
    );
    assert_eq!(
        sup.with_ledger(|l| l.get(rid).unwrap().unwrap().status),
        ResourceStatus::Running
    );
    sup.stop("remote_files").await.unwrap();
}

/// Runs as a separate host process when CHILD_ENV is set: starts the
/// external plugin, prints "started", then waits to be killed.
#[test]
fn external_host_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let (data, rest) = spec.split_once('|').unwrap();
    let (dir, port) = rest.split_once('|').unwrap();
    let rt = host_runtime();
    rt.block_on(async {
        let sup = supervisor(std::path::Path::new(data));
        let m = plain_manifest(std::path::Path::new(dir), port.parse().unwrap());
        sup.start(m).await.unwrap();
        println!("started");
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
}

#[test]
fn host_death_and_gc_never_touch_an_external_service() {
    if !python_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = http_server(port, tmp.path());
    let data = tmp.path().join("data");
    let spec = format!("{}|{}|{port}", data.display(), tmp.path().display());
    let mut host = child_host(
        "external_host_child",
        (CHILD_ENV, std::ffi::OsStr::new(&spec)),
        "started",
    );
    host.kill().unwrap();
    host.wait().unwrap();

    let mut ledger = Ledger::open(&DataDir::new(&data).ledger_path()).unwrap();
    let report = run_gc(&mut ledger, GcOptions::default(), None).unwrap();
    assert_eq!(report.reaped.len(), 1, "{report:?}");
    assert_eq!(report.reaped[0].op, plugboard_host::gc::GcOp::Detach);
    let row = &ledger.all().unwrap()[0];
    assert_eq!(row.status, ResourceStatus::Detached);
    // The server is still running and answering.
    assert!(
        server.0.try_wait().unwrap().is_none(),
        "gc ended a service plugboard does not own"
    );
    assert!(port_open(port));
}
