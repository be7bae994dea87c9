//! The host's protocol client: pooled keep-alive HTTP/1.1 connections to one
//! worker over its Unix socket (or TCP), bounded response sizes, and errors
//! that say whether the worker refused, failed, or went away.
//!
//! Connections are reused: a new connection per call is what made a peer
//! library's calls take 26 ms each.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use plugboard_protocol::{ErrorBody, ErrorCode, MAX_RESPONSE_BYTES, PROTOCOL_VERSION, VERSION_HEADER};
use serde::de::DeserializeOwned;
use tokio::net::{TcpStream, UnixStream};

/// Why a call to a plugin failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The worker could not be reached or closed the connection.
    #[error("plugin {plugin}: {reason}")]
    Transport {
        /// The plugin.
        plugin: String,
        /// What happened.
        reason: String,
    },
    /// No answer in time.
    #[error("plugin {plugin}: no answer within {secs} s")]
    Timeout {
        /// The plugin.
        plugin: String,
        /// The limit.
        secs: f64,
    },
    /// The worker answered with an error.
    #[error("plugin {plugin}: {message} (HTTP {status}, {code:?})")]
    Remote {
        /// The plugin.
        plugin: String,
        /// HTTP status.
        status: u16,
        /// Error code.
        code: ErrorCode,
        /// The worker's message.
        message: String,
    },
    /// The worker's answer could not be understood.
    #[error("plugin {plugin}: invalid answer from the worker: {reason}")]
    InvalidResponse {
        /// The plugin.
        plugin: String,
        /// What was wrong.
        reason: String,
    },
    /// The worker is not what the plugin.toml says.
    #[error("plugin {plugin}: the worker does not match its plugin.toml: {reason}")]
    Mismatch {
        /// The plugin.
        plugin: String,
        /// Which field and how.
        reason: String,
    },
    /// The plugin has no running worker or cannot be called this way.
    #[error("plugin {plugin}: {reason}")]
    Unavailable {
        /// The plugin.
        plugin: String,
        /// Why.
        reason: String,
    },
}

impl CallError {
    /// The error code when the worker (or in-process plugin) refused the call.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            CallError::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Where a worker listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Unix socket.
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
}

/// A pooled client for one worker.
pub struct WorkerClient {
    plugin: String,
    target: Target,
    /// The headers every request carries, built once: the protocol version
    /// and, when there is a token, the bearer (marked sensitive).
    version: HeaderValue,
    bearer: Option<Result<HeaderValue, String>>,
    pool: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    /// Limit for short requests (manifest, health, config, cancel).
    pub control_timeout: Duration,
}

impl std::fmt::Debug for WorkerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerClient")
            .field("plugin", &self.plugin)
            .field("target", &self.target)
            .finish()
    }
}

/// Pooled connections kept per worker.
const POOL_MAX: usize = 16;

impl WorkerClient {
    /// A client for `plugin`'s worker at `target`, sending `token` as bearer.
    pub fn new(plugin: impl Into<String>, target: Target, token: Option<String>) -> Self {
        let bearer = token.map(|t| match HeaderValue::from_str(&format!("Bearer {t}")) {
            Ok(mut v) => {
                v.set_sensitive(true);
                Ok(v)
            }
            Err(_) => Err("the token is not a valid HTTP header value".to_owned()),
        });
        WorkerClient {
            plugin: plugin.into(),
            target,
            version: HeaderValue::from(PROTOCOL_VERSION),
            bearer,
            pool: Mutex::new(Vec::new()),
            control_timeout: Duration::from_secs(10),
        }
    }

    /// The plugin this client calls.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    fn transport(&self, reason: impl Into<String>) -> CallError {
        CallError::Transport {
            plugin: self.plugin.clone(),
            reason: reason.into(),
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, CallError> {
        let (sender, driver) = match &self.target {
            Target::Unix(p) => {
                let io = UnixStream::connect(p)
                    .await
                    .map_err(|e| self.transport(format!("cannot connect to {}: {e}", p.display())))?;
                let (s, c) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                    .await
                    .map_err(|e| self.transport(format!("handshake failed: {e}")))?;
                (s, tokio::spawn(async move { c.await.is_ok() }))
            }
            Target::Tcp(a) => {
                let io = TcpStream::connect(a)
                    .await
                    .map_err(|e| self.transport(format!("cannot connect to {a}: {e}")))?;
                let _ = io.set_nodelay(true);
                let (s, c) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                    .await
                    .map_err(|e| self.transport(format!("handshake failed: {e}")))?;
                (s, tokio::spawn(async move { c.await.is_ok() }))
            }
        };
        drop(driver);
        Ok(sender)
    }

    /// A ready connection, and whether it was reused from the pool.
    async fn sender(&self) -> Result<(SendRequest<Full<Bytes>>, bool), CallError> {
        loop {
            let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
            match pooled {
                Some(mut s) => {
                    if s.ready().await.is_ok() {
                        return Ok((s, true));
                    }
                }
                None => return Ok((self.connect().await?, false)),
            }
        }
    }

    /// Sends on a pooled connection; when the worker had closed that idle
    /// connection and the request provably never went out (or is a GET), it
    /// is sent once more on a fresh connection.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(SendRequest<Full<Bytes>>, Response<Incoming>), CallError> {
        let (mut s, reused) = self.sender().await?;
        let idempotent = method == Method::GET;
        // Bytes: a second send shares the buffer instead of copying it.
        let body = body.map(Bytes::from);
        match s.send_request(self.request(method.clone(), path, body.clone())?).await {
            Ok(resp) => Ok((s, resp)),
            Err(e) if reused && (e.is_canceled() || idempotent) => {
                let mut fresh = self.connect().await?;
                let resp = fresh
                    .send_request(self.request(method, path, body)?)
                    .await
                    .map_err(|e| self.gone(e))?;
                Ok((fresh, resp))
            }
            Err(e) => Err(self.gone(e)),
        }
    }

    fn give_back(&self, s: SendRequest<Full<Bytes>>) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < POOL_MAX && !s.is_closed() {
            pool.push(s);
        }
    }

    fn request(&self, method: Method, path: &str, body: Option<Bytes>) -> Result<Request<Full<Bytes>>, CallError> {
        let json = body.is_some();
        let mut req = Request::new(Full::new(body.unwrap_or_default()));
        *req.method_mut() = method;
        *req.uri_mut() = path
            .parse()
            .map_err(|e| self.transport(format!("cannot build request for {path}: {e}")))?;
        let h = req.headers_mut();
        h.insert(hyper::header::HOST, HeaderValue::from_static("worker"));
        h.insert(VERSION_HEADER, self.version.clone());
        match &self.bearer {
            Some(Ok(b)) => {
                h.insert(hyper::header::AUTHORIZATION, b.clone());
            }
            Some(Err(e)) => return Err(self.transport(format!("cannot build request: {e}"))),
            None => {}
        }
        if json {
            h.insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        Ok(req)
    }

    /// Sends a request and returns the response with its body unread; the
    /// connection is not returned to the pool (used for streams).
    pub async fn send_streaming(&self, path: &str, body: Vec<u8>) -> Result<Response<Incoming>, CallError> {
        let (_, resp) = self.exchange(Method::POST, path, Some(body)).await?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            let status = resp.status().as_u16();
            let bytes = self.read_body(resp).await?;
            Err(self.remote_error(status, &bytes))
        }
    }

    fn gone(&self, e: hyper::Error) -> CallError {
        self.transport(format!(
            "the worker closed the connection mid-call (it may have crashed): {e}"
        ))
    }

    async fn read_body(&self, resp: Response<Incoming>) -> Result<Bytes, CallError> {
        match Limited::new(resp.into_body(), MAX_RESPONSE_BYTES).collect().await {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                Err(CallError::InvalidResponse {
                    plugin: self.plugin.clone(),
                    reason: format!("response larger than {MAX_RESPONSE_BYTES} bytes"),
                })
            }
            Err(e) => Err(self.transport(format!(
                "the worker closed the connection mid-answer (it may have crashed): {e}"
            ))),
        }
    }

    fn remote_error(&self, status: u16, bytes: &[u8]) -> CallError {
        match serde_json::from_slice::<ErrorBody>(bytes) {
            Ok(b) => CallError::Remote {
                plugin: self.plugin.clone(),
                status,
                code: b.error.code,
                message: b.error.message,
            },
            Err(_) => CallError::InvalidResponse {
                plugin: self.plugin.clone(),
                reason: format!("HTTP {status} with a body that is not a protocol error"),
            },
        }
    }

    /// One request/response exchange, parsed as `T`; `limit` bounds it.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        limit: Option<Duration>,
    ) -> Result<T, CallError> {
        let fut = async {
            let (s, resp) = self.exchange(method, path, body).await?;
            let status = resp.status().as_u16();
            let bytes = self.read_body(resp).await?;
            self.give_back(s);
            if !(200..300).contains(&status) {
                return Err(self.remote_error(status, &bytes));
            }
            serde_json::from_slice(&bytes).map_err(|e| CallError::InvalidResponse {
                plugin: self.plugin.clone(),
                reason: e.to_string(),
            })
        };
        match limit {
            Some(l) => tokio::time::timeout(l, fut).await.unwrap_or_else(|_| {
                Err(CallError::Timeout {
                    plugin: self.plugin.clone(),
                    secs: l.as_secs_f64(),
                })
            }),
            None => fut.await,
        }
    }
}
