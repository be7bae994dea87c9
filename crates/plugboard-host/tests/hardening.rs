//! Regression tests for the supervisor defects found by a hostile test of
//! the binary (issue "Hardening"): each is named after its defect number
//! and failed before the fix.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use plugboard_host::{Manifest, ResourceStatus, RunState, Supervisor};

fn health_manifest(dir: &std::path::Path, name: &str) -> Arc<Manifest> {
    manifest_in(
        dir,
        name,
        &format!(
            "name = \"{name}\"\ncategory = \"test\"\nexecution_mode = \"subprocess\"\nstop_grace_s = 1\n[launch]\ncommand = \"python3\"\nargs = [\"-u\", \"{}\"]\n",
            fixture("health_worker.py").display()
        ),
    )
}

fn sh_manifest(dir: &std::path::Path, name: &str, script: &str, extra: &str) -> Arc<Manifest> {
    manifest_in(
        dir,
        name,
        &format!(
            "name = \"{name}\"\ncategory = \"test\"\nexecution_mode = \"subprocess\"\nready = \"none\"\nstop_grace_s = 0.5\n{extra}\n[launch]\ncommand = \"sh\"\nargs = [\"-c\", {script:?}]\n"
        ),
    )
}

fn ledger_id(sup: &Supervisor) -> String {
    sup.with_ledger(|l| l.ledger_id().to_owned())
}

/// Processes whose command line contains `needle`.
fn with_cmdline(needle: &str) -> Vec<u32> {
    plugboard_core::process::snapshot()
        .into_iter()
        .filter(|p| p.is_live())
        .filter(|p| {
            std::fs::read(format!("/proc/{}/cmdline", p.pid))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").starts_with(needle))
                .unwrap_or(false)
        })
        .map(|p| p.pid)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_restarts_and_stops_leave_at_most_one_worker_and_no_stale_rows_defect_1() {
    if !python_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("data"));
    let m = health_manifest(tmp.path(), "race");
    sup.start(Arc::clone(&m)).await.unwrap();
    // 20 restarts at once, with starts and stops thrown in.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (sup, m) = (sup.clone(), Arc::clone(&m));
        tasks.push(tokio::spawn(async move {
            match i % 5 {
                3 => sup.stop("test_race").await.map(|_| ()),
                4 => sup.start(m).await.map(|_| ()),
                _ => sup.restart(m).await.map(|_| ()),
            }
        }));
    }
    for t in tasks {
        // Individual operations may say "already running" or "not running";
        // none may hang or panic.
        let _ = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("an operation hung");
    }
    let marked = marked_alive(&ledger_id(&sup));
    let live = sup.with_ledger(|l| l.live().unwrap());
    assert!(live.len() <= 1, "{live:?}");
    let roots: Vec<u32> = live.iter().filter_map(|r| r.pid()).collect();
    assert_eq!(marked.len(), roots.len(), "marked {marked:?}, rows {live:?}");
    assert_eq!(marked, roots);
    match sup.stop("test_race").await {
        Ok(_) | Err(plugboard_host::HostError::NotRunning { .. }) => {}
        Err(e) => panic!("{e}"),
    }
    assert!(
        wait_until(Duration::from_secs(5), || marked_alive(&ledger_id(&sup)).is_empty()).await,
        "a stop must end every worker the host spawned"
    );
    assert!(sup.with_ledger(|l| l.live().unwrap()).is_empty(), "no stale rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_that_exit_on_their_own_are_reaped_defect_4() {
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("data"));
    let m = sh_manifest(
        tmp.path(),
        "orphans",
        "for i in $(seq 1 50); do (sleep 0.2 &); done; exec sleep 100000",
        "",
    );
    let worker = sup.start(m).await.unwrap().pid.unwrap();
    let me = std::process::id();
    // Zombies adopted from this worker's tree (other tests of this binary
    // run beside it and have children of their own).
    let zombies = || {
        plugboard_core::process::snapshot()
            .into_iter()
            .filter(|p| p.ppid == me && p.pgid == worker && !p.is_live())
            .count()
    };
    // The 50 adopted sleeps exit after 0.2 s; none may stay a zombie.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        wait_until(Duration::from_secs(5), || zombies() == 0).await,
        "{} zombies left",
        zombies()
    );
    sup.stop("test_orphans").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_the_restart_backoff_cancels_the_restart_defect_5() {
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("data"));
    let m = sh_manifest(
        tmp.path(),
        "crashloop",
        "sleep 0.2; exit 1",
        "[restart]\npolicy = \"on-failure\"\nbackoff_ms = 1500",
    );
    sup.start(m).await.unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || sup
            .status("test_crashloop")
            .is_some_and(|s| s.restart_pending))
        .await
    );
    assert_eq!(sup.status("test_crashloop").unwrap().state, RunState::Crashed);
    let st = sup
        .stop("test_crashloop")
        .await
        .expect("a stop during the backoff succeeds");
    assert_eq!(st.state, RunState::Stopped);
    assert!(!st.restart_pending);
    // Past the backoff: no restart happened.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let st = sup.status("test_crashloop").unwrap();
    assert_eq!((st.state, st.restarts), (RunState::Stopped, 0));
    assert_eq!(
        sup.with_ledger(|l| l.all().unwrap()).len(),
        1,
        "no second worker was started"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_clears_its_environment_and_leaves_its_session_is_still_ended_defect_8() {
    if !std::path::Path::new("/sys/fs/cgroup/freezer").is_dir()
        && !std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").is_file()
    {
        assert!(std::env::var_os("CI").is_none(), "CI machines have writable cgroups");
        eprintln!("SKIP: no cgroup hierarchy here");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("data"));
    let needle = format!("sleep 7777{}", std::process::id() % 10);
    let script = format!("setsid sh -c 'env -i {needle} &'; exec sleep 100000");
    let m = sh_manifest(tmp.path(), "escaper", &script, "");
    let st = sup.start(m).await.unwrap();
    assert!(wait_until(Duration::from_secs(5), || !with_cmdline(&needle).is_empty()).await);
    let escaped = with_cmdline(&needle);
    // It has no marker, no parent link to the worker, another group and session…
    assert!(plugboard_core::process::environ_var(escaped[0], plugboard_host::MARKER_ENV).is_none());
    // …but it is in the plugin's cgroup, which the status shows.
    match &st.resource {
        Some(plugboard_host::ResourceHandle::Process { cgroups, .. }) => assert!(!cgroups.is_empty()),
        other => panic!("{other:?}"),
    }
    assert!(sup.tree_pids("test_escaper").contains(&escaped[0]));
    sup.stop("test_escaper").await.unwrap();
    assert!(
        wait_until(Duration::from_secs(2), || with_cmdline(&needle).is_empty()).await,
        "{:?} escaped the stop",
        with_cmdline(&needle)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_cpu_limits_are_applied_through_the_cgroup_defect_8() {
    if !std::path::Path::new("/sys/fs/cgroup/memory").is_dir() {
        assert!(std::env::var_os("CI").is_none(), "CI machines have writable cgroups");
        eprintln!("SKIP: no cgroup v1 memory hierarchy here");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("data"));
    let m = manifest_in(
        tmp.path(),
        "limited",
        "name = \"limited\"\ncategory = \"test\"\nexecution_mode = \"subprocess\"\nready = \"none\"\n[launch]\ncommand = \"sleep\"\nargs = [\"100000\"]\nmemory_mb = 64\ncpus = 0.5\n",
    );
    let st = sup.start(m).await.unwrap();
    let Some(plugboard_host::ResourceHandle::Process { cgroups, .. }) = &st.resource else {
        panic!()
    };
    let mem = cgroups
        .iter()
        .find(|d| d.contains("/memory/"))
        .expect("a memory cgroup");
    let limit = std::fs::read_to_string(format!("{mem}/memory.limit_in_bytes")).unwrap();
    assert_eq!(limit.trim(), (64 * 1024 * 1024).to_string());
    let cpu = cgroups.iter().find(|d| d.contains("/cpu/")).expect("a cpu cgroup");
    let quota = std::fs::read_to_string(format!("{cpu}/cpu.cfs_quota_us")).unwrap();
    assert_eq!(quota.trim(), "50000");
    sup.stop("test_limited").await.unwrap();
    assert!(
        !std::path::Path::new(mem).exists(),
        "the cgroup is removed after the stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_worker_leaves_no_socket_behind_defect_15() {
    if !python_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("data"));
    let st = sup.start(health_manifest(tmp.path(), "sock")).await.unwrap();
    let listen = st.listen.clone().unwrap();
    assert!(listen.exists());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(st.pid.unwrap() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || sup.status("test_sock").unwrap().state
            == RunState::Crashed)
        .await
    );
    assert!(
        wait_until(Duration::from_secs(5), || !listen.exists()).await,
        "{} left behind",
        listen.display()
    );
    let run_dir = tmp.path().join("data/run");
    let left: Vec<_> = std::fs::read_dir(&run_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_start_is_recorded_as_a_stop_not_a_failure_defect_16() {
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("data"));
    // Never ready: nothing listens on that port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let m = manifest_in(
        tmp.path(),
        "slowstart",
        &format!(
            "name = \"slowstart\"\ncategory = \"test\"\nexecution_mode = \"subprocess\"\nready = {{ tcp = \"127.0.0.1:{port}\" }}\nready_timeout_s = 60\n[launch]\ncommand = \"sleep\"\nargs = [\"100000\"]\n"
        ),
    );
    let starter = {
        let sup = sup.clone();
        tokio::spawn(async move { sup.start(m).await })
    };
    assert!(
        wait_until(Duration::from_secs(5), || sup
            .status("test_slowstart")
            .is_some_and(|s| s.state == RunState::Starting && s.pid.is_some()))
        .await
    );
    let pid = sup.status("test_slowstart").unwrap().pid.unwrap();
    let t0 = Instant::now();
    let st = sup.stop("test_slowstart").await.unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the stop waited for the start's timeout"
    );
    assert_eq!(st.state, RunState::Stopped);
    let e = starter.await.unwrap().unwrap_err().to_string();
    assert!(e.contains("stopped while it was starting"), "{e}");
    assert!(!e.contains("exited before it was ready"), "{e}");
    assert!(!alive(pid));
    let row = sup.with_ledger(|l| l.all().unwrap().pop().unwrap());
    assert_eq!(row.status, ResourceStatus::Stopped);
    assert!(row.ended_at.is_some());
}
