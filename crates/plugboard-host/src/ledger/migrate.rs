//! The ledger's schema and its migrations.
//!
//! Version 1 stored a process's pid and start time in columns, any other
//! handle as a bare string, and statuses as free strings. Version 2 stores
//! the handle as typed JSON per kind, the backend, the endpoint, ownership,
//! the price's source and when billing started. Version 3 adds the cost
//! ledger: billable intervals (each at the price in force when it opened),
//! per-call charges, and each resource's enforcement deadline. Opening an
//! older ledger migrates it in one transaction: either every row is carried
//! over or nothing changes.

use rusqlite::Connection;

/// The schema version this plugboard writes.
pub const SCHEMA_VERSION: i64 = 3;

const TABLES_V2: &str = "
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
        backend TEXT NOT NULL,
        plugin_id TEXT NOT NULL,
        host_id INTEGER NOT NULL REFERENCES hosts(id),
        status TEXT NOT NULL,
        owned INTEGER NOT NULL DEFAULT 1,
        handle TEXT,
        endpoint TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        ended_at INTEGER,
        exit_code INTEGER,
        signal INTEGER,
        cost_per_hour REAL,
        price_source TEXT,
        billing_started_at INTEGER,
        note TEXT,
        details TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX IF NOT EXISTS resources_live ON resources(host_id) WHERE ended_at IS NULL;
    CREATE INDEX IF NOT EXISTS resources_plugin ON resources(plugin_id, id);
";

/// v1 rows carried into the v2 table: the pid columns become a process
/// handle, a bare handle string an opaque one; billing is taken to have
/// started at creation, as v1 computed accrued cost; a listen socket in the
/// details becomes the endpoint.
const V1_TO_V2: &str = "
    ALTER TABLE resources RENAME TO resources_v1;
    DROP INDEX IF EXISTS resources_live;
    DROP INDEX IF EXISTS resources_plugin;
";

const V1_COPY: &str = "
    INSERT INTO resources (id, kind, backend, plugin_id, host_id, status, owned, handle, endpoint,
                           created_at, updated_at, ended_at, exit_code, signal, cost_per_hour,
                           price_source, billing_started_at, note, details)
    SELECT id,
           CASE kind WHEN 'process' THEN 'process' WHEN 'container' THEN 'container'
                     WHEN 'instance' THEN 'instance' ELSE 'process' END,
           CASE kind WHEN 'container' THEN 'docker' WHEN 'instance' THEN 'cloud' ELSE 'process' END,
           plugin_id, host_id,
           CASE WHEN status IN ('starting','running','stopping','stopped','exited','crashed','failed','reaped')
                THEN status ELSE 'crashed' END,
           1,
           CASE WHEN pid IS NOT NULL
                THEN json_object('kind', 'process', 'pid', pid, 'start_time', COALESCE(pid_start_time, 0))
                WHEN handle IS NOT NULL THEN json_object('kind', 'opaque', 'id', handle)
                ELSE NULL END,
           CASE WHEN json_valid(details) AND json_extract(details, '$.listen') IS NOT NULL
                THEN 'unix:' || json_extract(details, '$.listen') ELSE NULL END,
           created_at, updated_at, ended_at, exit_code, signal, cost_per_hour,
           CASE WHEN cost_per_hour IS NOT NULL THEN 'manifest' ELSE NULL END,
           created_at,
           CASE WHEN status NOT IN ('starting','running','stopping','stopped','exited','crashed','failed','reaped')
                THEN 'v1 status ' || status ELSE NULL END,
           CASE WHEN json_valid(details) THEN details ELSE '{}' END
    FROM resources_v1;
    DROP TABLE resources_v1;
";

/// v2 → v3: the deadline columns, the billing and charges tables; a v2
/// row's single billing start becomes one interval at its stored price,
/// ending with the row.
const V2_TO_V3: &str = "
    ALTER TABLE resources ADD COLUMN deadline_at INTEGER;
    ALTER TABLE resources ADD COLUMN deadline_reason TEXT;
    CREATE TABLE IF NOT EXISTS billing (
        id INTEGER PRIMARY KEY,
        resource_id INTEGER NOT NULL REFERENCES resources(id),
        price_per_hour REAL NOT NULL,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER
    );
    CREATE INDEX IF NOT EXISTS billing_resource ON billing(resource_id);
    CREATE TABLE IF NOT EXISTS charges (
        id INTEGER PRIMARY KEY,
        resource_id INTEGER REFERENCES resources(id),
        plugin_id TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        usd REAL NOT NULL,
        what TEXT
    );
    CREATE INDEX IF NOT EXISTS charges_resource ON charges(resource_id);
    CREATE INDEX IF NOT EXISTS charges_at ON charges(at_ms);
    INSERT INTO billing (resource_id, price_per_hour, start_ms, end_ms)
        SELECT id, cost_per_hour, billing_started_at, ended_at FROM resources
        WHERE billing_started_at IS NOT NULL AND cost_per_hour IS NOT NULL;
";

/// Brings the database at `conn` to [`SCHEMA_VERSION`] inside one
/// transaction. Returns the version found before (0 for a new file), or
/// that version unchanged when it is newer than this plugboard reads.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<i64> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);")?;
    let found: i64 = tx
        .query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| {
            r.get::<_, String>(0)
        })
        .map(|v| v.parse().unwrap_or(1))
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(0),
            e => Err(e),
        })?;
    if found > SCHEMA_VERSION {
        return Ok(found);
    }
    if found == 1 {
        tx.execute_batch(V1_TO_V2)?;
        tx.execute_batch(TABLES_V2)?;
        tx.execute_batch(V1_COPY)?;
    } else {
        tx.execute_batch(TABLES_V2)?;
    }
    if found < 3 {
        tx.execute_batch(V2_TO_V3)?;
    }
    tx.execute(
        "INSERT INTO meta(key, value) VALUES ('schema_version', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [SCHEMA_VERSION.to_string()],
    )?;
    tx.commit()?;
    Ok(found)
}
