//! Plugin manifests: one `plugin.toml` per plugin folder.
//!
//! A manifest is static metadata, so plugins are listed and configured
//! without starting anything. Each bad manifest is reported with its path and
//! reason while the others still load. A mode's launch details are checked
//! when the plugin is started, not when it is listed, so a plugin whose
//! backend is not built yet is still listed and configurable.
//! docs/manifest.md is the reference for the format.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use plugboard_core::files::{FileError, read_regular_file};
use plugboard_core::{CapabilityError, ExecutionMode, PluginManager, PluginMetadata};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The file name a plugin folder must contain.
pub const MANIFEST_FILE: &str = "plugin.toml";

/// How deep discovery descends below a search path looking for manifests.
pub const MAX_SEARCH_DEPTH: usize = 4;

/// The largest `plugin.toml` read, in bytes (1 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// The largest `config_schema_file` read, in bytes (4 MiB).
pub const MAX_SCHEMA_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// How the host knows a worker is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Ready {
    /// The worker answers the protocol's health request on `PLUGBOARD_LISTEN`.
    #[default]
    Protocol,
    /// An HTTP GET to this URL returns a 2xx status.
    HttpGet(String),
    /// A TCP connection to `host:port` is accepted.
    Tcp(String),
    /// A line of the worker's stdout or stderr matches this regex.
    LogLine(String),
    /// The worker writes a line to the file descriptor named by
    /// `PLUGBOARD_NOTIFY_FD` (any program can; process plugins only).
    Notify,
    /// Ready as soon as the process is spawned.
    None,
}

/// When a crashed worker is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never restart (default).
    #[default]
    Never,
    /// Restart when the worker exits with a non-zero code or a signal.
    OnFailure,
    /// Restart whenever the worker exits without being asked to stop.
    Always,
}

/// The `[restart]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Restart {
    /// When to restart.
    pub policy: RestartPolicy,
    /// Restarts allowed before the plugin is left failed.
    pub max_restarts: u32,
    /// First back-off delay in milliseconds; doubles per restart, capped at 30 s.
    pub backoff_ms: u64,
}

impl Default for Restart {
    fn default() -> Self {
        Restart {
            policy: RestartPolicy::Never,
            max_restarts: 5,
            backoff_ms: 500,
        }
    }
}

/// The `[lifecycle]` table: when a running plugin is stopped by itself,
/// and whether a call starts a stopped one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lifecycle {
    /// Stop the plugin after this many seconds without a call (none in flight).
    pub idle_stop_s: Option<f64>,
    /// A call to the stopped plugin starts it and waits until it is ready.
    pub start_on_demand: bool,
    /// Stop the plugin this many seconds after it started, whatever it does;
    /// also the horizon of its start's budget projection (else one hour).
    pub max_duration_s: Option<f64>,
}

/// The `[launch]` table: how to start the worker. Keys other modes use are
/// kept in `extra` and checked by that mode's backend at start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    /// Program to run (looked up on PATH when it has no `/`).
    #[serde(default)]
    pub command: Option<String>,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory, relative to the manifest's folder (default: the folder).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Conda environment name (conda_env mode).
    #[serde(default)]
    pub conda_env: Option<String>,
    /// Keys for other modes' backends.
    #[serde(flatten)]
    pub extra: BTreeMap<String, toml::Value>,
}

/// The `[resources]` table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// GPUs the plugin needs.
    #[serde(default)]
    pub gpu_count: u32,
    /// GPU model.
    #[serde(default)]
    pub gpu_type: Option<String>,
    /// Memory the plugin needs, in GB.
    #[serde(default)]
    pub memory_gb: Option<f64>,
    /// Estimated cost per hour in USD while running.
    #[serde(default)]
    pub estimated_cost_per_hour: Option<f64>,
}

/// The `[examples]` table: what a caller can try the plugin with (the
/// dashboard's call panel starts from `input`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Examples {
    /// An input the plugin accepts, as JSON (any TOML value).
    #[serde(default)]
    pub input: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    category: String,
    title: Option<String>,
    version: Option<String>,
    description: Option<String>,
    #[serde(default)]
    execution_mode: ExecutionMode,
    #[serde(default)]
    launch: Launch,
    #[serde(default)]
    ready: Ready,
    ready_timeout_s: Option<f64>,
    stop_grace_s: Option<f64>,
    provision_timeout_s: Option<f64>,
    probe_interval_s: Option<f64>,
    config_schema: Option<toml::Table>,
    config_schema_file: Option<PathBuf>,
    #[serde(default)]
    examples: Examples,
    #[serde(default)]
    resources: Resources,
    #[serde(default)]
    restart: Restart,
    #[serde(default)]
    lifecycle: Lifecycle,
}

/// A parsed, checked `plugin.toml`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    /// The manifest file.
    pub path: PathBuf,
    /// The folder holding it; relative paths are resolved against it.
    pub dir: PathBuf,
    /// Plugin name.
    pub name: String,
    /// Category.
    pub category: String,
    /// Display title (defaults to the name).
    pub title: String,
    /// Version.
    pub version: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Execution mode.
    pub execution_mode: ExecutionMode,
    /// How to start it.
    pub launch: Launch,
    /// How readiness is detected.
    pub ready: Ready,
    /// Seconds allowed from spawn to ready (default 30).
    pub ready_timeout_s: f64,
    /// Seconds between SIGTERM and SIGKILL on stop (default 5).
    pub stop_grace_s: f64,
    /// Seconds a backend may take to provision the resource (default 900).
    pub provision_timeout_s: f64,
    /// Seconds between probes of a running plugin whose backend has no exit
    /// event (external services; default 5).
    pub probe_interval_s: f64,
    /// The config JSON Schema.
    pub config_schema: Value,
    /// Example input (`[examples]`).
    pub examples: Examples,
    /// Resource needs.
    pub resources: Resources,
    /// Restart policy.
    pub restart: Restart,
    /// Idle stop, start on demand, maximum duration.
    pub lifecycle: Lifecycle,
}

/// A manifest that could not be loaded: which file, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct ManifestError {
    /// The manifest file (or folder) at fault.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 96
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        && !s.starts_with('.')
        && !s.contains("..")
}

impl Manifest {
    /// Reads and checks one manifest file. A path that is not a regular file
    /// (a FIFO, a device) is refused without blocking, and so is a
    /// `config_schema_file` that is not one.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let err = |reason: String| ManifestError {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = read_regular_file(path, MAX_MANIFEST_BYTES).map_err(|e| err(file_problem(&e)))?;
        let text = String::from_utf8(bytes).map_err(|e| err(format!("is not UTF-8 text: {e}")))?;
        Manifest::parse(path, &text)
    }

    /// Parses manifest text as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
        let err = |reason: String| ManifestError {
            path: path.to_path_buf(),
            reason,
        };
        let raw: RawManifest = toml::from_str(text).map_err(|e| err(toml_error(text, &e)))?;
        for (field, value) in [("name", &raw.name), ("category", &raw.category)] {
            if !valid_name(value) {
                return Err(err(format!(
                    "{field} {value:?} must be 1-96 characters of letters, digits, '_', '-' or '.'"
                )));
            }
        }
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let config_schema = match (raw.config_schema, raw.config_schema_file) {
            (Some(_), Some(_)) => return Err(err("give [config_schema] or config_schema_file, not both".into())),
            (Some(table), None) => (
                "[config_schema]".to_owned(),
                serde_json::to_value(table).map_err(|e| err(format!("[config_schema] is not JSON-compatible: {e}")))?,
            ),
            (None, Some(file)) => {
                let full = dir.join(&file);
                let bytes = read_regular_file(&full, MAX_SCHEMA_FILE_BYTES)
                    .map_err(|e| err(format!("config_schema_file {} {}", full.display(), file_problem(&e))))?;
                let value = serde_json::from_slice(&bytes).map_err(|e| {
                    err(format!(
                        "config_schema_file {} is not JSON (line {}, column {}): {e}",
                        full.display(),
                        e.line(),
                        e.column()
                    ))
                })?;
                (format!("config_schema_file {}", full.display()), value)
            }
            (None, None) => (String::new(), serde_json::json!({"type": "object", "properties": {}})),
        };
        let (schema_source, config_schema) = config_schema;
        if let Err(e) =
            plugboard_core::CompiledSchema::compile(&format!("{}_{}", raw.category, raw.name), &config_schema)
        {
            let e = one_line(&e.to_string());
            return Err(err(if schema_source.is_empty() {
                e
            } else {
                format!("{schema_source}: {e}")
            }));
        }
        if let Ready::LogLine(re) = &raw.ready
            && let Err(e) = regex::Regex::new(re)
        {
            return Err(err(format!(
                "ready.log_line is not a valid regex: {}",
                one_line(&e.to_string())
            )));
        }
        let positive = |name: &str, v: Option<f64>, default: f64| match v {
            None => Ok(default),
            Some(x) if (0.0..=86_400.0).contains(&x) => Ok(x),
            Some(x) => Err(err(format!("{name} must be between 0 and 86400 seconds, got {x}"))),
        };
        Ok(Manifest {
            title: raw.title.unwrap_or_else(|| raw.name.clone()),
            name: raw.name,
            category: raw.category,
            version: raw.version,
            description: raw.description,
            execution_mode: raw.execution_mode,
            launch: raw.launch,
            ready: raw.ready,
            ready_timeout_s: positive("ready_timeout_s", raw.ready_timeout_s, 30.0)?,
            stop_grace_s: positive("stop_grace_s", raw.stop_grace_s, 5.0)?,
            provision_timeout_s: positive("provision_timeout_s", raw.provision_timeout_s, 900.0)?,
            probe_interval_s: match raw.probe_interval_s {
                Some(x) if !(0.01..=3600.0).contains(&x) => {
                    return Err(err(format!(
                        "probe_interval_s must be between 0.01 and 3600 seconds, got {x}"
                    )));
                }
                x => x.unwrap_or(5.0),
            },
            config_schema,
            examples: raw.examples,
            resources: raw.resources,
            restart: raw.restart,
            lifecycle: {
                for (name, v) in [
                    ("lifecycle.idle_stop_s", raw.lifecycle.idle_stop_s),
                    ("lifecycle.max_duration_s", raw.lifecycle.max_duration_s),
                ] {
                    if let Some(x) = v
                        && !(0.001..=31_536_000.0).contains(&x)
                    {
                        return Err(err(format!(
                            "{name} must be between 0.001 and 31536000 seconds, got {x}"
                        )));
                    }
                }
                raw.lifecycle
            },
            path: path.to_path_buf(),
            dir,
        })
    }

    /// The manifest's price per hour (`[resources] estimated_cost_per_hour`)
    /// as a launch plan records it, when it gives one.
    pub fn price_estimate(&self) -> Option<(f64, crate::ledger::PriceSource)> {
        self.resources
            .estimated_cost_per_hour
            .map(|p| (p, crate::ledger::PriceSource::Manifest))
    }

    /// `{category}_{name}`.
    pub fn unique_id(&self) -> String {
        format!("{}_{}", self.category, self.name)
    }

    /// The core metadata of this plugin (not configured, nothing running).
    pub fn metadata(&self) -> PluginMetadata {
        let mut m = PluginMetadata::new(&self.name, &self.category, &self.title)
            .with_schema(self.config_schema.clone())
            .with_mode(self.execution_mode);
        m.version = self.version.clone();
        m.description = self.description.clone();
        m.manages_child_processes = matches!(self.execution_mode, ExecutionMode::Subprocess | ExecutionMode::CondaEnv);
        m.manages_external_resources = !matches!(self.execution_mode, ExecutionMode::InProcess);
        m.conda_env_name = self.launch.conda_env.clone();
        m
    }
}

/// A TOML error as one line: position, then the parser's message.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = one_line(e.message());
    match e.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
            format!("line {line}, column {column}: {msg}")
        }
        None => msg,
    }
}

/// Why a file could not be read, without its path (the caller names it).
fn file_problem(e: &FileError) -> String {
    match e {
        FileError::NotRegular { kind, .. } => format!("is {kind}, not a regular file; refusing to read it"),
        FileError::TooLarge { size, limit, .. } => format!("is {size} bytes, over the limit of {limit} bytes"),
        FileError::Io { source, .. } => format!("cannot be read: {source}"),
    }
}

/// Messages may span several lines; keep them on one.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|'))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a scan of the search paths found.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Good manifests, by unique id, in discovery order.
    pub manifests: Vec<Manifest>,
    /// Every manifest that failed, with its reason.
    pub problems: Vec<ManifestError>,
}

impl Catalog {
    /// Scans each search path: a `plugin.toml` in the path itself, or in
    /// folders below it (up to [`MAX_SEARCH_DEPTH`], hidden folders skipped,
    /// not descending below a folder that has one). Symbolic links to folders
    /// are followed; each folder is scanned once (by device and inode), a
    /// link that leads back to a folder being scanned (a loop), a folder
    /// reached a second time and a broken link are problems. A missing search
    /// path is a problem too.
    pub fn scan(search_paths: &[PathBuf]) -> Catalog {
        let mut walker = Walker::default();
        for root in search_paths {
            let meta = match std::fs::metadata(root) {
                Ok(m) if m.is_dir() => m,
                _ => {
                    walker.problems.push(ManifestError {
                        path: root.clone(),
                        reason: "plugins directory does not exist or is not a directory".into(),
                    });
                    continue;
                }
            };
            if walker.first_visit(root, &meta) {
                let mut ancestors = vec![((meta.dev(), meta.ino()), root.clone())];
                walker.walk(root, 0, &mut ancestors);
            }
        }
        let Walker {
            found, mut problems, ..
        } = walker;
        let mut manifests: Vec<Manifest> = Vec::new();
        let mut seen: HashMap<String, PathBuf> = HashMap::new();
        for path in found {
            match Manifest::load(&path) {
                Ok(m) => {
                    let id = m.unique_id();
                    if let Some(first) = seen.get(&id) {
                        problems.push(ManifestError {
                            path,
                            reason: format!("duplicate plugin id {id} (already defined by {})", first.display()),
                        });
                    } else {
                        seen.insert(id, path);
                        manifests.push(m);
                    }
                }
                Err(e) => problems.push(e),
            }
        }
        tracing::debug!(
            dirs = search_paths.len(),
            manifests = manifests.len(),
            problems = problems.len(),
            "scanned plugins dirs"
        );
        Catalog { manifests, problems }
    }

    /// The manifest of `unique_id`.
    pub fn get(&self, unique_id: &str) -> Option<&Manifest> {
        self.manifests.iter().find(|m| m.unique_id() == unique_id)
    }

    /// The categories present, sorted.
    pub fn categories(&self) -> Vec<String> {
        let mut c: Vec<String> = self.manifests.iter().map(|m| m.category.clone()).collect();
        c.sort();
        c.dedup();
        c
    }
}

/// A folder's identity: device and inode.
type FolderId = (u64, u64);

/// The state of one scan: manifests found, problems, and every folder
/// entered (so that links cannot make a folder scanned twice or forever).
#[derive(Default)]
struct Walker {
    found: Vec<PathBuf>,
    problems: Vec<ManifestError>,
    visited: HashMap<FolderId, PathBuf>,
}

impl Walker {
    /// Records a folder about to be scanned; false (and a problem) when it
    /// was scanned already under another path.
    fn first_visit(&mut self, path: &Path, meta: &std::fs::Metadata) -> bool {
        let id = (meta.dev(), meta.ino());
        if let Some(first) = self.visited.get(&id) {
            self.problems.push(ManifestError {
                path: path.to_path_buf(),
                reason: format!("is the same folder as {} (scanned once)", first.display()),
            });
            return false;
        }
        self.visited.insert(id, path.to_path_buf());
        true
    }

    fn walk(&mut self, dir: &Path, depth: usize, ancestors: &mut Vec<(FolderId, PathBuf)>) {
        let candidate = dir.join(MANIFEST_FILE);
        // symlink_metadata first: a dangling or looping link named plugin.toml
        // is reported by Manifest::load, anything else that exists is loaded.
        if std::fs::symlink_metadata(&candidate).is_ok() {
            self.found.push(candidate);
            return;
        }
        if depth >= MAX_SEARCH_DEPTH {
            return;
        }
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                self.problems.push(ManifestError {
                    path: dir.to_path_buf(),
                    reason: format!("cannot list: {e}"),
                });
                return;
            }
        };
        let mut dirs: Vec<(PathBuf, std::fs::Metadata)> = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(t) = entry.file_type() else { continue };
            let path = entry.path();
            if t.is_dir() {
                if let Ok(m) = entry.metadata() {
                    dirs.push((path, m));
                }
            } else if t.is_symlink() {
                match std::fs::metadata(&path) {
                    Ok(m) if m.is_dir() => dirs.push((path, m)),
                    Ok(_) => {} // a link to a file: not a plugin folder
                    Err(e) => self.problems.push(ManifestError {
                        reason: match std::fs::read_link(&path) {
                            Ok(target) => format!("broken symbolic link to {}: {e}", target.display()),
                            Err(_) => format!("broken symbolic link: {e}"),
                        },
                        path,
                    }),
                }
            }
        }
        dirs.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, meta) in dirs {
            let id = (meta.dev(), meta.ino());
            if let Some((_, ancestor)) = ancestors.iter().find(|(a, _)| *a == id) {
                self.problems.push(ManifestError {
                    reason: format!("symbolic link loop: leads back to {}; not followed", ancestor.display()),
                    path,
                });
                continue;
            }
            if !self.first_visit(&path, &meta) {
                continue;
            }
            ancestors.push((id, path.clone()));
            self.walk(&path, depth + 1, ancestors);
            ancestors.pop();
        }
    }
}

/// A core [`PluginManager`] over manifests: discovery reads `plugin.toml`
/// files and starts nothing. Optionally limited to one category, since the
/// registry registers one manager per category.
///
/// A manager made with [`new`](Self::new) scans its search paths at each
/// discovery; one made with [`from_manifests`](Self::from_manifests) serves
/// manifests scanned already, so that one scan feeds every category
/// ([`registry_for`](crate::registry_for) does that).
#[derive(Debug, Clone)]
pub struct ManifestManager {
    search_paths: Vec<PathBuf>,
    category: Option<String>,
    catalog: Catalog,
    prescanned: bool,
}

impl ManifestManager {
    /// A manager over these search paths, for every category.
    pub fn new(search_paths: Vec<PathBuf>) -> Self {
        ManifestManager {
            search_paths,
            category: None,
            catalog: Catalog::default(),
            prescanned: false,
        }
    }

    /// A manager over manifests scanned already (typically one category's
    /// share of a [`Catalog`]): discovery reads no file and reports no
    /// problem (the scan's caller reports those, once).
    pub fn from_manifests(manifests: Vec<Manifest>) -> Self {
        ManifestManager {
            search_paths: Vec::new(),
            category: None,
            catalog: Catalog {
                manifests,
                problems: Vec::new(),
            },
            prescanned: true,
        }
    }

    /// Limits discovery to one category.
    pub fn for_category(mut self, category: impl Into<String>) -> Self {
        self.category = Some(category.into());
        self
    }

    /// What the last discovery found (after [`PluginManager::discover_plugins`]).
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The problems of the last discovery (none for a manager made with
    /// [`from_manifests`](Self::from_manifests)).
    pub fn problems(&self) -> &[ManifestError] {
        &self.catalog.problems
    }
}

impl PluginManager for ManifestManager {
    fn discover_plugins(&mut self) -> Result<Vec<PluginMetadata>, CapabilityError> {
        if !self.prescanned {
            self.catalog = Catalog::scan(&self.search_paths);
            for p in &self.catalog.problems {
                tracing::warn!(path = %p.path.display(), reason = %p.reason, "bad plugin manifest");
            }
        }
        if let Some(c) = &self.category {
            self.catalog.manifests.retain(|m| &m.category == c);
        }
        Ok(self.catalog.manifests.iter().map(Manifest::metadata).collect())
    }

    fn config_schema(&self, name: &str) -> Option<Value> {
        self.catalog
            .manifests
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.config_schema.clone())
    }
}

impl fmt::Display for Ready {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ready::Protocol => f.write_str("protocol"),
            Ready::HttpGet(u) => write!(f, "http_get {u}"),
            Ready::Tcp(a) => write!(f, "tcp {a}"),
            Ready::LogLine(r) => write!(f, "log_line /{r}/"),
            Ready::Notify => f.write_str("notify"),
            Ready::None => f.write_str("none"),
        }
    }
}
