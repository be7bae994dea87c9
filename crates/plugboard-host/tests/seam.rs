//! The supervisor's and gc's generic paths, proved with the test backend
//! (cargo feature `test-backend`): resources in memory that the test
//! crashes, loses, brings back or makes refuse a stop, so nothing depends
//! on processes or timing luck.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use plugboard_core::ExecutionMode;
use plugboard_host::backend::testing::TestBackend;
use plugboard_host::{
    Backends, DataDir, GcOptions, Manifest, ResourceStatus, RunState, Supervisor, SupervisorConfig, gc,
};

fn setup(dir: &std::path::Path) -> (Supervisor, TestBackend) {
    let data = DataDir::new(dir.join("data"));
    let backend = TestBackend::new(data.ledger_path());
    let mut backends = Backends::builtin(None);
    backends.register(Arc::new(backend.clone()), &[ExecutionMode::Kubernetes]);
    let mut cfg = SupervisorConfig::new(data);
    cfg.backends = Some(backends);
    (Supervisor::new(cfg).unwrap(), backend)
}

fn manifest(dir: &std::path::Path, restart: &str) -> Arc<Manifest> {
    manifest_in(
        dir,
        "job",
        &format!(
            "name = \"job\"\ncategory = \"k8s\"\nexecution_mode = \"kubernetes\"\nready = \"none\"\nprobe_interval_s = 0.02\n{restart}\n"
        ),
    )
}

fn marker_of(sup: &Supervisor, rid: i64) -> String {
    sup.with_ledger(|l| l.marker(rid))
}

async fn state_becomes(sup: &Supervisor, want: RunState) -> bool {
    wait_until(Duration::from_secs(5), || {
        sup.status("k8s_job").is_some_and(|s| s.state == want)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_intent_row_exists_before_the_backend_creates_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let (sup, backend) = setup(tmp.path());
    let st = sup.start(manifest(tmp.path(), "")).await.unwrap();
    assert_eq!(st.state, RunState::Running);
    assert_eq!(st.backend.as_deref(), Some("test"));
    assert_eq!(backend.world().intent_seen, vec![true]);
    let row = sup.with_ledger(|l| l.get(st.resource_id.unwrap()).unwrap().unwrap());
    assert_eq!(row.backend, "test");
    assert_eq!(row.status, ResourceStatus::Running);
    assert!(row.billing_started_at.is_some());
    sup.stop("k8s_job").await.unwrap();
    assert_eq!(backend.alive(), 0);
    let row = sup.with_ledger(|l| l.get(st.resource_id.unwrap()).unwrap().unwrap());
    assert_eq!(row.status, ResourceStatus::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_is_recorded_and_restarted_by_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let (sup, backend) = setup(tmp.path());
    let m = manifest(tmp.path(), "[restart]\npolicy = \"on-failure\"\nbackoff_ms = 10");
    let st = sup.start(m).await.unwrap();
    let first = st.resource_id.unwrap();
    backend.crash(&marker_of(&sup, first), 3);
    assert!(
        wait_until(Duration::from_secs(5), || sup
            .status("k8s_job")
            .is_some_and(|s| s.state == RunState::Running && s.restarts == 1))
        .await,
        "{:?}",
        sup.status("k8s_job")
    );
    let row = sup.with_ledger(|l| l.get(first).unwrap().unwrap());
    assert_eq!((row.status, row.exit_code), (ResourceStatus::Crashed, Some(3)));
    assert_eq!(backend.world().intent_seen, vec![true, true]);
    assert_eq!(backend.alive(), 1);
    sup.stop("k8s_job").await.unwrap();
    assert_eq!(backend.alive(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_resource_is_never_restarted_and_can_come_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (sup, backend) = setup(tmp.path());
    let m = manifest(tmp.path(), "[restart]\npolicy = \"always\"\nbackoff_ms = 1");
    let st = sup.start(m).await.unwrap();
    let rid = st.resource_id.unwrap();
    let marker = marker_of(&sup, rid);
    backend.set_lost(&marker, true);
    assert!(state_becomes(&sup, RunState::Lost).await);
    // Many probe intervals later: still lost, still one resource, no restart.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(sup.status("k8s_job").unwrap().state, RunState::Lost);
    }
    assert_eq!(backend.world().resources.len(), 1);
    assert_eq!(sup.status("k8s_job").unwrap().restarts, 0);
    let row = sup.with_ledger(|l| l.get(rid).unwrap().unwrap());
    assert_eq!(row.status, ResourceStatus::Lost);
    assert!(row.note.unwrap().contains("does not answer"));
    backend.set_lost(&marker, false);
    assert!(state_becomes(&sup, RunState::Running).await);
    // A lost plugin can be stopped like any other.
    backend.set_lost(&marker, true);
    assert!(state_becomes(&sup, RunState::Lost).await);
    sup.stop("k8s_job").await.unwrap();
    assert_eq!(backend.alive(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_the_backend_cannot_confirm_keeps_the_row_and_gc_retries_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (sup, backend) = setup(tmp.path());
    let st = sup.start(manifest(tmp.path(), "")).await.unwrap();
    let rid = st.resource_id.unwrap();
    backend.world().refuse_stops = 2;
    let e = sup.stop("k8s_job").await.unwrap_err().to_string();
    assert!(e.contains("not confirmed") && e.contains("gc retries"), "{e}");
    let row = sup.with_ledger(|l| l.get(rid).unwrap().unwrap());
    assert!(row.is_live(), "an unconfirmed stop must not end the row");
    assert!(row.note.is_some());

    let backends = sup.backends().clone();
    let opts = GcOptions {
        all: true,
        ..Default::default()
    };
    // First gc: the backend refuses again; the row stays, the report says so.
    let report = sup
        .with_ledger(|l| {
            let rt = tokio::runtime::Handle::current();
            tokio::task::block_in_place(|| rt.block_on(gc(l, opts, None, &backends)))
        })
        .unwrap();
    assert_eq!(report.unconfirmed, 1, "{report:?}");
    assert!(!report.reaped[0].confirmed);
    let row = sup.with_ledger(|l| l.get(rid).unwrap().unwrap());
    assert!(row.is_live());
    assert!(row.note.unwrap().contains("gc could not confirm"));
    // Dry run: the plan names the earlier failure, changes nothing.
    let dry = sup
        .with_ledger(|l| {
            let rt = tokio::runtime::Handle::current();
            let o = GcOptions { dry_run: true, ..opts };
            tokio::task::block_in_place(|| rt.block_on(gc(l, o, None, &backends)))
        })
        .unwrap();
    assert_eq!(dry.reaped.len(), 1);
    assert_eq!(backend.world().stop_calls, 2, "a dry run stops nothing");
    // Second gc: confirmed, the row is reaped.
    let report = sup
        .with_ledger(|l| {
            let rt = tokio::runtime::Handle::current();
            tokio::task::block_in_place(|| rt.block_on(gc(l, opts, None, &backends)))
        })
        .unwrap();
    assert_eq!((report.unconfirmed, report.reaped[0].confirmed), (0, true));
    assert_eq!(
        sup.with_ledger(|l| l.get(rid).unwrap().unwrap().status),
        ResourceStatus::Reaped
    );
    assert_eq!(backend.alive(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_that_fails_after_creating_leaves_nothing_or_leaves_it_to_gc() {
    let tmp = tempfile::tempdir().unwrap();
    let (sup, backend) = setup(tmp.path());
    backend.world().fail_after_create = true;
    let m = manifest(tmp.path(), "");
    let e = sup.start(Arc::clone(&m)).await.unwrap_err().to_string();
    assert!(e.contains("failed after creating"), "{e}");
    // The half-made resource was found by its marker and ended.
    assert_eq!(backend.alive(), 0);
    let rows = sup.with_ledger(|l| l.all().unwrap());
    assert_eq!(rows[0].status, ResourceStatus::Failed);

    // The crash window: the cleanup cannot be confirmed either, so the row
    // stays live (with its reason) and the sweep + gc end it later.
    backend.world().refuse_stops = 1;
    sup.start(m).await.unwrap_err();
    assert_eq!(backend.alive(), 1);
    let rows = sup.with_ledger(|l| l.live().unwrap());
    assert_eq!(rows.len(), 1);
    assert!(rows[0].note.is_some());
    let backends = sup.backends().clone();
    let report = sup
        .with_ledger(|l| {
            let rt = tokio::runtime::Handle::current();
            let o = GcOptions {
                all: true,
                ..Default::default()
            };
            tokio::task::block_in_place(|| rt.block_on(gc(l, o, None, &backends)))
        })
        .unwrap();
    assert_eq!(report.reaped.len(), 1, "{report:?}");
    assert_eq!(report.reaped[0].found.as_deref(), Some("t2"));
    assert_eq!(backend.alive(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mode_without_a_backend_says_which_mode_and_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let sup = supervisor(&tmp.path().join("data"));
    let m = manifest_in(
        tmp.path(),
        "k8s",
        "name = \"k8s\"\ncategory = \"cluster\"\nexecution_mode = \"kubernetes\"\n",
    );
    let e = sup.start(m).await.unwrap_err().to_string();
    assert!(e.contains("kubernetes") && e.contains("no kubernetes backend"), "{e}");
    assert!(
        sup.with_ledger(|l| l.all().unwrap()).is_empty(),
        "nothing is written for a mode that cannot start"
    );
}
