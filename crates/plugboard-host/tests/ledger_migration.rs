//! Ledger v1 → v2: a v1 ledger written by plugboard 0.1 (committed as a
//! fixture: two hosts' worth of stopped, crashed and running process rows,
//! one with a price) is migrated in place in one transaction, and every row
//! survives with its identity, status, times, price and details.

mod common;

use common::fixture;
use plugboard_host::ledger::{PriceSource, ResourceHandle, ResourceKind, ResourceStatus, SCHEMA_VERSION};
use plugboard_host::{Ledger, LedgerError};

#[derive(Debug)]
struct V1Row {
    id: i64,
    kind: String,
    plugin_id: String,
    host_id: i64,
    status: String,
    pid: Option<u32>,
    pid_start_time: Option<i64>,
    created_at: i64,
    updated_at: i64,
    ended_at: Option<i64>,
    exit_code: Option<i32>,
    signal: Option<i32>,
    cost: Option<f64>,
    details: String,
}

fn v1_rows(path: &std::path::Path) -> (Vec<V1Row>, String) {
    let c = rusqlite::Connection::open(path).unwrap();
    let version: String = c
        .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, "1", "the fixture must be a v1 ledger");
    let ledger_id: String = c
        .query_row("SELECT value FROM meta WHERE key = 'ledger_id'", [], |r| r.get(0))
        .unwrap();
    let mut s = c
        .prepare(
            "SELECT id, kind, plugin_id, host_id, status, pid, pid_start_time, created_at, updated_at, ended_at,
                    exit_code, signal, cost_per_hour, details FROM resources ORDER BY id",
        )
        .unwrap();
    let rows = s
        .query_map([], |r| {
            Ok(V1Row {
                id: r.get(0)?,
                kind: r.get(1)?,
                plugin_id: r.get(2)?,
                host_id: r.get(3)?,
                status: r.get(4)?,
                pid: r.get(5)?,
                pid_start_time: r.get(6)?,
                created_at: r.get(7)?,
                updated_at: r.get(8)?,
                ended_at: r.get(9)?,
                exit_code: r.get(10)?,
                signal: r.get(11)?,
                cost: r.get(12)?,
                details: r.get(13)?,
            })
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    (rows, ledger_id)
}

#[test]
fn a_v1_ledger_migrates_in_place_and_every_row_survives() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ledger.sqlite");
    std::fs::copy(fixture("ledger-v1.sqlite"), &path).unwrap();
    let (before, ledger_id) = v1_rows(&path);
    assert_eq!(before.len(), 5);

    let ledger = Ledger::open(&path).unwrap();
    assert_eq!(ledger.ledger_id(), ledger_id, "markers stay valid");
    let after = ledger.all().unwrap();
    assert_eq!(after.len(), before.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.id, b.id);
        assert_eq!(a.kind, ResourceKind::Process);
        assert_eq!(b.kind, "process");
        assert_eq!(a.backend, "process");
        assert_eq!(a.plugin_id, b.plugin_id);
        assert_eq!(a.host_id, b.host_id);
        assert_eq!(a.status.as_str(), b.status);
        assert!(a.owned);
        assert_eq!(
            a.handle,
            b.pid.map(|pid| ResourceHandle::Process {
                pid,
                start_time: b.pid_start_time.unwrap_or(0) as u64,
                cgroups: vec![],
            })
        );
        assert_eq!(
            (a.created_at, a.updated_at, a.ended_at),
            (b.created_at, b.updated_at, b.ended_at)
        );
        assert_eq!((a.exit_code, a.signal), (b.exit_code, b.signal));
        assert_eq!(a.cost_per_hour, b.cost);
        assert_eq!(a.price_source, b.cost.map(|_| PriceSource::Manifest));
        // v1 billed from creation; so does the migrated row.
        assert_eq!(a.billing_started_at, Some(b.created_at));
        let details: serde_json::Value = serde_json::from_str(&b.details).unwrap();
        assert_eq!(a.details, details);
        assert_eq!(a.marker, format!("{ledger_id}:{}", b.id));
    }
    // The rows the crashed v1 host left running are still live, so gc finds them.
    let live: Vec<_> = after.iter().filter(|r| r.is_live()).map(|r| r.status).collect();
    assert_eq!(live, vec![ResourceStatus::Running, ResourceStatus::Running]);
    let priced = after.iter().find(|r| r.cost_per_hour.is_some()).unwrap();
    assert_eq!(priced.plugin_id, "llm_gpu_sleeper");
    assert!(priced.accrued_usd(priced.created_at + 3_600_000) > 1.24);
    assert_eq!(ledger.hosts().unwrap().len(), 1);
    drop(ledger);

    // Opening again is a no-op; the file now says v2.
    let again = Ledger::open(&path).unwrap();
    assert_eq!(again.all().unwrap(), after);
    let c = rusqlite::Connection::open(&path).unwrap();
    let v: String = c
        .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION.to_string());
}

#[test]
fn a_ledger_from_a_newer_plugboard_is_refused_and_left_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ledger.sqlite");
    drop(Ledger::open(&path).unwrap());
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'", [])
        .unwrap();
    drop(c);
    match Ledger::open(&path) {
        Err(e @ LedgerError::TooNew { found: 99, .. }) => {
            assert!(e.to_string().contains("reads up to 2"), "{e}");
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
    let c = rusqlite::Connection::open(&path).unwrap();
    let v: String = c
        .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, "99");
}

#[test]
fn a_failed_migration_changes_nothing() {
    // A v1 file whose resources table is damaged (a column missing): the
    // migration fails as a whole and the file is still v1.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ledger.sqlite");
    std::fs::copy(fixture("ledger-v1.sqlite"), &path).unwrap();
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch("ALTER TABLE resources DROP COLUMN pid_start_time")
        .unwrap();
    drop(c);
    let e = Ledger::open(&path).unwrap_err();
    assert!(e.to_string().contains("migrate"), "{e}");
    let c = rusqlite::Connection::open(&path).unwrap();
    let v: String = c
        .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, "1");
    let n: i64 = c.query_row("SELECT count(*) FROM resources", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 5);
}
