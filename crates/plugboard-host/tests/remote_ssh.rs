//! remote_ssh mode against a real OpenSSH server on loopback: the worker
//! runs under sshd (not as the host's child), reached through a forwarded
//! socket; every check of "nothing left" reads the machine's processes.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::sshd::Sshd;
use common::*;
use plugboard_host::{DataDir, GcOptions, Ledger, Manifest, ResourceHandle, ResourceKind, ResourceStatus, RunState};
use plugboard_protocol::StreamEvent;
use serde_json::json;

const CHILD_ENV: &str = "PLUGBOARD_TEST_SSH_HOST_CHILD";

/// The Python slow_job worker, uploaded with its schema into a remote workdir.
fn worker_manifest(dir: &Path, sshd: &Sshd, name: &str, extra: &str) -> Arc<Manifest> {
    let ex = workspace_root().join("examples/plugins/slow_job");
    let sdk = workspace_root().join("sdk/python");
    let workdir = dir.join(format!("remote-{name}"));
    manifest_in(
        dir,
        name,
        &format!(
            r#"name = "slow_job"
category = "{name}"
version = "0.1.0"
execution_mode = "remote_ssh"
ready_timeout_s = 30
stop_grace_s = 2
config_schema_file = "{schema}"
{extra}
[launch]
{keys}command = "python3"
args = ["-u", "slow_job.py"]
env = {{ PYTHONPATH = "{sdk}" }}
workdir = "{workdir}"
upload = ["{ex}/slow_job.py", "{ex}/schema.json"]
"#,
            schema = ex.join("schema.json").display(),
            keys = sshd.launch_keys(),
            sdk = sdk.display(),
            ex = ex.display(),
            workdir = workdir.display(),
        ),
    )
}

/// A remote program that ignores its stdin closing and SIGTERM.
fn stubborn_manifest(dir: &Path, sshd: &Sshd) -> Arc<Manifest> {
    manifest_in(
        dir,
        "stubborn",
        &format!(
            "name = \"stubborn\"\ncategory = \"remote\"\nexecution_mode = \"remote_ssh\"\nready = \"none\"\nstop_grace_s = 1\n\
             [launch]\n{keys}command = \"/bin/sh\"\nargs = [\"-c\", \"trap '' TERM HUP; while :; do sleep 0.1; done\"]\n",
            keys = sshd.launch_keys()
        ),
    )
}

fn remote_pid(st: &plugboard_host::WorkerStatus) -> u32 {
    match &st.resource {
        Some(ResourceHandle::RemoteProcess { pid, .. }) => *pid,
        other => panic!("not a remote process: {other:?}"),
    }
}

/// The host that gets SIGKILLed: starts a remote worker and a stubborn
/// remote program, prints "started".
#[test]
fn ssh_host_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let mut parts = spec.split('|');
    let (data, dir, sshd_dir, port) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let sshd = Sshd::attach(Path::new(sshd_dir), port.parse().unwrap());
    let rt = host_runtime();
    rt.block_on(async {
        let sup = supervisor(Path::new(data));
        sup.start(worker_manifest(Path::new(dir), &sshd, "job", ""))
            .await
            .unwrap();
        sup.start(stubborn_manifest(Path::new(dir), &sshd)).await.unwrap();
        println!("started");
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
}

#[test]
fn remote_ssh_end_to_end_over_a_real_sshd() {
    if !python_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(sshd) = Sshd::start(tmp.path()) else { return };
    let rt = host_runtime();
    let data = tmp.path().join("data");
    let sup = rt.block_on(async { supervisor(&data) });
    let ledger_id = sup.with_ledger(|l| l.ledger_id().to_owned());

    // 1. Start remotely (files uploaded first), call through the forward,
    //    stream, cancel, stop: nothing carrying the marker is left.
    rt.block_on(async {
        let st = sup.start(worker_manifest(tmp.path(), &sshd, "job", "")).await.unwrap();
        assert_eq!(st.state, RunState::Running);
        assert_eq!(st.backend.as_deref(), Some("remote_ssh"));
        let pid = remote_pid(&st);
        // The worker is sshd's descendant, not the host's, and carries the marker.
        let p = plugboard_core::process::read_process(pid).unwrap();
        assert_ne!(p.ppid, std::process::id());
        let marker = format!("{ledger_id}:{}", st.resource_id.unwrap());
        assert!(
            plugboard_host::tree::marked(|m| m == marker)
                .iter()
                .any(|(q, _)| *q == pid)
        );
        assert!(tmp.path().join("remote-job/slow_job.py").is_file(), "uploaded");
        // The ledger row: kind, remote pid, start time and boot id.
        let row = sup.with_ledger(|l| l.get(st.resource_id.unwrap()).unwrap().unwrap());
        assert_eq!(row.kind, ResourceKind::RemoteProcess);
        let Some(ResourceHandle::RemoteProcess {
            start_time,
            boot_id,
            port,
            ..
        }) = &row.handle
        else {
            panic!("{row:?}")
        };
        assert_eq!(*start_time, p.start_time);
        assert_eq!(boot_id, &plugboard_host::ledger::boot_id());
        assert_eq!(*port, Some(sshd.port));
        // The seed's remote_resource.
        let meta = sup.metadata(&Manifest::load(&tmp.path().join("job/plugin.toml")).unwrap());
        let rr = meta.remote_resource.unwrap();
        assert_eq!(rr.ssh_host.as_deref(), Some("127.0.0.1"));
        assert_eq!(rr.ssh_port, sshd.port);
        assert_eq!(rr.status, "running");
        assert_eq!(rr.metadata.get("remote_pid"), Some(&json!(pid)));
        assert!(rr.endpoint_url.unwrap().starts_with("unix:"));

        let h = sup.handle("job_slow_job").unwrap();
        assert_eq!(
            h.execute(json!({"steps": 2, "step_ms": 1})).await.unwrap(),
            json!({"steps_done": 2})
        );
        let mut fractions = Vec::new();
        let out = h
            .execute_streaming(json!({"steps": 4, "step_ms": 1}), None)
            .await
            .unwrap()
            .finish(|ev| {
                if let StreamEvent::Progress { progress, .. } = ev {
                    fractions.push(*progress);
                }
            })
            .await
            .unwrap();
        assert_eq!(out, json!({"steps_done": 4}));
        assert_eq!(fractions, [0.25, 0.5, 0.75, 1.0]);
        let mut stream = h
            .execute_streaming(json!({"steps": 1000, "step_ms": 10}), Some("c1".into()))
            .await
            .unwrap();
        assert!(stream.next().await.unwrap().is_ok());
        assert!(h.cancel("c1").await.unwrap());
        let end = tokio::time::timeout(Duration::from_secs(5), stream.finish(|_| {}))
            .await
            .expect("cancel honoured");
        assert!(plugboard_host::handle::is_cancelled(&end.unwrap_err()));

        sup.stop("job_slow_job").await.unwrap();
        assert!(marked_alive(&ledger_id).is_empty(), "marked processes left after stop");
        assert!(!alive(pid));
        let row = sup.with_ledger(|l| l.get(st.resource_id.unwrap()).unwrap().unwrap());
        assert_eq!(row.status, ResourceStatus::Stopped);
        // The remote socket is removed, and stopping again is fine.
        assert!(!Path::new(&plugboard_host::backend::remote_ssh::default_remote_socket(&marker)).exists());
        assert!(sup.stop("job_slow_job").await.is_err(), "not running any more");
    });

    // 2. An unknown host key: refused with advice, nothing started.
    rt.block_on(async {
        let empty = tmp.path().join("empty_known_hosts");
        std::fs::write(&empty, "").unwrap();
        let m = manifest_in(
            tmp.path(),
            "unknown_key",
            &format!(
                "name = \"unknown_key\"\ncategory = \"remote\"\nexecution_mode = \"remote_ssh\"\nready = \"none\"\n[launch]\nhost = \"127.0.0.1\"\nport = {}\nidentity_file = \"{}\"\nknown_hosts = \"{}\"\ncommand = \"sleep\"\nargs = [\"30\"]\n",
                sshd.port,
                sshd.identity.display(),
                empty.display()
            ),
        );
        let e = sup.start(m).await.unwrap_err().to_string();
        assert!(e.contains("is not in") && e.contains("ssh-keyscan -p"), "{e}");
        assert!(marked_alive(&ledger_id).is_empty());
        let rows = sup.with_ledger(|l| l.for_plugin("remote_unknown_key", 1).unwrap());
        assert_eq!(rows[0].status, ResourceStatus::Failed);
    });

    // 3. A user key the server does not accept: a clear error.
    rt.block_on(async {
        let other = tmp.path().join("id_other");
        let ok = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&other)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let m = manifest_in(
            tmp.path(),
            "wrong_key",
            &format!(
                "name = \"wrong_key\"\ncategory = \"remote\"\nexecution_mode = \"remote_ssh\"\nready = \"none\"\n[launch]\nhost = \"127.0.0.1\"\nport = {}\nidentity_file = \"{}\"\nknown_hosts = \"{}\"\ncommand = \"sleep\"\nargs = [\"30\"]\n",
                sshd.port,
                other.display(),
                sshd.known_hosts.display()
            ),
        );
        let e = sup.start(m).await.unwrap_err().to_string();
        assert!(e.contains("refused the login") && e.contains("Permission denied"), "{e}");
        assert!(marked_alive(&ledger_id).is_empty());
    });

    // 3b. Through a jump host, checked with the same known_hosts and key.
    rt.block_on(async {
        let m = manifest_in(
            tmp.path(),
            "jumped",
            &format!(
                "name = \"jumped\"\ncategory = \"remote\"\nexecution_mode = \"remote_ssh\"\nready = \"none\"\nstop_grace_s = 1\n\
                 [launch]\nhost = \"127.0.0.2\"\nport = {port}\njump_host = \"127.0.0.1:{port}\"\nidentity_file = \"{id}\"\nknown_hosts = \"{kh}\"\n\
                 command = \"sleep\"\nargs = [\"30\"]\n",
                port = sshd.port,
                id = sshd.identity.display(),
                kh = sshd.known_hosts.display()
            ),
        );
        let st = sup.start(m).await.unwrap();
        let pid = remote_pid(&st);
        assert!(alive(pid));
        sup.stop("remote_jumped").await.unwrap();
        assert!(!alive(pid));
        assert!(marked_alive(&ledger_id).is_empty());
    });

    // 4. The connection drops: `lost` at once (never restarted); the next
    //    observation reconnects and finds the worker gone (it read EOF).
    rt.block_on(async {
        let st = sup
            .start(worker_manifest(
                tmp.path(),
                &sshd,
                "dropped",
                "probe_interval_s = 2\n[restart]\npolicy = \"never\"",
            ))
            .await
            .unwrap();
        let first = st.resource_id.unwrap();
        let t0 = Instant::now();
        assert!(sshd.kill_connections() > 0);
        assert!(
            wait_until(Duration::from_secs(2), || sup
                .status("dropped_slow_job")
                .is_some_and(|s| s.state == RunState::Lost))
            .await,
            "not lost within 2 s: {:?}",
            sup.status("dropped_slow_job")
        );
        let lost_after = t0.elapsed();
        let st = sup.status("dropped_slow_job").unwrap();
        assert!(st.note.as_deref().unwrap_or("").contains("dropped"), "{st:?}");
        let row = sup.with_ledger(|l| l.get(first).unwrap().unwrap());
        assert_eq!(row.status, ResourceStatus::Lost);
        assert!(
            wait_until(Duration::from_secs(15), || sup
                .status("dropped_slow_job")
                .is_some_and(|s| s.state == RunState::Crashed))
            .await,
            "{:?}",
            sup.status("dropped_slow_job")
        );
        assert!(marked_alive(&ledger_id).is_empty());
        let row = sup.with_ledger(|l| l.get(first).unwrap().unwrap());
        assert_eq!(row.status, ResourceStatus::Crashed);
        eprintln!("lost reported {lost_after:?} after the connection was killed");
    });

    // 4b. A worker that outlives its dropped connection (it ignores its
    //     stdin closing) is re-attached when the connection comes back:
    //     `lost`, then `running` again, the same remote pid, stoppable.
    rt.block_on(async {
        let m = manifest_in(
            tmp.path(),
            "survivor",
            &format!(
                "name = \"survivor\"\ncategory = \"remote\"\nexecution_mode = \"remote_ssh\"\nready = \"none\"\nstop_grace_s = 1\nprobe_interval_s = 1\n\
                 [launch]\n{keys}command = \"/bin/sh\"\nargs = [\"-c\", \"trap '' HUP; while :; do sleep 0.1; done\"]\n",
                keys = sshd.launch_keys()
            ),
        );
        let st = sup.start(m).await.unwrap();
        let pid = remote_pid(&st);
        assert!(sshd.kill_connections() > 0);
        assert!(
            wait_until(Duration::from_secs(2), || sup
                .status("remote_survivor")
                .is_some_and(|s| s.state == RunState::Lost))
            .await
        );
        assert!(
            wait_until(Duration::from_secs(10), || sup
                .status("remote_survivor")
                .is_some_and(|s| s.state == RunState::Running))
            .await,
            "{:?}",
            sup.status("remote_survivor")
        );
        assert_eq!(remote_pid(&sup.status("remote_survivor").unwrap()), pid);
        assert!(alive(pid));
        sup.stop("remote_survivor").await.unwrap();
        assert!(!alive(pid));
        assert!(marked_alive(&ledger_id).is_empty());
    });

    // 5. The host SIGKILLed: the SDK worker exits by itself (its stdin was
    //    the SSH channel); a program that ignores that is ended by gc, by
    //    its marker, over SSH.
    let data2 = tmp.path().join("data2");
    let spec = format!(
        "{}|{}|{}|{}",
        data2.display(),
        tmp.path().display(),
        sshd.dir.display(),
        sshd.port
    );
    let mut host = child_host("ssh_host_child", (CHILD_ENV, std::ffi::OsStr::new(&spec)), "started");
    let mut ledger2 = Ledger::open(&DataDir::new(&data2).ledger_path()).unwrap();
    let ledger2_id = ledger2.ledger_id().to_owned();
    let rows = ledger2.live().unwrap();
    let pid_of = |name: &str| {
        rows.iter()
            .find(|r| r.plugin_id == name)
            .and_then(|r| match &r.handle {
                Some(ResourceHandle::RemoteProcess { pid, .. }) => Some(*pid),
                _ => None,
            })
            .unwrap()
    };
    let (job, stubborn) = (pid_of("job_slow_job"), pid_of("remote_stubborn"));
    host.kill().unwrap();
    host.wait().unwrap();
    assert!(
        wait_until_blocking(Duration::from_secs(10), || !alive(job)),
        "the remote SDK worker outlived its host"
    );
    assert!(alive(stubborn), "the stubborn program ignores EOF and SIGHUP");
    let report = run_gc(
        &mut ledger2,
        GcOptions {
            grace: Duration::from_millis(300),
            ..Default::default()
        },
        None,
    )
    .unwrap();
    assert_eq!(report.unconfirmed, 0, "{report:?}");
    assert!(report.reaped.iter().all(|r| r.confirmed), "{report:?}");
    assert!(!alive(stubborn));
    assert!(marked_alive(&ledger2_id).is_empty());
    assert!(ledger2.live().unwrap().is_empty());
    // A second gc finds nothing (its sweep looks on the recorded machine).
    let again = run_gc(&mut ledger2, GcOptions::default(), None).unwrap();
    assert!(again.reaped.is_empty(), "{again:?}");
    drop(sup);
}
