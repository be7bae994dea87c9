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
    // v1's billing became one interval at the stored price, open while the row is live.
    assert_eq!(priced.billing.len(), 1);
    assert_eq!(priced.billing[0].start_ms, priced.created_at);
    assert_eq!(Some(priced.billing[0].price_per_hour), priced.cost_per_hour);
    assert_eq!(priced.billing[0].end_ms, None);
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
            assert!(e.to_string().contains(&format!("reads up to {SCHEMA_VERSION}")), "{e}");
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

/// A v2 ledger (one billing start per row, no intervals): opened, every
/// billed row becomes one interval at its stored price, ended with the row.
#[test]
fn a_v2_ledger_gets_billing_intervals() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("ledger.sqlite");
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute_batch(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         INSERT INTO meta VALUES ('schema_version', '2'), ('ledger_id', 'v2ledger');
         CREATE TABLE hosts (id INTEGER PRIMARY KEY, pid INTEGER NOT NULL, start_time INTEGER NOT NULL,
                             boot_id TEXT NOT NULL, started_at INTEGER NOT NULL, ended_at INTEGER);
         INSERT INTO hosts VALUES (1, 1, 1, 'b', 0, NULL);
         CREATE TABLE resources (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, backend TEXT NOT NULL,
             plugin_id TEXT NOT NULL, host_id INTEGER NOT NULL REFERENCES hosts(id), status TEXT NOT NULL,
             owned INTEGER NOT NULL DEFAULT 1, handle TEXT, endpoint TEXT, created_at INTEGER NOT NULL,
             updated_at INTEGER NOT NULL, ended_at INTEGER, exit_code INTEGER, signal INTEGER,
             cost_per_hour REAL, price_source TEXT, billing_started_at INTEGER, note TEXT,
             details TEXT NOT NULL DEFAULT '{}');
         INSERT INTO resources (id, kind, backend, plugin_id, host_id, status, created_at, updated_at, ended_at,
                                cost_per_hour, price_source, billing_started_at)
         VALUES (1, 'process', 'process', 'a_done', 1, 'stopped', 0, 0, 7200000, 3.0, 'manifest', 3600000),
                (2, 'process', 'process', 'a_free', 1, 'running', 0, 0, NULL, NULL, NULL, 0),
                (3, 'process', 'process', 'a_live', 1, 'running', 0, 0, NULL, 1.0, 'manifest', 0);",
    )
    .unwrap();
    drop(c);
    let ledger = Ledger::open(&path).unwrap();
    assert_eq!(ledger.ledger_id(), "v2ledger");
    let done = ledger.get(1).unwrap().unwrap();
    assert_eq!(done.billing.len(), 1);
    assert_eq!(done.billing[0].end_ms, Some(7_200_000));
    assert!((done.accrued_usd(100_000_000) - 3.0).abs() < 1e-9);
    assert!(ledger.get(2).unwrap().unwrap().billing.is_empty());
    let live = ledger.get(3).unwrap().unwrap();
    assert!((live.accrued_usd(3_600_000) - 1.0).abs() < 1e-9);
    assert_eq!(live.burn_rate(), 1.0);
}
