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
    intervals.iter().map(|i| i.usd_within(from_ms, now_ms)).sum()
}

/// The current burn rate: the summed price of the intervals still open.
pub fn rate(intervals: &[BillingInterval]) -> f64 {
    intervals
        .iter()
        .filter(|i| i.is_open() && i.price_per_hour.is_finite())
        .map(|i| i.price_per_hour.max(0.0))
        .sum()
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
