//! The protocol v1 server.
//!
//! The listener is async (it waits for connections and for shutdown); each
//! connection is then served on a thread of its own ([`crate::conn`]),
//! which runs the plugin's code for the calls it reads.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http_body_util::{BodyExt, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use plugboard_protocol::{
    CallContext, CancelRequest, CancelResponse, ConfigResult, ErrorBody, ErrorCode, ExecError, ExecuteRequest,
    ExecuteResponse, Executor, Health, LISTEN_ENV, MAX_REQUEST_BYTES, PROTOCOL_VERSION, StreamEvent, TOKEN_ENV,
    VERSION_HEADER, paths,
};
use serde::Serialize;
use serde_json::Value;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Notify, mpsc};

use crate::body::{ChannelBody, ResponseBody, full};
use crate::conn::{self, Closing, Socket};

/// Connections served at once; one more is closed as soon as it is
/// accepted (each holds a thread).
pub const MAX_CONNECTIONS: usize = 512;

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// `PLUGBOARD_LISTEN` is not set.
    #[error(
        "PLUGBOARD_LISTEN is not set: a plugboard worker is started by a plugboard host, which gives it an address"
    )]
    NoAddress,
    /// The address could not be bound.
    #[error("cannot listen on {address}")]
    Bind {
        /// The address.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The async runtime could not start.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

/// Where to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A Unix socket path.
    Unix(PathBuf),
    /// A TCP address (`host:port`).
    Tcp(String),
}

impl Listen {
    /// Parses a `PLUGBOARD_LISTEN` value: `tcp://HOST:PORT`, else a socket path.
    pub fn parse(s: &str) -> Listen {
        match s.strip_prefix("tcp://") {
            Some(addr) => Listen::Tcp(addr.to_owned()),
            None => Listen::Unix(PathBuf::from(s)),
        }
    }
}

struct State {
    executor: Arc<dyn Executor>,
    token: Option<String>,
    calls: Mutex<HashMap<String, Arc<AtomicBool>>>,
    active: AtomicU32,
    shutdown: Notify,
    closing: Closing,
    connections: AtomicUsize,
}

/// A configured server: an executor, an address and an optional token.
pub struct Server {
    state: Arc<State>,
    listen: Listen,
}

impl Server {
    /// A server for `executor` on `listen`, requiring `token` when given.
    pub fn new(executor: Arc<dyn Executor>, listen: Listen, token: Option<String>) -> Server {
        Server {
            state: Arc::new(State {
                executor,
                token: token.filter(|t| !t.is_empty()),
                calls: Mutex::new(HashMap::new()),
                active: AtomicU32::new(0),
                shutdown: Notify::new(),
                closing: Closing::default(),
                connections: AtomicUsize::new(0),
            }),
            listen,
        }
    }

    /// Serves until `POST /v1/shutdown` (or until this future is dropped).
    ///
    /// Each connection is served on a thread of its own that has this
    /// runtime's handle entered, so a plugin may `block_on` it; when serving
    /// ends, idle connections close at once and busy ones after their call.
    pub async fn serve(self) -> Result<(), ServeError> {
        /// Closes every connection when serving ends, however it ends.
        struct CloseOnDrop(Arc<State>);
        impl Drop for CloseOnDrop {
            fn drop(&mut self) {
                self.0.closing.close();
            }
        }
        let _close = CloseOnDrop(Arc::clone(&self.state));
        let rt = tokio::runtime::Handle::current();
        match &self.listen {
            Listen::Unix(path) => {
                let _ = std::fs::remove_file(path);
                let listener = UnixListener::bind(path).map_err(|source| ServeError::Bind {
                    address: path.display().to_string(),
                    source,
                })?;
                {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
                }
                notify_ready(&self.state);
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            if let Ok(stream) = accepted.and_then(|(s, _)| s.into_std()) {
                                spawn_conn(stream, &self.state, &rt);
                            }
                        }
                        _ = self.state.shutdown.notified() => break,
                    }
                }
                let _ = std::fs::remove_file(path);
            }
            Listen::Tcp(addr) => {
                let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind {
                    address: addr.clone(),
                    source,
                })?;
                notify_ready(&self.state);
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            if let Ok((stream, _)) = accepted {
                                let _ = stream.set_nodelay(true);
                                if let Ok(stream) = stream.into_std() {
                                    spawn_conn(stream, &self.state, &rt);
                                }
                            }
                        }
                        _ = self.state.shutdown.notified() => break,
                    }
                }
            }
        }
        Ok(())
    }
}

/// Tells the host this worker serves: writes its manifest (`MANIFEST=` and
/// the JSON of `GET /v1/manifest` on one line, so the host need not ask for
/// it) and `READY=1\n` to the file descriptor named by
/// `PLUGBOARD_NOTIFY_FD`, and closes it (once; nothing when the host offered
/// no descriptor or it is not a pipe). One write of at most `PIPE_BUF`
/// bytes, which never blocks on an empty pipe, whoever holds its other end.
fn notify_ready(state: &State) {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    let Some(fd) = std::env::var(plugboard_protocol::NOTIFY_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|fd| *fd > 2)
    else {
        return;
    };
    // Once per process: a second server must not write to a reused number.
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if DONE.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    use std::os::unix::fs::FileTypeExt;
    // SAFETY: the host passed this descriptor for this purpose; it is
    // checked to be a pipe before it is written to and closed, and left
    // open (forgotten) otherwise.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    if f.metadata().is_ok_and(|m| m.file_type().is_fifo()) {
        let _ = f.write_all(&notification(&state.executor.manifest()));
    } else {
        std::mem::forget(f);
    }
}

/// The notification's bytes: the manifest line (compact JSON has no raw
/// newline), then `READY=1`; only `READY=1` when the manifest cannot be
/// written as JSON or the whole would exceed [`NOTIFY_MAX_BYTES`] (the host
/// then asks for the manifest).
fn notification(manifest: &plugboard_protocol::WorkerManifest) -> Vec<u8> {
    const READY: &[u8] = b"READY=1\n";
    let mut out = plugboard_protocol::NOTIFY_MANIFEST_PREFIX.as_bytes().to_vec();
    if serde_json::to_writer(&mut out, manifest).is_ok() && out.len() + 1 + READY.len() <= NOTIFY_MAX_BYTES {
        out.push(b'\n');
    } else {
        out.clear();
    }
    out.extend_from_slice(READY);
    out
}

/// The longest notification written: POSIX's `PIPE_BUF`, the most a pipe
/// takes in one atomic write.
const NOTIFY_MAX_BYTES: usize = 4096;

/// Counts one connection until dropped.
struct ConnSlot(Arc<State>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves `stream` (non-blocking) on a new thread that has `rt` entered.
fn spawn_conn<S: Socket>(stream: S, state: &Arc<State>, rt: &tokio::runtime::Handle) {
    if state.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
        state.connections.fetch_sub(1, Ordering::SeqCst);
        tracing::warn!("refused a connection: {MAX_CONNECTIONS} are open already");
        return;
    }
    let slot = ConnSlot(Arc::clone(state));
    let rt = rt.clone();
    let spawned = std::thread::Builder::new()
        .name("plugboard-conn".into())
        .spawn(move || {
            let _rt = rt.enter();
            let state = Arc::clone(&slot.0);
            let r = conn::serve_connection(stream, &slot.0.closing, move |io, fd| {
                let svc = service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, std::convert::Infallible>(handle(req, state, fd).await) }
                });
                http1::Builder::new()
                    .keep_alive(true)
                    .auto_date_header(false)
                    .serve_connection(io, svc)
            });
            if let Err(conn::Stopped::Io(e)) = r {
                tracing::warn!(error = %e, "a connection's wait failed");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start a thread for a connection");
    }
}

/// Serves `executor` on the address and token from the environment until
/// shutdown.
pub async fn serve(executor: Arc<dyn Executor>) -> Result<(), ServeError> {
    let listen = std::env::var(LISTEN_ENV).map_err(|_| ServeError::NoAddress)?;
    let token = std::env::var(TOKEN_ENV).ok();
    Server::new(executor, Listen::parse(&listen), token).serve().await
}

/// Runs a worker from `main`: serves `executor` from the environment's
/// address, exits when stdin closes (the host is gone) or on shutdown.
/// Errors are printed to stderr as one line with their causes.
pub fn run<E: Executor>(executor: E) -> ExitCode {
    if !std::io::stdin().is_terminal() {
        std::thread::spawn(|| {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            std::process::exit(0);
        });
    }
    // The runtime only accepts connections; calls run on their
    // connections' threads.
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(&ServeError::Runtime(e)),
    };
    match rt.block_on(serve(Arc::new(executor))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &dyn std::error::Error) -> ExitCode {
    let mut line = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        line.push_str(": ");
        line.push_str(&s.to_string());
        src = s.source();
    }
    eprintln!("plugboard worker: {line}");
    ExitCode::FAILURE
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<ResponseBody> {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response<ResponseBody> {
    let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, &ErrorBody::new(code, message))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Response<ResponseBody>> {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BYTES as u64) {
        return Err(error(
            ErrorCode::TooLarge,
            format!("request body is larger than {MAX_REQUEST_BYTES} bytes"),
        ));
    }
    let body = Limited::new(req.into_body(), MAX_REQUEST_BYTES);
    let bytes: Bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            return Err(if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                error(
                    ErrorCode::TooLarge,
                    format!("request body is larger than {MAX_REQUEST_BYTES} bytes"),
                )
            } else {
                error(ErrorCode::BadRequest, format!("cannot read request body: {e}"))
            });
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| error(ErrorCode::BadRequest, format!("request body is not valid: {e}")))
}

/// Runs `f`, turning a panic into a failed call.
fn guarded<T>(f: impl FnOnce() -> Result<T, ExecError>) -> Result<T, ExecError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let why = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(ExecError::Failed(format!("the plugin panicked: {why}")))
    })
}

/// Is the caller on socket `fd` gone? Asked by a call's cancel check, at
/// most once per [`GONE_CHECK_EVERY`] (a check is a system call).
fn caller_gone(fd: std::os::fd::RawFd) -> impl Fn() -> bool + Send + Sync + 'static {
    let base = Instant::now();
    // Nanoseconds since `base` before which the socket is not asked again.
    let next_check = AtomicU64::new(0);
    move || {
        let now = base.elapsed().as_nanos() as u64;
        if now < next_check.load(Ordering::Relaxed) {
            return false;
        }
        next_check.store(now + GONE_CHECK_EVERY.as_nanos() as u64, Ordering::Relaxed);
        conn::peer_gone(fd)
    }
}

/// How often a call's cancel check looks at its connection.
const GONE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(5);

async fn handle(req: Request<Incoming>, state: Arc<State>, fd: std::os::fd::RawFd) -> Response<ResponseBody> {
    if let Some(token) = &state.token {
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return error(ErrorCode::Unauthorized, "missing or wrong bearer token");
        }
    }
    if let Some(v) = req.headers().get(VERSION_HEADER) {
        let theirs = v.to_str().unwrap_or("?").trim().to_owned();
        if theirs != PROTOCOL_VERSION.to_string() {
            return error(
                ErrorCode::VersionMismatch,
                format!(
                    "protocol version mismatch: the host speaks protocol {theirs}, this worker speaks protocol {PROTOCOL_VERSION}"
                ),
            );
        }
    }
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let known = paths::ALL.contains(&path.as_str());
    let get_only = path == paths::MANIFEST || path == paths::HEALTH;
    if !known {
        return error(ErrorCode::NotFound, format!("no endpoint {path}"));
    }
    if (get_only && method != Method::GET) || (!get_only && method != Method::POST) {
        let want = if get_only { "GET" } else { "POST" };
        return error(
            ErrorCode::MethodNotAllowed,
            format!("{path} takes {want}, not {method}"),
        );
    }
    match path.as_str() {
        p if p == paths::MANIFEST => json(StatusCode::OK, &state.executor.manifest()),
        p if p == paths::HEALTH => json(
            StatusCode::OK,
            &Health {
                status: "ok".into(),
                protocol_version: PROTOCOL_VERSION,
                active_calls: state.active.load(Ordering::SeqCst),
            },
        ),
        p if p == paths::CONFIG_VALIDATE || p == paths::CONFIG_APPLY => {
            let config: Value = match read_json(req).await {
                Ok(c) => c,
                Err(r) => return r,
            };
            let apply = p == paths::CONFIG_APPLY;
            let exec = &state.executor;
            // Run here, on the connection's thread (see `crate::conn`).
            let result = guarded(|| {
                Ok(if apply {
                    exec.apply_config(config).err().unwrap_or_default()
                } else {
                    exec.validate_config(&config)
                })
            });
            let result = match result {
                Ok(r) => r,
                Err(e) => return error(ErrorCode::PluginError, e.to_string()),
            };
            // An invalid config is a successful answer that says so.
            json(
                StatusCode::OK,
                &ConfigResult {
                    valid: result.is_empty(),
                    violations: result,
                },
            )
        }
        p if p == paths::EXECUTE => {
            let call: ExecuteRequest = match read_json(req).await {
                Ok(c) => c,
                Err(r) => return r,
            };
            // Dropped on every path, including the client going away while
            // this future waits: the call is then cancelled and forgotten.
            let guard = CallGuard::begin(&state, call.request_id.clone());
            // The call runs here, on the connection's thread, which has
            // nothing else to do meanwhile (see `crate::conn`); a caller
            // that goes away is seen by the plugin's own cancel checks.
            let ctx = CallContext::with(Arc::clone(&guard.flag), None).cancelled_when(caller_gone(fd));
            let result = guarded(|| state.executor.execute(call.input, &ctx));
            drop(guard);
            match result {
                Ok(output) => json(StatusCode::OK, &ExecuteResponse { output }),
                Err(e) => {
                    let info = e.to_info();
                    error(info.code, info.message)
                }
            }
        }
        p if p == paths::EXECUTE_STREAM => {
            let call: ExecuteRequest = match read_json(req).await {
                Ok(c) => c,
                Err(r) => return r,
            };
            stream(state, call)
        }
        p if p == paths::CANCEL => {
            let c: CancelRequest = match read_json(req).await {
                Ok(c) => c,
                Err(r) => return r,
            };
            let flag = state
                .calls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&c.request_id)
                .cloned();
            if let Some(f) = &flag {
                f.store(true, Ordering::SeqCst);
            }
            json(
                StatusCode::OK,
                &CancelResponse {
                    cancelled: flag.is_some(),
                },
            )
        }
        _ => {
            // paths::SHUTDOWN
            state.shutdown.notify_one();
            json(StatusCode::OK, &serde_json::json!({"shutting_down": true}))
        }
    }
}

/// One call in progress: registered for cancel and counted in health until
/// dropped, when it is unregistered and its cancel flag set (a finished call
/// ignores it; an abandoned one stops).
struct CallGuard {
    state: Arc<State>,
    /// The id it can be cancelled by; a call sent without one cannot be.
    id: Option<String>,
    flag: Arc<AtomicBool>,
}

impl CallGuard {
    fn begin(state: &Arc<State>, id: Option<String>) -> CallGuard {
        let flag = Arc::new(AtomicBool::new(false));
        if let Some(id) = &id {
            state
                .calls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.clone(), Arc::clone(&flag));
        }
        state.active.fetch_add(1, Ordering::SeqCst);
        CallGuard {
            state: Arc::clone(state),
            id,
            flag,
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.flag.store(true, Ordering::SeqCst);
        self.state.active.fetch_sub(1, Ordering::SeqCst);
        if let Some(id) = &self.id {
            self.state.calls.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        }
    }
}

fn line(event: &StreamEvent) -> Bytes {
    let mut v = serde_json::to_vec(event).unwrap_or_else(|_| b"{}".to_vec());
    v.push(b'\n');
    Bytes::from(v)
}

fn stream(state: Arc<State>, call: ExecuteRequest) -> Response<ResponseBody> {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let guard = CallGuard::begin(&state, call.request_id.clone());
    let flag = Arc::clone(&guard.flag);
    let exec = Arc::clone(&state.executor);
    let sink_tx = tx.clone();
    let sink_flag = Arc::clone(&flag);
    let ctx = CallContext::with(
        Arc::clone(&flag),
        Some(Box::new(move |event: StreamEvent| {
            // A client that went away cancels the call.
            if sink_tx.blocking_send(line(&event)).is_err() {
                sink_flag.store(true, Ordering::SeqCst);
            }
        })),
    );
    // The connection's thread writes the events as they come, so the
    // call runs on the blocking pool of the runtime it has entered.
    tokio::task::spawn_blocking(move || {
        let result = guarded(|| exec.execute(call.input, &ctx));
        drop(guard);
        let last = match result {
            Ok(output) => StreamEvent::Result { output },
            Err(e) => StreamEvent::Error { error: e.to_info() },
        };
        let _ = tx.blocking_send(line(&last));
    });
    let mut resp = Response::new(ChannelBody::boxed_from(rx));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-ndjson"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugboard_protocol::{Capabilities, WorkerManifest};

    #[test]
    fn the_notification_carries_the_manifest_then_ready() {
        let manifest = WorkerManifest {
            protocol_version: plugboard_protocol::PROTOCOL_VERSION,
            name: "echo".into(),
            version: Some("1.0.0".into()),
            config_schema: serde_json::json!({"type": "object", "description": "two\nlines"}),
            capabilities: Capabilities::default(),
            input_example: None,
        };
        let bytes = notification(&manifest);
        let text = String::from_utf8(bytes).unwrap_or_else(|e| panic!("not UTF-8: {e}"));
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        assert_eq!(lines.len(), 2, "{text:?}");
        let json = lines[0]
            .strip_prefix("MANIFEST=")
            .and_then(|l| l.strip_suffix('\n'))
            .unwrap_or_else(|| panic!("not a manifest line: {:?}", lines[0]));
        let back: WorkerManifest = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, manifest);
        assert_eq!(lines[1], "READY=1\n");
    }

    #[test]
    fn a_manifest_too_large_for_one_pipe_write_is_left_to_be_asked_for() {
        let manifest = WorkerManifest {
            protocol_version: plugboard_protocol::PROTOCOL_VERSION,
            name: "big".into(),
            version: None,
            config_schema: serde_json::json!({"description": "x".repeat(NOTIFY_MAX_BYTES)}),
            capabilities: Capabilities::default(),
            input_example: None,
        };
        assert_eq!(notification(&manifest), b"READY=1\n");
    }
}
