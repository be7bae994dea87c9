//! The one trait behind every plugin call.
//!
//! An in-process plugin implements [`Executor`] and the host calls it
//! directly; a Rust worker implements the same trait and the worker SDK
//! serves it over the protocol. Most plugins implement [`TypedExecutor`]
//! (a serde + schemars config type) and wrap it in [`Typed`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use plugboard_core::{CompiledSchema, Violation};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::messages::{Capabilities, ErrorCode, ErrorInfo, PROTOCOL_VERSION, StreamEvent, WorkerManifest};

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExecError {
    /// The input was rejected.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The call was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// The plugin failed.
    #[error("{0}")]
    Failed(String),
}

impl ExecError {
    /// The wire form of this error.
    pub fn to_info(&self) -> ErrorInfo {
        let code = match self {
            ExecError::InvalidInput(_) => ErrorCode::InvalidInput,
            ExecError::Cancelled => ErrorCode::Cancelled,
            ExecError::Failed(_) => ErrorCode::PluginError,
        };
        ErrorInfo {
            code,
            message: self.to_string(),
        }
    }
}

type EventSink = Box<dyn Fn(StreamEvent) + Send + Sync>;
type GoneProbe = Box<dyn Fn() -> bool + Send + Sync>;

/// What a running call sees: its cancel flag and a way to report progress.
pub struct CallContext {
    cancelled: Arc<AtomicBool>,
    sink: Option<EventSink>,
    /// Asked when the flag is not set: has the caller gone away? (A worker
    /// that runs a call on its connection's thread cannot watch the socket
    /// meanwhile, so the plugin's own check looks.)
    gone: Option<GoneProbe>,
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl CallContext {
    /// A context with its own cancel flag and no event sink.
    pub fn new() -> Self {
        CallContext {
            cancelled: Arc::new(AtomicBool::new(false)),
            sink: None,
            gone: None,
        }
    }

    /// A context sharing `cancelled` and sending events to `sink`.
    pub fn with(cancelled: Arc<AtomicBool>, sink: Option<EventSink>) -> Self {
        CallContext {
            cancelled,
            sink,
            gone: None,
        }
    }

    /// The same context, also cancelled once `gone` answers true (asked by
    /// [`is_cancelled`](Self::is_cancelled) while the flag is not set; it
    /// should be cheap and must not block).
    ///
    /// ```
    /// use plugboard_protocol::CallContext;
    ///
    /// let ctx = CallContext::new().cancelled_when(|| true);
    /// assert!(ctx.is_cancelled());
    /// assert!(ctx.cancel_flag().load(std::sync::atomic::Ordering::SeqCst));
    /// ```
    pub fn cancelled_when(mut self, gone: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.gone = Some(Box::new(gone));
        self
    }

    /// The cancel flag (set it to cancel the call).
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancelled)
    }

    /// True once the caller asked to cancel; long calls check it often.
    pub fn is_cancelled(&self) -> bool {
        if self.cancelled.load(Ordering::SeqCst) {
            return true;
        }
        let gone = self.gone.as_ref().is_some_and(|gone| gone());
        if gone {
            self.cancelled.store(true, Ordering::SeqCst);
        }
        gone
    }

    /// `Err(Cancelled)` once cancelled, for `?` in loops.
    pub fn check_cancelled(&self) -> Result<(), ExecError> {
        if self.is_cancelled() {
            Err(ExecError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Reports progress (0 to 1) on streaming calls; a no-op otherwise.
    pub fn progress(&self, fraction: f64, message: impl Into<Option<String>>) {
        if let Some(s) = &self.sink {
            s(StreamEvent::Progress {
                progress: fraction.clamp(0.0, 1.0),
                message: message.into(),
            });
        }
    }

    /// Sends a log line on streaming calls; a no-op otherwise.
    pub fn log(&self, level: &str, message: impl Into<String>) {
        if let Some(s) = &self.sink {
            s(StreamEvent::Log {
                level: level.to_owned(),
                message: message.into(),
            });
        }
    }
}

impl Default for CallContext {
    fn default() -> Self {
        CallContext::new()
    }
}

/// A plugin that can be called. Implementations are shared between threads.
pub trait Executor: Send + Sync + 'static {
    /// Who the plugin is (protocol version, name, version, schema, capabilities).
    fn manifest(&self) -> WorkerManifest;

    /// Every violation of `config`; empty when valid.
    fn validate_config(&self, config: &Value) -> Vec<Violation>;

    /// Validates and applies `config`.
    fn apply_config(&self, config: Value) -> Result<(), Vec<Violation>>;

    /// Runs one call. Blocking is fine: it never runs on an async runtime's
    /// thread (the Rust worker SDK runs a call on its connection's own
    /// thread, with the runtime's handle entered so the plugin may
    /// `block_on` it; the host runs in-process plugins on the blocking
    /// pool). A caller that goes away shows as [`CallContext::is_cancelled`].
    fn execute(&self, input: Value, ctx: &CallContext) -> Result<Value, ExecError>;
}

/// A plugin with a typed config, the common way to write one.
///
/// ```
/// use plugboard_protocol::{CallContext, ExecError, Executor, Typed, TypedExecutor};
/// use serde_json::{json, Value};
///
/// /// Word counter settings.
/// #[derive(Default, Clone, serde::Deserialize, schemars::JsonSchema)]
/// #[serde(default)]
/// struct Config {
///     /// Count only words at least this long.
///     min_len: usize,
/// }
///
/// #[derive(Default)]
/// struct WordCount;
///
/// impl TypedExecutor for WordCount {
///     type Config = Config;
///     const NAME: &'static str = "word_count";
///     const VERSION: &'static str = "0.1.0";
///     fn execute(&self, config: &Config, input: Value, _ctx: &CallContext) -> Result<Value, ExecError> {
///         let text = input["text"].as_str().ok_or_else(|| ExecError::InvalidInput("text must be a string".into()))?;
///         Ok(json!({"words": text.split_whitespace().filter(|w| w.len() >= config.min_len).count()}))
///     }
/// }
///
/// let plugin = Typed::new(WordCount);
/// let out = plugin.execute(json!({"text": "a bb ccc"}), &CallContext::new()).unwrap();
/// assert_eq!(out["words"], 3);
/// plugin.apply_config(json!({"min_len": 2})).unwrap();
/// assert_eq!(plugin.execute(json!({"text": "a bb ccc"}), &CallContext::new()).unwrap()["words"], 2);
/// assert!(plugin.apply_config(json!({"min_len": "x"})).is_err());
/// ```
pub trait TypedExecutor: Send + Sync + 'static {
    /// The config type; its schema is derived with schemars.
    type Config: DeserializeOwned + schemars::JsonSchema + Default + Clone + Send + Sync + 'static;
    /// Plugin name.
    const NAME: &'static str;
    /// Plugin version.
    const VERSION: &'static str;
    /// True when the plugin reports progress (sets the streaming capability).
    const STREAMING: bool = false;
    /// True when the plugin honours cancel.
    const CANCEL: bool = false;

    /// Runs one call with the current config.
    fn execute(&self, config: &Self::Config, input: Value, ctx: &CallContext) -> Result<Value, ExecError>;

    /// An input the plugin accepts, sent in the manifest as
    /// `input_example` for callers to start from; none by default.
    fn input_example(&self) -> Option<Value> {
        None
    }
}

/// Adapts a [`TypedExecutor`] to [`Executor`]: schema derivation, config
/// validation and storage.
pub struct Typed<T: TypedExecutor> {
    inner: T,
    schema: Value,
    /// Compiled on the first validation, not at start: compiling a schema
    /// (its meta-schema included) costs a worker several milliseconds it
    /// would otherwise spend before it could answer. `None` inside when the
    /// derived schema does not compile (then serde alone checks configs).
    compiled: std::sync::OnceLock<Option<CompiledSchema>>,
    config: Mutex<T::Config>,
}

impl<T: TypedExecutor> Typed<T> {
    /// Wraps a typed plugin with its default config.
    pub fn new(inner: T) -> Self {
        Typed {
            inner,
            schema: plugboard_core::schema_for::<T::Config>(),
            compiled: std::sync::OnceLock::new(),
            config: Mutex::new(T::Config::default()),
        }
    }

    /// The wrapped plugin.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    fn parse(&self, config: &Value) -> Result<T::Config, Vec<Violation>> {
        let compiled = self
            .compiled
            .get_or_init(|| CompiledSchema::compile(T::NAME, &self.schema).ok());
        let mut violations = compiled.as_ref().map(|s| s.violations(config)).unwrap_or_default();
        if !violations.is_empty() {
            return Err(violations);
        }
        serde_json::from_value(config.clone()).map_err(|e| {
            violations.push(Violation {
                pointer: String::new(),
                reason: e.to_string(),
            });
            violations
        })
    }
}

impl<T: TypedExecutor> Executor for Typed<T> {
    fn manifest(&self) -> WorkerManifest {
        WorkerManifest {
            protocol_version: PROTOCOL_VERSION,
            name: T::NAME.to_owned(),
            version: Some(T::VERSION.to_owned()),
            config_schema: self.schema.clone(),
            capabilities: Capabilities {
                streaming: T::STREAMING,
                cancel: T::CANCEL,
            },
            input_example: self.inner.input_example(),
        }
    }

    fn validate_config(&self, config: &Value) -> Vec<Violation> {
        self.parse(config).err().unwrap_or_default()
    }

    fn apply_config(&self, config: Value) -> Result<(), Vec<Violation>> {
        let parsed = self.parse(&config)?;
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = parsed;
        Ok(())
    }

    fn execute(&self, input: Value, ctx: &CallContext) -> Result<Value, ExecError> {
        let config = self.config.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.inner.execute(&config, input, ctx)
    }
}

/// A shared executor is an executor (the host keeps in-process plugins in `Arc`s).
impl<E: Executor + ?Sized> Executor for Arc<E> {
    fn manifest(&self) -> WorkerManifest {
        (**self).manifest()
    }
    fn validate_config(&self, config: &Value) -> Vec<Violation> {
        (**self).validate_config(config)
    }
    fn apply_config(&self, config: Value) -> Result<(), Vec<Violation>> {
        (**self).apply_config(config)
    }
    fn execute(&self, input: Value, ctx: &CallContext) -> Result<Value, ExecError> {
        (**self).execute(input, ctx)
    }
}
