//! When a running plugin must be stopped by itself: idle for
//! `idle_stop_s`, past `max_duration_s`, or at the moment its budget runs
//! out. A pure decision, tested beside it; the governor acts on it and
//! writes it into the ledger so that it outlives the host.

use std::fmt;

/// Why a plugin is stopped by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// No call for `idle_stop_s`.
    Idle,
    /// Running for `max_duration_s`.
    MaxDuration,
    /// A budget is exhausted (its description).
    Budget(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Idle => f.write_str("idle: no call for lifecycle.idle_stop_s"),
            Reason::MaxDuration => f.write_str("ran for lifecycle.max_duration_s"),
            Reason::Budget(b) => write!(f, "budget {b}"),
        }
    }
}

/// What the decision looks at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inputs {
    /// When the worker became ready (ms since epoch).
    pub ready_at_ms: Option<i64>,
    /// When the last call began or ended.
    pub last_call_ms: Option<i64>,
    /// Calls running now (an idle stop never interrupts one).
    pub in_flight: usize,
    /// `[lifecycle] idle_stop_s`.
    pub idle_stop_s: Option<f64>,
    /// `[lifecycle] max_duration_s`.
    pub max_duration_s: Option<f64>,
    /// When a budget it counts against runs out at the current rate.
    pub budget_exhausted_at: Option<(i64, String)>,
}

/// The earliest moment the plugin must be stopped, and why; `None` when
/// nothing limits it.
pub fn next_deadline(i: &Inputs) -> Option<(i64, Reason)> {
    let secs = |s: f64| (s * 1000.0) as i64;
    let mut best: Option<(i64, Reason)> = None;
    let mut consider = |at: i64, why: Reason| {
        if best.as_ref().is_none_or(|(b, _)| at < *b) {
            best = Some((at, why));
        }
    };
    if let (Some(ready), Some(max)) = (i.ready_at_ms, i.max_duration_s) {
        consider(ready.saturating_add(secs(max)), Reason::MaxDuration);
    }
    if let (Some(ready), Some(idle), 0) = (i.ready_at_ms, i.idle_stop_s, i.in_flight) {
        let since = i.last_call_ms.map_or(ready, |c| c.max(ready));
        consider(since.saturating_add(secs(idle)), Reason::Idle);
    }
    if let Some((at, b)) = &i.budget_exhausted_at {
        consider(*at, Reason::Budget(b.clone()));
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_limits_a_plugin_without_lifecycle_or_budget() {
        assert_eq!(
            next_deadline(&Inputs {
                ready_at_ms: Some(0),
                ..Default::default()
            }),
            None
        );
    }

    #[test]
    fn idle_counts_from_the_last_call_and_never_interrupts_one() {
        let mut i = Inputs {
            ready_at_ms: Some(1_000),
            idle_stop_s: Some(2.0),
            ..Default::default()
        };
        assert_eq!(next_deadline(&i), Some((3_000, Reason::Idle)));
        i.last_call_ms = Some(5_000);
        assert_eq!(next_deadline(&i), Some((7_000, Reason::Idle)));
        i.in_flight = 1;
        assert_eq!(next_deadline(&i), None);
    }

    #[test]
    fn the_earliest_limit_wins() {
        let i = Inputs {
            ready_at_ms: Some(0),
            idle_stop_s: Some(10.0),
            max_duration_s: Some(5.0),
            budget_exhausted_at: Some((7_000, "global".into())),
            ..Default::default()
        };
        assert_eq!(next_deadline(&i), Some((5_000, Reason::MaxDuration)));
        let i = Inputs {
            budget_exhausted_at: Some((1_000, "global".into())),
            ..i
        };
        assert_eq!(next_deadline(&i), Some((1_000, Reason::Budget("global".into()))));
    }
}
