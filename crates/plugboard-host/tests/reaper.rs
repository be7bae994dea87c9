//! The ledger and the reaper: a host killed with SIGKILL leaves nothing
//! running once its workers' parent-death signal and the next gc have acted;
//! a reused pid is never hit; a process spawned before its row was completed
//! is found by its marker.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use plugboard_host::ledger::{Intent, MARKER_ENV, ResourceKind};
use plugboard_host::{DataDir, GcOptions, Ledger, Manifest};

const CHILD_ENV: &str = "PLUGBOARD_TEST_HOST_CHILD";

/// Runs as a separate host process when CHILD_ENV names a data dir: starts
/// the process_tree example, prints "started", then waits to be killed.
#[test]
fn host_child() {
    let Ok(data) = std::env::var(CHILD_ENV) else { return };
    let rt = host_runtime();
    rt.block_on(async {
        let sup = supervisor(std::path::Path::new(&data));
        let m = Arc::new(Manifest::load(&example("process_tree")).unwrap());
        let st = sup.start(m).await.unwrap();
        assert!(wait_until(Duration::from_secs(10), || tree_pids(&st.log_path).len() == 9).await);
        println!("started");
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
}

#[test]
fn a_host_killed_with_sigkill_leaves_no_marked_process_after_gc() {
    if !python_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut host = child_host("host_child", (CHILD_ENV, data.as_os_str()), "started");
    let log = DataDir::new(&data).log_path("demo_process_tree");
    let pids = tree_pids(&log);
    assert_eq!(pids.len(), 9);
    let worker = pids.iter().find(|(r, _)| r == "worker").unwrap().1;
    let ledger_id = Ledger::open(&DataDir::new(&data).ledger_path())
        .unwrap()
        .ledger_id()
        .to_owned();
    assert_eq!(marked_alive(&ledger_id).len(), 9);

    host.kill().unwrap(); // SIGKILL: no cleanup code runs in the host
    host.wait().unwrap();
    // The worker dies by its parent-death signal on its own.
    assert!(
        wait_until_blocking(Duration::from_secs(5), || !alive(worker)),
        "worker outlived its host"
    );

    // The next host's gc finds the rest by ledger row and marker.
    let mut ledger = Ledger::open(&DataDir::new(&data).ledger_path()).unwrap();
    let dry = run_gc(
        &mut ledger,
        GcOptions {
            dry_run: true,
            ..Default::default()
        },
        None,
    )
    .unwrap();
    assert!(dry.dry_run && !dry.reaped.is_empty());
    assert!(!marked_alive(&ledger_id).is_empty(), "a dry run must not kill");
    let report = run_gc(
        &mut ledger,
        GcOptions {
            grace: Duration::from_millis(200),
            ..Default::default()
        },
        None,
    )
    .unwrap();
    assert_eq!(report.reaped.len(), 1, "{report:?}");
    assert_eq!(report.reaped[0].reason, "owning host is gone");
    assert_eq!(report.hosts_ended.len(), 1);
    assert!(wait_until_blocking(Duration::from_secs(5), || marked_alive(&ledger_id).is_empty()));
    assert_eq!(marked_alive(&ledger_id).len(), 0);
    assert!(pids.iter().all(|(_, p)| !alive(*p)));
    let row = &ledger.all().unwrap()[0];
    assert_eq!(row.status.as_str(), "reaped");
    assert!(ledger.live().unwrap().is_empty());
    // A second gc has nothing to do.
    assert!(
        run_gc(&mut ledger, GcOptions::default(), None)
            .unwrap()
            .reaped
            .is_empty()
    );
}

#[test]
fn a_reused_pid_is_never_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(&tmp.path().join("l.sqlite")).unwrap();
    let dead_host = ledger.register_host(4_999_999, 1, "another-boot").unwrap();
    // An unrelated process that happens to have the recorded pid.
    let mut bystander = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = bystander.id();
    let real_start = plugboard_core::process::read_process(pid).unwrap().start_time;
    let id = ledger
        .intent(
            dead_host.id,
            &Intent {
                cost_per_hour: None,
                details: Default::default(),
                ..Intent::new(ResourceKind::Process, "process", "x_y")
            },
        )
        .unwrap();
    ledger.set_process(id, pid, real_start - 1).unwrap();
    let report = run_gc(&mut ledger, GcOptions::default(), None).unwrap();
    assert_eq!(report.reaped.len(), 1);
    assert_eq!(report.reaped[0].pid_reused, Some(pid));
    assert!(report.reaped[0].pids.is_empty());
    assert!(alive(pid), "the bystander with a reused pid was killed");
    assert_eq!(ledger.get(id).unwrap().unwrap().status.as_str(), "reaped");
    bystander.kill().unwrap();
    bystander.wait().unwrap();
}

#[test]
fn a_process_spawned_before_its_row_was_completed_is_found_by_marker() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(&tmp.path().join("l.sqlite")).unwrap();
    let dead_host = ledger.register_host(4_999_998, 1, "another-boot").unwrap();
    // The intent was written, the process spawned with its marker, and the
    // host died before recording the pid.
    let id = ledger
        .intent(
            dead_host.id,
            &Intent {
                cost_per_hour: None,
                details: Default::default(),
                ..Intent::new(ResourceKind::Process, "process", "x_y")
            },
        )
        .unwrap();
    let mut orphan = Command::new("sh")
        .args(["-c", "sleep 30 & sleep 30 & wait"])
        .env(MARKER_ENV, ledger.marker(id))
        .spawn()
        .unwrap();
    // And a marked process whose row is missing entirely.
    let mut rowless = Command::new("sleep")
        .arg("30")
        .env(MARKER_ENV, ledger.marker(9999))
        .spawn()
        .unwrap();
    // A process marked by another ledger is not ours.
    let mut foreign = Command::new("sleep")
        .arg("30")
        .env(MARKER_ENV, "otherledger:1")
        .spawn()
        .unwrap();
    assert!(wait_until_blocking(Duration::from_secs(5), || marked_alive(
        ledger.ledger_id()
    )
    .len()
        == 4));
    let row = ledger.get(id).unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.pid()), ("starting", None));

    let report = run_gc(
        &mut ledger,
        GcOptions {
            grace: Duration::from_millis(300),
            ..Default::default()
        },
        None,
    )
    .unwrap();
    assert_eq!(report.reaped.len(), 2, "{report:?}");
    assert_eq!(report.reaped[0].pids.len(), 3);
    assert_eq!(report.reaped[1].reason, "marked process has no ledger row");
    assert!(marked_alive(ledger.ledger_id()).is_empty());
    assert!(alive(foreign.id()));
    orphan.wait().unwrap();
    rowless.wait().unwrap();
    foreign.kill().unwrap();
    foreign.wait().unwrap();
}

#[test]
fn gc_keeps_resources_of_live_hosts_unless_all() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(&tmp.path().join("l.sqlite")).unwrap();
    let me = ledger.register_current_host().unwrap();
    let id = ledger
        .intent(
            me.id,
            &Intent {
                cost_per_hour: Some(2.0),
                details: Default::default(),
                ..Intent::new(ResourceKind::Process, "process", "x_y")
            },
        )
        .unwrap();
    let mut child = Command::new("sleep")
        .arg("30")
        .env(MARKER_ENV, ledger.marker(id))
        .spawn()
        .unwrap();
    let st = plugboard_core::process::read_process(child.id()).unwrap().start_time;
    ledger.set_process(id, child.id(), st).unwrap();
    let report = run_gc(&mut ledger, GcOptions::default(), None).unwrap();
    assert_eq!((report.kept, report.reaped.len()), (1, 0));
    assert!(alive(child.id()));
    let report = run_gc(
        &mut ledger,
        GcOptions {
            all: true,
            ..Default::default()
        },
        None,
    )
    .unwrap();
    assert_eq!(report.reaped.len(), 1);
    assert_eq!(report.reaped[0].reason, "gc --all");
    child.wait().unwrap();
    let row = ledger.get(id).unwrap().unwrap();
    assert_eq!(row.status.as_str(), "reaped");
    assert!(row.accrued_usd(row.ended_at.unwrap()) >= 0.0);
}

#[test]
fn the_ledger_survives_reopening_and_refuses_newer_schemas() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("l.sqlite");
    let (ledger_id, id) = {
        let ledger = Ledger::open(&path).unwrap();
        let h = ledger.register_current_host().unwrap();
        let id = ledger
            .intent(
                h.id,
                &Intent {
                    cost_per_hour: Some(1.5),
                    details: serde_json::json!({"log": "x"}),
                    ..Intent::new(ResourceKind::Process, "process", "a_b")
                },
            )
            .unwrap();
        (ledger.ledger_id().to_owned(), id)
    };
    let ledger = Ledger::open(&path).unwrap();
    assert_eq!(ledger.ledger_id(), ledger_id);
    let row = ledger.get(id).unwrap().unwrap();
    assert_eq!(row.details["log"], "x");
    assert_eq!(row.cost_per_hour, Some(1.5));
    assert_eq!(row.marker, format!("{ledger_id}:{id}"));
    drop(ledger);
    let conn = rusqlite_conn(&path);
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'", [])
        .unwrap();
    drop(conn);
    let err = Ledger::open(&path).unwrap_err().to_string();
    assert!(err.contains("schema version 99"), "{err}");
    std::fs::write(
        tmp.path().join("junk.sqlite"),
        b"this is not a database at all, not even close....",
    )
    .unwrap();
    let err = Ledger::open(&tmp.path().join("junk.sqlite")).unwrap_err();
    assert!(err.to_string().contains("junk.sqlite"), "{err}");
}

fn rusqlite_conn(path: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}
