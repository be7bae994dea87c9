//! The resource ledger: every process, container or instance plugboard
//! creates, written down before it is created.
//!
//! SQLite in WAL mode in the data dir (the embedded default). A row is
//! written as an *intent* (status `starting`) before the resource exists, and
//! the resource carries a marker of that row (`PLUGBOARD_RESOURCE_ID` =
//! `{ledger id}:{row id}` for processes), so a crash between creation and
//! the row's completion still leaves the resource findable. Processes are
//! identified by pid *and* start time, and hosts by pid, start time and boot
//! id, so a reused pid is never taken for a recorded one.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The environment variable that marks a spawned process with its ledger row.
pub const MARKER_ENV: &str = "PLUGBOARD_RESOURCE_ID";

const SCHEMA_VERSION: i64 = 1;

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

/// A host process that owns resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Row id.
    pub id: i64,
    /// Its pid.
    pub pid: u32,
    /// Its start time (clock ticks since boot).
    pub start_time: u64,
    /// The boot it ran in.
    pub boot_id: String,
    /// When it registered (ms since epoch).
    pub started_at: i64,
    /// When it ended or was found gone (ms since epoch).
    pub ended_at: Option<i64>,
}

impl HostRecord {
    /// True when this host process still runs (same boot, same pid and start time).
    pub fn is_alive(&self) -> bool {
        self.ended_at.is_none()
            && self.boot_id == boot_id()
            && plugboard_core::process::is_same_live_process(self.pid, Some(self.start_time))
    }
}

/// One resource: a process, a container, an instance…
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceRecord {
    /// Row id.
    pub id: i64,
    /// `process`, `container`, `instance`…
    pub kind: String,
    /// The plugin's unique id.
    pub plugin_id: String,
    /// The owning host's row id.
    pub host_id: i64,
    /// `starting`, `running`, `stopping`, `stopped`, `exited`, `crashed`, `failed`, `reaped`.
    pub status: String,
    /// Process id, for processes.
    pub pid: Option<u32>,
    /// Process start time (clock ticks since boot), for processes.
    pub pid_start_time: Option<u64>,
    /// Container id, instance id, endpoint… for other kinds.
    pub handle: Option<String>,
    /// The marker the resource carries (`{ledger id}:{row id}`).
    pub marker: String,
    /// Created (ms since epoch).
    pub created_at: i64,
    /// Last change (ms since epoch).
    pub updated_at: i64,
    /// Ended (ms since epoch); `None` while live.
    pub ended_at: Option<i64>,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// Signal that ended it, when one did.
    pub signal: Option<i32>,
    /// Price per hour in USD, stored at launch.
    pub cost_per_hour: Option<f64>,
    /// Kind-specific details (log path, listen address, command…).
    pub details: Value,
}

impl ResourceRecord {
    /// True while the resource has not ended.
    pub fn is_live(&self) -> bool {
        self.ended_at.is_none()
    }

    /// USD accrued from creation to its end (or `now_ms`).
    pub fn accrued_usd(&self, now_ms: i64) -> f64 {
        let end = self.ended_at.unwrap_or(now_ms);
        let hours = (end - self.created_at).max(0) as f64 / 3_600_000.0;
        hours * self.cost_per_hour.unwrap_or(0.0)
    }
}

/// A new resource to write down before creating it.
#[derive(Debug, Clone, Default)]
pub struct Intent<'a> {
    /// `process`, `container`…
    pub kind: &'a str,
    /// The plugin's unique id.
    pub plugin_id: &'a str,
    /// Price per hour in USD, if known.
    pub cost_per_hour: Option<f64>,
    /// Details to store.
    pub details: Value,
}

/// The ledger database.
#[derive(Debug)]
pub struct Ledger {
    conn: Connection,
    path: PathBuf,
    ledger_id: String,
}

const COLUMNS: &str = "id, kind, plugin_id, host_id, status, pid, pid_start_time, handle, created_at, updated_at, \
                       ended_at, exit_code, signal, cost_per_hour, details";

impl Ledger {
    /// Opens (creating if needed) the ledger at `path`.
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
        let conn = Connection::open(path).map_err(sql("open"))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(sql("set busy timeout"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql("enable WAL"))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql("set synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql("enable foreign keys"))?;
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS hosts (
                 id INTEGER PRIMARY KEY,
                 pid INTEGER NOT NULL,
                 start_time INTEGER NOT NULL,
                 boot_id TEXT NOT NULL,
                 started_at INTEGER NOT NULL,
                 ended_at INTEGER
             );
             CREATE TABLE IF NOT EXISTS resources (
                 id INTEGER PRIMARY KEY,
                 kind TEXT NOT NULL,
                 plugin_id TEXT NOT NULL,
                 host_id INTEGER NOT NULL REFERENCES hosts(id),
                 status TEXT NOT NULL,
                 pid INTEGER,
                 pid_start_time INTEGER,
                 handle TEXT,
                 created_at INTEGER NOT NULL,
                 updated_at INTEGER NOT NULL,
                 ended_at INTEGER,
                 exit_code INTEGER,
                 signal INTEGER,
                 cost_per_hour REAL,
                 details TEXT NOT NULL DEFAULT '{}'
             );
             CREATE INDEX IF NOT EXISTS resources_live ON resources(host_id) WHERE ended_at IS NULL;
             CREATE INDEX IF NOT EXISTS resources_plugin ON resources(plugin_id, id);
             INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', '1');
             COMMIT;",
        )
        .map_err(sql("create tables"))?;
        let version: i64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| {
                r.get::<_, String>(0)
            })
            .map_err(sql("read schema version"))?
            .parse()
            .unwrap_or(0);
        if version > SCHEMA_VERSION {
            return Err(LedgerError::TooNew {
                path: path.to_path_buf(),
                found: version,
            });
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
        self.conn
            .execute(
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
        self.conn
            .execute(
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
        self.conn
            .execute(
                "INSERT INTO resources(kind, plugin_id, host_id, status, created_at, updated_at, cost_per_hour, details)
                 VALUES (?1, ?2, ?3, 'starting', ?4, ?4, ?5, ?6)",
                params![intent.kind, intent.plugin_id, host_id, now, intent.cost_per_hour, intent.details.to_string()],
            )
            .map_err(self.err("record intent"))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records the process that now exists for resource `id`.
    pub fn set_process(&self, id: i64, pid: u32, start_time: u64) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "UPDATE resources SET pid = ?2, pid_start_time = ?3, updated_at = ?4 WHERE id = ?1",
                params![id, pid, start_time as i64, now_ms()],
            )
            .map_err(self.err("record process"))?;
        Ok(())
    }

    /// Records the handle (container id, instance id…) of resource `id`.
    pub fn set_handle(&self, id: i64, handle: &str) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "UPDATE resources SET handle = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, handle, now_ms()],
            )
            .map_err(self.err("record handle"))?;
        Ok(())
    }

    /// Changes the status of a live resource.
    pub fn set_status(&self, id: i64, status: &str) -> Result<(), LedgerError> {
        self.conn
            .execute(
                "UPDATE resources SET status = ?2, updated_at = ?3 WHERE id = ?1 AND ended_at IS NULL",
                params![id, status, now_ms()],
            )
            .map_err(self.err("update status"))?;
        Ok(())
    }

    /// Marks resource `id` ended with `status` and its exit information.
    pub fn end(&self, id: i64, status: &str, exit_code: Option<i32>, signal: Option<i32>) -> Result<(), LedgerError> {
        let now = now_ms();
        self.conn
            .execute(
                "UPDATE resources SET status = ?2, exit_code = COALESCE(?3, exit_code), signal = COALESCE(?4, signal),
                        updated_at = ?5, ended_at = COALESCE(ended_at, ?5)
                 WHERE id = ?1",
                params![id, status, exit_code, signal, now],
            )
            .map_err(self.err("end resource"))?;
        Ok(())
    }

    fn row(&self, r: &Row<'_>) -> rusqlite::Result<ResourceRecord> {
        let id: i64 = r.get(0)?;
        let details: String = r.get(14)?;
        Ok(ResourceRecord {
            id,
            kind: r.get(1)?,
            plugin_id: r.get(2)?,
            host_id: r.get(3)?,
            status: r.get(4)?,
            pid: r.get(5)?,
            pid_start_time: r.get::<_, Option<i64>>(6)?.map(|t| t as u64),
            handle: r.get(7)?,
            marker: self.marker(id),
            created_at: r.get(8)?,
            updated_at: r.get(9)?,
            ended_at: r.get(10)?,
            exit_code: r.get(11)?,
            signal: r.get(12)?,
            cost_per_hour: r.get(13)?,
            details: serde_json::from_str(&details).unwrap_or(Value::Null),
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
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(self.err("begin"))?;
        match f(self) {
            Ok(v) => {
                self.conn.execute_batch("COMMIT").map_err(self.err("commit"))?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}
