//! Errors of the core crate.
//!
//! Each error names what was wrong and where (the file, the plugin id, the
//! JSON pointer), because the people reading them are fixing a config or a
//! manifest, not reading our source.

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

/// A string that is not one of an enum's values; lists the valid ones.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown {kind} {given:?}; valid values: {}", valid.join(", "))]
pub struct UnknownVariant {
    /// What was being parsed, e.g. `"execution mode"`.
    pub kind: &'static str,
    /// The string that was given.
    pub given: String,
    /// Every accepted string.
    pub valid: Vec<&'static str>,
}

/// One way a config breaks its schema: where, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Violation {
    /// JSON pointer into the config (`""` is the whole document, `/device` a key).
    pub pointer: String,
    /// What the schema expected there.
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.pointer.is_empty() { "/" } else { &self.pointer };
        write!(f, "{at}: {}", self.reason)
    }
}

/// Why a plugin id cannot be used as a config file name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("plugin id {id:?} is refused: {reason}")]
pub struct InvalidId {
    /// The id as given (possibly truncated for display).
    pub id: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Errors from the config store and the registry's config operations.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The plugin id could escape the config dir or is otherwise unusable.
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
    /// The config breaks the plugin's schema; nothing was written.
    #[error("config for {unique_id} is invalid ({} violation{}): {}",
        violations.len(),
        if violations.len() == 1 { "" } else { "s" },
        violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The plugin whose config was refused.
        unique_id: String,
        /// Every violation found, in document order.
        violations: Vec<Violation>,
    },
    /// The plugin's own schema cannot be compiled.
    #[error("the config schema of {unique_id} is not a valid JSON Schema: {reason}")]
    BadSchema {
        /// The plugin whose schema is broken.
        unique_id: String,
        /// What the schema compiler said.
        reason: String,
    },
    /// A config file exists but is not a JSON object.
    #[error("config file {} is corrupt at line {line}, column {column}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem (0 when not a syntax error).
        line: usize,
        /// 1-based column of the problem (0 when not a syntax error).
        column: usize,
        /// What is wrong.
        reason: String,
    },
    /// The config is not a JSON object (configs are always objects).
    #[error("config for {unique_id} must be a JSON object, got {found}")]
    NotAnObject {
        /// The plugin.
        unique_id: String,
        /// The JSON type that was given instead.
        found: &'static str,
    },
    /// The config file is a FIFO, a socket, a device or a directory; it is
    /// never opened for reading (that could block forever).
    #[error("config file {} is {kind}, not a regular file; refusing to read it", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead (`"a FIFO (named pipe)"`…).
        kind: &'static str,
    },
    /// The config is larger than [`MAX_CONFIG_BYTES`](crate::config_store::MAX_CONFIG_BYTES)
    /// serialized (when saving) or on disk (when loading); nothing was written.
    #[error(
        "config for {unique_id} is {size} bytes serialized, over the limit of {limit} bytes; \
        keep large data in files and put their paths in the config"
    )]
    TooLarge {
        /// The plugin.
        unique_id: String,
        /// The size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// Another writer held the config's lock for longer than the store waits.
    #[error("config file {} is being changed by another process: its lock {} was still held after {:.1} s; \
        nothing was written, try again", path.display(), lock.display(), waited.as_secs_f64())]
    Locked {
        /// The config file.
        path: PathBuf,
        /// The lock file (`.{id}.json.lock` beside it).
        lock: PathBuf,
        /// How long the store waited.
        waited: std::time::Duration,
    },
    /// The file system refused an operation.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done (`"read"`, `"write"`, `"rename into place"`…).
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// The name of a JSON value's type with its article (`an object`), for
/// error messages.
pub fn json_type_name(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
