//! The plugin page's call panel: a JSON editor pre-filled with the plugin's
//! input example, Run, progress as it arrives, Cancel, and the output or the
//! worker's error with the call's duration.
//!
//! Calls go through the host's [`plugboard_host::PluginHandle`], the same one
//! the CLI's `plugboard call` uses (through the API). Routes:
//!
//! * `POST /plugins/{id}/call`, `Content-Type: application/json`, body
//!   `{"input": any}`, CSRF token in the `X-CSRF-Token` header: an NDJSON
//!   stream: `{"type": "started", "request_id"}`, the protocol's `progress`
//!   and `log` events as they arrive, then `{"type": "result", "output",
//!   "duration_ms"}` or `{"type": "error", "error": {"code", "message"},
//!   "duration_ms"}`. Refusals before the call are `{"error": {"code",
//!   "message"}}`: 413 `too_large` (input over [`MAX_CALL_INPUT_BYTES`]),
//!   403 `csrf`, 404 `not_found`, 400 `bad_json`, 422 `bad_body`, 415
//!   `json_required`, 409 `not_running`.
//! * The same path with a form (`input`, `csrf`): what a browser without
//!   JavaScript sends; answers a page with the output.
//! * `POST /plugins/{id}/cancel`, body `{"request_id"}`, same header:
//!   `{"cancelled": bool}`.
//!
//! A call lasts at most [`CALL_TIMEOUT`]; then, or when the browser goes
//! away, or when the host shuts down, the call is cancelled.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::{Form, Json};
use maud::{Markup, html};
use plugboard_host::{CallError, HostError, Manifest, PluginHandle};
use plugboard_protocol::{Capabilities, StreamEvent};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::plugin_page::StateView;
use super::{CSRF_HEADER, check_csrf, check_token, csrf, error};
use crate::api::{ApiError, ApiState};

/// The largest call input the dashboard sends, in bytes (1 MiB).
pub const MAX_CALL_INPUT_BYTES: usize = 1024 * 1024;
/// How long a call from the dashboard may run before it is cancelled.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the page waits for a running worker's manifest (its input
/// example and capabilities).
pub const MANIFEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest request id a cancel accepts.
const MAX_REQUEST_ID: usize = 200;

/// Where the panel's starting input came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExampleSource {
    /// The plugin.toml's `[examples] input`.
    Manifest,
    /// The running worker's manifest (`input_example`).
    Worker,
    /// Neither gives one: `{}`.
    None,
}

/// What the call panel needs besides the plugin's state.
#[derive(Debug, Clone)]
pub struct PanelInfo {
    /// The input the editor starts with.
    pub example: Value,
    /// Where it came from.
    pub source: ExampleSource,
    /// The running worker's capabilities, when it answered in time.
    pub capabilities: Option<Capabilities>,
}

impl PanelInfo {
    /// The example (plugin.toml first, then a running worker's manifest,
    /// asked for at most [`MANIFEST_TIMEOUT`]) and capabilities.
    pub async fn gather(s: &ApiState, manifest: &Manifest, running: bool) -> PanelInfo {
        let worker = match running.then(|| s.host.handle(&manifest.unique_id())) {
            Some(Ok(h)) => tokio::time::timeout(MANIFEST_TIMEOUT, h.manifest())
                .await
                .ok()
                .and_then(Result::ok),
            _ => None,
        };
        let from_worker = worker.as_ref().and_then(|w| w.input_example.clone());
        let (example, source) = match (&manifest.examples.input, from_worker) {
            (Some(v), _) => (v.clone(), ExampleSource::Manifest),
            (None, Some(v)) => (v, ExampleSource::Worker),
            (None, None) => (json!({}), ExampleSource::None),
        };
        PanelInfo {
            example,
            source,
            capabilities: worker.map(|w| w.capabilities),
        }
    }
}

/// The call panel.
pub fn panel(v: &StateView, p: &PanelInfo, csrf: &str) -> Markup {
    let id = &v.info.unique_id;
    let running = v.state() == "running";
    let example = serde_json::to_string_pretty(&p.example).unwrap_or_else(|_| "{}".into());
    html! {
        section.card.panel id="try-it" data-plugin=(id) data-csrf=(csrf) {
            h2 { "Try it" }
            form id="call-form" method="post" action={ "/plugins/" (id) "/call" } {
                input type="hidden" name="csrf" value=(csrf);
                label for="call-input" { "Input (JSON)" }
                textarea id="call-input" name="input" rows="8" spellcheck="false" autocomplete="off" { (example) }
                p.help id="input-check" aria-live="polite" {
                    @match p.source {
                        ExampleSource::Manifest => "Example input from the plugin.toml's [examples].",
                        ExampleSource::Worker => "Example input from the worker's manifest.",
                        ExampleSource::None => "This plugin gives no example input.",
                    }
                }
                div.actions {
                    button.primary type="submit" id="run" { "Run" }
                    button type="button" id="cancel" hidden { "Cancel" }
                    @if let Some(c) = &p.capabilities {
                        span.muted id="call-caps" {
                            @if c.streaming { "streams progress" } @else { "no progress events" }
                            " · "
                            @if c.cancel { "can be cancelled" } @else { "cannot be cancelled" }
                        }
                    }
                }
            }
            div.notice.warn id="call-not-running" hidden[running] {
                "This plugin is not running; a call needs it started. "
                form.inline method="post" action={ "/plugins/" (id) "/start" } {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="back" value="plugin";
                    button.primary type="submit" id="call-start" { "Start it" }
                }
            }
            div.progress id="call-progress" hidden {
                progress id="progress-bar" max="1" value="0" {}
                span id="progress-message" {}
            }
            ul.events id="call-events" {}
            div id="call-result" hidden {
                p id="call-status" {}
                pre.output id="call-output" {}
            }
        }
    }
}

/// The body of a call.
#[derive(Debug, Deserialize)]
struct CallBody {
    input: Value,
}

/// The body of a cancel.
#[derive(Debug, Deserialize)]
struct CancelBody {
    request_id: String,
}

fn is_form(headers: &HeaderMap) -> bool {
    content_type(headers).starts_with("application/x-www-form-urlencoded")
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn too_large(size: usize) -> String {
    format!(
        "the call input is {size} bytes, over the dashboard's limit of {MAX_CALL_INPUT_BYTES} bytes (1 MiB); nothing was sent to the plugin"
    )
}

/// Parses a JSON body: 400 `bad_json` when it is not JSON, 422 `bad_body`
/// when it is JSON of the wrong shape.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_body", format!("{what}: {e}"))
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_json",
                format!("{what} is not JSON (line {}, column {}): {e}", e.line(), e.column()),
            )
        }
    })
}

/// The checks shared by the JSON routes: size, content type, CSRF header,
/// known plugin. Returns the body.
async fn checked_json(s: &ApiState, id: &str, req: Request) -> Result<Bytes, ApiError> {
    let headers = req.headers().clone();
    let body = Bytes::from_request(req, s)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    if body.len() > MAX_CALL_INPUT_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            too_large(body.len()),
        ));
    }
    if !content_type(&headers).starts_with("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "json_required",
            "send the call as Content-Type: application/json (or as a form)",
        ));
    }
    let token = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    check_token(&headers, token).map_err(|why| ApiError::new(StatusCode::FORBIDDEN, "csrf", why))?;
    s.host.manifest(id)?;
    Ok(body)
}

/// The handle of a running plugin (a stopped one with `[lifecycle]
/// start_on_demand` is started first); a plugin that is not running is 409
/// `not_running` with a message saying so.
async fn running_handle(s: &ApiState, id: &str) -> Result<PluginHandle, ApiError> {
    s.host.call_handle(id).await.map_err(|e| match e {
        HostError::NotRunning { .. } => ApiError::new(
            StatusCode::CONFLICT,
            "not_running",
            format!("plugin {id} is not running: start it, then run the call again"),
        ),
        e => ApiError::from(e),
    })
}

/// `(code, message)` of a failed call: the worker's own code and message
/// when it answered with an error.
fn call_error_info(e: &CallError) -> (String, String) {
    match e {
        CallError::Remote { code, message, .. } => (
            serde_json::to_value(code)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "plugin_error".into()),
            message.clone(),
        ),
        CallError::Timeout { .. } => ("timeout".into(), e.to_string()),
        _ => ("worker_error".into(), e.to_string()),
    }
}

fn ndjson(v: &Value) -> Result<Bytes, Infallible> {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Ok(Bytes::from(b))
}

fn millis(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// `POST /plugins/{id}/call`: runs a call (see the module docs).
pub async fn call(State(s): State<ApiState>, Path(id): Path<String>, req: Request) -> Response {
    if is_form(req.headers()) {
        return form_call(s, id, req).await;
    }
    match json_call(s, id, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn json_call(s: ApiState, id: String, req: Request) -> Result<Response, ApiError> {
    let body = checked_json(&s, &id, req).await?;
    let CallBody { input } = parse_json(&body, "the call body")?;
    let handle = running_handle(&s, &id).await?;
    let started = Instant::now();
    let mut stream = handle.execute_streaming(input, None).await.map_err(|e| {
        let (code, message) = call_error_info(&e);
        tracing::debug!(plugin = %id, %code, "a dashboard call failed to start");
        ApiError::new(StatusCode::BAD_GATEWAY, "worker_error", format!("{code}: {message}"))
    })?;
    let rid = stream.request_id().to_owned();
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let shutdown = s.shutdown.clone();
    tokio::spawn(async move {
        if tx
            .send(ndjson(&json!({"type": "started", "request_id": rid})))
            .await
            .is_err()
        {
            let _ = handle.cancel(&rid).await;
            return;
        }
        let deadline = tokio::time::sleep(CALL_TIMEOUT);
        tokio::pin!(deadline);
        let stop = shutdown.wait();
        tokio::pin!(stop);
        loop {
            let ev = tokio::select! {
                ev = stream.next() => ev,
                _ = tx.closed() => {
                    // The browser went away: the call has no one to answer.
                    let _ = handle.cancel(&rid).await;
                    return;
                }
                _ = &mut deadline => {
                    let _ = handle.cancel(&rid).await;
                    let msg = format!("the call ran longer than {} s and was cancelled", CALL_TIMEOUT.as_secs());
                    let _ = tx.send(ndjson(&json!({"type": "error", "error": {"code": "timeout", "message": msg}, "duration_ms": millis(started)}))).await;
                    return;
                }
                _ = &mut stop => {
                    let _ = handle.cancel(&rid).await;
                    let _ = tx.send(ndjson(&json!({"type": "error", "error": {"code": "shutting_down", "message": "the host is shutting down; the call was cancelled"}, "duration_ms": millis(started)}))).await;
                    return;
                }
            };
            let ms = millis(started);
            let (line, last) = match ev {
                None => (
                    json!({"type": "error", "error": {"code": "worker_error", "message": "the call ended without a result"}, "duration_ms": ms}),
                    true,
                ),
                Some(Ok(StreamEvent::Result { output })) => {
                    (json!({"type": "result", "output": output, "duration_ms": ms}), true)
                }
                Some(Ok(StreamEvent::Error { error })) => {
                    (json!({"type": "error", "error": error, "duration_ms": ms}), true)
                }
                Some(Ok(ev)) => (serde_json::to_value(&ev).unwrap_or(Value::Null), false),
                Some(Err(e)) => {
                    let (code, message) = call_error_info(&e);
                    (
                        json!({"type": "error", "error": {"code": code, "message": message}, "duration_ms": ms}),
                        true,
                    )
                }
            };
            if tx.send(ndjson(&line)).await.is_err() {
                if !last {
                    let _ = handle.cancel(&rid).await;
                }
                return;
            }
            if last {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

/// `POST /plugins/{id}/cancel`: asks the plugin to cancel a call.
pub async fn cancel(State(s): State<ApiState>, Path(id): Path<String>, req: Request) -> Response {
    let run = async {
        let body = checked_json(&s, &id, req).await?;
        let CancelBody { request_id } = parse_json(&body, "the cancel body")?;
        if request_id.is_empty() || request_id.len() > MAX_REQUEST_ID {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_body",
                format!("request_id must be 1 to {MAX_REQUEST_ID} characters"),
            ));
        }
        let handle = running_handle(&s, &id).await?;
        let cancelled = handle.cancel(&request_id).await.map_err(ApiError::from)?;
        Ok(Json(json!({"cancelled": cancelled})).into_response())
    };
    match run.await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// A call sent as a plain form (a browser without JavaScript): runs it to
/// the end and answers a page with the output or the error.
async fn form_call(s: ApiState, id: String, req: Request) -> Response {
    let headers = req.headers().clone();
    let pairs = match Form::<Vec<(String, String)>>::from_request(req, &s).await {
        Ok(Form(p)) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    if let Err(r) = check_csrf(&headers, &pairs) {
        return *r;
    }
    let p = match s.host.plugin(&id) {
        Ok(p) => p,
        Err(e) => return super::host_error(e),
    };
    let text = pairs.iter().find(|(k, _)| k == "input").map_or("", |(_, v)| v.as_str());
    let title = format!("Call {}", p.metadata.title);
    let (token, _) = csrf(&headers);
    let answer = |status: StatusCode, body: Markup| {
        let page = super::pages::layout(
            &title,
            "overview",
            html! {
                h1 { "Call " (p.metadata.title) }
                p { a href={ "/plugins/" (id) } { "Back to the plugin" } }
                (body)
                h2 { "Input" }
                pre.output { (text) }
            },
        );
        (status, Html(page.into_string())).into_response()
    };
    if text.len() > MAX_CALL_INPUT_BYTES {
        return answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            html! { p.notice.bad { (too_large(text.len())) } },
        );
    }
    let input: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let msg = format!("the input is not JSON (line {}, column {}): {e}", e.line(), e.column());
            return answer(
                StatusCode::BAD_REQUEST,
                html! { p.notice.bad id="call-error" { (msg) } },
            );
        }
    };
    let handle = match running_handle(&s, &id).await {
        Ok(h) => h,
        Err(e) => {
            return answer(
                StatusCode::CONFLICT,
                html! {
                    p.notice.bad id="call-error" { (e.to_string()) }
                    form method="post" action={ "/plugins/" (id) "/start" } {
                        input type="hidden" name="csrf" value=(token);
                        input type="hidden" name="back" value="plugin";
                        button.primary type="submit" { "Start it" }
                    }
                },
            );
        }
    };
    let started = Instant::now();
    let result = match handle.execute_streaming(input, None).await {
        Ok(stream) => {
            let rid = stream.request_id().to_owned();
            let r = tokio::time::timeout(CALL_TIMEOUT, stream.finish(|_| {})).await;
            if r.is_err() {
                let _ = handle.cancel(&rid).await;
            }
            r
        }
        Err(e) => Ok(Err(e)),
    };
    let ms = millis(started);
    match result {
        Ok(Ok(output)) => answer(
            StatusCode::OK,
            html! {
                p.notice.ok id="call-status" { "Done in " (ms) " ms." }
                pre.output id="call-output" { (serde_json::to_string_pretty(&output).unwrap_or_default()) }
            },
        ),
        Ok(Err(e)) => {
            let (code, message) = call_error_info(&e);
            answer(
                StatusCode::BAD_GATEWAY,
                html! { p.notice.bad id="call-error" { "Failed after " (ms) " ms: " code { (code) } " " (message) } },
            )
        }
        Err(_) => answer(
            StatusCode::GATEWAY_TIMEOUT,
            html! { p.notice.bad id="call-error" { "No answer within " (CALL_TIMEOUT.as_secs()) " s." } },
        ),
    }
}
