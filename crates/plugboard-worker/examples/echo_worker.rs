//! The smallest useful worker: answers each call with its input. The host's
//! start benchmark launches it as "a minimal Rust worker"; it is also the
//! crate docs' example as a program.
//!
//! Run by a host (it reads `PLUGBOARD_LISTEN` and `PLUGBOARD_TOKEN`), or by
//! hand: `PLUGBOARD_LISTEN=/tmp/echo.sock cargo run -p plugboard-worker --example echo_worker`.

use plugboard_protocol::{CallContext, ExecError, Typed, TypedExecutor};
use serde_json::{Value, json};

/// No settings.
#[derive(Default, Clone, serde::Deserialize, schemars::JsonSchema)]
struct Config {}

/// Answers `{"echo": input}`.
struct Echo;

impl TypedExecutor for Echo {
    type Config = Config;
    const NAME: &'static str = "echo";
    const VERSION: &'static str = "0.1.0";
    fn execute(&self, _: &Config, input: Value, _: &CallContext) -> Result<Value, ExecError> {
        Ok(json!({ "echo": input }))
    }
}

fn main() -> std::process::ExitCode {
    plugboard_worker::run(Typed::new(Echo))
}
