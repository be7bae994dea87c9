//! The plugin page (`/plugins/ID`): everything needed to wire a plugin in,
//! in one place. A live state panel (state, controls, uptime, resources,
//! price and accrued cost, the config in force), the call panel
//! ([`super::try_it`]), the following log ([`super::logs`]) and the config
//! schema as a table ([`super::schema_table`]).
//!
//! The state panel is refreshed by server-sent events (`/events/plugins/ID`,
//! event `plugin`), sent when what it shows changes; uptime and accrued cost
//! tick in the browser between events. Without JavaScript the page is still
//! whole: the panel as rendered, forms that POST and come back, plain links.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use plugboard_host::ledger::now_ms;
use plugboard_host::{PluginInfo, ResourceHandle, ResourceRecord, RunState, WorkerStatus};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio_stream::StreamExt;

use super::form::{self, display};
use super::page as full_page;
use super::{UntilShutdown, csrf, host_error, schema_table, try_it};
use crate::api::ApiState;

/// Where the config shown on the page comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Applied to the running worker when it started.
    InForce,
    /// The saved config with schema defaults (what the next start applies).
    Saved,
}

/// What the live state panel shows. Configs in it are redacted.
pub struct StateView {
    /// The plugin.
    pub info: PluginInfo,
    /// Its status, when this host started it.
    pub status: Option<WorkerStatus>,
    /// Its live ledger row (price, billing start).
    pub row: Option<ResourceRecord>,
    /// The config shown, secrets replaced by [`form::SET`].
    pub config: Map<String, Value>,
    /// Where that config comes from.
    pub config_source: ConfigSource,
    /// True when the saved config differs from the one in force.
    pub saved_differs: bool,
}

impl StateView {
    /// The current state's name (`stopped` when this host never started it).
    pub fn state(&self) -> &'static str {
        self.status.as_ref().map_or("stopped", |s| s.state.as_str())
    }

    /// True while a worker is active (starting, running, lost, stopping…).
    pub fn active(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.state.is_active())
    }
}

/// Gathers the state panel's view of plugin `id`.
pub fn state_view(s: &ApiState, id: &str) -> Result<StateView, plugboard_host::HostError> {
    let info = s.host.plugin(id)?;
    let status = s.host.status(id);
    let row = s
        .host
        .supervisor()
        .with_ledger(|l| l.live())
        .unwrap_or_default()
        .into_iter()
        .rev()
        .find(|r| r.plugin_id == id);
    let schema = &info.metadata.config_schema;
    let saved = super::card_config(s, &info);
    let (config, config_source, saved_differs) = match s.host.config_in_force(id) {
        Some(Value::Object(in_force)) => {
            let shown = form::redact(schema, &in_force).config;
            let differs = shown != saved;
            (shown, ConfigSource::InForce, differs)
        }
        _ => (saved, ConfigSource::Saved, false),
    };
    Ok(StateView {
        info,
        status,
        row,
        config,
        config_source,
        saved_differs,
    })
}

/// `GET /plugins/{id}`.
pub async fn page(State(s): State<ApiState>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    render(&s, &id, &headers, None).await
}

/// The whole plugin page, with an optional message at the top (a start that
/// failed, say).
pub async fn render(s: &ApiState, id: &str, headers: &HeaderMap, flash: Option<&str>) -> Response {
    let view = match state_view(s, id) {
        Ok(v) => v,
        Err(e) => return host_error(e),
    };
    let manifest = match s.host.manifest(id) {
        Ok(m) => m,
        Err(e) => return host_error(e),
    };
    let panel = try_it::PanelInfo::gather(s, &manifest, view.state() == RunState::Running.as_str()).await;
    let fields = form::fields(&view.info.metadata.config_schema);
    let log_lines = super::logs::recent(s, id);
    let title = view.info.metadata.title.clone();
    // A failed start's reason is in the panel already.
    let flash = flash.filter(|f| view.status.as_ref().and_then(|s| s.error.as_deref()) != Some(*f));
    full_page(headers, &title, "overview", |token| {
        html! {
            (header(&view.info))
            @if let Some(f) = flash { p.notice.bad id="flash" role="alert" { (f) } }
            div.plugin-grid {
                section.card.panel id="state-panel" data-sse={ "/events/plugins/" (view.info.unique_id) "?sig=" (signature(&view)) } data-sse-event="plugin" {
                    (state_panel(&view, token, now_ms()))
                }
                (try_it::panel(&view, &panel, token))
            }
            (super::logs::panel(id, &log_lines))
            (schema_table::section(id, &fields))
            script src="/assets/plugin.js" defer {}
        }
    })
}

/// The page's heading: title, mode, id, version, description, links.
fn header(p: &PluginInfo) -> Markup {
    let m = &p.metadata;
    html! {
        div.plugin-head {
            h1 id="plugin-title" { (m.title) }
            span class=(if m.is_local_execution() { "badge local" } else { "badge cloud" }) { (m.execution_mode) }
            @if m.is_configured { span.badge.ok { "configured" } } @else { span.badge.warn { "not configured" } }
        }
        p.muted {
            code id="plugin-id" { (p.unique_id) }
            " · version " (m.version.as_deref().unwrap_or("-"))
            " · " a href={ "/plugins/" (p.unique_id) "/config" } { "Configure" }
            " · " a href={ "/category/" (m.category) } { "Compare in " (m.category) }
            " · " a href="/running" { "All running" }
        }
        @if let Some(d) = &m.description { p.description { (d) } }
    }
}

/// Dollars with four decimals.
fn usd(v: f64) -> String {
    format!("${v:.4}")
}

/// The exit of a process in words: `exit code 3`, `signal 9`.
fn exit_words(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (_, Some(sig)) => format!("killed by signal {sig}"),
        (Some(c), None) => format!("exit code {c}"),
        (None, None) => "exit status unknown".into(),
    }
}

/// The resource of any mode, as definition-list rows.
fn resource_rows(handle: &ResourceHandle) -> Markup {
    html! {
        @match handle {
            ResourceHandle::Process { pid, cgroups, .. } => {
                dt { "process" } dd { "root pid " code.pid { (pid) } }
                @if let Some(c) = cgroups.first() { dt { "cgroup" } dd { code { (c) } } }
            }
            ResourceHandle::Container { id } => {
                dt { "container" } dd { code.container title=(id) { (id.get(..12).unwrap_or(id)) } }
            }
            ResourceHandle::Instance { provider, region, id } => {
                dt { "instance" } dd { code.instance { (id) } }
                dt { "provider" } dd { (provider) }
                dt { "region" } dd { (region) }
            }
            ResourceHandle::RemoteProcess { host, port, user, pid, .. } => {
                dt { "remote host" } dd {
                    code.remote-host { @if let Some(u) = user { (u) "@" } (host) @if let Some(p) = port { ":" (p) } }
                }
                dt { "remote pid" } dd { code { (pid) } }
            }
            ResourceHandle::ClusterJob { cluster, id } => {
                dt { "cluster job" } dd { code { (id) } " on " (cluster) }
            }
            ResourceHandle::Service { endpoint } => {
                dt { "service" } dd { code { (endpoint) } }
            }
            other => { dt { "resource" } dd { code { (other.short()) } } }
        }
    }
}

/// The live state panel's content (swapped in by server-sent events).
/// Uptime and accrued cost carry `data-since` / `data-rate` so the page's
/// script ticks them between events.
pub fn state_panel(v: &StateView, csrf: &str, now_ms: i64) -> Markup {
    let id = &v.info.unique_id;
    let state = v.state();
    let active = v.active();
    let st = v.status.as_ref();
    let ended = st.is_some_and(|s| matches!(s.state, RunState::Crashed | RunState::Exited | RunState::Failed));
    let price = v
        .row
        .as_ref()
        .and_then(|r| r.cost_per_hour)
        .or(v.info.resources.estimated_cost_per_hour);
    let res = &v.info.resources;
    html! {
        div.state-line {
            span id="plugin-state" class={ "state big " (state) } data-state=(state) data-now=(now_ms) { (state) }
            @if st.is_some_and(|s| s.restart_pending) { span.muted { " restart pending" } }
            div.actions.controls {
                @for (verb, enabled) in [("start", !active), ("stop", active), ("restart", active)] {
                    form method="post" action={ "/plugins/" (id) "/" (verb) } {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="back" value="plugin";
                        button type="submit" class=(if verb == "start" { "primary" } else { "" }) disabled[!enabled] data-action=(verb) { (verb) }
                    }
                }
            }
        }
        @if let Some(s) = st {
            @if s.state == RunState::Lost {
                p.notice.bad id="lost-note" { "Lost: " (s.note.as_deref().unwrap_or("the resource stopped answering")) ". It is not restarted while it may still be running (and billed)." }
            }
            @if !active && s.state != RunState::Lost {
                @if let Some(n) = s.note.as_ref().filter(|n| n.starts_with("stopped: ")) {
                    p.notice.warn id="stopped-note" { "Stopped by the host: " (n.trim_start_matches("stopped: ")) "." }
                }
            }
            @if s.state == RunState::Provisioning {
                p.notice.warn id="provisioning-note" { "Provisioning: the backend is creating the resource." }
            }
            @if ended {
                @if let Some(x) = s.last_exit { p.notice.bad id="exit-note" { "The worker ended: " (exit_words(x.code, x.signal)) "." } }
            }
            @if let Some(e) = s.error.as_ref().filter(|_| !active) { p.notice.bad id="start-error" { (e) } }
            @if (ended || s.error.is_some()) && !active && !s.stderr_tail.is_empty() {
                h3 { "Last lines of stderr" }
                pre.log id="stderr-tail" { @for l in &s.stderr_tail { (l) "\n" } }
            }
        }
        dl.facts {
            dt { "uptime" }
            dd id="uptime" {
                @match st.filter(|_| active).and_then(|s| s.started_at_ms) {
                    Some(t) => { span data-since=(t) { (super::human_duration(now_ms - t)) } }
                    None => { "-" }
                }
            }
            @if let Some(b) = st.and_then(|s| s.backend.as_deref()).filter(|_| active) { dt { "backend" } dd { (b) } }
            @if let Some(h) = st.and_then(|s| s.resource.as_ref()).filter(|_| active) { (resource_rows(h)) }
            @if !v.info.metadata.spawned_pids.is_empty() {
                dt { "pids" } dd.pids id="pids" { (v.info.metadata.spawned_pids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")) }
            }
            @if let Some(c) = &v.info.metadata.container_id { dt { "container id" } dd { code { (c) } } }
            @if let Some(rr) = &v.info.metadata.remote_resource {
                dt { "remote resource" }
                dd.remote-resource {
                    (rr.provider)
                    @if let Some(r) = &rr.region { " " (r) }
                    @if let Some(i) = &rr.instance_id { " · instance " code { (i) } }
                    @if let Some(j) = &rr.job_id { " · job " code { (j) } }
                    @if let Some(h) = &rr.ssh_host { " · host " code { (h) } }
                    @if rr.gpu_count > 0 { " · " (rr.gpu_count) " × " (rr.gpu_type.as_deref().unwrap_or("GPU")) }
                    @if let Some(u) = &rr.endpoint_url { " · " code { (u) } }
                }
            }
            @if res.gpu_count > 0 { dt { "GPU" } dd { (res.gpu_count) " × " (res.gpu_type.as_deref().unwrap_or("GPU")) } }
            @if let Some(mem) = res.memory_gb { dt { "memory" } dd { (mem) " GB" } }
            @if let Some(e) = st.and_then(|s| s.endpoint.as_ref()).filter(|_| active) { dt { "endpoint" } dd { code.endpoint { (e) } } }
            dt { "price" } dd id="price" { @match price { Some(p) => { (usd(p)) " / hour" } None => { "unknown" } } }
            dt { "accrued" }
            dd id="accrued" {
                @match &v.row {
                    Some(r) => {
                        @let rate = r.cost_per_hour.unwrap_or(0.0).max(0.0);
                        @if let Some(since) = r.billing_started_at.filter(|_| r.ended_at.is_none() && rate > 0.0) {
                            span data-billing-since=(since) data-rate=(rate) { (usd(r.accrued_usd(now_ms))) }
                        } @else { (usd(r.accrued_usd(now_ms))) }
                    }
                    None => { "-" }
                }
            }
        }
        h3 {
            @match v.config_source { ConfigSource::InForce => "Config in force", ConfigSource::Saved => "Config (applied at the next start)" }
        }
        @if v.saved_differs { p.notice.warn id="config-differs" { "The saved config changed since this worker started; restart to apply it." } }
        @if v.config.is_empty() { p.muted { "No settings." } } @else {
            table.config-in-force id="config-in-force" {
                tbody {
                    @for (k, val) in &v.config {
                        tr { th { code { (k) } } td { @if val == form::SET { span.muted.secret { "set" } } @else { code { (display(val)) } } } }
                    }
                }
            }
        }
    }
}

/// A hash of a stable rendering of the panel (times left out), to tell
/// when what it shows changed.
pub fn signature(v: &StateView) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    state_panel(v, "", 0).into_string().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Query of the state events.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    /// The [`signature`] of the panel the page shows: no event is sent
    /// until the panel differs from it (the page need not be swapped for
    /// the same content right after it loads).
    #[serde(default)]
    pub sig: Option<String>,
}

/// `GET /events/plugins/{id}`: the state panel as server-sent events
/// (`plugin`): at once unless the page's panel has the same signature, then
/// whenever it changes (checked every second), and at least every 30 s.
pub async fn events(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = s.host.manifest(&id) {
        return host_error(e);
    }
    let (token, _) = csrf(&headers);
    let interval = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(Duration::from_secs(1)));
    let shutdown = s.shutdown.clone();
    let mut last: Option<String> = q.sig;
    let mut quiet = 0u32;
    let stream = interval.filter_map(move |_| {
        let view = match state_view(&s, &id) {
            Ok(v) => v,
            Err(e) => {
                let html = html! { p.notice.bad { (e.to_string()) } }.into_string();
                return Some(Ok::<Event, Infallible>(Event::default().event("plugin").data(html)));
            }
        };
        let sig = signature(&view);
        quiet += 1;
        if last.as_deref() == Some(sig.as_str()) && quiet < 30 {
            return None;
        }
        last = Some(sig);
        quiet = 0;
        let html = state_panel(&view, &token, now_ms()).into_string();
        Some(Ok(Event::default().event("plugin").data(html)))
    });
    Sse::new(UntilShutdown::new(stream, shutdown))
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugboard_core::{CloudProvider, PluginMetadata, RemoteResource};
    use plugboard_host::backend::ExitInfo;

    fn view(state: RunState, f: impl FnOnce(&mut WorkerStatus, &mut PluginInfo)) -> String {
        let mut info = PluginInfo {
            unique_id: "gpu_trainer".into(),
            metadata: PluginMetadata::new("trainer", "gpu", "Trainer"),
            manifest_path: "plugin.toml".into(),
            resources: Default::default(),
            state: Some(state),
        };
        let mut status = WorkerStatus {
            plugin_id: "gpu_trainer".into(),
            state,
            backend: Some("cloud".into()),
            resource: None,
            endpoint: None,
            pid: None,
            pid_start_time: None,
            resource_id: Some(7),
            listen: None,
            log_path: "log".into(),
            started_at_ms: Some(1_000),
            ready_at_ms: Some(2_000),
            restarts: 0,
            restart_pending: false,
            last_exit: None,
            error: None,
            note: None,
            stderr_tail: Vec::new(),
        };
        f(&mut status, &mut info);
        let v = StateView {
            info,
            status: Some(status),
            row: None,
            config: Map::new(),
            config_source: ConfigSource::Saved,
            saved_differs: false,
        };
        state_panel(&v, "token", 60_000).into_string()
    }

    #[test]
    fn a_lost_plugin_says_why_and_that_it_is_not_restarted() {
        let page = view(RunState::Lost, |s, _| s.note = Some("ssh connection <dropped>".into()));
        assert!(page.contains(r#"data-state="lost""#), "{page}");
        assert!(page.contains("id=\"lost-note\""), "{page}");
        assert!(page.contains("ssh connection &lt;dropped&gt;"), "escaped: {page}");
        assert!(page.contains("not restarted"), "{page}");
    }

    #[test]
    fn provisioning_shows_the_instance_with_provider_region_gpu_and_price() {
        let page = view(RunState::Provisioning, |s, info| {
            s.resource = Some(ResourceHandle::Instance {
                provider: "lambda_labs".into(),
                region: "us-west-1".into(),
                id: "i-0abc".into(),
            });
            let mut rr = RemoteResource::new(CloudProvider::LambdaLabs);
            rr.region = Some("us-west-1".into());
            rr.instance_id = Some("i-0abc".into());
            rr.gpu_count = 8;
            rr.gpu_type = Some("A100".into());
            info.metadata.remote_resource = Some(Box::new(rr));
            info.resources.estimated_cost_per_hour = Some(24.5);
        });
        assert!(page.contains("id=\"provisioning-note\""), "{page}");
        for want in ["i-0abc", "lambda_labs", "us-west-1", "8 × A100", "$24.5000 / hour"] {
            assert!(page.contains(want), "{want} missing: {page}");
        }
    }

    #[test]
    fn a_crash_shows_the_exit_code_and_the_stderr_tail() {
        let page = view(RunState::Crashed, |s, _| {
            s.last_exit = Some(ExitInfo {
                code: Some(3),
                signal: None,
            });
            s.stderr_tail = vec!["Traceback: <boom>".into()];
        });
        assert!(page.contains("id=\"exit-note\""), "{page}");
        assert!(page.contains("exit code 3"), "{page}");
        assert!(
            page.contains("id=\"stderr-tail\"") && page.contains("Traceback: &lt;boom&gt;"),
            "{page}"
        );
    }

    #[test]
    fn a_stop_by_the_host_says_why() {
        let page = view(RunState::Stopped, |s, _| {
            s.note = Some("stopped: global exceeded ($1.00 of $1.00 per all)".into())
        });
        assert!(page.contains("id=\"stopped-note\""), "{page}");
        assert!(page.contains("Stopped by the host: global exceeded"), "{page}");
    }

    #[test]
    fn remote_and_container_resources_are_shown_while_running() {
        let page = view(RunState::Running, |s, _| {
            s.resource = Some(ResourceHandle::RemoteProcess {
                host: "gpu-box".into(),
                port: Some(2222),
                user: Some("ml".into()),
                pid: 4242,
                pgid: 4242,
                start_time: 1,
                boot_id: "b".into(),
            })
        });
        assert!(page.contains("ml@gpu-box:2222") && page.contains("4242"), "{page}");
        let page = view(RunState::Running, |s, _| {
            s.resource = Some(ResourceHandle::Container {
                id: "0123456789abcdef0123".into(),
            })
        });
        assert!(
            page.contains("0123456789ab<") || page.contains(">0123456789ab"),
            "{page}"
        );
    }
}
