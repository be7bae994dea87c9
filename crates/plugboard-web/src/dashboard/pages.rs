//! The dashboard's HTML, with maud: every plugin-provided string is escaped
//! by the template engine, so a manifest title with HTML in it shows as text.

use std::collections::BTreeMap;

use maud::{DOCTYPE, Markup, html};
use plugboard_core::PluginStats;
use plugboard_host::{PluginInfo, ResourceRecord, RunState, WorkerStatus};
use serde_json::{Map, Value};

use super::form::{Field, FieldKind, display};

/// The page frame.
pub fn layout(title: &str, active: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · plugboard" }
                link rel="stylesheet" href="/assets/style.css";
                script src="/assets/htmx.min.js" defer {}
                script src="/assets/app.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "plugboard" }
                    nav {
                        a.(if active == "overview" { "on" } else { "" }) href="/" { "Overview" }
                        a.(if active == "running" { "on" } else { "" }) href="/running" { "Running" }
                        a.(if active == "cost" { "on" } else { "" }) href="/cost" { "Cost" }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn mode_badge(p: &PluginInfo) -> Markup {
    let class = if p.metadata.is_local_execution() {
        "badge local"
    } else {
        "badge cloud"
    };
    html! { span class=(class) title=(if p.metadata.is_local_execution() { "runs locally" } else { "runs on cloud or remote resources" }) { (p.metadata.execution_mode) } }
}

/// Overview: categories with counts, the seed's stats, manifest problems.
pub fn overview(
    cats: &[(String, String, usize)],
    stats: &PluginStats,
    problems: &[plugboard_host::ManifestError],
) -> Markup {
    html! {
        h1 { "Plugins" }
        section.cards {
            @for (cat, name, n) in cats {
                a.card.category href={ "/category/" (cat) } {
                    h2 { (name) }
                    p.count { (n) " plugin" @if *n != 1 { "s" } }
                }
            }
            @if cats.is_empty() { p.muted { "No plugins found in the plugins directories." } }
        }
        h2 { "Statistics" }
        table.stats {
            tbody {
                tr { th { "total" } td { (stats.total) } }
                tr { th { "configured" } td { (stats.configured) } }
                tr { th { "unconfigured" } td { (stats.unconfigured) } }
                tr { th { "local" } td { (stats.local) } }
                tr { th { "cloud" } td { (stats.cloud) } }
                tr { th { "with active resources" } td { (stats.with_active_resources) } }
            }
        }
        @if !problems.is_empty() {
            h2 { "Manifests that did not load" }
            ul.problems { @for p in problems { li { code { (p.path.display()) } ": " (p.reason) } } }
        }
    }
}

/// The details card of one plugin.
pub fn card(p: &PluginInfo, config: &Map<String, Value>) -> Markup {
    let m = &p.metadata;
    let streaming = m
        .config_schema
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|props| props.contains_key("stream") || props.contains_key("streaming"));
    let memory = config.get("memory_gb").or_else(|| config.get("memory")).map(display);
    html! {
        article.card.details id="card" data-plugin=(p.unique_id) {
            header {
                h2 { (m.title) }
                (mode_badge(p))
                @if m.is_configured { span.badge.ok { "configured" } } @else { span.badge.warn { "not configured" } }
            }
            @if let Some(d) = &m.description { p { (d) } }
            dl {
                dt { "id" } dd { code { (p.unique_id) } }
                dt { "version" } dd { (m.version.as_deref().unwrap_or("-")) }
                @if m.is_cloud_execution() {
                    dt { "cost" } dd { @match p.resources.estimated_cost_per_hour { Some(c) => { "$" (format!("{c:.2}")) " / hour" } None => { "unknown" } } }
                    dt { "GPU" } dd { @if p.resources.gpu_count > 0 { (p.resources.gpu_count) "× " (p.resources.gpu_type.as_deref().unwrap_or("GPU")) } @else { "none" } }
                }
                @if let Some(d) = config.get("device") { dt { "device" } dd { (display(d)) } }
                @if let Some(mem) = memory { dt { "memory" } dd { (mem) } }
                @if streaming { dt { "streaming" } dd { "supported" } }
                @if let Some(s) = p.state { dt { "state" } dd { span class={ "state " (s.as_str()) } { (s.as_str()) } } }
            }
        }
    }
}

/// Where a category page is in its plugins: the search, the page, its
/// size and how many plugins match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pager {
    /// The category.
    pub category: String,
    /// The search text (empty: every plugin).
    pub q: String,
    /// The page, from 1.
    pub page: usize,
    /// Plugins per page.
    pub per: usize,
    /// Plugins that match.
    pub total: usize,
}

impl Pager {
    /// The number of pages (at least 1).
    pub fn pages(&self) -> usize {
        self.total.div_ceil(self.per.max(1)).max(1)
    }

    fn href(&self, page: usize) -> String {
        let mut url = format!("/category/{}?page={page}&per={}", urlencode(&self.category), self.per);
        if !self.q.is_empty() {
            url.push_str("&q=");
            url.push_str(&urlencode(&self.q));
        }
        url
    }
}

/// Percent-encodes everything but unreserved characters (for query values
/// and path segments).
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The search box and the page links of a category page (plain links and a
/// GET form: no script needed).
fn pager(p: &Pager, shown: usize) -> Markup {
    let first = if shown == 0 { 0 } else { (p.page - 1) * p.per + 1 };
    let last = if shown == 0 { 0 } else { first + shown - 1 };
    html! {
        form.pager method="get" action={ "/category/" (urlencode(&p.category)) } {
            input type="search" name="q" value=(p.q) placeholder="Search name, title, description" aria-label="Search plugins";
            input type="hidden" name="per" value=(p.per);
            button type="submit" { "Search" }
            span.muted #plugin-count { (first) "–" (last) " of " (p.total) }
            @if p.page > 1 { a #prev-page href=(p.href(p.page - 1)) { "← Previous" } }
            @if p.page < p.pages() { a #next-page href=(p.href(p.page + 1)) { "Next →" } }
        }
    }
}

/// A category: search and pages, selector, card, confirm button,
/// comparison table, for the plugins of one page.
pub fn category(
    display_name: &str,
    plugins: &[PluginInfo],
    selected: Option<&PluginInfo>,
    config: &Map<String, Value>,
    paging: &Pager,
) -> Markup {
    let Some(selected) = selected else {
        return html! {
            h1 { (display_name) }
            (pager(paging, 0))
            p.muted #no-match { "No plugin in this category matches " q { (paging.q) } "." }
        };
    };
    html! {
        h1 { (display_name) }
        (pager(paging, plugins.len()))
        div.selector {
            label for="plugin-select" { "Plugin" }
            select id="plugin-select" name="id" hx-get="/fragments/card" hx-target="#card" hx-swap="outerHTML" hx-trigger="change" {
                @for p in plugins {
                    option value=(p.unique_id) selected[p.unique_id == selected.unique_id] { (p.metadata.title) }
                }
            }
            a.button.primary id="confirm" href={ "/plugins/" (selected.unique_id) "/config" } { "Use this plugin" }
        }
        (card(selected, config))
        h2 { "Compare" }
        div.scroll {
            table.compare {
                thead { tr { th { "Plugin" } th { "Version" } th { "Mode" } th { "Configured" } th { "GPU" } th { "$/hour" } th { "Description" } } }
                tbody {
                    @for p in plugins {
                        tr {
                            td { a href={ "/plugins/" (p.unique_id) } { (p.metadata.title) } }
                            td { (p.metadata.version.as_deref().unwrap_or("-")) }
                            td { (mode_badge(p)) }
                            td { @if p.metadata.is_configured { "yes" } @else { "no" } }
                            td { @if p.resources.gpu_count > 0 { (p.resources.gpu_count) "× " (p.resources.gpu_type.as_deref().unwrap_or("GPU")) } @else { "-" } }
                            td { @match p.resources.estimated_cost_per_hour { Some(c) => { (format!("{c:.2}")) } None => { "-" } } }
                            td { (p.metadata.description.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}

/// An element id for a field: `f-` and its path, whitespace (not allowed
/// in ids) escaped.
fn field_id(path: &str) -> String {
    let mut id = String::from("f-");
    for c in path.chars() {
        if c.is_whitespace() {
            id.push_str(&format!("~u{:x}~", u32::from(c)));
        } else {
            id.push(c);
        }
    }
    id
}

fn required_mark(f: &Field) -> Markup {
    html! { @if f.required { span.req title="required" { " *" } } }
}

/// One field. `value` and `saved` come from redacted configs: a secret is
/// at most [`super::form::SET`] there, and is never put in an input anyway.
fn input(f: &Field, value: Option<&Value>, saved: Option<&Value>, errors: &BTreeMap<String, String>) -> Markup {
    let id = field_id(&f.path);
    let shown = value.or(f.default.as_ref());
    let error = errors.get(&f.path);
    html! {
        div class={ "field" @if error.is_some() { " invalid" } } {
            @match &f.kind {
                FieldKind::Object(children) => {
                    fieldset {
                        legend { (f.label) (required_mark(f)) }
                        @if let Some(h) = &f.help { p.help { (h) } }
                        @for c in children {
                            (input(c, value.and_then(|v| v.get(&c.name)), saved.and_then(|v| v.get(&c.name)), errors))
                        }
                    }
                }
                FieldKind::Boolean => {
                    input type="hidden" name=(super::form::present_key(&f.path)) value="1";
                    label.check {
                        input type="checkbox" id=(id) name=(f.path) checked[shown.and_then(Value::as_bool).unwrap_or(false)];
                        " " (f.label) (required_mark(f))
                    }
                }
                kind => {
                    label for=(id) { (f.label) (required_mark(f)) }
                    @match kind {
                        FieldKind::Enum(options) => {
                            select id=(id) name=(f.path) {
                                @if !f.required { option value="" { "—" } }
                                @for o in options {
                                    option value=(display(o)) selected[shown == Some(o)] { (display(o)) }
                                }
                            }
                        }
                        FieldKind::Integer | FieldKind::Number => {
                            input type="number" id=(id) name=(f.path)
                                step=(if matches!(kind, FieldKind::Integer) { "1" } else { "any" })
                                min=[f.min] max=[f.max] required[f.required]
                                value=[shown.map(display)];
                        }
                        FieldKind::Array(_) => {
                            textarea id=(id) name=(f.path) rows="3" placeholder="one value per line" {
                                @if let Some(Value::Array(items)) = shown { (items.iter().map(display).collect::<Vec<_>>().join("\n")) }
                            }
                        }
                        FieldKind::Json => {
                            textarea id=(id) name=(f.path) rows="4" placeholder="JSON" data-kind="json" {
                                @if let Some(v) = shown { (serde_json::to_string_pretty(v).unwrap_or_default()) }
                            }
                        }
                        FieldKind::Secret(inner) => {
                            @let placeholder = if saved.is_some() { "set (leave empty to keep)" } else { "" };
                            @if matches!(**inner, FieldKind::Array(_) | FieldKind::Json) {
                                textarea id=(id) name=(f.path) autocomplete="off" data-secret="1" rows="3" placeholder=(placeholder) {}
                            } @else {
                                input type="password" id=(id) name=(f.path) autocomplete="off" data-secret="1" placeholder=(placeholder);
                            }
                        }
                        _ => {
                            input type="text" id=(id) name=(f.path) required[f.required] value=[shown.map(display)];
                        }
                    }
                }
            }
            @if let Some(h) = (!matches!(f.kind, FieldKind::Object(_))).then_some(()).and(f.help.as_ref()) { p.help { (h) } }
            @if let Some(e) = error { p.error role="alert" data-field=(f.path) { (e) } }
        }
    }
}

/// What the config form shows. Every config in it is redacted
/// ([`super::form::redact`]) and every message scrubbed before it gets here.
pub struct ConfigView<'a> {
    /// The plugin.
    pub plugin: &'a PluginInfo,
    /// The form's fields.
    pub fields: &'a [Field],
    /// The values in the inputs (redacted).
    pub values: &'a Map<String, Value>,
    /// The saved config (redacted).
    pub saved_config: &'a Map<String, Value>,
    /// Errors by field path.
    pub errors: &'a BTreeMap<String, String>,
    /// Errors that belong to no field.
    pub general: &'a [String],
    /// The CSRF token for the forms.
    pub csrf: &'a str,
    /// Show the "Saved." notice.
    pub saved_notice: bool,
}

/// The config form of a plugin.
pub fn config_form(v: &ConfigView<'_>) -> Markup {
    let p = v.plugin;
    html! {
        h1 { "Configure " (p.metadata.title) }
        p.muted { code { (p.unique_id) } " · " a href={ "/category/" (p.metadata.category) } { "back to " (p.metadata.category) } }
        @if v.saved_notice { p.notice.ok id="saved" { "Saved." } }
        @if !v.errors.is_empty() || !v.general.is_empty() {
            div.notice.bad id="errors" {
                "Not saved: fix the fields marked below."
                @for g in v.general { p { (g) } }
            }
        }
        // novalidate: the server validates against the full schema and shows
        // every error next to its field.
        form.config method="post" novalidate action={ "/plugins/" (p.unique_id) "/config" } {
            input type="hidden" name="csrf" value=(v.csrf);
            @for f in v.fields {
                (input(f, v.values.get(&f.name), v.saved_config.get(&f.name), v.errors))
            }
            @if v.fields.is_empty() { p.muted { "This plugin has no settings." } }
            div.actions {
                button.primary type="submit" id="save" { "Save" }
                a.button href={ "/plugins/" (p.unique_id) "/config?defaults=1" } { "Reset to defaults" }
            }
        }
        form method="post" action={ "/plugins/" (p.unique_id) "/config/delete" } {
            input type="hidden" name="csrf" value=(v.csrf);
            button.danger type="submit" id="delete" disabled[!p.metadata.is_configured] { "Delete saved config" }
        }
        @if !v.saved_config.is_empty() {
            h2 { "Saved config" }
            pre id="saved-config" { (serde_json::to_string_pretty(v.saved_config).unwrap_or_default()) }
        }
    }
}

/// One row of the running list.
pub struct RunningRow {
    /// The plugin.
    pub info: PluginInfo,
    /// Its status, when this host started it.
    pub status: Option<WorkerStatus>,
    /// The live pids of its tree.
    pub pids: Vec<u32>,
    /// Its live ledger row.
    pub row: Option<ResourceRecord>,
}

/// The running list fragment (swapped in by server-sent events).
pub fn running_fragment(rows: &[RunningRow], csrf: &str, now_ms: i64) -> Markup {
    html! {
        table.running id="running-table" {
            thead { tr { th { "Plugin" } th { "State" } th { "Resources" } th { "Uptime" } th { "Accrued" } th { "" } } }
            tbody {
                @for r in rows {
                    @let state = r.status.as_ref().map_or("stopped", |s| s.state.as_str());
                    @let active = r.status.as_ref().is_some_and(|s| s.state.is_active());
                    tr data-plugin=(r.info.unique_id) {
                        td { a href={ "/plugins/" (r.info.unique_id) } { (r.info.metadata.title) } br; code.muted { (r.info.unique_id) } }
                        td { span class={ "state " (state) } { (state) } }
                        td.resources {
                            @if let Some(b) = r.status.as_ref().and_then(|s| s.backend.as_deref()).filter(|_| active) { span.muted.backend { (b) } " " }
                            @if !r.pids.is_empty() { "pids " span.pids { (r.pids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")) } }
                            @else if let Some(res) = r.status.as_ref().and_then(|s| s.resource.as_ref()).filter(|_| active) { code.resource { (res.short()) } }
                            @if let Some(c) = &r.info.metadata.container_id { br; "container " code { (c) } }
                            @if let Some(rr) = &r.info.metadata.remote_resource { br; "instance " code { (rr.instance_id.as_deref().unwrap_or("-")) } }
                            @if let Some(e) = r.status.as_ref().and_then(|s| s.endpoint.as_ref()).filter(|_| active) { br; "endpoint " code.endpoint { (e) } }
                            @if let Some(n) = r.status.as_ref().filter(|s| s.state == RunState::Lost).and_then(|s| s.note.as_ref()) { br; span.notice.bad.lost { "lost: " (n) } }
                            @if let Some(n) = r.status.as_ref().filter(|s| !s.state.is_active() && s.state != RunState::Lost).and_then(|s| s.note.as_ref()).filter(|n| n.starts_with("stopped: ")) { br; span.notice.warn.stopped-by { (n) } }
                        }
                        td { @if active { @if let Some(t) = r.status.as_ref().and_then(|s| s.started_at_ms) { (crate::dashboard::human_duration(now_ms - t)) } } }
                        td { @if let Some(row) = &r.row { "$" (format!("{:.4}", row.accrued_usd(now_ms))) } }
                        td.actions {
                            @for (verb, enabled) in [("start", !active), ("stop", active), ("restart", active)] {
                                form method="post" action={ "/plugins/" (r.info.unique_id) "/" (verb) } {
                                    input type="hidden" name="csrf" value=(csrf);
                                    button type="submit" name="go" value=(verb) disabled[!enabled] data-action=(verb) { (verb) }
                                }
                            }
                            button type="button" hx-get={ "/plugins/" (r.info.unique_id) "/logs" } hx-target="#log" { "log" }
                        }
                    }
                }
            }
        }
    }
}

/// The running page.
pub fn running(fragment: Markup, flash: Option<&str>) -> Markup {
    html! {
        h1 { "Running" }
        @if let Some(f) = flash { p.notice.bad id="flash" { (f) } }
        div id="running" data-sse="/events/running" { (fragment) }
        h2 { "Log" }
        pre id="log" class="log" { "Choose a plugin's log." }
    }
}

/// A log tail fragment.
pub fn log_tail(id: &str, lines: &[String]) -> Markup {
    html! {
        pre id="log" class="log" data-plugin=(id) { @for l in lines { (l) "\n" } @if lines.is_empty() { "(empty)" } }
    }
}

/// An error page.
pub fn error_page(status: u16, message: &str) -> Markup {
    layout(
        "Error",
        "",
        html! { h1 { "Error " (status) } p.notice.bad { (message) } p { a href="/" { "Back to the overview" } } },
    )
}
