//! The cost ledger: billable intervals, per-call charges, price changes and
//! enforcement deadlines, recorded beside the resources they belong to.
//!
//! An interval opens when the provider starts billing (at `running`, or at
//! creation for providers that bill from then) at the resource's price in
//! force, and closes when the resource ends or billing pauses; a price
//! change closes the open interval and opens one at the new price, so what
//! was accrued never changes.

use rusqlite::params;
use serde_json::Value;

use super::{Ledger, LedgerError, PriceSource, now_ms};
use crate::cost::BillingInterval;

/// One resource's billing, for spend reports and budgets.
#[derive(Debug, Clone, PartialEq)]
pub struct SpendRow {
    /// The resource.
    pub resource_id: i64,
    /// Its plugin.
    pub plugin_id: String,
    /// The plugin's category, as recorded at intent.
    pub category: Option<String>,
    /// The backend that created it.
    pub backend: String,
    /// Who bills it: the provider recorded at launch, else the backend.
    pub provider: String,
    /// Its billable intervals.
    pub billing: Vec<BillingInterval>,
    /// Per-call charges since the window's start.
    pub charges_usd: f64,
    /// True while the resource has not ended.
    pub live: bool,
}

/// Reads the JSON array of `[price, start, end]` the ledger's query builds;
/// an interval left open by a row that ended is closed at the row's end.
pub(super) fn parse_intervals(json: Option<&str>, ended_at: Option<i64>) -> Vec<BillingInterval> {
    let Some(Value::Array(items)) = json.and_then(|j| serde_json::from_str(j).ok()) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|i| {
            let a = i.as_array()?;
            Some(BillingInterval {
                price_per_hour: a.first()?.as_f64()?,
                start_ms: a.get(1)?.as_i64()?,
                end_ms: a.get(2).and_then(Value::as_i64).or(ended_at),
            })
        })
        .collect()
}

impl Ledger {
    /// Opens a billing interval for resource `id` at its current price,
    /// unless one is open, the row has ended or it has no price.
    pub fn open_billing(&self, id: i64, at_ms: i64) -> Result<(), LedgerError> {
        self.exec(
            "INSERT INTO billing (resource_id, price_per_hour, start_ms)
                 SELECT id, cost_per_hour, ?2 FROM resources
                 WHERE id = ?1 AND ended_at IS NULL AND cost_per_hour IS NOT NULL
                   AND NOT EXISTS (SELECT 1 FROM billing WHERE resource_id = ?1 AND end_ms IS NULL)",
            params![id, at_ms],
        )
        .map_err(self.err("open billing"))?;
        self.exec(
            "UPDATE resources SET billing_started_at = COALESCE(billing_started_at, ?2) WHERE id = ?1",
            params![id, at_ms],
        )
        .map_err(self.err("open billing"))?;
        Ok(())
    }

    /// Closes resource `id`'s open billing interval, if any (billing paused
    /// or ended).
    pub fn close_billing(&self, id: i64, at_ms: i64) -> Result<(), LedgerError> {
        self.exec(
            "UPDATE billing SET end_ms = MAX(start_ms, ?2) WHERE resource_id = ?1 AND end_ms IS NULL",
            params![id, at_ms],
        )
        .map_err(self.err("close billing"))?;
        Ok(())
    }

    /// Changes resource `id`'s price from now on: what it accrued so far
    /// keeps the old price.
    pub fn set_price(&self, id: i64, price_per_hour: f64, source: PriceSource) -> Result<(), LedgerError> {
        let now = now_ms();
        let open: bool = self
            .conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM billing WHERE resource_id = ?1 AND end_ms IS NULL)",
                [id],
                |r| r.get(0),
            )
            .map_err(self.err("change price"))?;
        self.close_billing(id, now)?;
        self.exec(
            "UPDATE resources SET cost_per_hour = ?2, price_source = ?3, updated_at = ?4 WHERE id = ?1",
            params![id, price_per_hour, source.as_str(), now],
        )
        .map_err(self.err("change price"))?;
        if open {
            self.open_billing(id, now)?;
        }
        Ok(())
    }

    /// Adds a per-call charge (a serverless call's cost) to a plugin's
    /// spend, on resource `resource_id` when known.
    pub fn add_charge(
        &self,
        resource_id: Option<i64>,
        plugin_id: &str,
        usd: f64,
        what: &str,
    ) -> Result<(), LedgerError> {
        if !usd.is_finite() || usd < 0.0 {
            return Ok(());
        }
        self.exec(
            "INSERT INTO charges (resource_id, plugin_id, at_ms, usd, what) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![resource_id, plugin_id, now_ms(), usd, what],
        )
        .map_err(self.err("add charge"))?;
        Ok(())
    }

    /// Records when resource `id` must be ended at the latest and why
    /// (budget exhausted, `max_duration_s`, idle); `None` clears it. gc run
    /// by anyone ends a live resource past its deadline.
    pub fn set_deadline(&self, id: i64, deadline: Option<(i64, &str)>) -> Result<(), LedgerError> {
        self.exec(
            "UPDATE resources SET deadline_at = ?2, deadline_reason = ?3 WHERE id = ?1 AND ended_at IS NULL",
            params![id, deadline.map(|d| d.0), deadline.map(|d| d.1)],
        )
        .map_err(self.err("record deadline"))?;
        Ok(())
    }

    /// The billing of every resource that billed at or after `since_ms` (or
    /// still bills), with charges since then: what spend reports and
    /// budgets add up.
    pub fn spend_since(&self, since_ms: i64) -> Result<Vec<SpendRow>, LedgerError> {
        let op = "read spend";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT r.id, r.plugin_id, json_extract(r.details, '$.category'), r.backend, r.ended_at,
                        COALESCE(json_extract(r.details, '$.provider'), r.backend),
                        (SELECT json_group_array(json_array(b.price_per_hour, b.start_ms, b.end_ms))
                         FROM billing b WHERE b.resource_id = r.id),
                        (SELECT COALESCE(SUM(c.usd), 0) FROM charges c WHERE c.resource_id = r.id AND c.at_ms >= ?1)
                 FROM resources r
                 WHERE EXISTS (SELECT 1 FROM billing b WHERE b.resource_id = r.id AND (b.end_ms IS NULL OR b.end_ms >= ?1))
                    OR EXISTS (SELECT 1 FROM charges c WHERE c.resource_id = r.id AND c.at_ms >= ?1)
                 ORDER BY r.id",
            )
            .map_err(self.err(op))?;
        let rows = stmt
            .query_map([since_ms], |r| {
                let ended_at: Option<i64> = r.get(4)?;
                let billing: Option<String> = r.get(6)?;
                Ok(SpendRow {
                    resource_id: r.get(0)?,
                    plugin_id: r.get(1)?,
                    category: r.get(2)?,
                    backend: r.get(3)?,
                    provider: r.get(5)?,
                    billing: parse_intervals(billing.as_deref(), ended_at),
                    charges_usd: r.get(7)?,
                    live: ended_at.is_none(),
                })
            })
            .map_err(self.err(op))?;
        let mut out: Vec<SpendRow> = rows.collect::<Result<_, _>>().map_err(self.err(op))?;
        // Charges recorded without a resource (a call to an endpoint only).
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT plugin_id, SUM(usd) FROM charges WHERE resource_id IS NULL AND at_ms >= ?1 GROUP BY plugin_id",
            )
            .map_err(self.err(op))?;
        let loose = stmt
            .query_map([since_ms], |r| {
                Ok(SpendRow {
                    resource_id: 0,
                    plugin_id: r.get(0)?,
                    category: None,
                    backend: "charge".into(),
                    provider: "charge".into(),
                    billing: Vec::new(),
                    charges_usd: r.get(1)?,
                    live: false,
                })
            })
            .map_err(self.err(op))?;
        for r in loose {
            out.push(r.map_err(self.err(op))?);
        }
        Ok(out)
    }
}
