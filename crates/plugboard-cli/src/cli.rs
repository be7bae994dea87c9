//! The command line, as clap sees it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use plugboard_core::ExecutionMode;

/// plugboard: list, configure, run, watch and clean up plugins that run anywhere.
#[derive(Debug, Parser)]
#[command(name = "plugboard", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    /// Global options.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 ok, 1 operation failed, 2 usage error, 3 not found.";

/// Options every command takes.
#[derive(Debug, Args, Clone)]
pub struct Global {
    /// A plugins directory (repeatable) [env: PLUGBOARD_PLUGINS, colon-separated]
    /// [default: $XDG_CONFIG_HOME/plugboard/plugins]
    #[arg(long = "plugins", value_name = "DIR", global = true)]
    pub plugins: Vec<PathBuf>,
    /// Where configs are saved [env: PLUGBOARD_CONFIG_DIR]
    /// [default: $XDG_CONFIG_HOME/plugboard/configs]
    #[arg(long, value_name = "DIR", global = true)]
    pub config_dir: Option<PathBuf>,
    /// Where the ledger, logs and host socket live [env: PLUGBOARD_DATA_DIR]
    /// [default: $XDG_DATA_HOME/plugboard]
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List plugins (no host needed).
    List {
        /// Only this category.
        #[arg(long)]
        category: Option<String>,
        /// Only this execution mode.
        #[arg(long, value_parser = parse_mode)]
        mode: Option<ExecutionMode>,
        /// Only plugins with a saved config.
        #[arg(long, conflicts_with = "unconfigured")]
        configured: bool,
        /// Only plugins without a saved config.
        #[arg(long)]
        unconfigured: bool,
        /// JSON output (the seed's metadata plus unique_id).
        #[arg(long)]
        json: bool,
    },
    /// Show one plugin.
    Show {
        /// Plugin id (`{category}_{name}`).
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Plugin statistics (the seed's, by_category filled).
    Stats {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Read, write, validate, delete or edit a plugin's config.
    Config {
        /// What to do with it.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Run a host: supervisor and the JSON API on a Unix socket in the data dir.
    Serve(ServeArgs),
    /// Run a host with the bundled example plugins and a fresh data dir.
    Demo {
        /// TCP address for the API.
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: SocketAddr,
    },
    /// Start a plugin on the running host, until it is ready.
    Start {
        /// Plugin id.
        id: String,
    },
    /// Stop a plugin and its whole process tree.
    Stop {
        /// Plugin id.
        id: String,
    },
    /// Stop and start a plugin.
    Restart {
        /// Plugin id.
        id: String,
    },
    /// A plugin's run status on the running host.
    Status {
        /// Plugin id.
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// A plugin's log (stdout and stderr of its worker).
    Logs {
        /// Plugin id.
        id: String,
        /// Keep printing new lines.
        #[arg(long, short)]
        follow: bool,
        /// Lines to show.
        #[arg(long, short = 'n', default_value_t = 50)]
        lines: usize,
    },
    /// Call a running plugin.
    Call {
        /// Plugin id.
        id: String,
        /// Input as JSON.
        #[arg(long, conflicts_with = "input_file")]
        input: Option<String>,
        /// Input from a JSON file (`-` for stdin).
        #[arg(long)]
        input_file: Option<PathBuf>,
        /// Stream progress while the call runs.
        #[arg(long)]
        stream: bool,
    },
    /// Every live resource, from the ledger (no host needed).
    Ps {
        /// JSON output (ledger rows).
        #[arg(long)]
        json: bool,
    },
    /// End resources whose host is gone (or all of them).
    Gc {
        /// Also resources of running hosts.
        #[arg(long)]
        all: bool,
        /// Only report.
        #[arg(long)]
        dry_run: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Spend by plugin, provider and category: accrued, burn rate and projected.
    Cost {
        /// Hours ahead to project the current burn rate over.
        #[arg(long, default_value_t = 1.0)]
        hours: f64,
        /// Count spend from this date (YYYY-MM-DD, UTC) or `day`/`month` (default: everything).
        #[arg(long)]
        since: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Set, show or delete budgets (global, per category, per plugin).
    Budget {
        /// What to do.
        #[command(subcommand)]
        action: BudgetAction,
    },
    /// Set, list or delete provider keys (kept 0600 in the data dir, never printed).
    Secret {
        /// What to do.
        #[command(subcommand)]
        action: SecretAction,
    },
    /// Shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Serve a bundled Rust example plugin as a worker (used by the example manifests).
    #[command(hide = true)]
    ExampleWorker {
        /// The example's name.
        name: String,
    },
}

/// `serve` options.
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Serve the dashboard and the HTTP API on this address too (a
    /// non-loopback address needs --token; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7878", conflicts_with = "no_http")]
    pub bind: SocketAddr,
    /// Serve only the Unix socket: no dashboard, no HTTP.
    #[arg(long)]
    pub no_http: bool,
    /// Token required on the TCP address [env: PLUGBOARD_TOKEN].
    #[arg(long)]
    pub token: Option<String>,
}

/// `budget` subcommands.
#[derive(Debug, Subcommand)]
pub enum BudgetAction {
    /// Add or replace the budget of SCOPE.
    Set {
        /// `global`, `category:NAME` or a plugin id.
        scope: String,
        /// Total USD allowed over the period.
        #[arg(long)]
        max_usd: Option<f64>,
        /// The period the total counts over: day, month, all, or a start date YYYY-MM-DD.
        #[arg(long, default_value = "month")]
        period: String,
        /// Running rate allowed, USD per hour.
        #[arg(long)]
        max_usd_per_hour: Option<f64>,
    },
    /// Every budget with its use against its limits.
    Show {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Remove the budget of SCOPE.
    Delete {
        /// `global`, `category:NAME` or a plugin id.
        scope: String,
    },
}

/// `secret` subcommands.
#[derive(Debug, Subcommand)]
pub enum SecretAction {
    /// Store NAME's value, read from stdin (a hidden prompt on a terminal), never from the command line.
    Set {
        /// The name, environment-variable style (e.g. LAMBDA_API_KEY).
        name: String,
        /// A value given here is refused (it would land in shell history and `ps`).
        #[arg(hide = true)]
        value: Vec<String>,
    },
    /// Every known and stored name: set or not, and where from (never a value).
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Remove NAME from the secret store.
    Delete {
        /// The name.
        name: String,
    },
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Print the config (schema defaults filled in).
    Get {
        /// Plugin id.
        id: String,
        /// JSON output (the default for this command too).
        #[arg(long)]
        json: bool,
    },
    /// Validate and save a config.
    Set {
        /// Plugin id.
        id: String,
        /// The whole config as JSON.
        #[arg(long, conflicts_with_all = ["file", "pairs"])]
        json: Option<String>,
        /// The whole config from a JSON file.
        #[arg(long, conflicts_with = "pairs")]
        file: Option<PathBuf>,
        /// KEY=VALUE changes to the saved config (VALUE is JSON, else a string; `a.b=1` sets nested keys).
        pairs: Vec<String>,
    },
    /// Check a config against the schema without saving.
    Validate {
        /// Plugin id.
        id: String,
        /// The config as JSON.
        #[arg(long, conflicts_with = "file")]
        json: Option<String>,
        /// The config from a JSON file.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Delete the saved config.
    Delete {
        /// Plugin id.
        id: String,
    },
    /// Edit the config in $EDITOR; it is validated before it is saved.
    Edit {
        /// Plugin id.
        id: String,
    },
}

fn parse_mode(s: &str) -> Result<ExecutionMode, String> {
    s.parse::<ExecutionMode>().map_err(|e| e.to_string())
}
