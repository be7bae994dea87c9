//! `plugboard cost`: spend by plugin, provider and category from the cost
//! ledger (each interval at the price stored at launch, so old runs keep
//! their cost), accrued over a window and projected at the current rate.

use plugboard_host::budget::{Period, decide::period_start};
use plugboard_host::cost;
use plugboard_host::ledger::now_ms;

use super::local::{ledger, utc};
use crate::output::{self, table};
use crate::{CmdResult, Dirs, Failure};

/// `plugboard cost [--since DATE|day|month] [--hours H] [--json]`.
pub fn cost(dirs: &Dirs, hours: f64, since: Option<&str>, as_json: bool) -> CmdResult {
    if !hours.is_finite() || hours < 0.0 {
        return Err(Failure::usage(format!(
            "--hours must be a non-negative number, got {hours}"
        )));
    }
    let now = now_ms();
    let since_ms = match since {
        None | Some("all") => None,
        Some(s) => {
            let period: Period = s.parse().map_err(|e| Failure::usage(format!("--since: {e}")))?;
            Some(period_start(period, now))
        }
    };
    let rows = ledger(dirs)?
        .spend_since(since_ms.unwrap_or(i64::MIN))
        .map_err(Failure::failed)?;
    let report = cost::report(&rows, since_ms, now, hours);
    if as_json {
        output::json(&report);
        return Ok(());
    }
    let window = since_ms.map_or_else(|| "since the ledger began".to_owned(), |s| format!("since {}", utc(s)));
    for (title, lines) in [
        ("PLUGIN", &report.plugins),
        ("PROVIDER", &report.providers),
        ("CATEGORY", &report.categories),
    ] {
        if lines.is_empty() {
            continue;
        }
        let rows: Vec<Vec<String>> = lines
            .iter()
            .map(|l| {
                vec![
                    l.key.clone(),
                    format!("{:.4}", l.accrued_usd),
                    format!("{:.2}", l.rate_usd_per_hour),
                    format!("{:.2}", l.projected_usd),
                ]
            })
            .collect();
        table(
            &[title, "ACCRUED", "USD/H NOW", &format!("PROJECTED +{hours} H")],
            &rows,
        );
        println!();
    }
    println!(
        "accrued {window}: ${:.4}; burning ${:.2}/h; projected in {hours} h: ${:.2}",
        report.total_accrued_usd, report.total_rate_usd_per_hour, report.total_projected_usd
    );
    Ok(())
}
