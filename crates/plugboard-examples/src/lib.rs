//! The bundled example plugins written in Rust. Each is an
//! [`Executor`], so the same code runs
//! in-process (called directly by the host) or as a worker process (served by
//! the worker SDK; `plugboard example-worker NAME`). The manifests live in
//! `examples/plugins/`.

use std::sync::Arc;
use std::time::Duration;

use plugboard_protocol::{CallContext, ExecError, Executor, Typed, TypedExecutor};
use serde::Deserialize;
use serde_json::{Value, json};

/// Word counter settings.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(title = "Word counter settings")]
pub struct WordCountConfig {
    /// Only words at least this many characters long are counted.
    #[schemars(range(min = 1, max = 100))]
    pub min_length: u32,
    /// Count words case-insensitively in `top`.
    pub lowercase: bool,
}

impl Default for WordCountConfig {
    fn default() -> Self {
        WordCountConfig {
            min_length: 1,
            lowercase: true,
        }
    }
}

/// Counts words, characters and lines of `{"text": "..."}` and lists the
/// most frequent words.
#[derive(Debug, Default)]
pub struct WordCount;

impl TypedExecutor for WordCount {
    type Config = WordCountConfig;
    const NAME: &'static str = "word_count";
    const VERSION: &'static str = "0.1.0";

    fn execute(&self, config: &WordCountConfig, input: Value, _ctx: &CallContext) -> Result<Value, ExecError> {
        let text = input
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| ExecError::InvalidInput("input must be {\"text\": string}".into()))?;
        let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
        let mut words = 0u64;
        for w in text.split_whitespace() {
            if w.chars().count() < config.min_length as usize {
                continue;
            }
            words += 1;
            let key = if config.lowercase {
                w.to_lowercase()
            } else {
                w.to_owned()
            };
            *counts.entry(key).or_default() += 1;
        }
        let mut top: Vec<(String, u64)> = counts.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(5);
        Ok(json!({
            "words": words,
            "chars": text.chars().count(),
            "lines": text.lines().count(),
            "top": top.into_iter().map(|(w, n)| json!([w, n])).collect::<Vec<_>>(),
        }))
    }
}

/// Slow job settings.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(title = "Slow job settings")]
pub struct SlowJobConfig {
    /// Milliseconds per step when the input does not say.
    #[schemars(range(min = 0, max = 60000))]
    pub step_ms: u64,
}

impl Default for SlowJobConfig {
    fn default() -> Self {
        SlowJobConfig { step_ms: 100 }
    }
}

/// A job of `{"steps": n, "step_ms": ms}` that reports progress after each
/// step and stops when cancelled; the output is `{"steps_done": n}`.
#[derive(Debug, Default)]
pub struct SlowJob;

impl TypedExecutor for SlowJob {
    type Config = SlowJobConfig;
    const NAME: &'static str = "slow_job";
    const VERSION: &'static str = "0.1.0";
    const STREAMING: bool = true;
    const CANCEL: bool = true;

    fn execute(&self, config: &SlowJobConfig, input: Value, ctx: &CallContext) -> Result<Value, ExecError> {
        let steps = match input.get("steps") {
            None => 5,
            Some(v) => v
                .as_u64()
                .filter(|n| *n <= 10_000)
                .ok_or_else(|| ExecError::InvalidInput("steps must be an integer from 0 to 10000".into()))?,
        };
        let step_ms = match input.get("step_ms") {
            None => config.step_ms,
            Some(v) => v
                .as_u64()
                .filter(|n| *n <= 60_000)
                .ok_or_else(|| ExecError::InvalidInput("step_ms must be an integer from 0 to 60000".into()))?,
        };
        for i in 0..steps {
            ctx.check_cancelled()?;
            // Sleep in slices so cancel is honoured within 10 ms.
            let mut left = step_ms;
            while left > 0 {
                let slice = left.min(10);
                std::thread::sleep(Duration::from_millis(slice));
                left -= slice;
                ctx.check_cancelled()?;
            }
            ctx.progress(
                (i + 1) as f64 / steps as f64,
                Some(format!("step {} of {steps}", i + 1)),
            );
        }
        Ok(json!({ "steps_done": steps }))
    }
}

/// Reverse settings.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
#[schemars(title = "Reverse settings")]
pub struct ReverseConfig {
    /// Upper-case the result.
    pub uppercase: bool,
}

/// Reverses `{"text": "..."}`; the bundled in-process plugin.
#[derive(Debug, Default)]
pub struct Reverse;

impl TypedExecutor for Reverse {
    type Config = ReverseConfig;
    const NAME: &'static str = "reverse";
    const VERSION: &'static str = "0.1.0";

    fn execute(&self, config: &ReverseConfig, input: Value, _ctx: &CallContext) -> Result<Value, ExecError> {
        let text = input
            .get("text")
            .and_then(Value::as_str)
            .ok_or_else(|| ExecError::InvalidInput("input must be {\"text\": string}".into()))?;
        let r: String = text.chars().rev().collect();
        Ok(json!({ "text": if config.uppercase { r.to_uppercase() } else { r } }))
    }

    fn input_example(&self) -> Option<Value> {
        Some(json!({"text": "stressed desserts"}))
    }
}

/// The example executor named `name` (`word_count`, `slow_job`, `reverse`).
pub fn by_name(name: &str) -> Option<Arc<dyn Executor>> {
    match name {
        "word_count" => Some(Arc::new(Typed::new(WordCount))),
        "slow_job" => Some(Arc::new(Typed::new(SlowJob))),
        "reverse" => Some(Arc::new(Typed::new(Reverse))),
        _ => None,
    }
}

/// The names [`by_name`] knows.
pub const NAMES: [&str; 3] = ["word_count", "slow_job", "reverse"];
