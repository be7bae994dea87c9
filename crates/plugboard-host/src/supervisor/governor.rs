//! The governor: the loop that enforces budgets and `[lifecycle]` limits
//! on this host's running plugins, every `governor_tick`.
//!
//! Each tick it reads the budgets and the ledger's spend, warns once a
//! budget reaches 80 %, stops the priced plugins that count against one
//! that is exceeded, stops plugins idle for `idle_stop_s` or running past
//! `max_duration_s`, and writes each running plugin's next deadline into
//! the ledger, where a later host or anyone's `gc` enforces it should this
//! host die or hang. Decisions are [`deadline::next_deadline`] and
//! [`crate::budget::decide`]; this file only gathers inputs and acts.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use super::deadline::{self, Inputs, Reason};
use super::{Inner, RunState, Slot, lock, stop};
use crate::backend::Plan;
use crate::budget::{self, Budget, Level, Status};
use crate::error::HostError;
use crate::ledger::now_ms;
use crate::manifest::Manifest;

/// Starts the governor once, if a Tokio runtime is running (else the first
/// start does).
pub(super) fn ensure_started(inner: &Arc<Inner>) {
    if inner.governor_started.swap(true, Ordering::SeqCst) {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn(run(Arc::downgrade(inner)));
        }
        Err(_) => inner.governor_started.store(false, Ordering::SeqCst),
    }
}

async fn run(inner: Weak<Inner>) {
    loop {
        let tick = match inner.upgrade() {
            Some(i) => i.cfg.governor_tick,
            None => return,
        };
        tokio::time::sleep(tick).await;
        let Some(i) = inner.upgrade() else { return };
        tick_once(&i);
    }
}

/// The budgets, or the last good ones when the file went bad (logged).
fn budgets(inner: &Inner) -> Vec<Budget> {
    match inner.budgets.load() {
        Ok(b) => {
            *lock(&inner.last_budgets) = b.clone();
            b
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read budgets; enforcing the last ones read");
            lock(&inner.last_budgets).clone()
        }
    }
}

/// One round of enforcement.
pub(super) fn tick_once(inner: &Arc<Inner>) {
    let now = now_ms();
    let budgets = budgets(inner);
    let (statuses, rows) = match budget::evaluate(&budgets, &lock(&inner.ledger), now) {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(error = %e, "cannot read spend; budgets not checked this tick");
            (Vec::new(), Vec::new())
        }
    };
    report_levels(inner, &statuses);
    let rate_of: HashMap<i64, f64> = rows
        .iter()
        .filter(|r| r.live)
        .map(|r| (r.resource_id, crate::cost::rate(&r.billing)))
        .collect();
    let slots: Vec<Arc<Slot>> = lock(&inner.slots).values().cloned().collect();
    for slot in slots {
        let (rid, inputs, category, per_call) = {
            let s = slot.st();
            if !matches!(s.state, RunState::Running | RunState::Lost) || s.stopping_for.is_some() {
                continue;
            }
            let Some(rid) = s.live.as_ref().map(|l| l.rid) else {
                continue;
            };
            let l = &s.manifest.lifecycle;
            (
                rid,
                Inputs {
                    ready_at_ms: s.ready_at_ms,
                    last_call_ms: slot.activity.last_call_ms(),
                    in_flight: slot.activity.in_flight(),
                    idle_stop_s: l.idle_stop_s,
                    max_duration_s: l.max_duration_s,
                    budget_exhausted_at: None,
                },
                s.manifest.category.clone(),
                s.charges_per_call,
            )
        };
        let mut inputs = inputs;
        // Only a plugin that bills (by the hour or per call) counts
        // against a budget.
        if per_call || rate_of.get(&rid).copied().unwrap_or(0.0) > 0.0 {
            for st in statuses
                .iter()
                .filter(|st| st.budget.scope.covers(&slot.id, Some(&category)))
            {
                let at = if st.level == Level::Exceeded {
                    Some(now)
                } else {
                    st.exhausted_at
                };
                if let Some(at) = at
                    && inputs.budget_exhausted_at.as_ref().is_none_or(|(b, _)| at < *b)
                {
                    inputs.budget_exhausted_at = Some((at, describe(st)));
                }
            }
        }
        let next = deadline::next_deadline(&inputs);
        match next {
            Some((at, why)) if at <= now => stop_for(inner, &slot, rid, why),
            other => record_deadline(inner, &slot, rid, other),
        }
    }
}

fn describe(st: &Status) -> String {
    let b = &st.budget;
    let mut caps = Vec::new();
    if let Some(m) = b.max_usd {
        caps.push(format!("${:.2} of ${m:.2} per {}", st.spend.accrued, b.period));
    }
    if let Some(r) = b.max_usd_per_hour {
        caps.push(format!("${:.2}/h of ${r:.2}/h", st.spend.rate));
    }
    format!("{} exceeded ({})", b.scope, caps.join(", "))
}

/// Logs a budget's change of level once, and keeps the statuses for the
/// API and the dashboard.
fn report_levels(inner: &Inner, statuses: &[Status]) {
    let mut last = lock(&inner.budget_status);
    for st in statuses {
        let before = last.iter().find(|p| p.budget.scope == st.budget.scope).map(|p| p.level);
        if before != Some(st.level) {
            match st.level {
                Level::Warning => tracing::warn!(
                    budget = %st.budget.scope,
                    used = format!("{:.0}%", st.used * 100.0),
                    "budget at its warning level"
                ),
                Level::Exceeded => tracing::error!(
                    budget = %st.budget.scope,
                    "budget exceeded: stopping the priced plugins that count against it"
                ),
                Level::Ok if before.is_some() => {
                    tracing::info!(budget = %st.budget.scope, "budget back below its warning level")
                }
                Level::Ok => {}
            }
        }
    }
    *last = statuses.to_vec();
}

fn record_deadline(inner: &Inner, slot: &Slot, rid: i64, next: Option<(i64, Reason)>) {
    let next = next.map(|(at, why)| (at, why.to_string()));
    let mut s = slot.st();
    // Budget deadlines move with the burn rate; rewrite only on a change
    // of more than a second.
    let same = match (&s.deadline, &next) {
        (None, None) => true,
        (Some((a, r)), Some((b, q))) => (a - b).abs() < 1_000 && r == q,
        _ => false,
    };
    if same {
        return;
    }
    s.deadline = next.clone();
    drop(s);
    let ledger = lock(&inner.ledger);
    if let Err(e) = ledger.set_deadline(rid, next.as_ref().map(|(at, r)| (*at, r.as_str()))) {
        tracing::error!(plugin = %slot.id, error = %e, "cannot record the plugin's deadline");
    }
}

/// Stops `slot` for `why`, in the background, once.
fn stop_for(inner: &Arc<Inner>, slot: &Arc<Slot>, rid: i64, why: Reason) {
    let reason = why.to_string();
    {
        let mut s = slot.st();
        if s.stopping_for.is_some() {
            return;
        }
        s.stopping_for = Some(reason.clone());
    }
    tracing::warn!(plugin = %slot.id, %reason, "stopping the plugin");
    if let Err(e) = lock(&inner.ledger).set_note(rid, Some(&format!("stopped: {reason}"))) {
        tracing::error!(plugin = %slot.id, error = %e, "cannot record why the plugin is stopped");
    }
    let inner = Arc::clone(inner);
    let slot = Arc::clone(slot);
    tokio::spawn(async move {
        let r = stop::stop(&inner, &slot).await;
        let mut s = slot.st();
        s.stopping_for = None;
        match r {
            Ok(()) | Err(HostError::NotRunning { .. }) => s.note = Some(format!("stopped: {reason}")),
            Err(e) => tracing::error!(plugin = %slot.id, error = %e, "the governor's stop failed"),
        }
    });
}

/// Checks a start of `m` by `plan` against every budget that covers it:
/// its rate (the price, or the most the provider may ask when that is
/// higher) projected over `max_duration_s`, else one hour; a plugin
/// charged per call is refused once a budget is spent.
pub(super) fn check_start(inner: &Inner, m: &Manifest, plan: &Plan) -> Result<(), HostError> {
    let price = plan.price.map_or(0.0, |p| p.0);
    let rate = plan.budget.worst_rate.map_or(price, |w| w.max(price));
    let per_call = plan.budget.charges_per_call;
    if rate <= 0.0 && !per_call {
        return Ok(());
    }
    let id = m.unique_id();
    let budgets: Vec<Budget> = inner
        .budgets
        .load()
        .map_err(|source| HostError::Budgets {
            context: format!("plugin {id} not started"),
            source,
        })?
        .into_iter()
        .filter(|b| b.scope.covers(&id, Some(&m.category)))
        .collect();
    if budgets.is_empty() {
        return Ok(());
    }
    let (statuses, _) = budget::evaluate(&budgets, &lock(&inner.ledger), now_ms())?;
    let hours = m.lifecycle.max_duration_s.map_or(1.0, |s| s / 3600.0);
    for st in &statuses {
        budget::decide::check_start(&st.budget, st.spend, rate, hours, per_call).map_err(|refusal| {
            HostError::BudgetRefused {
                plugin: id.clone(),
                refusal,
            }
        })?;
    }
    Ok(())
}
