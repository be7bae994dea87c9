//! The web dashboard: browse and compare plugins by category, configure them
//! with forms generated from their schemas, and watch, start and stop what
//! runs. Server-rendered with maud; htmx (vendored, served from the binary)
//! swaps the details card; a few lines of our own JS apply server-sent
//! events to the running list and drive the plugin page (live state, the
//! call panel, the following log). Works offline, no build step.
//!
//! The plugin page is split by concern: [`plugin_page`] (the page and its
//! live state panel), [`try_it`] (the call panel and its routes), [`logs`]
//! (tail, follow, download) and [`schema_table`].
//!
//! Every state change is a POST from this server's own origin (checked on
//! `Origin`, else `Referer`) carrying a CSRF token that this process signed
//! and that equals the `plugboard_csrf` cookie (SameSite=Strict); see
//! [`crate::csrf`].

pub mod cost;
pub mod form;
pub mod logs;
pub mod pages;
pub mod plugin_page;
pub mod schema_table;
pub mod try_it;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::Markup;
use plugboard_core::plugin_stats;
use plugboard_host::ledger::now_ms;
use plugboard_host::{HostError, PluginInfo};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio_stream::StreamExt;

use crate::api::{ApiState, constant_time_eq};
use crate::csrf;

const CSRF_COOKIE: &str = "plugboard_csrf";

/// A duration as `1h02m`, `3m05s`, `12s`.
pub fn human_duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// The dashboard routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(overview))
        .route(
            "/assets/htmx.min.js",
            get(|| asset("application/javascript", include_str!("../../assets/htmx.min.js"))),
        )
        .route(
            "/assets/app.js",
            get(|| asset("application/javascript", include_str!("../../assets/app.js"))),
        )
        .route(
            "/assets/plugin.js",
            get(|| asset("application/javascript", include_str!("../../assets/plugin.js"))),
        )
        .route(
            "/assets/style.css",
            get(|| asset("text/css", include_str!("../../assets/style.css"))),
        )
        .route("/category/{category}", get(category))
        .route("/fragments/card", get(card_fragment))
        .route("/plugins/{id}", get(plugin_page::page))
        .route("/events/plugins/{id}", get(plugin_page::events))
        .route("/plugins/{id}/call", post(try_it::call))
        .route("/plugins/{id}/cancel", post(try_it::cancel))
        .route("/plugins/{id}/config", get(config_page).post(config_submit))
        .route("/plugins/{id}/config/delete", post(config_delete))
        .route("/plugins/{id}/start", post(|s, p, h, f| lifecycle(s, p, h, f, "start")))
        .route("/plugins/{id}/stop", post(|s, p, h, f| lifecycle(s, p, h, f, "stop")))
        .route(
            "/plugins/{id}/restart",
            post(|s, p, h, f| lifecycle(s, p, h, f, "restart")),
        )
        .route("/plugins/{id}/logs", get(logs::tail))
        .route("/plugins/{id}/logs/download", get(logs::download))
        .route("/events/plugins/{id}/logs", get(logs::follow))
        .route("/running", get(running))
        .route("/cost", get(cost_page))
        .route("/events/running", get(running_events))
        .with_state(state)
}

async fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "max-age=3600")],
        body,
    )
        .into_response()
}

fn csrf_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix("plugboard_csrf=").map(str::to_owned))
        .find(|t| csrf::verify(t))
}

/// The request's CSRF token when its cookie holds one this process signed,
/// else a fresh signed one and the cookie to set.
pub(crate) fn csrf(headers: &HeaderMap) -> (String, Option<HeaderValue>) {
    match csrf_cookie(headers) {
        Some(t) => (t, None),
        None => {
            let t = csrf::issue();
            let cookie = HeaderValue::from_str(&format!("{CSRF_COOKIE}={t}; Path=/; SameSite=Strict; HttpOnly")).ok();
            (t, cookie)
        }
    }
}

pub(crate) fn page(headers: &HeaderMap, title: &str, active: &str, body: impl FnOnce(&str) -> Markup) -> Response {
    let (token, set) = csrf(headers);
    let mut resp = Html(pages::layout(title, active, body(&token)).into_string()).into_response();
    if let Some(c) = set {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

fn fragment(m: Markup) -> Response {
    Html(m.into_string()).into_response()
}

/// An HTML error page.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Html(pages::error_page(status.as_u16(), &message.into()).into_string()),
    )
        .into_response()
}

pub(crate) fn host_error(e: HostError) -> Response {
    let status = match e {
        HostError::UnknownPlugin { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, crate::api::ApiError::from(e).to_string())
}

/// Checks a form POST: sent from this server's origin (or with neither
/// `Origin` nor `Referer`), with a token this process signed that equals
/// the cookie.
pub(crate) fn check_csrf(headers: &HeaderMap, form: &[(String, String)]) -> Result<(), Box<Response>> {
    let given = form.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str());
    check_token(headers, given).map_err(|why| Box::new(error(StatusCode::FORBIDDEN, why)))
}

/// The header in which the dashboard's scripts send their CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Checks a state change: sent from this server's origin (or with neither
/// `Origin` nor `Referer`), with `given`, a token this process signed that
/// equals the cookie. `Err` says why not.
pub(crate) fn check_token(headers: &HeaderMap, given: Option<&str>) -> Result<(), String> {
    if let Some(why) = csrf::foreign_origin(headers) {
        return Err(format!("{why}; nothing was changed"));
    }
    match (csrf_cookie(headers), given) {
        (Some(c), Some(g)) if csrf::verify(g) && constant_time_eq(c.as_bytes(), g.as_bytes()) => Ok(()),
        _ => Err("this request has no valid CSRF token (reload the page and try again); nothing was changed".into()),
    }
}

async fn overview(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    let plugins = s.host.plugins();
    let (cats, stats) = s.host.with_registry(|r| {
        let cats: Vec<(String, String, usize)> = r
            .categories_with_plugins()
            .into_iter()
            .map(|c| {
                let n = r.plugins_by_category(&c).len();
                (c.clone(), r.category_display_name(&c), n)
            })
            .collect();
        (cats, plugin_stats(r.all_plugins()))
    });
    let mut stats = stats;
    stats.with_active_resources = plugins.iter().filter(|p| p.metadata.has_active_resources()).count();
    let problems = s.host.problems();
    page(&headers, "Overview", "overview", |_| {
        pages::overview(&cats, &stats, &problems)
    })
}

/// The saved config as stored (no defaults): a file read under the
/// registry lock, nothing that depends on the schema's shape.
fn saved_of(s: &ApiState, id: &str) -> Map<String, Value> {
    s.host.with_registry(|r| r.config_store().load(id)).unwrap_or_default()
}

/// The config to show on a card: saved values, the form's defaults (the
/// form is bounded in size, and built outside every lock), secrets hidden.
pub(crate) fn card_config(s: &ApiState, p: &PluginInfo) -> Map<String, Value> {
    let schema = &p.metadata.config_schema;
    let fields = form::fields(schema);
    form::redact(schema, &form::with_defaults(&fields, &saved_of(s, &p.unique_id))).config
}

/// Plugins per category page unless `per` says otherwise, and the most it may say.
const PER_PAGE: usize = 25;
const MAX_PER_PAGE: usize = 500;

#[derive(Deserialize)]
struct CategoryQuery {
    #[serde(default)]
    q: String,
    page: Option<usize>,
    per: Option<usize>,
}

/// A category, one page at a time (`?q=` filters, `?page=`, `?per=`): a
/// category of any size renders only its page.
async fn category(
    State(s): State<ApiState>,
    Path(cat): Path<String>,
    Query(query): Query<CategoryQuery>,
    headers: HeaderMap,
) -> Response {
    if query.q.len() > 200 {
        return error(StatusCode::BAD_REQUEST, "the search text is longer than 200 bytes");
    }
    let per = query.per.unwrap_or(PER_PAGE).clamp(1, MAX_PER_PAGE);
    let page_no = query.page.unwrap_or(1).max(1);
    let offset = (page_no - 1).saturating_mul(per);
    let (plugins, total) = s.host.plugins_page(&cat, &query.q, offset, per);
    if total == 0 && query.q.is_empty() {
        return error(StatusCode::NOT_FOUND, format!("no plugins in category {cat:?}"));
    }
    let name = s.host.with_registry(|r| r.category_display_name(&cat));
    let config = plugins.first().map(|p| card_config(&s, p)).unwrap_or_default();
    let paging = pages::Pager {
        category: cat.clone(),
        q: query.q,
        page: page_no,
        per,
        total,
    };
    page(&headers, &name, "overview", |_| {
        pages::category(&name, &plugins, plugins.first(), &config, &paging)
    })
}

#[derive(Deserialize)]
struct CardQuery {
    id: String,
}

async fn card_fragment(State(s): State<ApiState>, Query(q): Query<CardQuery>) -> Response {
    match s.host.plugin(&q.id) {
        Ok(p) => {
            let config = card_config(&s, &p);
            fragment(pages::card(&p, &config))
        }
        Err(e) => host_error(e),
    }
}

#[derive(Deserialize)]
struct ConfigQuery {
    #[serde(default)]
    defaults: Option<String>,
    #[serde(default)]
    saved: Option<String>,
}

async fn config_page(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<ConfigQuery>,
    headers: HeaderMap,
) -> Response {
    let p = match s.host.plugin(&id) {
        Ok(p) => p,
        Err(e) => return host_error(e),
    };
    let schema = &p.metadata.config_schema;
    let fields = form::fields(schema);
    let saved = form::redact(schema, &saved_of(&s, &id));
    // Inputs show their defaults where no value is saved.
    let values = if q.defaults.is_some() {
        form::Redacted::default()
    } else {
        saved.clone()
    };
    page(
        &headers,
        &format!("Configure {}", p.metadata.title),
        "overview",
        |csrf| {
            pages::config_form(&pages::ConfigView {
                plugin: &p,
                fields: &fields,
                values: &values.config,
                saved_config: &saved.config,
                errors: &BTreeMap::new(),
                general: &[],
                csrf,
                saved_notice: q.saved.is_some(),
            })
        },
    )
}

async fn config_submit(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form_pairs): Form<Vec<(String, String)>>,
) -> Response {
    if let Err(r) = check_csrf(&headers, &form_pairs) {
        return *r;
    }
    let p = match s.host.plugin(&id) {
        Ok(p) => p,
        Err(e) => return host_error(e),
    };
    let schema = &p.metadata.config_schema;
    let fields = form::fields(schema);
    let saved_raw = saved_of(&s, &id);
    let (config, mut errors) = form::config_from_form(&fields, &form_pairs, &saved_raw);
    let mut general = Vec::new();
    if errors.is_empty() {
        match s.host.save_config(&id, &config) {
            Ok(()) => return Redirect::to(&format!("/plugins/{id}/config?saved=1")).into_response(),
            Err(plugboard_core::ConfigError::Invalid { violations, .. }) => {
                for v in violations {
                    let path = form::field_of(&v.pointer, &v.reason);
                    match form::find_field(&fields, &path) {
                        Some(f) if f.is_secret() => {
                            errors.entry(f.path.clone()).or_insert_with(|| {
                                "the value does not fit the schema (not shown: it is a secret)".into()
                            });
                        }
                        Some(f) if f.path == path => {
                            errors.entry(f.path.clone()).or_insert(v.reason);
                        }
                        Some(f) => {
                            errors.entry(f.path.clone()).or_insert_with(|| v.to_string());
                        }
                        None => general.push(v.to_string()),
                    }
                }
            }
            Err(e) => general.push(e.to_string()),
        }
    }
    // Nothing rendered below holds a secret: values are redacted, messages scrubbed.
    let saved = form::redact(schema, &saved_raw);
    let shown = form::redact(schema, &config).also(&saved);
    for m in errors.values_mut() {
        *m = form::scrub(m, &shown.secrets);
    }
    for m in &mut general {
        *m = form::scrub(m, &shown.secrets);
    }
    let (token, _) = csrf(&headers);
    let mut resp = Html(
        pages::layout(
            &format!("Configure {}", p.metadata.title),
            "overview",
            pages::config_form(&pages::ConfigView {
                plugin: &p,
                fields: &fields,
                values: &shown.config,
                saved_config: &saved.config,
                errors: &errors,
                general: &general,
                csrf: &token,
                saved_notice: false,
            }),
        )
        .into_string(),
    )
    .into_response();
    *resp.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    resp
}

async fn config_delete(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form_pairs): Form<Vec<(String, String)>>,
) -> Response {
    if let Err(r) = check_csrf(&headers, &form_pairs) {
        return *r;
    }
    if let Err(e) = s.host.manifest(&id) {
        return host_error(e);
    }
    match s.host.delete_config(&id) {
        Ok(_) => Redirect::to(&format!("/plugins/{id}/config")).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn lifecycle(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form_pairs): Form<Vec<(String, String)>>,
    verb: &'static str,
) -> Response {
    if let Err(r) = check_csrf(&headers, &form_pairs) {
        return *r;
    }
    let result = match verb {
        "start" => s.host.start(&id).await,
        "stop" => s.host.stop(&id).await,
        _ => s.host.restart(&id).await,
    };
    // Forms on the plugin page come back to it; the others go to the running list.
    let back_to_plugin = form_pairs.iter().any(|(k, v)| k == "back" && v == "plugin");
    match result {
        Ok(_) if back_to_plugin => Redirect::to(&format!("/plugins/{id}")).into_response(),
        Ok(_) => Redirect::to("/running").into_response(),
        Err(HostError::UnknownPlugin { .. }) => error(StatusCode::NOT_FOUND, format!("unknown plugin {id:?}")),
        Err(e) if back_to_plugin => {
            let msg = crate::api::ApiError::from(e).to_string();
            let mut resp = plugin_page::render(&s, &id, &headers, Some(&msg)).await;
            *resp.status_mut() = StatusCode::BAD_GATEWAY;
            resp
        }
        Err(e) => {
            let msg = crate::api::ApiError::from(e).to_string();
            let rows = running_rows(&s);
            let (token, _) = csrf(&headers);
            let body = pages::running(pages::running_fragment(&rows, &token, now_ms()), Some(&msg));
            let mut resp = Html(pages::layout("Running", "running", body).into_string()).into_response();
            *resp.status_mut() = StatusCode::BAD_GATEWAY;
            resp
        }
    }
}

pub(crate) fn running_rows(s: &ApiState) -> Vec<pages::RunningRow> {
    let live = s.host.supervisor().with_ledger(|l| l.live()).unwrap_or_default();
    s.host
        .plugins()
        .into_iter()
        .map(|info| {
            let status = s.host.status(&info.unique_id);
            let pids = info.metadata.spawned_pids.clone();
            let row = live.iter().rev().find(|r| r.plugin_id == info.unique_id).cloned();
            pages::RunningRow {
                info,
                status,
                pids,
                row,
            }
        })
        .collect()
}

async fn cost_page(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    let now = now_ms();
    let report = s.host.cost_report(None, 1.0);
    let budgets = s.host.budget_status();
    let series = s.host.spend_series(now - 24 * 3_600_000, 49);
    let error = [
        report.as_ref().err().map(ToString::to_string),
        budgets.as_ref().err().map(ToString::to_string),
        series.as_ref().err().map(ToString::to_string),
    ]
    .into_iter()
    .flatten()
    .next();
    let report = report.unwrap_or_else(|_| plugboard_host::cost::report(&[], None, now, 1.0));
    let budgets = budgets.unwrap_or_default();
    let series = series.unwrap_or_default();
    let secrets_path = s.host.config().data.secrets_path();
    let (keys, keys_error) = match tokio::task::spawn_blocking(move || {
        plugboard_host::secrets::SecretStore::open(secrets_path).map(|st| plugboard_host::secrets::statuses(Some(&st)))
    })
    .await
    {
        Ok(Ok(k)) => (k, None),
        Ok(Err(e)) => (plugboard_host::secrets::statuses(None), Some(e.to_string())),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let error = error.or(keys_error);
    page(&headers, "Cost", "cost", |_| {
        cost::page(&report, &budgets, &series, &keys, error.as_deref())
    })
}

async fn running(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    let rows = running_rows(&s);
    page(&headers, "Running", "running", |csrf| {
        pages::running(pages::running_fragment(&rows, csrf, now_ms()), None)
    })
}

async fn running_events(State(s): State<ApiState>, headers: HeaderMap) -> impl IntoResponse {
    let (token, _) = csrf(&headers);
    let interval = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(Duration::from_secs(1)));
    let shutdown = s.shutdown.clone();
    let stream = interval.map(move |_| {
        let rows = running_rows(&s);
        let html = pages::running_fragment(&rows, &token, now_ms()).into_string();
        Ok::<Event, Infallible>(Event::default().event("running").data(html))
    });
    // The stream ends when the server shuts down, so it never holds shutdown up.
    Sse::new(UntilShutdown::new(stream, shutdown)).keep_alive(KeepAlive::default())
}

/// A stream that ends when the server shuts down.
pub(crate) struct UntilShutdown<S> {
    inner: S,
    stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    done: bool,
}

impl<S> UntilShutdown<S> {
    pub(crate) fn new(inner: S, shutdown: crate::api::Shutdown) -> Self {
        UntilShutdown {
            inner,
            stop: Box::pin(shutdown.wait()),
            done: false,
        }
    }
}

impl<S: tokio_stream::Stream + Unpin> tokio_stream::Stream for UntilShutdown<S> {
    type Item = S::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<S::Item>> {
        if self.done || self.stop.as_mut().poll(cx).is_ready() {
            self.done = true;
            return std::task::Poll::Ready(None);
        }
        std::pin::Pin::new(&mut self.inner).poll_next(cx)
    }
}
