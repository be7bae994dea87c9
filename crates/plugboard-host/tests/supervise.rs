//! The supervisor against real processes: readiness kinds, whole-tree stop,
//! crash detection, restart policy, logs, the lifecycle capability, conda.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use plugboard_core::{Lifecycle, Plugin, all_managed_pids, is_lifecycle_aware};
use plugboard_host::{HostError, RunState};

fn tree_manifest(dir: &std::path::Path, grace: f64) -> Arc<plugboard_host::Manifest> {
    let script = workspace_root().join("examples/plugins/process_tree/tree.py");
    manifest_in(
        dir,
        "tree",
        &format!(
            r#"
name = "tree"
category = "test"
execution_mode = "subprocess"
ready = {{ log_line = "^tree ready$" }}
stop_grace_s = {grace}
[launch]
command = "python3"
args = ["-u", "{}", "2", "2"]
"#,
            script.display()
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_the_whole_tree_including_setsid_daemons_and_sigterm_ignorers() {
    if !python_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("data"));
    let m = tree_manifest(tmp.path(), 0.5);
    let st = sup.start(Arc::clone(&m)).await.unwrap();
    assert_eq!(st.state, RunState::Running);
    let log = st.log_path.clone();
    // worker + 2 children + 4 grandchildren + daemon + stubborn
    assert!(
        wait_until(Duration::from_secs(5), || tree_pids(&log).len() == 9).await,
        "{:?}",
        tree_pids(&log)
    );
    let pids = tree_pids(&log);
    assert!(pids.iter().all(|(_, p)| alive(*p)));
    let daemon = pids.iter().find(|(r, _)| r == "daemon").unwrap().1;
    let info = plugboard_core::process::read_process(daemon).unwrap();
    assert_ne!(info.sid, st.pid.unwrap(), "the daemon left the worker's session");
    // The host sees the whole tree, daemon included.
    let seen = sup.tree_pids("test_tree");
    for (_, p) in &pids {
        assert!(seen.contains(p), "{p} not in {seen:?}");
    }

    let t0 = Instant::now();
    let st = sup.stop("test_tree").await.unwrap();
    let took = t0.elapsed();
    assert_eq!(st.state, RunState::Stopped);
    let survivors: Vec<_> = pids.iter().filter(|(_, p)| alive(*p)).collect();
    assert!(survivors.is_empty(), "survivors: {survivors:?}");
    // The SIGTERM-ignoring process forces the full grace, then SIGKILL.
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_millis(1500), "stop took {took:?}");
    let row = sup.with_ledger(|l| l.get(st.resource_id.unwrap()).unwrap().unwrap());
    assert_eq!(row.status.as_str(), "stopped");
    assert!(row.ended_at.is_some());
    assert!(sup.tree_pids("test_tree").is_empty());
    assert!(marked_alive(sup.with_ledger(|l| l.ledger_id().to_owned()).as_str()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_by_protocol_health_and_environment() {
    if !python_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("data"));
    let m = manifest_in(
        tmp.path(),
        "health",
        &format!(
            "name = \"health\"\ncategory = \"test\"\nexecution_mode = \"subprocess\"\n[launch]\ncommand = \"python3\"\nargs = [\"-u\", \"{}\", \"a b\"]\nenv = {{ EXTRA = \"1\" }}\n",
            fixture("health_worker.py").display()
        ),
    );
    let st = sup.start(m).await.unwrap();
    assert_eq!(st.state, RunState::Running);
    let listen = st.listen.clone().unwrap();
    // Without the worker's token: refused; the host's handle has it.
    assert_eq!(
        plugboard_host::probe::http_get_unix(&listen, "/v1/health", None, Duration::from_secs(2))
            .await
            .unwrap(),
        401
    );
    assert_eq!(
        sup.handle("test_health")
            .unwrap()
            .health()
            .await
            .unwrap()
            .status
            .as_str(),
        "ok"
    );
    assert_eq!(
        plugboard_host::probe::http_get_unix(&listen, "/v1/health", Some("nope"), Duration::from_secs(2))
            .await
            .unwrap(),
        401
    );
    let marker = sup.with_ledger(|l| l.marker(st.resource_id.unwrap()));
    let log = st.log_path.clone();
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(&format!("out| marker {marker}")))
        .await
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("out| argv a b"), "{text}");
    assert!(text.contains("err| health worker starting"), "{text}");
    let row = sup.with_ledger(|l| l.get(st.resource_id.unwrap()).unwrap().unwrap());
    assert_eq!(row.status.as_str(), "running");
    assert_eq!(row.pid(), st.pid);
    assert_eq!(
        row.handle.as_ref().and_then(|h| match h {
            plugboard_host::ResourceHandle::Process { start_time, .. } => Some(*start_time),
            _ => None,
        }),
        st.pid_start_time
    );
    sup.stop("test_health").await.unwrap();
    assert!(!listen.exists());
    let tail = plugboard_host::logs::tail(&log, 2).unwrap();
    assert_eq!(tail.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_by_tcp_http_and_none() {
    if !python_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("data"));
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let http = manifest_in(
        tmp.path(),
        "http",
        &format!(
            "name = \"http\"\ncategory = \"test\"\nexecution_mode = \"subprocess\"\nready = {{ http_get = \"http://127.0.0.1:{port}/\" }}\n[launch]\ncommand = \"python3\"\nargs = [\"-m\", \"http.server\", \"--bind\", \"127.0.0.1\", \"{port}\"]\n"
        ),
    );
    let st = sup.start(http).await.unwrap();
    assert_eq!(st.state, RunState::Running);
    sup.stop("test_http").await.unwrap();

    let tcp = manifest_in(
        tmp.path(),
        "tcp",
        &format!(
            "name = \"tcp\"\ncategory = \"test\"\nexecution_mode = \"subprocess\"\nready = {{ tcp = \"127.0.0.1:{port}\" }}\n[launch]\ncommand = \"python3\"\nargs = [\"-m\", \"http.server\", \"--bind\", \"127.0.0.1\", \"{port}\"]\n"
        ),
    );
    assert_eq!(sup.start(tcp).await.unwrap().state, RunState::Running);
    sup.stop("test_tcp").await.unwrap();

    let none = manifest_in(
        tmp.path(),
        "none",
        "name = \"none\"\ncategory = \"test\"\nexecution_mode = \"subprocess\"\nready = \"none\"\nstop_grace_s = 0.2\n[launch]\ncommand = \"sleep\"\nargs = [\"30\"]\n",
    );
    let st = sup.start(none).await.unwrap();
    assert!(alive(st.pid.unwrap()));
    sup.stop("test_none").await.unwrap();
    assert!(!alive(st.pid.unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_exits_before_ready_reports_its_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("data"));
    let m = manifest_in(
        tmp.path(),
        "bad",
        "name = \"bad\"\ncategory = \"test\"\nexecution_mode = \"subprocess\"\n[launch]\ncommand = \"sh\"\nargs = [\"-c\", \"echo loading model >&2; echo 'CUDA out of memory' >&2; exit 3\"]\n",
    );
    let err = sup.start(m).await.unwrap_err();
    let HostError::ExitedBeforeReady { exit, stderr_tail, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(exit, "exit code 3");
    assert_eq!(stderr_tail, &["loading model", "CUDA out of memory"]);
    assert!(err.to_string().contains("CUDA out of memory"));
    let st = sup.status("test_bad").unwrap();
    assert_eq!(st.state, RunState::Failed);
    let row = sup.with_ledger(|l| l.for_plugin("test_bad", 1).unwrap().remove(0));
    assert_eq!((row.status.as_str(), row.exit_code), ("failed", Some(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_never_gets_ready_is_stopped_with_its_children() {
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("data"));
    let m = manifest_in(
        tmp.path(),
        "slow",
        "name = \"slow\"\ncategory = \"test\"\nexecution_mode = \"subprocess\"\nready = { log_line = \"never\" }\nready_timeout_s = 0.5\n[launch]\ncommand = \"sh\"\nargs = [\"-c\", \"sleep 60 & echo child $! ; echo stuck >&2; wait\"]\n",
    );
    let t0 = Instant::now();
    let err = sup.start(m).await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(matches!(err, HostError::ReadyTimeout { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("not ready after 0.5 s") && text.contains("stuck"),
        "{text}"
    );
    let log = sup.status("test_slow").unwrap().log_path;
    let child: u32 = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("out| child "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(!alive(child), "the worker's child survived a failed start");
    let row = sup.with_ledger(|l| l.for_plugin("test_slow", 1).unwrap().remove(0));
    assert_eq!(row.status.as_str(), "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_are_recorded_with_exit_code_and_signal() {
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("data"));
    let m = manifest_in(
        tmp.path(),
        "crash",
        "name = \"crash\"\ncategory = \"test\"\nexecution_mode = \"subprocess\"\nready = \"none\"\n[launch]\ncommand = \"sh\"\nargs = [\"-c\", \"sleep 0.3; exit 7\"]\n",
    );
    let st = sup.start(m).await.unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || sup.status("test_crash").unwrap().state
            == RunState::Crashed)
        .await
    );
    let st2 = sup.status("test_crash").unwrap();
    assert_eq!(st2.last_exit.unwrap().code, Some(7));
    let row = sup.with_ledger(|l| l.get(st.resource_id.unwrap()).unwrap().unwrap());
    assert_eq!((row.status.as_str(), row.exit_code), ("crashed", Some(7)));

    let m = manifest_in(
        tmp.path(),
        "killed",
        "name = \"killed\"\ncategory = \"test\"\nexecution_mode = \"subprocess\"\nready = \"none\"\n[launch]\ncommand = \"sleep\"\nargs = [\"30\"]\n",
    );
    let st = sup.start(m).await.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(st.pid.unwrap() as i32),
        nix::sys::signal::Signal::SIGSEGV,
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || sup.status("test_killed").unwrap().state
            == RunState::Crashed)
        .await
    );
    let row = sup.with_ledger(|l| l.get(st.resource_id.unwrap()).unwrap().unwrap());
    assert_eq!(row.signal, Some(11));
    // A stopped plugin cannot be stopped again; a running one cannot start twice.
    assert!(matches!(
        sup.stop("test_killed").await,
        Err(HostError::NotRunning { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policy_restarts_with_backoff_until_it_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("data"));
    let counter = tmp.path().join("runs");
    let m = manifest_in(
        tmp.path(),
        "flaky",
        &format!(
            "name = \"flaky\"\ncategory = \"test\"\nexecution_mode = \"subprocess\"\nready = \"none\"\nstop_grace_s = 0.2\n[restart]\npolicy = \"on-failure\"\nmax_restarts = 3\nbackoff_ms = 50\n[launch]\ncommand = \"sh\"\nargs = [\"-c\", \"echo run >> {c}; n=$(wc -l < {c}); if [ $n -lt 3 ]; then sleep 0.2; exit 1; fi; exec sleep 30\"]\n",
            c = counter.display()
        ),
    );
    let first = sup.start(m.clone()).await.unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let s = sup.status("test_flaky").unwrap();
            s.restarts == 2 && s.state == RunState::Running
        })
        .await,
        "{:?}",
        sup.status("test_flaky")
    );
    let rows = sup.with_ledger(|l| l.for_plugin("test_flaky", 10).unwrap());
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2].id, first.resource_id.unwrap());
    assert_eq!(rows[2].status.as_str(), "crashed");
    assert_eq!(rows[1].status.as_str(), "crashed");
    assert_eq!(rows[0].status.as_str(), "running");
    assert!(matches!(sup.start(m).await, Err(HostError::AlreadyRunning { .. })));
    sup.stop("test_flaky").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_capability_reports_and_cleans_up_the_tree() {
    if !python_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("data"));
    let m = tree_manifest(tmp.path(), 0.2);
    let st = sup.start(Arc::clone(&m)).await.unwrap();
    assert!(wait_until(Duration::from_secs(5), || tree_pids(&st.log_path).len() == 9).await);
    let plugin = sup.plugin("test_tree").unwrap();
    assert!(is_lifecycle_aware(&plugin));
    let managed = all_managed_pids(&plugin);
    for (_, p) in tree_pids(&st.log_path) {
        assert!(managed.contains(&p), "{p} missing from {managed:?}");
    }
    let meta = sup.metadata(&m);
    assert_eq!(meta.spawned_pids.len(), managed.len());
    assert!(meta.has_active_resources());
    let res = plugin.lifecycle().unwrap().managed_resources();
    assert_eq!(res["pid"], st.pid.unwrap());
    assert!(res["log_path"].as_str().unwrap().ends_with("test_tree.log"));
    let pids = tree_pids(&st.log_path);
    tokio::task::spawn_blocking(move || plugin.force_cleanup().unwrap())
        .await
        .unwrap();
    assert!(pids.iter().all(|(_, p)| !alive(*p)));
    assert!(sup.metadata(&m).spawned_pids.is_empty());
    assert_eq!(sup.status("test_tree").unwrap().state, RunState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conda_env_plugins_run_through_the_conda_tool() {
    if !python_available() {
        return;
    }
    // No real conda/mamba/micromamba can be installed from the registries
    // this project uses; a stand-in that checks its argv and execs plays it.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("conda/envs/speech/bin")).unwrap();
    let mut cfg = plugboard_host::SupervisorConfig::new(plugboard_host::DataDir::new(tmp.path().join("data")));
    cfg.conda_tool = Some(fixture("conda-standin/conda"));
    let sup = plugboard_host::Supervisor::new(cfg).unwrap();
    let toml = format!(
        "name = \"stt\"\ncategory = \"test\"\nexecution_mode = \"conda_env\"\n[launch]\nconda_env = \"speech\"\ncommand = \"python3\"\nargs = [\"-u\", \"{}\"]\nenv = {{ FAKE_CONDA_ROOT = \"{}\" }}\n",
        fixture("health_worker.py").display(),
        tmp.path().join("conda").display()
    );
    let m = manifest_in(tmp.path(), "stt", &toml);
    assert_eq!(m.metadata().conda_env_name.as_deref(), Some("speech"));
    let st = sup.start(m).await.unwrap();
    let log = st.log_path.clone();
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("out| conda env speech"))
        .await
    );
    sup.stop("test_stt").await.unwrap();

    // A missing environment fails with conda's own message.
    let bad = manifest_in(
        tmp.path(),
        "stt2",
        &toml.replace("\"stt\"", "\"stt2\"").replace("\"speech\"", "\"nope\""),
    );
    let err = sup.start(bad).await.unwrap_err().to_string();
    assert!(err.contains("EnvironmentLocationNotFound"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_without_a_backend_and_missing_launch_fields_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("data"));
    let cloud = manifest_in(
        tmp.path(),
        "gpu",
        "name = \"gpu\"\ncategory = \"test\"\nexecution_mode = \"cloud_gpu\"\n",
    );
    // A cloud mode names the launch key it lacks, before anything exists.
    let err = sup.start(cloud).await.unwrap_err().to_string();
    assert!(err.contains("cloud_gpu") && err.contains("launch.provider"), "{err}");
    assert!(sup.with_ledger(|l| l.all().unwrap()).is_empty(), "nothing written");
    let k8s = manifest_in(
        tmp.path(),
        "k8s",
        "name = \"k8s\"\ncategory = \"test\"\nexecution_mode = \"kubernetes\"\n",
    );
    let err = sup.start(k8s).await.unwrap_err().to_string();
    assert!(err.contains("kubernetes") && err.contains("cannot start"), "{err}");
    let nocmd = manifest_in(
        tmp.path(),
        "nocmd",
        "name = \"nocmd\"\ncategory = \"test\"\nexecution_mode = \"subprocess\"\n",
    );
    let err = sup.start(nocmd).await.unwrap_err().to_string();
    assert!(err.contains("launch.command") && err.contains("plugin.toml"), "{err}");
    let missing = manifest_in(
        tmp.path(),
        "missing",
        "name = \"missing\"\ncategory = \"test\"\nexecution_mode = \"subprocess\"\n[launch]\ncommand = \"/definitely/not/here\"\n",
    );
    let err = sup.start(missing).await.unwrap_err();
    assert!(matches!(err, HostError::Spawn { .. }), "{err}");
    let row = sup.with_ledger(|l| l.for_plugin("test_missing", 1).unwrap().remove(0));
    assert_eq!(row.status.as_str(), "failed");
}
