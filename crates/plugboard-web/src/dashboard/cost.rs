//! The cost page: the burn rate now, budget bars with their warning level,
//! spend over the last day per plugin as an SVG chart drawn on the server
//! (no script, no CDN), and spend by plugin, provider and category.

use maud::{Markup, html};
use plugboard_host::budget::{Level, Status};
use plugboard_host::cost::{CostLine, CostReport};

/// Chart size in SVG units.
const W: f64 = 640.0;
const H: f64 = 200.0;
const PAD: f64 = 36.0;
/// Line colours, cycled.
const COLOURS: [&str; 6] = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2"];

fn usd(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("${v:.0}")
    } else if v.abs() >= 1.0 {
        format!("${v:.2}")
    } else {
        format!("${v:.4}")
    }
}

/// One budget as a bar: width = use (capped at 100 %), class = level.
fn budget_bar(s: &Status) -> Markup {
    let b = &s.budget;
    let (class, word) = match s.level {
        Level::Ok => ("ok", "ok"),
        Level::Warning => ("warning", "warning"),
        Level::Exceeded => ("exceeded", "exceeded"),
    };
    let pct = (s.used.min(1.0) * 100.0).max(0.0);
    html! {
        div.budget data-scope=(b.scope.to_string()) data-level=(word) {
            div.budget-head {
                strong { (b.scope.to_string()) }
                span.muted {
                    @if let Some(m) = b.max_usd { (usd(s.spend.accrued)) " of " (usd(m)) " per " (b.period.to_string()) }
                    @if b.max_usd.is_some() && b.max_usd_per_hour.is_some() { " · " }
                    @if let Some(r) = b.max_usd_per_hour { (usd(s.spend.rate)) "/h of " (usd(r)) "/h" }
                }
                span class=(format!("level {class}")) { (word) " · " (format!("{:.0}%", s.used * 100.0)) }
            }
            div.bar role="progressbar" aria-valuemin="0" aria-valuemax="100" aria-valuenow=(format!("{pct:.0}")) {
                div class=(format!("fill {class}")) style=(format!("width: {pct:.1}%")) {}
            }
        }
    }
}

/// Cumulative spend per plugin over the window, as polylines.
pub fn chart(series: &[(String, Vec<f64>)], window_label: &str) -> Markup {
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0f64, f64::max);
    let top = if max > 0.0 { max } else { 1.0 };
    let x = |k: usize, n: usize| PAD + (W - 2.0 * PAD) * k as f64 / (n.max(2) - 1) as f64;
    let y = |v: f64| H - PAD / 2.0 - (H - PAD) * (v / top);
    html! {
        figure.chart {
            svg #spend-chart xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {W} {H}")) role="img"
                aria-label=(format!("cumulative spend per plugin, {window_label}")) {
                line x1=(PAD) y1=(y(0.0)) x2=(W - PAD) y2=(y(0.0)) stroke="#999" {}
                line x1=(PAD) y1=(y(0.0)) x2=(PAD) y2=(y(top)) stroke="#999" {}
                text x="2" y=(y(top) + 4.0) font-size="10" { (usd(top)) }
                text x="2" y=(y(0.0)) font-size="10" { "$0" }
                text x=(PAD) y=(H - 2.0) font-size="10" { (window_label) }
                text x=(W - PAD) y=(H - 2.0) font-size="10" text-anchor="end" { "now" }
                @for (i, (plugin, points)) in series.iter().enumerate() {
                    polyline.series data-plugin=(plugin) fill="none" stroke=(COLOURS[i % COLOURS.len()]) stroke-width="2"
                        points=(points.iter().enumerate().map(|(k, v)| format!("{:.1},{:.1}", x(k, points.len()), y(*v))).collect::<Vec<_>>().join(" ")) {}
                }
            }
            @if series.is_empty() {
                figcaption.muted { "Nothing billed in this window." }
            } @else {
                figcaption {
                    @for (i, (plugin, points)) in series.iter().enumerate() {
                        span.legend {
                            span.swatch style=(format!("background: {}", COLOURS[i % COLOURS.len()])) {}
                            (plugin) " " (usd(points.last().copied().unwrap_or(0.0)))
                        }
                    }
                }
            }
        }
    }
}

fn lines_table(title: &str, lines: &[CostLine], hours: f64) -> Markup {
    html! {
        @if !lines.is_empty() {
            table.cost {
                thead { tr { th { (title) } th.num { "accrued" } th.num { "$/h now" } th.num { "projected +" (hours) " h" } } }
                tbody {
                    @for l in lines {
                        tr { td { (l.key) } td.num { (usd(l.accrued_usd)) } td.num { (usd(l.rate_usd_per_hour)) } td.num { (usd(l.projected_usd)) } }
                    }
                }
            }
        }
    }
}

/// Which provider keys are set and where from: names only, never values.
pub fn keys_table(keys: &[plugboard_host::secrets::SecretStatus]) -> Markup {
    html! {
        table.keys id="provider-keys" {
            thead { tr { th { "key" } th { "for" } th { "status" } th { "from" } } }
            tbody {
                @for k in keys {
                    tr data-set=(k.set) {
                        td { code { (k.name) } }
                        td { (k.purpose.unwrap_or("")) }
                        td { @if k.set { "set" } @else { span.muted { "not set" } } }
                        td { @if let Some(src) = &k.source { (src.to_string()) } @else { "-" } }
                    }
                }
            }
        }
        p.muted { "Set one with " code { "plugboard secret set NAME" } " (the value is read from stdin, never shown)." }
    }
}

/// The whole page body.
pub fn page(
    report: &CostReport,
    budgets: &[Status],
    series: &[(String, Vec<f64>)],
    keys: &[plugboard_host::secrets::SecretStatus],
    error: Option<&str>,
) -> Markup {
    html! {
        h1 { "Cost" }
        @if let Some(e) = error { p.error { (e) } }
        p.burn {
            "Burning " strong #burn-rate { (usd(report.total_rate_usd_per_hour)) "/h" } " now · "
            (usd(report.total_accrued_usd)) " accrued in all · "
            (usd(report.total_projected_usd)) " projected in " (report.hours) " h"
        }
        h2 { "Budgets" }
        @if budgets.is_empty() {
            p.muted { "No budgets. Set one with " code { "plugboard budget set global --max-usd 100 --period month" } "." }
        } @else {
            div.budgets { @for s in budgets { (budget_bar(s)) } }
        }
        h2 { "Spend, last 24 hours" }
        (chart(series, "24 h ago"))
        h2 { "By plugin, provider and category" }
        (lines_table("plugin", &report.plugins, report.hours))
        (lines_table("provider", &report.providers, report.hours))
        (lines_table("category", &report.categories, report.hours))
        h2 { "Provider keys" }
        (keys_table(keys))
    }
}

#[cfg(test)]
mod tests {
    use plugboard_host::budget::{Budget, Period, Scope, Spend};

    use super::*;

    #[test]
    fn bars_carry_their_level_and_width() {
        let s = Status {
            budget: Budget {
                scope: Scope::Global,
                max_usd: Some(10.0),
                period: Period::Day,
                max_usd_per_hour: None,
            },
            spend: Spend {
                accrued: 8.5,
                rate: 1.0,
            },
            used: 0.85,
            level: Level::Warning,
            exhausted_at: None,
        };
        let html = budget_bar(&s).into_string();
        assert!(
            html.contains("data-level=\"warning\"") && html.contains("width: 85.0%"),
            "{html}"
        );
    }

    #[test]
    fn the_chart_escapes_plugin_ids_and_draws_one_line_each() {
        let html = chart(
            &[("<a>".into(), vec![0.0, 1.0]), ("b".into(), vec![0.0, 0.5])],
            "24 h ago",
        )
        .into_string();
        assert_eq!(html.matches("<polyline").count(), 2);
        assert!(!html.contains("<a>") && html.contains("&lt;a&gt;"));
    }
}
