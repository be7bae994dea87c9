//! What a budget means for a spend: its level (ok, warning at 80 %,
//! exceeded), whether a start fits, and when the current burn rate
//! exhausts it. Pure functions of their inputs, tested beside them.

use serde::Serialize;

use super::{Budget, Period, Scope};
use crate::cost;
use crate::ledger::SpendRow;

/// The fraction of a budget at which it warns.
pub const WARN_AT: f64 = 0.8;

const HOUR_MS: f64 = 3_600_000.0;

/// What a scope spent over a budget's period, and burns now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spend {
    /// USD accrued in the period.
    pub accrued: f64,
    /// USD per hour billed now.
    pub rate: f64,
}

/// How a budget stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Below the warning level.
    Ok,
    /// At or above [`WARN_AT`] of a cap.
    Warning,
    /// A cap reached: the plugins counting against it are stopped.
    Exceeded,
}

/// A budget with its spend and level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// The budget.
    pub budget: Budget,
    /// Its spend.
    pub spend: Spend,
    /// The larger of accrued / max_usd and rate / max_usd_per_hour.
    pub used: f64,
    /// Its level.
    pub level: Level,
    /// When the total cap is reached at the current rate (ms since epoch).
    pub exhausted_at: Option<i64>,
}

/// A start refused by a budget: which, its limit and the projection.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error("budget {scope} would be exceeded: {projection} (limit {limit})")]
pub struct Refusal {
    /// The budget's scope.
    pub scope: Scope,
    /// Its limit, in words.
    pub limit: String,
    /// What the start would bring it to, in words.
    pub projection: String,
}

/// The first moment of `period` as of `now_ms` (UTC).
pub fn period_start(period: Period, now_ms: i64) -> i64 {
    let Ok(now) = time::OffsetDateTime::from_unix_timestamp(now_ms.div_euclid(1000)) else {
        return 0;
    };
    let midnight = |d: time::Date| d.midnight().assume_utc().unix_timestamp() * 1000;
    match period {
        Period::All => i64::MIN,
        Period::Since(ms) => ms,
        Period::Day => midnight(now.date()),
        Period::Month => now.date().replace_day(1).map(midnight).unwrap_or(0),
    }
}

/// What the plugins `scope` covers spent since `since_ms` and burn now.
pub fn spend(scope: &Scope, rows: &[SpendRow], since_ms: i64, now_ms: i64) -> Spend {
    let mut s = Spend::default();
    for r in rows
        .iter()
        .filter(|r| scope.covers(&r.plugin_id, r.category.as_deref()))
    {
        s.accrued += cost::accrued(&r.billing, since_ms, now_ms) + r.charges_usd.max(0.0);
        if r.live {
            s.rate += cost::rate(&r.billing);
        }
    }
    s
}

fn fraction(value: f64, cap: f64) -> f64 {
    if cap > 0.0 {
        value / cap
    } else if value > 0.0 {
        f64::INFINITY
    } else {
        0.0
    }
}

/// How `budget` stands with `spend` at `now_ms`.
pub fn status(budget: &Budget, spend: Spend, now_ms: i64) -> Status {
    let total = budget.max_usd.map(|m| fraction(spend.accrued, m));
    let rate = budget.max_usd_per_hour.map(|m| fraction(spend.rate, m));
    let used = total.unwrap_or(0.0).max(rate.unwrap_or(0.0));
    // A rate exactly at its cap is allowed; a total at its cap is spent.
    let exceeded = total.is_some_and(|f| f >= 1.0) || rate.is_some_and(|f| f > 1.0);
    let level = if exceeded {
        Level::Exceeded
    } else if used >= WARN_AT {
        Level::Warning
    } else {
        Level::Ok
    };
    Status {
        budget: budget.clone(),
        spend,
        used,
        level,
        exhausted_at: exhaustion_at(budget, spend, now_ms),
    }
}

/// When the total cap is reached at the current rate; `None` with no
/// total cap or no burn.
pub fn exhaustion_at(budget: &Budget, spend: Spend, now_ms: i64) -> Option<i64> {
    let max = budget.max_usd?;
    if spend.accrued >= max {
        return Some(now_ms);
    }
    if spend.rate <= 0.0 || !spend.rate.is_finite() {
        return None;
    }
    let ms = (max - spend.accrued) / spend.rate * HOUR_MS;
    Some(now_ms.saturating_add(ms.min(i64::MAX as f64 / 2.0) as i64))
}

/// Whether starting something billing `new_rate` USD/h for `hours` fits
/// `budget` given `spend`: the rate cap against the current rate plus the
/// new one, the total cap against accrued + (current + new rate) × hours.
/// A start that bills nothing adds nothing and always fits, except one
/// charged `per_call`, which is refused once the total is spent.
pub fn check_start(budget: &Budget, spend: Spend, new_rate: f64, hours: f64, per_call: bool) -> Result<(), Refusal> {
    let new_rate = if new_rate.is_finite() { new_rate.max(0.0) } else { 0.0 };
    if let Some(max) = budget.max_usd_per_hour {
        let rate = spend.rate + new_rate;
        if rate > max && new_rate > 0.0 {
            return Err(Refusal {
                scope: budget.scope.clone(),
                limit: format!("${max:.2}/h"),
                projection: format!(
                    "running rate ${:.2}/h now + ${new_rate:.2}/h for this start = ${rate:.2}/h",
                    spend.rate
                ),
            });
        }
    }
    if let Some(max) = budget.max_usd {
        let projected = spend.accrued + (spend.rate + new_rate) * hours;
        if per_call && spend.accrued >= max {
            return Err(Refusal {
                scope: budget.scope.clone(),
                limit: format!("${max:.2} per {}", budget.period),
                projection: format!(
                    "${:.2} spent already, and this plugin is charged per call",
                    spend.accrued
                ),
            });
        }
        if new_rate > 0.0 && (projected > max || spend.accrued >= max) {
            return Err(Refusal {
                scope: budget.scope.clone(),
                limit: format!("${max:.2} per {}", budget.period),
                projection: format!(
                    "${:.2} spent + (${:.2}/h running + ${new_rate:.2}/h for this start) × {hours:.2} h = ${projected:.2}",
                    spend.accrued, spend.rate
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::BillingInterval;

    fn budget(max_usd: Option<f64>, max_rate: Option<f64>) -> Budget {
        Budget {
            scope: Scope::Global,
            max_usd,
            period: Period::All,
            max_usd_per_hour: max_rate,
        }
    }

    #[test]
    fn levels_warn_at_80_percent_and_stop_at_the_cap() {
        let b = budget(Some(10.0), None);
        let at = |accrued| status(&b, Spend { accrued, rate: 0.0 }, 0).level;
        assert_eq!(at(7.9), Level::Ok);
        assert_eq!(at(8.0), Level::Warning);
        assert_eq!(at(10.0), Level::Exceeded);
        let r = budget(None, Some(2.0));
        let rate = |rate| status(&r, Spend { accrued: 0.0, rate }, 0).level;
        assert_eq!(rate(1.5), Level::Ok);
        assert_eq!(rate(2.0), Level::Warning);
        assert_eq!(rate(2.5), Level::Exceeded);
        assert_eq!(status(&budget(Some(0.0), None), Spend::default(), 0).level, Level::Ok);
    }

    #[test]
    fn exhaustion_is_when_the_rate_reaches_the_cap() {
        let b = budget(Some(10.0), None);
        assert_eq!(
            exhaustion_at(
                &b,
                Spend {
                    accrued: 4.0,
                    rate: 2.0
                },
                1_000
            ),
            Some(1_000 + 3 * 3_600_000)
        );
        assert_eq!(
            exhaustion_at(
                &b,
                Spend {
                    accrued: 4.0,
                    rate: 0.0
                },
                0
            ),
            None
        );
        assert_eq!(
            exhaustion_at(
                &b,
                Spend {
                    accrued: 11.0,
                    rate: 0.0
                },
                5
            ),
            Some(5)
        );
        assert_eq!(
            exhaustion_at(
                &budget(None, Some(1.0)),
                Spend {
                    accrued: 1.0,
                    rate: 1.0
                },
                0
            ),
            None
        );
    }

    #[test]
    fn a_start_is_checked_against_the_projection() {
        let b = budget(Some(10.0), Some(5.0));
        let spend = Spend {
            accrued: 6.0,
            rate: 1.0,
        };
        assert!(check_start(&b, spend, 2.0, 1.0, false).is_ok()); // 6 + 3 × 1 = 9
        let e = check_start(&b, spend, 4.0, 1.0, false).expect_err("11 > 10");
        assert!(
            e.to_string().contains("$11.00") && e.to_string().contains("limit $10.00 per all"),
            "{e}"
        );
        let e = check_start(&b, spend, 4.5, 0.1, false).expect_err("rate 5.5 > 5");
        assert!(e.to_string().contains("$5.50/h"), "{e}");
        // A free plugin adds nothing and is never refused; a priced one is
        // refused once the total is spent.
        assert!(
            check_start(
                &b,
                Spend {
                    accrued: 10.0,
                    rate: 0.0
                },
                0.0,
                1.0,
                false
            )
            .is_ok()
        );
        assert!(
            check_start(
                &b,
                Spend {
                    accrued: 10.0,
                    rate: 0.0
                },
                0.01,
                0.0,
                false
            )
            .is_err()
        );
        // A plugin charged per call has no rate, yet is refused once the
        // total is spent, and started while it is not.
        let spent = Spend {
            accrued: 10.0,
            rate: 0.0,
        };
        let e = check_start(&b, spent, 0.0, 1.0, true).expect_err("spent");
        assert!(e.to_string().contains("charged per call"), "{e}");
        assert!(
            check_start(
                &b,
                Spend {
                    accrued: 9.0,
                    rate: 0.0
                },
                0.0,
                1.0,
                true
            )
            .is_ok()
        );
    }

    #[test]
    fn periods_start_at_utc_midnight_and_month_start() {
        // 2026-11-22T10:30:00Z
        let now = 1_795_343_400_000;
        assert_eq!(period_start(Period::Day, now), 1_795_305_600_000);
        assert_eq!(period_start(Period::Month, now), 1_793_491_200_000);
        assert_eq!(period_start(Period::All, now), i64::MIN);
        assert_eq!(period_start(Period::Since(5), now), 5);
    }

    #[test]
    fn spend_counts_only_the_scope_and_live_rates() {
        let row = |id: &str, cat: &str, live: bool| SpendRow {
            resource_id: 1,
            plugin_id: id.into(),
            category: Some(cat.into()),
            backend: "process".into(),
            provider: "process".into(),
            billing: vec![BillingInterval {
                price_per_hour: 1.0,
                start_ms: 0,
                end_ms: if live { None } else { Some(3_600_000) },
            }],
            charges_usd: 0.5,
            live,
        };
        let rows = [row("llm_a", "llm", true), row("audio_b", "audio", false)];
        let s = spend(&Scope::Category("llm".into()), &rows, 0, 7_200_000);
        assert!((s.accrued - 2.5).abs() < 1e-9 && s.rate == 1.0, "{s:?}");
        let g = spend(&Scope::Global, &rows, 3_600_000, 7_200_000);
        assert!((g.accrued - 2.0).abs() < 1e-9, "{g:?}");
    }
}
