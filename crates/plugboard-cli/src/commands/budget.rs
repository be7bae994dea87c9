//! `plugboard budget set|show|delete`: budgets live in the data dir
//! (`budgets.json`), where every host's governor and every `gc` read them.

use plugboard_host::DataDir;
use plugboard_host::budget::{self, Budget, BudgetError, BudgetStore, Level, Period, Scope};
use plugboard_host::ledger::now_ms;

use super::local::{ledger, utc};
use crate::output::{self, table};
use crate::{CmdResult, Dirs, Failure};

fn store(dirs: &Dirs) -> BudgetStore {
    BudgetStore::new(DataDir::new(&dirs.data).budgets_path())
}

fn bad(e: BudgetError) -> Failure {
    match e {
        BudgetError::Bad(_) => Failure::usage(e),
        other => Failure::failed(other),
    }
}

/// `plugboard budget set SCOPE [--max-usd N] [--period P] [--max-usd-per-hour R]`.
pub fn set(dirs: &Dirs, scope: &str, max_usd: Option<f64>, period: &str, max_usd_per_hour: Option<f64>) -> CmdResult {
    let budget = Budget {
        scope: scope.parse::<Scope>().map_err(bad)?,
        max_usd,
        period: period.parse::<Period>().map_err(bad)?,
        max_usd_per_hour,
    };
    store(dirs).set(budget.clone()).map_err(bad)?;
    println!("budget {} set", budget.scope);
    Ok(())
}

/// `plugboard budget delete SCOPE`.
pub fn delete(dirs: &Dirs, scope: &str) -> CmdResult {
    let scope: Scope = scope.parse().map_err(bad)?;
    if store(dirs).delete(&scope).map_err(bad)? {
        println!("budget {scope} deleted");
        Ok(())
    } else {
        Err(Failure::not_found(format!(
            "no budget for {scope} (see `plugboard budget show`)"
        )))
    }
}

/// `plugboard budget show [--json]`: use against limits, level, and when
/// the current burn rate exhausts each.
pub fn show(dirs: &Dirs, as_json: bool) -> CmdResult {
    let budgets = store(dirs).load().map_err(Failure::failed)?;
    let (statuses, _) = budget::evaluate(&budgets, &ledger(dirs)?, now_ms()).map_err(Failure::failed)?;
    if as_json {
        output::json(&statuses);
        return Ok(());
    }
    if statuses.is_empty() {
        println!("no budgets (set one with `plugboard budget set global --max-usd 100 --period month`)");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|s| {
            let b = &s.budget;
            vec![
                b.scope.to_string(),
                b.max_usd.map_or("-".into(), |m| {
                    format!("${:.2} / ${m:.2} per {}", s.spend.accrued, b.period)
                }),
                b.max_usd_per_hour
                    .map_or("-".into(), |m| format!("${:.2}/h / ${m:.2}/h", s.spend.rate)),
                format!("{:.0}%", s.used * 100.0),
                match s.level {
                    Level::Ok => "ok".into(),
                    Level::Warning => "WARNING".into(),
                    Level::Exceeded => "EXCEEDED".into(),
                },
                s.exhausted_at.map_or("-".into(), utc),
            ]
        })
        .collect();
    table(
        &[
            "SCOPE",
            "SPENT / LIMIT",
            "RATE / LIMIT",
            "USED",
            "LEVEL",
            "EXHAUSTED AT",
        ],
        &rows,
    );
    Ok(())
}
