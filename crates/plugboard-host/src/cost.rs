//! Cost arithmetic: what a resource accrued from its billable intervals.
//!
//! Each interval carries the price in force when it opened (the provider's
//! quote or the manifest's estimate, stored at launch), so a price changed
//! later never rewrites what was accrued. Pure functions, tested by
//! property over random histories.

use serde::{Deserialize, Serialize};

/// Milliseconds in an hour.
const HOUR_MS: f64 = 3_600_000.0;

/// A span during which a resource was billed at one price.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BillingInterval {
    /// USD per hour during the interval.
    pub price_per_hour: f64,
    /// When billing started (ms since epoch).
    pub start_ms: i64,
    /// When it stopped; `None` while it runs.
    pub end_ms: Option<i64>,
}

impl BillingInterval {
    /// USD this interval accrued within `[from_ms, now_ms]`: price × the
    /// overlap, never negative (a negative price counts as zero).
    pub fn usd_within(&self, from_ms: i64, now_ms: i64) -> f64 {
        let start = self.start_ms.max(from_ms);
        let end = self.end_ms.unwrap_or(now_ms).min(now_ms);
        if end <= start || !self.price_per_hour.is_finite() {
            return 0.0;
        }
        self.price_per_hour.max(0.0) * (end - start) as f64 / HOUR_MS
    }

    /// True while billing runs.
    pub fn is_open(&self) -> bool {
        self.end_ms.is_none()
    }
}

/// USD accrued by `intervals` within `[from_ms, now_ms]`.
pub fn accrued(intervals: &[BillingInterval], from_ms: i64, now_ms: i64) -> f64 {
    intervals.iter().map(|i| i.usd_within(from_ms, now_ms)).sum::<f64>() + 0.0
}

/// The current burn rate: the summed price of the intervals still open.
pub fn rate(intervals: &[BillingInterval]) -> f64 {
    intervals
        .iter()
        .filter(|i| i.is_open() && i.price_per_hour.is_finite())
        .map(|i| i.price_per_hour.max(0.0))
        .sum::<f64>()
        + 0.0
}

/// Spend of one plugin, provider or category.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostLine {
    /// The plugin id, provider or category.
    pub key: String,
    /// USD accrued in the window.
    pub accrued_usd: f64,
    /// USD per hour billed now.
    pub rate_usd_per_hour: f64,
    /// Accrued plus the current rate over the projection horizon.
    pub projected_usd: f64,
}

/// Spend over a window, by plugin, provider and category.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostReport {
    /// The window's start (ms since epoch; `None` for everything).
    pub since_ms: Option<i64>,
    /// Its end.
    pub now_ms: i64,
    /// The projection horizon, in hours.
    pub hours: f64,
    /// By plugin, costliest first.
    pub plugins: Vec<CostLine>,
    /// By provider (the backend, or the cloud provider recorded at launch).
    pub providers: Vec<CostLine>,
    /// By category.
    pub categories: Vec<CostLine>,
    /// USD accrued in the window, in all.
    pub total_accrued_usd: f64,
    /// The current burn rate, in all.
    pub total_rate_usd_per_hour: f64,
    /// Accrued plus the burn rate over the horizon.
    pub total_projected_usd: f64,
}

/// Adds up `rows` over `[since_ms, now_ms]`, projecting `hours` ahead.
pub fn report(rows: &[crate::ledger::SpendRow], since_ms: Option<i64>, now_ms: i64, hours: f64) -> CostReport {
    use std::collections::BTreeMap;
    let from = since_ms.unwrap_or(i64::MIN);
    let mut by: [BTreeMap<String, (f64, f64)>; 3] = Default::default();
    for r in rows {
        let accrued = accrued(&r.billing, from, now_ms) + r.charges_usd.max(0.0);
        let burn = if r.live { rate(&r.billing) } else { 0.0 };
        let keys = [
            r.plugin_id.clone(),
            r.provider.clone(),
            r.category.clone().unwrap_or_else(|| "(none)".into()),
        ];
        for (map, key) in by.iter_mut().zip(keys) {
            let e = map.entry(key).or_default();
            e.0 += accrued;
            e.1 += burn;
        }
    }
    let lines = |m: &BTreeMap<String, (f64, f64)>| {
        let mut v: Vec<CostLine> = m
            .iter()
            .map(|(k, (a, r))| CostLine {
                key: k.clone(),
                accrued_usd: *a,
                rate_usd_per_hour: *r,
                projected_usd: a + r * hours,
            })
            .collect();
        v.sort_by(|a, b| b.projected_usd.total_cmp(&a.projected_usd).then(a.key.cmp(&b.key)));
        v
    };
    let plugins = lines(&by[0]);
    // `+ 0.0`: an empty float sum is -0.0, which prints as "-0.00".
    let total_accrued_usd = plugins.iter().map(|l| l.accrued_usd).sum::<f64>() + 0.0;
    let total_rate_usd_per_hour = plugins.iter().map(|l| l.rate_usd_per_hour).sum::<f64>() + 0.0;
    CostReport {
        since_ms,
        now_ms,
        hours,
        providers: lines(&by[1]),
        categories: lines(&by[2]),
        plugins,
        total_accrued_usd,
        total_rate_usd_per_hour,
        total_projected_usd: total_accrued_usd + total_rate_usd_per_hour * hours,
    }
}

/// Cumulative spend per plugin at `points` evenly spaced moments of
/// `[from_ms, to_ms]` (for a spend-over-time chart).
pub fn series(rows: &[crate::ledger::SpendRow], from_ms: i64, to_ms: i64, points: usize) -> Vec<(String, Vec<f64>)> {
    use std::collections::BTreeMap;
    let points = points.max(2);
    let step = (to_ms - from_ms).max(1) as f64 / (points - 1) as f64;
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in rows {
        let line = out.entry(r.plugin_id.clone()).or_insert_with(|| vec![0.0; points]);
        for (k, v) in line.iter_mut().enumerate() {
            let at = from_ms + (step * k as f64) as i64;
            *v += accrued(&r.billing, from_ms, at);
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn iv(price: f64, start: i64, end: Option<i64>) -> BillingInterval {
        BillingInterval {
            price_per_hour: price,
            start_ms: start,
            end_ms: end,
        }
    }

    #[test]
    fn an_hour_at_a_price_costs_the_price() {
        assert!((accrued(&[iv(2.5, 0, Some(3_600_000))], 0, 10_000_000) - 2.5).abs() < 1e-12);
        // Still open: up to now.
        assert!((accrued(&[iv(2.0, 0, None)], 0, 1_800_000) - 1.0).abs() < 1e-12);
        // Clipped to the window.
        assert!((accrued(&[iv(1.0, 0, None)], 1_800_000, 3_600_000) - 0.5).abs() < 1e-12);
        assert_eq!(accrued(&[iv(-5.0, 0, None)], 0, 3_600_000), 0.0);
        assert_eq!(accrued(&[iv(f64::NAN, 0, None)], 0, 3_600_000), 0.0);
        assert_eq!(rate(&[iv(1.0, 0, None), iv(2.0, 0, Some(5)), iv(0.5, 9, None)]), 1.5);
    }

    #[test]
    fn reports_add_up_by_plugin_provider_and_category() {
        let row = |id: &str, provider: &str, cat: Option<&str>, live: bool| crate::ledger::SpendRow {
            resource_id: 1,
            plugin_id: id.into(),
            category: cat.map(Into::into),
            backend: provider.into(),
            provider: provider.into(),
            billing: vec![iv(1.0, 0, if live { None } else { Some(3_600_000) })],
            charges_usd: 0.0,
            live,
        };
        let rows = [
            row("a_x", "process", Some("a"), true),
            row("a_y", "docker", Some("a"), false),
            row("b_z", "process", None, true),
        ];
        let r = report(&rows, None, 7_200_000, 1.0);
        assert!((r.total_accrued_usd - 5.0).abs() < 1e-9);
        assert_eq!(r.total_rate_usd_per_hour, 2.0);
        assert!((r.total_projected_usd - 7.0).abs() < 1e-9);
        let process = r.providers.iter().find(|l| l.key == "process").map(|l| l.accrued_usd);
        assert_eq!(process, Some(4.0));
        assert!(r.categories.iter().any(|l| l.key == "(none)"));
        let s = series(&rows, 0, 7_200_000, 3);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0], ("a_x".to_string(), vec![0.0, 1.0, 2.0]));
    }

    /// A random status history: alternating billed and unbilled spans, each
    /// billed one at its own price (a price change opens a new interval).
    fn history() -> impl Strategy<Value = (Vec<BillingInterval>, i64)> {
        prop::collection::vec(
            (0.0f64..100.0, 0i64..10_000_000, 0i64..10_000_000, any::<bool>()),
            0..20,
        )
        .prop_map(|spans| {
            let mut t = 0;
            let mut out = Vec::new();
            let n = spans.len();
            for (k, (price, gap, len, billed)) in spans.into_iter().enumerate() {
                t += gap;
                if billed {
                    let last = k + 1 == n;
                    out.push(iv(price, t, if last { None } else { Some(t + len) }));
                }
                t += len;
            }
            (out, t + 1)
        })
    }

    proptest! {
        #[test]
        fn accrual_is_never_negative((h, now) in history(), from in 0i64..50_000_000) {
            prop_assert!(accrued(&h, from, now) >= 0.0);
        }

        #[test]
        fn accrual_is_additive_over_windows((h, now) in history(), cut in 0i64..200_000_000) {
            let cut = cut.min(now);
            let whole = accrued(&h, 0, now);
            let parts = accrued(&h, 0, cut) + accrued(&h, cut, now);
            prop_assert!((whole - parts).abs() <= 1e-9 * whole.max(1.0), "{whole} vs {parts}");
        }

        #[test]
        fn accrual_is_price_times_billable_time((h, now) in history()) {
            let expected: f64 = h
                .iter()
                .map(|i| i.price_per_hour * (i.end_ms.unwrap_or(now).min(now) - i.start_ms).max(0) as f64 / 3_600_000.0)
                .sum();
            let got = accrued(&h, 0, now);
            prop_assert!((got - expected).abs() <= 1e-9 * expected.max(1.0), "{got} vs {expected}");
        }

        #[test]
        fn a_later_price_never_changes_the_past((h, now) in history(), new_price in 0.0f64..1000.0) {
            // A price change closes the open interval and opens one at the new price.
            let before = accrued(&h, 0, now);
            let mut changed = h.clone();
            if let Some(last) = changed.last_mut().filter(|i| i.is_open()) {
                last.end_ms = Some(now);
                changed.push(iv(new_price, now, None));
            }
            prop_assert!((accrued(&changed, 0, now) - before).abs() <= 1e-9 * before.max(1.0));
        }
    }
}
