//! Errors of the host: each names the plugin and what went wrong, and a
//! worker that failed to start carries the tail of its stderr.

use std::path::PathBuf;

use plugboard_core::ExecutionMode;

use crate::ledger::LedgerError;

/// Errors from the supervisor, launch resolution and the reaper.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// No such plugin is known.
    #[error("unknown plugin {plugin:?}")]
    UnknownPlugin {
        /// The id asked for.
        plugin: String,
    },
    /// The plugin's mode has no backend in this host.
    #[error("plugin {plugin} uses execution mode {mode}, which this host cannot start: {missing}")]
    UnsupportedMode {
        /// The plugin.
        plugin: String,
        /// Its mode.
        mode: ExecutionMode,
        /// What is missing.
        missing: String,
    },
    /// A launch key has a value the mode's backend cannot use.
    #[error("plugin {plugin}: launch.{key} in {} {reason}", manifest.display())]
    BadLaunch {
        /// The plugin.
        plugin: String,
        /// Its manifest.
        manifest: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A secret the plugin needs is not set.
    #[error("plugin {plugin} needs the environment variable {name} (its token), which is not set")]
    MissingSecret {
        /// The plugin.
        plugin: String,
        /// The variable.
        name: String,
    },
    /// The plugin was stopped while it was starting.
    #[error("plugin {plugin} was stopped while it was starting")]
    StoppedDuringStart {
        /// The plugin.
        plugin: String,
    },
    /// The backend did not create the resource in time.
    #[error(
        "plugin {plugin}: its resource was not provisioned within {secs} s (provision_timeout_s); what was created was ended"
    )]
    ProvisionTimeout {
        /// The plugin.
        plugin: String,
        /// The limit.
        secs: f64,
    },
    /// The endpoint cannot be used for the protocol.
    #[error("plugin {plugin}: its endpoint cannot be used")]
    BadEndpoint {
        /// The plugin.
        plugin: String,
        /// Why.
        #[source]
        source: crate::endpoint::EndpointError,
    },
    /// The plugin's resource stopped answering.
    #[error("plugin {plugin} is lost (not answering, not known to be gone): {reason}")]
    Lost {
        /// The plugin.
        plugin: String,
        /// The last probe error.
        reason: String,
    },
    /// Another lifecycle operation on the plugin did not finish in time.
    #[error("plugin {plugin} is busy: another start or stop did not finish within {secs} s")]
    Busy {
        /// The plugin.
        plugin: String,
        /// The wait.
        secs: f64,
    },
    /// The backend could not confirm the resource gone; the ledger keeps it
    /// for gc to retry.
    #[error("plugin {plugin}: stop not confirmed: {reason}; the ledger keeps the resource and gc retries")]
    StopUnconfirmed {
        /// The plugin.
        plugin: String,
        /// Why.
        reason: String,
    },
    /// The container engine refused or could not be reached.
    #[error("plugin {plugin}: container engine at {address}: {reason}")]
    Engine {
        /// The plugin.
        plugin: String,
        /// The engine address tried.
        address: String,
        /// What went wrong.
        reason: String,
    },
    /// A budget refused the start.
    #[error("plugin {plugin} not started: {refusal}")]
    BudgetRefused {
        /// The plugin.
        plugin: String,
        /// Which budget, its limit and the projection.
        refusal: crate::budget::Refusal,
    },
    /// Budgets could not be read.
    #[error("{context}: the budgets cannot be read")]
    Budgets {
        /// What needed them (`plugin X not started`…).
        context: String,
        /// Why.
        #[source]
        source: crate::budget::BudgetError,
    },
    /// A cloud provider refused, failed, or had nothing to rent.
    #[error("plugin {plugin}: {provider}: {reason}")]
    Cloud {
        /// The plugin.
        plugin: String,
        /// The provider (`aws`, `lambda_labs`…).
        provider: String,
        /// What happened, with the provider's own message.
        reason: String,
    },
    /// A remote machine could not be reached or refused (SSH).
    #[error("plugin {plugin}: SSH to {destination}: {reason}")]
    Remote {
        /// The plugin.
        plugin: String,
        /// `user@host:port`.
        destination: String,
        /// What went wrong (host key, login, connection, remote command).
        reason: String,
    },
    /// `ready = "notify"` for a mode whose backend offers no notification.
    #[error(
        "plugin {plugin}: ready = \"notify\" needs a subprocess, conda_env or remote_ssh plugin; {mode} offers no notification descriptor"
    )]
    NoNotify {
        /// The plugin.
        plugin: String,
        /// Its mode.
        mode: ExecutionMode,
    },
    /// A bug: a state plugboard should never reach.
    #[error("internal error: {0}")]
    Internal(String),
    /// The manifest lacks a launch field the mode needs.
    #[error("plugin {plugin} ({mode}) needs launch.{field} in {}", manifest.display())]
    MissingLaunch {
        /// The plugin.
        plugin: String,
        /// The missing field.
        field: &'static str,
        /// Its mode.
        mode: ExecutionMode,
        /// Its manifest.
        manifest: PathBuf,
    },
    /// A `${NAME}` in the launch table names nothing.
    #[error("plugin {plugin}: ${{{name}}} in {} is not defined (neither a host launch variable nor an environment variable)", manifest.display())]
    UndefinedVariable {
        /// The plugin.
        plugin: String,
        /// The variable.
        name: String,
        /// Its manifest.
        manifest: PathBuf,
    },
    /// No conda, mamba or micromamba was found.
    #[error(
        "plugin {plugin} runs in a conda environment, but no micromamba, mamba or conda is on PATH (set PLUGBOARD_CONDA)"
    )]
    CondaNotFound {
        /// The plugin.
        plugin: String,
    },
    /// The worker could not be spawned.
    #[error("cannot start plugin {plugin}: spawning {command:?} failed")]
    Spawn {
        /// The plugin.
        plugin: String,
        /// The program.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The worker exited before it was ready.
    #[error("plugin {plugin} exited before it was ready ({exit}){}", tail_text(stderr_tail))]
    ExitedBeforeReady {
        /// The plugin.
        plugin: String,
        /// How it exited.
        exit: String,
        /// Its last stderr lines.
        stderr_tail: Vec<String>,
    },
    /// The worker did not become ready in time (it was stopped).
    #[error("plugin {plugin} was not ready after {secs} s (waiting for {probe}{}){}",
        last_error.as_ref().map(|e| format!("; last attempt: {e}")).unwrap_or_default(),
        tail_text(stderr_tail))]
    ReadyTimeout {
        /// The plugin.
        plugin: String,
        /// The timeout.
        secs: f64,
        /// The readiness check.
        probe: String,
        /// The last probe error.
        last_error: Option<String>,
        /// Its last stderr lines.
        stderr_tail: Vec<String>,
    },
    /// The plugin is already starting or running.
    #[error("plugin {plugin} is already {state}")]
    AlreadyRunning {
        /// The plugin.
        plugin: String,
        /// Its state.
        state: String,
    },
    /// The plugin is not running.
    #[error("plugin {plugin} is not running")]
    NotRunning {
        /// The plugin.
        plugin: String,
    },
    /// The worker socket path would be longer than a Unix socket allows.
    #[error("socket path {} is too long for a Unix socket (108 bytes); use a shorter data dir", path.display())]
    SocketPathTooLong {
        /// The path.
        path: PathBuf,
    },
    /// A file-system operation failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The worker answered the protocol wrongly or is not the plugin its
    /// manifest describes.
    #[error("the worker cannot be used")]
    Worker {
        /// What the call found.
        #[source]
        source: crate::client::CallError,
    },
    /// The plugin runs but does not speak the plugboard protocol.
    #[error("plugin {plugin} does not speak the plugboard protocol (ready = {ready}); call its own endpoint instead")]
    NoProtocol {
        /// The plugin.
        plugin: String,
        /// Its readiness check.
        ready: String,
    },
    /// An in-process plugin has no code registered in this host.
    #[error("plugin {plugin} runs in-process, but this host has no code registered for it")]
    NoInProcessCode {
        /// The plugin.
        plugin: String,
    },
    /// The plugin's config could not be loaded or was refused.
    #[error("plugin {plugin}: its config cannot be used")]
    Config {
        /// The plugin.
        plugin: String,
        /// Why.
        #[source]
        source: plugboard_core::ConfigError,
    },
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// The most worker stderr a start error carries, in bytes: its last lines.
const MAX_TAIL_BYTES: usize = 2048;

/// The last stderr lines of a worker for an error message: control
/// characters and terminal escape sequences removed, at most
/// [`MAX_TAIL_BYTES`] (the last lines; an over-long last line keeps its end).
fn tail_text(lines: &[String]) -> String {
    let cleaned: Vec<String> = lines.iter().map(|l| printable(l)).filter(|l| !l.is_empty()).collect();
    let mut kept: Vec<String> = Vec::new();
    let mut total = 0;
    for line in cleaned.iter().rev() {
        let cost = line.len() + if kept.is_empty() { 0 } else { 3 };
        if total + cost <= MAX_TAIL_BYTES {
            kept.push(line.clone());
            total += cost;
            continue;
        }
        if kept.is_empty() {
            let mut start = line.len() - MAX_TAIL_BYTES;
            while !line.is_char_boundary(start) {
                start += 1;
            }
            kept.push(format!("…{}", &line[start..]));
        }
        break;
    }
    if kept.is_empty() {
        return String::new();
    }
    kept.reverse();
    let shown = if kept.len() < cleaned.len() {
        format!(" (last {} of {} lines)", kept.len(), cleaned.len())
    } else {
        String::new()
    };
    format!("; stderr{shown}: {}", kept.join(" | "))
}

/// `s` as a terminal would leave it readable in one line: ANSI escape
/// sequences (CSI, OSC and the like, nF, two-byte ones) and other control characters
/// removed, bidirectional overrides removed, tabs as spaces, and only what
/// follows the last carriage return (progress bars redraw with `\r`).
fn printable(s: &str) -> String {
    let s = s.trim_end_matches(['\r', '\n']);
    let s = s.rsplit('\r').next().unwrap_or(s);
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC, DCS, SOS, PM, APC: up to BEL or ESC \.
                Some(']' | 'P' | 'X' | '^' | '_') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            if chars.peek() == Some(&'\\') {
                                chars.next();
                            }
                            break;
                        }
                    }
                }
                // nF: intermediates, then one final byte (`ESC ( B`).
                Some('\u{20}'..='\u{2f}') => {
                    for c in chars.by_ref() {
                        if !('\u{20}'..='\u{2f}').contains(&c) {
                            break;
                        }
                    }
                }
                _ => {} // a two-byte escape (or a lone ESC at the end)
            },
            '\u{9b}' => {
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            '\t' => out.push(' '),
            c if c.is_control() => {}
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {}
            c => out.push(c),
        }
    }
    out.trim().to_owned()
}
