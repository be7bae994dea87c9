//! The host API: JSON over HTTP, served on a 0600 Unix socket in the data
//! dir (what the CLI uses) and optionally on a TCP address (loopback by
//! default; a token is required for anything wider). docs/host-api.md is the
//! reference.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use plugboard_core::ConfigError;
use plugboard_host::{CallError, Host, HostError};
use plugboard_protocol::StreamEvent;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

/// How long a client may take to send a request's body once its head has
/// arrived, by default; slower requests are answered 408 and closed.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The host.
    pub host: Arc<Host>,
    /// Token required on TCP requests (`None`: none required).
    pub token: Option<String>,
    /// Resolves when the server shuts down; long-lived answers (event
    /// streams) end then.
    pub shutdown: Shutdown,
    /// How long a request's body may take to arrive.
    pub body_read_timeout: Duration,
}

impl ApiState {
    /// The state of a server for `host`, with an optional TCP token, that
    /// never shuts down on its own ([`crate::serve`] gives its own signal).
    pub fn new(host: Arc<Host>, token: Option<String>) -> Self {
        ApiState {
            host,
            token,
            shutdown: Shutdown::default(),
            body_read_timeout: BODY_READ_TIMEOUT,
        }
    }
}

/// A shutdown signal that handlers can wait for.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

impl Default for Shutdown {
    /// A signal that never fires.
    fn default() -> Self {
        Shutdown(watch::channel(false).1)
    }
}

impl Shutdown {
    /// A signal and the sender that fires it (send `true`).
    pub fn channel() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown(rx))
    }

    /// True once the signal fired.
    pub fn fired(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when the signal fires (never, if its sender is gone first).
    pub async fn wait(mut self) {
        if self.0.wait_for(|v| *v).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// An API error: an HTTP status and `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Option<Value>,
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

impl From<HostError> for ApiError {
    fn from(e: HostError) -> Self {
        let (status, code) = match &e {
            HostError::UnknownPlugin { .. } => (StatusCode::NOT_FOUND, "not_found"),
            HostError::AlreadyRunning { .. } => (StatusCode::CONFLICT, "already_running"),
            HostError::NotRunning { .. } => (StatusCode::CONFLICT, "not_running"),
            HostError::Config {
                source: ConfigError::Invalid { violations, .. },
                ..
            } => {
                let mut err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_config", chain(&e));
                err.details = Some(json!({ "violations": violations }));
                return err;
            }
            HostError::UnsupportedMode { .. }
            | HostError::MissingLaunch { .. }
            | HostError::NoProtocol { .. }
            | HostError::NoInProcessCode { .. }
            | HostError::UndefinedVariable { .. }
            | HostError::BadLaunch { .. }
            | HostError::BadEndpoint { .. }
            | HostError::MissingSecret { .. }
            | HostError::CondaNotFound { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "cannot_start"),
            HostError::ExitedBeforeReady { .. }
            | HostError::ReadyTimeout { .. }
            | HostError::ProvisionTimeout { .. }
            | HostError::Spawn { .. }
            | HostError::Remote { .. }
            | HostError::Cloud { .. } => (StatusCode::BAD_GATEWAY, "start_failed"),
            HostError::StoppedDuringStart { .. } => (StatusCode::CONFLICT, "stopped_during_start"),
            HostError::BudgetRefused { .. } => (StatusCode::FORBIDDEN, "budget_exceeded"),
            HostError::Budgets { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "budgets_unreadable"),
            HostError::Lost { .. } => (StatusCode::SERVICE_UNAVAILABLE, "lost"),
            HostError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            HostError::StopUnconfirmed { .. } => (StatusCode::BAD_GATEWAY, "stop_unconfirmed"),
            HostError::Worker { .. } => (StatusCode::BAD_GATEWAY, "worker_error"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "host_error"),
        };
        ApiError::new(status, code, chain(&e))
    }
}

impl From<ConfigError> for ApiError {
    fn from(e: ConfigError) -> Self {
        match &e {
            ConfigError::Invalid { violations, .. } => {
                let mut err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_config", e.to_string());
                err.details = Some(json!({ "violations": violations }));
                err
            }
            ConfigError::InvalidId(_) => ApiError::new(StatusCode::BAD_REQUEST, "bad_id", e.to_string()),
            ConfigError::TooLarge { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", chain(&e)),
            ConfigError::Locked { .. } => ApiError::new(StatusCode::CONFLICT, "config_locked", chain(&e)),
            ConfigError::NotAFile { .. } => ApiError::new(StatusCode::CONFLICT, "config_not_a_file", chain(&e)),
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "config_error", chain(&e)),
        }
    }
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        match &e {
            CallError::Remote { status, .. } => ApiError::new(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
                "plugin_error",
                e.to_string(),
            ),
            CallError::Timeout { .. } => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "timeout", e.to_string()),
            _ => ApiError::new(StatusCode::BAD_GATEWAY, "worker_error", e.to_string()),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": {"code": self.code, "message": self.message}});
        if let (Some(Value::Object(m)), Some(err)) =
            (self.details, body.get_mut("error").and_then(Value::as_object_mut))
        {
            err.extend(m);
        }
        (self.status, Json(body)).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(v: impl serde::Serialize) -> ApiResult {
    Ok(Json(v).into_response())
}

/// The code of an error answer with this status (for rejections that have
/// no code of their own).
fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "timeout",
        413 => "too_large",
        415 => "json_required",
        422 => "bad_body",
        s if s >= 500 => "internal_error",
        _ => "error",
    }
}

/// A JSON request body whose rejections are the API's JSON errors: 400
/// `bad_json` (not JSON), 422 `bad_body` (JSON of the wrong shape), 415
/// `json_required`, 413 `too_large`.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        use axum::extract::rejection::JsonRejection;
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(r) => {
                let code = match &r {
                    JsonRejection::JsonSyntaxError(_) => "bad_json",
                    JsonRejection::JsonDataError(_) => "bad_body",
                    JsonRejection::MissingJsonContentType(_) => "json_required",
                    _ => code_for(r.status()),
                };
                Err(ApiError::new(r.status(), code, r.body_text()))
            }
        }
    }
}

/// A query string whose rejection is the API's 400 `bad_query`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(r) => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_query", r.body_text())),
        }
    }
}

/// Path parameters whose rejection is the API's 400 `bad_path`.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(r) => {
                let status = if r.status().is_server_error() {
                    r.status()
                } else {
                    StatusCode::BAD_REQUEST
                };
                Err(ApiError::new(status, "bad_path", r.body_text()))
            }
        }
    }
}

/// The API routes under `/api/v1`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/plugins", get(list))
        .route("/api/v1/plugins/{id}", get(show))
        .route(
            "/api/v1/plugins/{id}/config",
            get(get_config).put(put_config).delete(delete_config),
        )
        .route("/api/v1/plugins/{id}/start", post(start))
        .route("/api/v1/plugins/{id}/stop", post(stop))
        .route("/api/v1/plugins/{id}/restart", post(restart))
        .route("/api/v1/plugins/{id}/status", get(status))
        .route("/api/v1/plugins/{id}/logs", get(logs))
        .route("/api/v1/plugins/{id}/call", post(call))
        .route("/api/v1/plugins/{id}/cancel", post(cancel))
        .route("/api/v1/ps", get(ps))
        .route("/api/v1/problems", get(problems))
        .route("/api/v1/cost", get(cost))
        .route("/api/v1/budgets", get(budgets))
        .route("/api/v1/secrets", get(secrets))
        .with_state(state)
}

/// The whole app: the API, the dashboard, origin checks, token checks on
/// TCP, body limits and timeouts, and JSON errors for every rejection under
/// `/api/`.
pub fn app(state: ApiState) -> Router {
    router(state.clone())
        .merge(crate::dashboard::router(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), read_body))
        .layer(axum::middleware::from_fn_with_state(state, auth))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::extract::DefaultBodyLimit::max(
            plugboard_protocol::MAX_REQUEST_BYTES,
        ))
}

fn is_api(uri: &axum::http::Uri) -> bool {
    uri.path().starts_with("/api/")
}

async fn not_found(uri: axum::http::Uri) -> Response {
    if is_api(&uri) {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such endpoint: {}", uri.path()),
        )
        .into_response()
    } else {
        crate::dashboard::error(StatusCode::NOT_FOUND, format!("no page at {}", uri.path()))
    }
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let message = format!("{method} is not allowed on {}", uri.path());
    if is_api(&uri) {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", message).into_response()
    } else {
        crate::dashboard::error(StatusCode::METHOD_NOT_ALLOWED, message)
    }
}

/// Reads the whole body (bounded in size and in time) before the handlers
/// run, so a client that trickles a body cannot hold a handler forever.
async fn read_body(State(state): State<ApiState>, req: Request, next: axum::middleware::Next) -> Response {
    let (parts, body) = req.into_parts();
    let limit = plugboard_protocol::MAX_REQUEST_BYTES;
    let wait = state.body_read_timeout;
    let bytes = match tokio::time::timeout(wait, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            let mut resp = if too_large {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the request body is over {limit} bytes"),
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("cannot read the request body: {e}"),
                )
            }
            .into_response();
            resp.headers_mut()
                .insert(header::CONNECTION, axum::http::HeaderValue::from_static("close"));
            return resp;
        }
        Err(_) => {
            let mut resp = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!("the request body did not arrive within {wait:?}"),
            )
            .into_response();
            resp.headers_mut()
                .insert(header::CONNECTION, axum::http::HeaderValue::from_static("close"));
            return resp;
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// Under `/api/`, an error answer that is not JSON yet (a rejection of an
/// extractor that has no JSON form) becomes `{"error": {"code", "message"}}`.
async fn json_errors(req: Request, next: axum::middleware::Next) -> Response {
    let api = is_api(req.uri());
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !api || is_json || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    let json = ApiError::new(status, code_for(status), message).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, json.into_body())
}

/// Marks requests that arrived over TCP, where the token applies.
#[derive(Clone, Copy, Debug)]
pub struct OverTcp;

async fn auth(State(state): State<ApiState>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    // Whatever the transport: a state change sent from another origin is refused.
    if crate::csrf::changes_state(req.method())
        && let Some(why) = crate::csrf::foreign_origin(req.headers())
    {
        return ApiError::new(StatusCode::FORBIDDEN, "foreign_origin", why).into_response();
    }
    if req.extensions().get::<OverTcp>().is_some()
        && let Some(refusal) = tcp_guard(&state, &req)
    {
        return refusal.into_response();
    }
    if req.extensions().get::<OverTcp>().is_some()
        && let Some(token) = &state.token
    {
        // A browser's first visit: ?token=T sets an HttpOnly cookie.
        let query_token = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
        if let Some(q) = query_token
            && constant_time_eq(q.as_bytes(), token.as_bytes())
        {
            let cookie = format!("plugboard_token={token}; Path=/; SameSite=Strict; HttpOnly");
            let mut resp = axum::response::Redirect::to(req.uri().path()).into_response();
            if let Ok(v) = axum::http::HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(axum::http::header::SET_COOKIE, v);
            }
            return resp;
        }
        let ok = bearer(req.headers()).is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()))
            || cookie_token(req.headers()).is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes()));
        if !ok {
            return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong token").into_response();
        }
    }
    next.run(req).await
}

/// Checks that hold on TCP whatever the token: without a token, only a
/// loopback `Host` is served (a page on another site that rebinds its DNS
/// name to 127.0.0.1 sends its own name and is refused); API requests that
/// change state must be JSON (a cross-site form cannot send that without a
/// preflight that is never granted).
fn tcp_guard(state: &ApiState, req: &axum::extract::Request) -> Option<ApiError> {
    if state.token.is_none() {
        let host = req
            .headers()
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host.split(':').next().unwrap_or(""),
        };
        if !matches!(name, "localhost" | "127.0.0.1" | "::1") {
            return Some(ApiError::new(
                StatusCode::FORBIDDEN,
                "bad_host",
                format!("refusing Host {host:?}: without a token this server only answers to localhost"),
            ));
        }
    }
    if crate::csrf::changes_state(req.method()) && is_api(req.uri()) {
        let json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !json {
            return Some(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "json_required",
                "API requests that change state must have Content-Type: application/json",
            ));
        }
    }
    None
}

/// The bearer token of a request.
pub fn bearer(h: &HeaderMap) -> Option<&str> {
    h.get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// The `plugboard_token` cookie of a request.
pub fn cookie_token(h: &HeaderMap) -> Option<&str> {
    h.get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("plugboard_token="))
}

/// Compares secrets without an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn health(State(s): State<ApiState>) -> ApiResult {
    ok(json!({
        "status": "ok",
        "pid": std::process::id(),
        "version": env!("CARGO_PKG_VERSION"),
        "data_dir": s.host.config().data.root(),
        "plugin_dirs": s.host.config().plugin_dirs,
        "config_dir": s.host.config().config_dir,
        "plugins": s.host.plugin_count(),
    }))
}

async fn list(State(s): State<ApiState>) -> ApiResult {
    ok(s.host.plugins())
}

async fn show(State(s): State<ApiState>, ApiPath(id): ApiPath<String>) -> ApiResult {
    ok(s.host.plugin(&id)?)
}

async fn get_config(State(s): State<ApiState>, ApiPath(id): ApiPath<String>) -> ApiResult {
    s.host.manifest(&id)?;
    ok(s.host.load_config(&id)?)
}

async fn put_config(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult {
    s.host.manifest(&id)?;
    let Value::Object(config) = body else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "a config must be a JSON object",
        ));
    };
    s.host.save_config(&id, &config)?;
    ok(s.host.load_config(&id)?)
}

async fn delete_config(State(s): State<ApiState>, ApiPath(id): ApiPath<String>) -> ApiResult {
    s.host.manifest(&id)?;
    ok(json!({"deleted": s.host.delete_config(&id)?}))
}

async fn start(State(s): State<ApiState>, ApiPath(id): ApiPath<String>) -> ApiResult {
    ok(s.host.start(&id).await?)
}

async fn stop(State(s): State<ApiState>, ApiPath(id): ApiPath<String>) -> ApiResult {
    ok(s.host.stop(&id).await?)
}

async fn restart(State(s): State<ApiState>, ApiPath(id): ApiPath<String>) -> ApiResult {
    ok(s.host.restart(&id).await?)
}

async fn status(State(s): State<ApiState>, ApiPath(id): ApiPath<String>) -> ApiResult {
    s.host.manifest(&id)?;
    match s.host.status(&id) {
        Some(st) => ok(st),
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_running",
            format!("plugin {id} was not started by this host"),
        )),
    }
}

#[derive(Deserialize)]
struct LogsQuery {
    lines: Option<usize>,
}

async fn logs(State(s): State<ApiState>, ApiPath(id): ApiPath<String>, ApiQuery(q): ApiQuery<LogsQuery>) -> ApiResult {
    s.host.manifest(&id)?;
    let path = s.host.config().data.log_path(&id);
    let lines = plugboard_host::logs::tail(&path, q.lines.unwrap_or(100).min(100_000)).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "io_error",
            format!("{}: {e}", path.display()),
        )
    })?;
    ok(json!({"path": path, "lines": lines}))
}

#[derive(Deserialize)]
struct CallBody {
    input: Value,
    #[serde(default)]
    request_id: Option<String>,
}

#[derive(Deserialize)]
struct CallQuery {
    #[serde(default)]
    stream: bool,
}

async fn call(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<CallQuery>,
    ApiJson(body): ApiJson<CallBody>,
) -> ApiResult {
    let handle = s.host.call_handle(&id).await?;
    if !q.stream {
        return ok(json!({"output": handle.execute(body.input).await?}));
    }
    let mut stream = handle.execute_streaming(body.input, body.request_id).await?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    tokio::spawn(async move {
        while let Some(ev) = stream.next().await {
            let ev = ev.unwrap_or_else(|e| StreamEvent::Error {
                error: plugboard_protocol::ErrorInfo {
                    code: plugboard_protocol::ErrorCode::PluginError,
                    message: e.to_string(),
                },
            });
            let mut line = serde_json::to_vec(&ev).unwrap_or_default();
            line.push(b'\n');
            if tx.send(Ok(Bytes::from(line))).await.is_err() {
                break;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}

#[derive(Deserialize)]
struct CancelBody {
    request_id: String,
}

async fn cancel(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CancelBody>,
) -> ApiResult {
    let handle = s.host.handle(&id)?;
    ok(json!({"cancelled": handle.cancel(&body.request_id).await?}))
}

async fn ps(State(s): State<ApiState>) -> ApiResult {
    let rows = s
        .host
        .supervisor()
        .with_ledger(|l| l.live())
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "ledger_error", chain(&e)))?;
    ok(rows)
}

async fn problems(State(s): State<ApiState>) -> ApiResult {
    ok(s.host.problems())
}

#[derive(Deserialize)]
struct CostQuery {
    /// `day`, `month`, `all` or `YYYY-MM-DD`.
    since: Option<String>,
    hours: Option<f64>,
}

async fn cost(State(s): State<ApiState>, ApiQuery(q): ApiQuery<CostQuery>) -> ApiResult {
    let hours = q.hours.unwrap_or(1.0);
    if !hours.is_finite() || !(0.0..=87_600.0).contains(&hours) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("hours must be between 0 and 87600, got {hours}"),
        ));
    }
    let since = match q.since.as_deref() {
        None | Some("all") => None,
        Some(p) => {
            let period: plugboard_host::budget::Period =
                p.parse().map_err(|e: plugboard_host::budget::BudgetError| {
                    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("since: {e}"))
                })?;
            Some(plugboard_host::budget::decide::period_start(
                period,
                plugboard_host::ledger::now_ms(),
            ))
        }
    };
    ok(s.host.cost_report(since, hours)?)
}

async fn budgets(State(s): State<ApiState>) -> ApiResult {
    ok(s.host.budget_status()?)
}

/// Which provider keys the host sees and where from: names only, never a
/// value (the secrets module's `statuses`).
async fn secrets(State(s): State<ApiState>) -> ApiResult {
    use plugboard_host::secrets::{self, SecretStore};
    let path = s.host.config().data.secrets_path();
    let statuses = tokio::task::spawn_blocking(move || SecretStore::open(path).map(|st| secrets::statuses(Some(&st))))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "host_error", e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "secrets_unreadable", e.to_string()))?;
    ok(statuses)
}
