//! The `plugboard` command.
//!
//! Commands that read plugins, configs and the ledger (`list`, `show`,
//! `stats`, `config`, `ps`, `gc`, `cost`, `logs`) work with no host running;
//! the ones that act on running plugins (`start`, `stop`, `restart`,
//! `status`, `call`) are clients of the host's API on the data dir's socket.
//! Errors print as one line with their causes; exit codes are 0 ok, 1 failed,
//! 2 usage, 3 not found.

mod cli;
mod commands;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Global};

/// A failed command: the error and the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    /// Exit code: 1 failed, 2 usage, 3 not found.
    pub code: u8,
    /// What went wrong.
    pub error: Box<dyn std::error::Error + Send + Sync>,
}

impl Failure {
    /// Exit 1.
    pub fn failed(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Failure {
            code: 1,
            error: e.into(),
        }
    }
    /// Exit 2.
    pub fn usage(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Failure {
            code: 2,
            error: e.into(),
        }
    }
    /// Exit 3.
    pub fn not_found(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Failure {
            code: 3,
            error: e.into(),
        }
    }
}

/// Result of a command.
pub type CmdResult = Result<(), Failure>;

/// Directories resolved from flags, environment and XDG defaults.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// Plugins directories.
    pub plugins: Vec<PathBuf>,
    /// Config directory.
    pub config: PathBuf,
    /// Data directory.
    pub data: PathBuf,
    /// True when the plugins dirs were given explicitly.
    pub plugins_explicit: bool,
    /// True when the config dir was given explicitly.
    pub config_explicit: bool,
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    match std::env::var_os(var).filter(|v| !v.is_empty()) {
        Some(v) => PathBuf::from(v),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => PathBuf::from(h).join(fallback),
            None => PathBuf::from("."),
        },
    }
}

impl Dirs {
    fn resolve(g: &Global) -> Dirs {
        let mut plugins = g.plugins.clone();
        let mut explicit = !plugins.is_empty();
        if plugins.is_empty()
            && let Some(v) = std::env::var_os("PLUGBOARD_PLUGINS").filter(|v| !v.is_empty())
        {
            plugins = std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect();
            explicit = true;
        }
        if plugins.is_empty() {
            plugins.push(xdg("XDG_CONFIG_HOME", ".config").join("plugboard/plugins"));
        }
        let env_dir = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let config_given = g.config_dir.clone().or_else(|| env_dir("PLUGBOARD_CONFIG_DIR"));
        let config_explicit = config_given.is_some();
        let config = config_given.unwrap_or_else(|| xdg("XDG_CONFIG_HOME", ".config").join("plugboard/configs"));
        let data = g
            .data_dir
            .clone()
            .or_else(|| env_dir("PLUGBOARD_DATA_DIR"))
            .unwrap_or_else(|| xdg("XDG_DATA_HOME", ".local/share").join("plugboard"));
        Dirs {
            plugins,
            config,
            data,
            plugins_explicit: explicit,
            config_explicit,
        }
    }
}

/// The error and its causes on one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        src = s.source();
    }
    line
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let dirs = Dirs::resolve(&cli.global);
    match commands::run(cli.command, &dirs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", error_chain(f.error.as_ref()));
            ExitCode::from(f.code)
        }
    }
}
