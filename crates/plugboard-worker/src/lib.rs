//! plugboard-worker: write a plugboard worker in Rust.
//!
//! Implement [`plugboard_protocol::TypedExecutor`] (or the lower-level
//! [`plugboard_protocol::Executor`]) and call [`run`] from `main`. The SDK
//! serves protocol v1 on the address the host gives in `PLUGBOARD_LISTEN`
//! (a Unix socket path, or `tcp://HOST:PORT`), requires the bearer token in
//! `PLUGBOARD_TOKEN` when one is given, runs each call on its connection's
//! own thread (outside any async runtime, so blocking is fine),
//! streams progress as NDJSON, honours cancel, and exits when its stdin
//! closes (the host died) or on `POST /v1/shutdown`.
//!
//! ```no_run
//! use plugboard_protocol::{CallContext, ExecError, Typed, TypedExecutor};
//! use serde_json::{json, Value};
//!
//! #[derive(Default, Clone, serde::Deserialize, schemars::JsonSchema)]
//! struct Config {}
//!
//! struct Echo;
//!
//! impl TypedExecutor for Echo {
//!     type Config = Config;
//!     const NAME: &'static str = "echo";
//!     const VERSION: &'static str = "0.1.0";
//!     fn execute(&self, _: &Config, input: Value, _: &CallContext) -> Result<Value, ExecError> {
//!         Ok(json!({ "echo": input }))
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     plugboard_worker::run(Typed::new(Echo))
//! }
//! ```

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod body;
mod conn;
mod server;

pub use server::{Listen, MAX_CONNECTIONS, ServeError, Server, run, serve};
