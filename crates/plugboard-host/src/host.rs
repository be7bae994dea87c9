//! The host facade: plugins dirs + config dir + data dir in one object that
//! the CLI, the JSON API and the dashboard share.
//!
//! It joins the manifests (what exists), the core registry (how each is
//! configured), the supervisor (what runs) and the in-process plugins
//! registered in code, and applies a plugin's saved config to it whenever it
//! starts.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use plugboard_core::{ConfigError, ExecutionMode, PluginMetadata, UnifiedPluginRegistry};
use plugboard_protocol::Executor;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::HostError;
use crate::handle::PluginHandle;
use crate::ledger::now_ms;
use crate::manifest::{Catalog, Manifest, ManifestError, ManifestManager};
use crate::paths::DataDir;
use crate::supervisor::{RunState, Supervisor, SupervisorConfig, WorkerStatus};

/// Where a host finds its plugins, configs and state.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Plugins directories.
    pub plugin_dirs: Vec<PathBuf>,
    /// Config directory.
    pub config_dir: PathBuf,
    /// Data directory.
    pub data: DataDir,
    /// `${NAME}` values for launch tables.
    pub launch_vars: BTreeMap<String, String>,
    /// Reap every orphan this process adopts (a process that is only a host).
    pub reap_all_orphans: bool,
}

/// A plugin as listed: the seed's metadata plus its id, manifest path and state.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInfo {
    /// `{category}_{name}`.
    pub unique_id: String,
    /// The seed's metadata (`spawned_pids` live).
    #[serde(flatten)]
    pub metadata: PluginMetadata,
    /// The manifest file.
    pub manifest_path: PathBuf,
    /// GPUs, memory and price from the manifest.
    pub resources: crate::manifest::Resources,
    /// Whether it runs now (only from a running host).
    pub state: Option<RunState>,
}

/// Builds the core registry from a catalog: one manifest manager per
/// category, configs in `config_dir`. Needs no running host.
///
/// The plugins dirs are scanned once; each category's manager gets its share
/// of that scan. Problems are in the returned catalog, for the caller to
/// report once.
pub fn registry_for(plugin_dirs: &[PathBuf], config_dir: PathBuf) -> (UnifiedPluginRegistry, Catalog) {
    let catalog = Catalog::scan(plugin_dirs);
    let mut by_category: BTreeMap<&str, Vec<Manifest>> = BTreeMap::new();
    for m in &catalog.manifests {
        by_category.entry(m.category.as_str()).or_default().push(m.clone());
    }
    let mut registry = UnifiedPluginRegistry::new(config_dir);
    for (category, manifests) in by_category {
        let manager = ManifestManager::from_manifests(manifests).for_category(category);
        if let Err(e) = registry.register_plugin_manager(category, manager, None, true) {
            tracing::warn!(error = %e, "cannot register category");
        }
    }
    (registry, catalog)
}

struct InProcess {
    exec: Arc<dyn Executor>,
    handle: Option<PluginHandle>,
    started_at_ms: Option<i64>,
    /// The config applied at the current start.
    config: Option<Value>,
}

/// A running host.
pub struct Host {
    cfg: HostConfig,
    catalog: RwLock<Catalog>,
    manifests: Vec<Arc<Manifest>>,
    by_id: HashMap<String, usize>,
    /// Each category's manifests, by index, in discovery order.
    by_category: HashMap<String, Vec<usize>>,
    /// Each manifest's name, title and description, lowercased (by index).
    search_text: Vec<String>,
    registry: Mutex<UnifiedPluginRegistry>,
    supervisor: Supervisor,
    in_process: Mutex<HashMap<String, InProcess>>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").field("cfg", &self.cfg).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Host {
    /// Scans the plugins dirs, opens the config dir and starts a supervisor
    /// on the data dir.
    pub fn open(cfg: HostConfig) -> Result<Host, HostError> {
        let (registry, catalog) = registry_for(&cfg.plugin_dirs, cfg.config_dir.clone());
        let mut scfg = SupervisorConfig::new(cfg.data.clone());
        scfg.launch_vars = cfg.launch_vars.clone();
        scfg.reap_all_orphans = cfg.reap_all_orphans;
        let supervisor = Supervisor::new(scfg)?;
        let manifests: Vec<Arc<Manifest>> = catalog.manifests.iter().cloned().map(Arc::new).collect();
        let by_id = manifests.iter().enumerate().map(|(i, m)| (m.unique_id(), i)).collect();
        let mut by_category: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, m) in manifests.iter().enumerate() {
            by_category.entry(m.category.clone()).or_default().push(i);
        }
        // What a search looks in, lowercased once.
        let search_text = manifests
            .iter()
            .map(|m| {
                let mut t = format!("{}\n{}\n", m.name, m.title);
                if let Some(d) = &m.description {
                    t.push_str(d);
                }
                t.to_lowercase()
            })
            .collect();
        Ok(Host {
            cfg,
            catalog: RwLock::new(catalog),
            manifests,
            by_id,
            by_category,
            search_text,
            registry: Mutex::new(registry),
            supervisor,
            in_process: Mutex::new(HashMap::new()),
        })
    }

    /// The host's configuration.
    pub fn config(&self) -> &HostConfig {
        &self.cfg
    }

    /// The supervisor.
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// Registers the code of an in-process plugin under its unique id.
    pub fn register_in_process(&self, unique_id: impl Into<String>, exec: Arc<dyn Executor>) {
        lock(&self.in_process).insert(
            unique_id.into(),
            InProcess {
                exec,
                handle: None,
                started_at_ms: None,
                config: None,
            },
        );
    }

    /// Runs `f` with the registry (configs).
    pub fn with_registry<T>(&self, f: impl FnOnce(&mut UnifiedPluginRegistry) -> T) -> T {
        f(&mut lock(&self.registry))
    }

    /// Manifests that failed to load.
    pub fn problems(&self) -> Vec<ManifestError> {
        self.catalog.read().map(|c| c.problems.clone()).unwrap_or_default()
    }

    /// The manifest of a plugin.
    pub fn manifest(&self, unique_id: &str) -> Result<Arc<Manifest>, HostError> {
        self.by_id
            .get(unique_id)
            .map(|&i| Arc::clone(&self.manifests[i]))
            .ok_or_else(|| HostError::UnknownPlugin {
                plugin: unique_id.to_owned(),
            })
    }

    /// How many plugins the host knows.
    pub fn plugin_count(&self) -> usize {
        self.manifests.len()
    }

    /// Every plugin, in discovery order, with live state.
    pub fn plugins(&self) -> Vec<PluginInfo> {
        let registry = lock(&self.registry);
        self.manifests.iter().map(|m| self.info(m, &registry)).collect()
    }

    /// One page of a category's plugins, in discovery order, with live
    /// state: those whose name, title or description contains `filter`
    /// (case-insensitive; empty matches all), skipping `offset`, at most
    /// `limit`; with the number that match. Only the page's plugins are
    /// looked up, so a category of any size costs one pass over its
    /// manifests.
    pub fn plugins_page(&self, category: &str, filter: &str, offset: usize, limit: usize) -> (Vec<PluginInfo>, usize) {
        let Some(ix) = self.by_category.get(category) else {
            return (Vec::new(), 0);
        };
        let needle = filter.trim().to_lowercase();
        let page: Vec<&Arc<Manifest>>;
        let total;
        if needle.is_empty() {
            total = ix.len();
            page = ix
                .iter()
                .skip(offset)
                .take(limit)
                .map(|&i| &self.manifests[i])
                .collect();
        } else {
            let matching = ix
                .iter()
                .filter(|&&i| self.search_text[i].contains(&needle))
                .map(|&i| &self.manifests[i]);
            let mut n = 0;
            let mut p = Vec::new();
            for m in matching {
                if n >= offset && p.len() < limit {
                    p.push(m);
                }
                n += 1;
            }
            total = n;
            page = p;
        }
        let registry = lock(&self.registry);
        (page.into_iter().map(|m| self.info(m, &registry)).collect(), total)
    }

    /// One plugin, with live state.
    pub fn plugin(&self, unique_id: &str) -> Result<PluginInfo, HostError> {
        let m = self.manifest(unique_id)?;
        let registry = lock(&self.registry);
        Ok(self.info(&m, &registry))
    }

    fn info(&self, m: &Manifest, registry: &UnifiedPluginRegistry) -> PluginInfo {
        let unique_id = m.unique_id();
        let mut metadata = registry.get_plugin(&unique_id).cloned().unwrap_or_else(|| m.metadata());
        self.supervisor.fill_metadata(&mut metadata);
        let state = self.status(&unique_id).map(|s| s.state);
        PluginInfo {
            unique_id,
            metadata,
            manifest_path: m.path.clone(),
            resources: m.resources.clone(),
            state,
        }
    }

    /// The plugin's saved config with schema defaults.
    pub fn load_config(&self, unique_id: &str) -> Result<Map<String, Value>, ConfigError> {
        lock(&self.registry).load_plugin_config(unique_id)
    }

    /// Validates and saves a plugin's config.
    pub fn save_config(&self, unique_id: &str, config: &Map<String, Value>) -> Result<(), ConfigError> {
        lock(&self.registry).save_plugin_config(unique_id, config)
    }

    /// Deletes a plugin's saved config.
    pub fn delete_config(&self, unique_id: &str) -> Result<bool, ConfigError> {
        lock(&self.registry).delete_plugin_config(unique_id)
    }

    /// Starts a plugin (until ready) and applies its saved config.
    pub async fn start(&self, unique_id: &str) -> Result<WorkerStatus, HostError> {
        let m = self.manifest(unique_id)?;
        let config = self.load_config(unique_id).map_err(|e| HostError::Config {
            plugin: unique_id.to_owned(),
            source: e,
        })?;
        if m.execution_mode == ExecutionMode::InProcess {
            let handle = {
                let mut ip = lock(&self.in_process);
                let entry = ip.get_mut(unique_id).ok_or_else(|| HostError::NoInProcessCode {
                    plugin: unique_id.to_owned(),
                })?;
                if entry.handle.is_some() {
                    return Err(HostError::AlreadyRunning {
                        plugin: unique_id.to_owned(),
                        state: "running".into(),
                    });
                }
                PluginHandle::in_process(unique_id, Arc::clone(&entry.exec))
            };
            let config = Value::Object(config);
            crate::supervisor::apply_config(&handle, unique_id, Some(&config)).await?;
            let mut ip = lock(&self.in_process);
            if let Some(entry) = ip.get_mut(unique_id) {
                entry.handle = Some(handle);
                entry.started_at_ms = Some(now_ms());
                entry.config = Some(config);
            }
            drop(ip);
            return self.status(unique_id).ok_or_else(|| HostError::NotRunning {
                plugin: unique_id.to_owned(),
            });
        }
        // The supervisor applies the config after every (re)start.
        self.supervisor
            .start_with_config(Arc::clone(&m), Some(Value::Object(config)))
            .await
    }

    /// Stops a plugin (whole tree for processes).
    pub async fn stop(&self, unique_id: &str) -> Result<WorkerStatus, HostError> {
        self.manifest(unique_id)?;
        {
            let mut ip = lock(&self.in_process);
            if let Some(entry) = ip.get_mut(unique_id) {
                if entry.handle.take().is_none() {
                    return Err(HostError::NotRunning {
                        plugin: unique_id.to_owned(),
                    });
                }
                entry.started_at_ms = None;
                drop(ip);
                return self.status(unique_id).ok_or_else(|| HostError::NotRunning {
                    plugin: unique_id.to_owned(),
                });
            }
        }
        self.supervisor.stop(unique_id).await
    }

    /// Stops (if running) and starts a plugin, as one operation: concurrent
    /// restarts leave exactly one worker.
    pub async fn restart(&self, unique_id: &str) -> Result<WorkerStatus, HostError> {
        let m = self.manifest(unique_id)?;
        if m.execution_mode == ExecutionMode::InProcess {
            match self.stop(unique_id).await {
                Ok(_) | Err(HostError::NotRunning { .. }) => {}
                Err(e) => return Err(e),
            }
            return self.start(unique_id).await;
        }
        let config = self.load_config(unique_id).map_err(|e| HostError::Config {
            plugin: unique_id.to_owned(),
            source: e,
        })?;
        self.supervisor
            .restart_with_config(m, Some(Value::Object(config)))
            .await
    }

    /// The plugin's run status, if this host ever started it.
    pub fn status(&self, unique_id: &str) -> Option<WorkerStatus> {
        if let Some(entry) = lock(&self.in_process).get(unique_id) {
            return Some(WorkerStatus {
                plugin_id: unique_id.to_owned(),
                state: if entry.handle.is_some() {
                    RunState::Running
                } else {
                    RunState::Stopped
                },
                backend: Some("in_process".into()),
                resource: None,
                endpoint: None,
                pid: None,
                pid_start_time: None,
                resource_id: None,
                listen: None,
                log_path: self.cfg.data.log_path(unique_id),
                started_at_ms: entry.started_at_ms,
                ready_at_ms: entry.started_at_ms,
                restarts: 0,
                restart_pending: false,
                last_exit: None,
                error: None,
                note: None,
                stderr_tail: Vec::new(),
            });
        }
        self.supervisor.status(unique_id)
    }

    /// The config applied to the plugin's running worker when it started
    /// (schema defaults filled in); `None` while nothing runs. It differs
    /// from the saved config when that changed since the start.
    pub fn config_in_force(&self, unique_id: &str) -> Option<Value> {
        if let Some(entry) = lock(&self.in_process).get(unique_id) {
            return entry.handle.as_ref().and(entry.config.clone());
        }
        self.supervisor.config_in_force(unique_id)
    }

    /// The handle to call a running plugin.
    pub fn handle(&self, unique_id: &str) -> Result<PluginHandle, HostError> {
        self.manifest(unique_id)?;
        if let Some(entry) = lock(&self.in_process).get(unique_id) {
            return entry.handle.clone().ok_or_else(|| HostError::NotRunning {
                plugin: unique_id.to_owned(),
            });
        }
        self.supervisor.handle(unique_id)
    }

    /// The handle to call a plugin; a stopped plugin whose manifest says
    /// `[lifecycle] start_on_demand` is started first, and the call waits
    /// until it is ready (bounded by its ready timeout), as a
    /// scale-to-zero service would.
    pub async fn call_handle(&self, unique_id: &str) -> Result<PluginHandle, HostError> {
        match self.handle(unique_id) {
            Err(HostError::NotRunning { .. }) => {}
            other => return other,
        }
        let m = self.manifest(unique_id)?;
        if !m.lifecycle.start_on_demand {
            return self.handle(unique_id);
        }
        tracing::info!(plugin = unique_id, "starting on demand for a call");
        match self.start(unique_id).await {
            Ok(_) | Err(HostError::AlreadyRunning { .. }) => {}
            Err(e) => return Err(e),
        }
        // Another caller's start may still be finishing.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs_f64(m.ready_timeout_s);
        loop {
            match self.handle(unique_id) {
                Err(HostError::NotRunning { .. }) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                other => return other,
            }
        }
    }

    /// Spend by plugin, provider and category since `since_ms` (everything
    /// when `None`), projected `hours` ahead at the current burn rate.
    pub fn cost_report(&self, since_ms: Option<i64>, hours: f64) -> Result<crate::cost::CostReport, HostError> {
        let rows = self
            .supervisor
            .with_ledger(|l| l.spend_since(since_ms.unwrap_or(i64::MIN)))?;
        Ok(crate::cost::report(&rows, since_ms, now_ms(), hours))
    }

    /// Cumulative spend per plugin at `points` moments of `[from_ms, now]`.
    pub fn spend_series(&self, from_ms: i64, points: usize) -> Result<Vec<(String, Vec<f64>)>, HostError> {
        let rows = self.supervisor.with_ledger(|l| l.spend_since(from_ms))?;
        Ok(crate::cost::series(&rows, from_ms, now_ms(), points))
    }

    /// Every budget with its spend and level, now.
    pub fn budget_status(&self) -> Result<Vec<crate::budget::Status>, HostError> {
        let store = crate::budget::BudgetStore::new(self.cfg.data.budgets_path());
        let budgets = store.load().map_err(|source| HostError::Budgets {
            context: "budget status".into(),
            source,
        })?;
        let (statuses, _) = self
            .supervisor
            .with_ledger(|l| crate::budget::evaluate(&budgets, l, now_ms()))?;
        Ok(statuses)
    }

    /// Stops every plugin and marks the host ended in the ledger.
    pub async fn shutdown(&self) -> Result<(), HostError> {
        for entry in lock(&self.in_process).values_mut() {
            entry.handle = None;
        }
        self.supervisor.shutdown().await
    }
}
