//! The resource ledger: every process, container, instance or service
//! plugboard uses, written down before it is created.
//!
//! SQLite in WAL mode in the data dir (the embedded default). A row is
//! written as an *intent* (status `starting`) before the resource exists, and
//! the resource carries a marker of that row (`{ledger id}:{row id}`: an env
//! var for processes, a label for containers, a tag for instances), so a
//! crash between creation and the row's completion still leaves the resource
//! findable. The handle that identifies a resource is typed per kind
//! ([`ResourceHandle`]): processes by pid *and* start time, hosts by pid,
//! start time and boot id, so a reused pid is never taken for a recorded one.

mod billing;
mod migrate;
mod record;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;

pub use billing::SpendRow;
pub use migrate::SCHEMA_VERSION;
pub use record::{HostRecord, Intent, PriceSource, ResourceHandle, ResourceKind, ResourceRecord, ResourceStatus};

/// The environment variable that marks a spawned process with its ledger row.
pub const MARKER_ENV: &str = "PLUGBOARD_RESOURCE_ID";

/// Errors from the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// SQLite refused an operation.
    #[error("ledger {}: {op}", path.display())]
    Sql {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer plugboard.
    #[error("ledger {} has schema version {found}; this plugboard reads up to {SCHEMA_VERSION}", path.display())]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: i64,
    },
    /// The data directory could not be created.
    #[error("cannot create ledger directory {}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The kernel's boot id: with pid and start time, a process identity that a
/// reboot cannot fake.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map_or_else(|_| "unknown".into(), |s| s.trim().into())
}

const COLUMNS: &str = "id, kind, backend, plugin_id, host_id, status, owned, handle, endpoint, created_at, \
                       updated_at, ended_at, exit_code, signal, cost_per_hour, price_source, billing_started_at, \
                       note, details, deadline_at, deadline_reason, \
                       (SELECT json_group_array(json_array(b.price_per_hour, b.start_ms, b.end_ms)) \
                        FROM billing b WHERE b.resource_id = resources.id), \
                       (SELECT COALESCE(SUM(c.usd), 0) FROM charges c WHERE c.resource_id = resources.id)";

/// The ledger database.
#[derive(Debug)]
pub struct Ledger {
    conn: Connection,
    path: PathBuf,
    ledger_id: String,
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `path`, migrating an older
    /// schema in one transaction; a newer one is refused.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|source| LedgerError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let sql = |op| {
            let path = path.to_path_buf();
            move |source| LedgerError::Sql {
                path: path.clone(),
                op,
                source,
            }
        };
        let mut conn = Connection::open(path).map_err(sql("open"))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(sql("set busy timeout"))?;
        // Every statement the ledger runs stays prepared.
        conn.set_prepared_statement_cache_capacity(64);
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql("enable WAL"))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql("set synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql("enable foreign keys"))?;
        let found = migrate::migrate(&mut conn).map_err(sql("migrate schema"))?;
        if found > SCHEMA_VERSION {
            return Err(LedgerError::TooNew {
                path: path.to_path_buf(),
                found,
            });
        }
        if (1..SCHEMA_VERSION).contains(&found) {
            tracing::info!(path = %path.display(), from = found, to = SCHEMA_VERSION, "ledger migrated");
        }
        let fresh = uuid::Uuid::new_v4().simple().to_string();
        conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('ledger_id', ?1)",
            [&fresh],
        )
        .map_err(sql("write ledger id"))?;
        let ledger_id: String = conn
            .query_row("SELECT value FROM meta WHERE key = 'ledger_id'", [], |r| r.get(0))
            .map_err(sql("read ledger id"))?;
        Ok(Ledger {
            conn,
            path: path.to_path_buf(),
            ledger_id,
        })
    }

    /// Runs one write statement, prepared once per connection: a start
    /// writes three rows, and parsing their SQL each time was a measurable
    /// part of it.
    fn exec(&self, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<usize> {
        self.conn.prepare_cached(sql)?.execute(p)
    }

    /// Runs `f`'s statements as one commit (a savepoint, so it nests in
    /// [`Ledger::transaction`]): a status and its billing interval change
    /// together or not at all, and one commit costs less than three.
    fn atomically<T>(&self, op: &'static str, f: impl FnOnce() -> Result<T, LedgerError>) -> Result<T, LedgerError> {
        self.bracketed(
            ("SAVEPOINT ledger_step", op),
            ("RELEASE ledger_step", op),
            "ROLLBACK TO ledger_step; RELEASE ledger_step",
            f,
        )
    }

    /// Runs `f` between the `begin` and `commit` statements (a failure of
    /// either is reported as its op), undoing with `undo` when `f` fails.
    fn bracketed<T>(
        &self,
        begin: (&str, &'static str),
        commit: (&str, &'static str),
        undo: &str,
        f: impl FnOnce() -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        self.conn.execute_batch(begin.0).map_err(self.err(begin.1))?;
        match f() {
            Ok(v) => {
                self.conn.execute_batch(commit.0).map_err(self.err(commit.1))?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch(undo);
                Err(e)
            }
        }
    }

    fn err(&self, op: &'static str) -> impl Fn(rusqlite::Error) -> LedgerError + '_ {
        move |source| LedgerError::Sql {
            path: self.path.clone(),
            op,
            source,
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This ledger's random id, the first half of every marker.
    pub fn ledger_id(&self) -> &str {
        &self.ledger_id
    }

    /// The marker of resource `id`.
    pub fn marker(&self, id: i64) -> String {
        format!("{}:{id}", self.ledger_id)
    }

    /// Records the calling process as a host.
    pub fn register_current_host(&self) -> Result<HostRecord, LedgerError> {
        let pid = std::process::id();
        let start_time = plugboard_core::process::read_process(pid).map_or(0, |p| p.start_time);
        self.register_host(pid, start_time, &boot_id())
    }

    /// Records a host by its identity (for imports and tests; a running host
    /// uses [`register_current_host`](Self::register_current_host)).
    pub fn register_host(&self, pid: u32, start_time: u64, boot: &str) -> Result<HostRecord, LedgerError> {
        let boot = boot.to_owned();
        let now = now_ms();
        self.exec(
            "INSERT INTO hosts(pid, start_time, boot_id, started_at) VALUES (?1, ?2, ?3, ?4)",
            params![pid, start_time as i64, boot, now],
        )
        .map_err(self.err("register host"))?;
        Ok(HostRecord {
            id: self.conn.last_insert_rowid(),
            pid,
            start_time,
            boot_id: boot,
            started_at: now,
            ended_at: None,
        })
    }

    /// Marks a host ended.
    pub fn end_host(&self, host_id: i64) -> Result<(), LedgerError> {
        self.exec(
            "UPDATE hosts SET ended_at = ?2 WHERE id = ?1 AND ended_at IS NULL",
            params![host_id, now_ms()],
        )
        .map_err(self.err("end host"))?;
        Ok(())
    }

    /// Every host row.
    pub fn hosts(&self) -> Result<Vec<HostRecord>, LedgerError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, pid, start_time, boot_id, started_at, ended_at FROM hosts ORDER BY id")
            .map_err(self.err("list hosts"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(HostRecord {
                    id: r.get(0)?,
                    pid: r.get(1)?,
                    start_time: r.get::<_, i64>(2)? as u64,
                    boot_id: r.get(3)?,
                    started_at: r.get(4)?,
                    ended_at: r.get(5)?,
                })
            })
            .map_err(self.err("list hosts"))?;
        rows.collect::<Result<_, _>>().map_err(self.err("list hosts"))
    }

    /// Writes down a resource about to be created; returns its row id.
    pub fn intent(&self, host_id: i64, intent: &Intent<'_>) -> Result<i64, LedgerError> {
        let now = now_ms();
        self.exec(
            "INSERT INTO resources(kind, backend, plugin_id, host_id, status, owned, created_at, updated_at,
                                       cost_per_hour, price_source, details)
                 VALUES (?1, ?2, ?3, ?4, 'starting', ?5, ?6, ?6, ?7, ?8, ?9)",
            params![
                intent.kind.as_str(),
                intent.backend,
                intent.plugin_id,
                host_id,
                intent.owned,
                now,
                intent.cost_per_hour,
                intent.price_source.map(PriceSource::as_str),
                intent.details.to_string()
            ],
        )
        .map_err(self.err("record intent"))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records what now identifies resource `id`, and where it answers.
    pub fn set_handle(&self, id: i64, handle: &ResourceHandle, endpoint: Option<&str>) -> Result<(), LedgerError> {
        let json = serde_json::to_string(handle).unwrap_or_else(|_| "null".into());
        self.exec(
            "UPDATE resources SET handle = ?2, endpoint = COALESCE(?3, endpoint), updated_at = ?4 WHERE id = ?1",
            params![id, json, endpoint, now_ms()],
        )
        .map_err(self.err("record handle"))?;
        Ok(())
    }

    /// Records a process that now exists for resource `id` (a process handle
    /// with no cgroup).
    pub fn set_process(&self, id: i64, pid: u32, start_time: u64) -> Result<(), LedgerError> {
        self.set_handle(
            id,
            &ResourceHandle::Process {
                pid,
                start_time,
                cgroups: Vec::new(),
            },
            None,
        )
    }

    /// Changes the status of a live resource. Billing starts the first time
    /// a resource is `running`, unless it already started.
    pub fn set_status(&self, id: i64, status: ResourceStatus) -> Result<(), LedgerError> {
        let now = now_ms();
        let update = || {
            self.exec(
                "UPDATE resources SET status = ?2, updated_at = ?3 WHERE id = ?1 AND ended_at IS NULL",
                params![id, status.as_str(), now],
            )
            .map_err(self.err("update status"))
        };
        if status != ResourceStatus::Running {
            return update().map(|_| ());
        }
        self.atomically("update status", || {
            update()?;
            self.open_billing(id, now)
        })
    }

    /// Starts billing resource `id` now (for providers that bill from
    /// creation); billing already running is kept.
    pub fn start_billing(&self, id: i64) -> Result<(), LedgerError> {
        self.open_billing(id, now_ms())
    }

    /// Records a reason on resource `id` (why gc could not end it, why it is
    /// lost); `None` clears it.
    pub fn set_note(&self, id: i64, note: Option<&str>) -> Result<(), LedgerError> {
        self.exec(
            "UPDATE resources SET note = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, note, now_ms()],
        )
        .map_err(self.err("record note"))?;
        Ok(())
    }

    /// Marks resource `id` ended with a final `status` and its exit
    /// information. Ending an ended row keeps its first end time.
    pub fn end(
        &self,
        id: i64,
        status: ResourceStatus,
        exit_code: Option<i32>,
        signal: Option<i32>,
    ) -> Result<(), LedgerError> {
        debug_assert!(status.is_final(), "{status} does not end a resource");
        let now = now_ms();
        self.atomically("end resource", || {
            self.exec(
                "UPDATE resources SET status = ?2, exit_code = COALESCE(?3, exit_code), signal = COALESCE(?4, signal),
                        updated_at = ?5, ended_at = COALESCE(ended_at, ?5), deadline_at = NULL
                 WHERE id = ?1",
                params![id, status.as_str(), exit_code, signal, now],
            )
            .map_err(self.err("end resource"))?;
            self.close_billing(id, now)
        })
    }

    fn row(&self, r: &Row<'_>) -> rusqlite::Result<ResourceRecord> {
        let bad = |col: usize, e: String| {
            rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, e.into())
        };
        let id: i64 = r.get(0)?;
        let kind: String = r.get(1)?;
        let status: String = r.get(5)?;
        let handle: Option<String> = r.get(7)?;
        let price_source: Option<String> = r.get(15)?;
        let details: String = r.get(18)?;
        Ok(ResourceRecord {
            id,
            kind: kind.parse().map_err(|e| bad(1, e))?,
            backend: r.get(2)?,
            plugin_id: r.get(3)?,
            host_id: r.get(4)?,
            status: status.parse().map_err(|e| bad(5, e))?,
            owned: r.get(6)?,
            handle: match handle {
                Some(h) => Some(serde_json::from_str(&h).map_err(|e| bad(7, format!("handle {h:?}: {e}")))?),
                None => None,
            },
            endpoint: r.get(8)?,
            marker: self.marker(id),
            created_at: r.get(9)?,
            updated_at: r.get(10)?,
            ended_at: r.get(11)?,
            exit_code: r.get(12)?,
            signal: r.get(13)?,
            cost_per_hour: r.get(14)?,
            price_source: price_source.map(|p| p.parse()).transpose().map_err(|e| bad(15, e))?,
            billing_started_at: r.get(16)?,
            note: r.get(17)?,
            details: serde_json::from_str(&details).unwrap_or(Value::Null),
            deadline_at: r.get(19)?,
            deadline_reason: r.get(20)?,
            billing: billing::parse_intervals(r.get::<_, Option<String>>(21)?.as_deref(), r.get(11)?),
            charges_usd: r.get(22)?,
        })
    }

    fn query(&self, sql: &str, p: impl rusqlite::Params, op: &'static str) -> Result<Vec<ResourceRecord>, LedgerError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(self.err(op))?;
        let rows = stmt.query_map(p, |r| self.row(r)).map_err(self.err(op))?;
        rows.collect::<Result<_, _>>().map_err(self.err(op))
    }

    /// One resource.
    pub fn get(&self, id: i64) -> Result<Option<ResourceRecord>, LedgerError> {
        let sql = format!("SELECT {COLUMNS} FROM resources WHERE id = ?1");
        let mut stmt = self.conn.prepare_cached(&sql).map_err(self.err("read resource"))?;
        stmt.query_row([id], |r| self.row(r))
            .optional()
            .map_err(self.err("read resource"))
    }

    /// Every resource that has not ended, oldest first.
    pub fn live(&self) -> Result<Vec<ResourceRecord>, LedgerError> {
        self.query(
            &format!("SELECT {COLUMNS} FROM resources WHERE ended_at IS NULL ORDER BY id"),
            [],
            "list live",
        )
    }

    /// The newest `limit` resources of a plugin, newest first.
    pub fn for_plugin(&self, plugin_id: &str, limit: usize) -> Result<Vec<ResourceRecord>, LedgerError> {
        self.query(
            &format!("SELECT {COLUMNS} FROM resources WHERE plugin_id = ?1 ORDER BY id DESC LIMIT ?2"),
            params![plugin_id, limit as i64],
            "list plugin resources",
        )
    }

    /// The distinct details recorded by `backend`'s rows that are live or
    /// ended after `ended_since` (ms since epoch): where its sweep looks.
    pub fn recorded_details(&self, backend: &str, ended_since: i64) -> Result<Vec<Value>, LedgerError> {
        let op = "list recorded details";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT DISTINCT details FROM resources WHERE backend = ?1 AND (ended_at IS NULL OR ended_at >= ?2)",
            )
            .map_err(self.err(op))?;
        let rows = stmt
            .query_map(params![backend, ended_since], |r| r.get::<_, String>(0))
            .map_err(self.err(op))?;
        let mut out = Vec::new();
        for r in rows {
            // A row whose details do not parse has nothing to say where to look.
            if let Ok(v) = serde_json::from_str(&r.map_err(self.err(op))?) {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Resources that ended at or after `since_ms`, newest first.
    pub fn ended_since(&self, since_ms: i64) -> Result<Vec<ResourceRecord>, LedgerError> {
        self.query(
            &format!("SELECT {COLUMNS} FROM resources WHERE ended_at >= ?1 ORDER BY ended_at DESC"),
            [since_ms],
            "list ended",
        )
    }

    /// Every resource, oldest first.
    pub fn all(&self) -> Result<Vec<ResourceRecord>, LedgerError> {
        self.query(
            &format!("SELECT {COLUMNS} FROM resources ORDER BY id"),
            [],
            "list resources",
        )
    }

    /// Runs `f` in one write transaction (for bulk updates such as gc).
    pub fn transaction<T>(&mut self, f: impl FnOnce(&Ledger) -> Result<T, LedgerError>) -> Result<T, LedgerError> {
        let ledger: &Ledger = self;
        ledger.bracketed(("BEGIN IMMEDIATE", "begin"), ("COMMIT", "commit"), "ROLLBACK", || {
            f(ledger)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn priced(ledger: &Ledger, host: i64) -> i64 {
        let intent = Intent {
            cost_per_hour: Some(1.5),
            ..Intent::new(ResourceKind::Process, "process", "p")
        };
        ledger.intent(host, &intent).unwrap()
    }

    #[test]
    fn running_opens_billing_and_ending_closes_it_in_one_step_each() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&dir.path().join("l.sqlite")).unwrap();
        let host = ledger.register_host(1, 1, "boot").unwrap().id;
        let id = priced(&ledger, host);
        ledger.set_status(id, ResourceStatus::Running).unwrap();
        let r = ledger.get(id).unwrap().unwrap();
        assert_eq!(r.status, ResourceStatus::Running);
        assert!(r.billing_started_at.is_some());
        assert_eq!(r.billing.len(), 1);
        assert!(r.billing[0].end_ms.is_none());
        ledger.end(id, ResourceStatus::Stopped, Some(0), None).unwrap();
        let r = ledger.get(id).unwrap().unwrap();
        assert_eq!(r.status, ResourceStatus::Stopped);
        assert!(r.ended_at.is_some());
        assert!(r.billing[0].end_ms.is_some());
    }

    #[test]
    fn steps_nest_in_a_transaction_and_roll_back_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&dir.path().join("l.sqlite")).unwrap();
        let host = ledger.register_host(1, 1, "boot").unwrap().id;
        let id = priced(&ledger, host);
        ledger.set_status(id, ResourceStatus::Running).unwrap();
        let failed: Result<(), LedgerError> = ledger.transaction(|l| {
            l.end(id, ResourceStatus::Stopped, None, None)?;
            Err(LedgerError::TooNew {
                path: l.path().to_path_buf(),
                found: 0,
            })
        });
        assert!(failed.is_err());
        let r = ledger.get(id).unwrap().unwrap();
        assert_eq!(r.status, ResourceStatus::Running, "the end was rolled back");
        assert!(r.ended_at.is_none());
        assert!(r.billing[0].end_ms.is_none(), "and so was the billing close");
        ledger
            .transaction(|l| l.end(id, ResourceStatus::Stopped, None, None))
            .unwrap();
        let r = ledger.get(id).unwrap().unwrap();
        assert!(r.ended_at.is_some() && r.billing[0].end_ms.is_some());
    }
}
