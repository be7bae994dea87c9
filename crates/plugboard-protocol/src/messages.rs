//! Protocol v1 messages, paths, headers and limits.

use plugboard_core::Violation;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Header a client sends with the protocol version it speaks; a worker
/// answers a different major version with 400 and both versions named.
pub const VERSION_HEADER: &str = "plugboard-protocol";

/// Env var holding the address the worker serves on: a Unix socket path, or
/// `tcp://HOST:PORT`.
pub const LISTEN_ENV: &str = "PLUGBOARD_LISTEN";
/// Env var holding the bearer token every request must carry (when set).
pub const TOKEN_ENV: &str = "PLUGBOARD_TOKEN";
/// The env var naming a file descriptor a worker writes `READY=1\n` to once
/// it serves (then closes it), so the host knows without polling. Absent
/// when the host offers no notification. A worker may write its manifest
/// before that, as [`NOTIFY_MANIFEST_PREFIX`] and the JSON of
/// `GET /v1/manifest` on one line; the host then checks it without asking.
pub const NOTIFY_FD_ENV: &str = "PLUGBOARD_NOTIFY_FD";
/// The start of the notification line that carries the worker's manifest
/// (see [`NOTIFY_FD_ENV`]).
pub const NOTIFY_MANIFEST_PREFIX: &str = "MANIFEST=";

/// Largest request body a worker accepts (413 beyond).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;
/// Largest response body a host accepts.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Largest single NDJSON event line.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Request paths.
pub mod paths {
    /// `GET`: [`super::WorkerManifest`].
    pub const MANIFEST: &str = "/v1/manifest";
    /// `GET`: [`super::Health`].
    pub const HEALTH: &str = "/v1/health";
    /// `POST` a config object: [`super::ConfigResult`].
    pub const CONFIG_VALIDATE: &str = "/v1/config/validate";
    /// `POST` a config object: [`super::ConfigResult`]; applied when valid.
    pub const CONFIG_APPLY: &str = "/v1/config/apply";
    /// `POST` [`super::ExecuteRequest`]: [`super::ExecuteResponse`].
    pub const EXECUTE: &str = "/v1/execute";
    /// `POST` [`super::ExecuteRequest`]: NDJSON of [`super::StreamEvent`].
    pub const EXECUTE_STREAM: &str = "/v1/execute/stream";
    /// `POST` [`super::CancelRequest`]: [`super::CancelResponse`].
    pub const CANCEL: &str = "/v1/cancel";
    /// `POST`: the worker answers, then exits.
    pub const SHUTDOWN: &str = "/v1/shutdown";
    /// Every path, for documentation checks.
    pub const ALL: [&str; 8] = [
        MANIFEST,
        HEALTH,
        CONFIG_VALIDATE,
        CONFIG_APPLY,
        EXECUTE,
        EXECUTE_STREAM,
        CANCEL,
        SHUTDOWN,
    ];
}

/// What a worker can do beyond plain execute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// It sends progress and log events on the streaming endpoint.
    #[serde(default)]
    pub streaming: bool,
    /// It stops a running call when asked to cancel.
    #[serde(default)]
    pub cancel: bool,
}

/// `GET /v1/manifest`: who the worker is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerManifest {
    /// Protocol version the worker speaks.
    pub protocol_version: u32,
    /// Plugin name (must match the plugin.toml).
    pub name: String,
    /// Plugin version (must match the plugin.toml when it gives one).
    #[serde(default)]
    pub version: Option<String>,
    /// The config JSON Schema.
    #[serde(default)]
    pub config_schema: Value,
    /// Extra abilities.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// An input the plugin accepts, for callers to start from (the
    /// dashboard's call panel, when the plugin.toml has no `[examples]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_example: Option<Value>,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `"ok"` when the worker can take calls.
    pub status: String,
    /// Protocol version.
    pub protocol_version: u32,
    /// Calls in progress.
    #[serde(default)]
    pub active_calls: u32,
}

/// Answer to config validate and apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigResult {
    /// True when the config is valid (and, for apply, applied).
    pub valid: bool,
    /// Every violation when it is not.
    #[serde(default)]
    pub violations: Vec<Violation>,
}

/// Body of execute and execute/stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteRequest {
    /// The plugin's input.
    pub input: Value,
    /// The caller's id for this call, used to cancel it.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// Answer of execute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecuteResponse {
    /// The plugin's output.
    pub output: Value,
}

/// Body of cancel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelRequest {
    /// The call to cancel.
    pub request_id: String,
}

/// Answer of cancel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelResponse {
    /// True when a running call with that id was told to stop.
    pub cancelled: bool,
}

/// A machine-readable error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed request (400).
    BadRequest,
    /// Missing or wrong bearer token (401).
    Unauthorized,
    /// No such endpoint (404).
    NotFound,
    /// Wrong method (405).
    MethodNotAllowed,
    /// Body too large (413).
    TooLarge,
    /// Input or config rejected by the plugin (422).
    InvalidInput,
    /// The call was cancelled (499).
    Cancelled,
    /// Protocol versions differ (400).
    VersionMismatch,
    /// The plugin failed (500).
    PluginError,
}

impl ErrorCode {
    /// The HTTP status for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::VersionMismatch => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::TooLarge => 413,
            ErrorCode::InvalidInput => 422,
            ErrorCode::Cancelled => 499,
            ErrorCode::PluginError => 500,
        }
    }
}

/// An error as sent on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// What kind of error.
    pub code: ErrorCode,
    /// Human-readable reason.
    pub message: String,
}

/// The body of every non-2xx answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorInfo,
}

impl ErrorBody {
    /// An error body.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorInfo {
                code,
                message: message.into(),
            },
        }
    }
}

/// One NDJSON line of execute/stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// Progress between 0 and 1, with an optional message.
    Progress {
        /// Fraction done.
        progress: f64,
        /// What is happening.
        #[serde(default)]
        message: Option<String>,
    },
    /// A log line from the plugin.
    Log {
        /// `debug`, `info`, `warn`, `error`.
        level: String,
        /// The line.
        message: String,
    },
    /// The call's output; the last event of a successful call.
    Result {
        /// The output.
        output: Value,
    },
    /// The call failed; the last event of a failed call.
    Error {
        /// What failed.
        error: ErrorInfo,
    },
}

/// Checks a peer's protocol version against ours.
///
/// ```
/// use plugboard_protocol::check_version;
/// assert!(check_version(1).is_ok());
/// assert_eq!(
///     check_version(2).unwrap_err(),
///     "protocol version mismatch: the worker speaks protocol 2, this host speaks protocol 1"
/// );
/// ```
pub fn check_version(worker: u32) -> Result<(), String> {
    if worker == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(format!(
            "protocol version mismatch: the worker speaks protocol {worker}, this host speaks protocol {PROTOCOL_VERSION}"
        ))
    }
}
