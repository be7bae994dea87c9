//! What is known about a plugin without loading it, and what it holds running.
//!
//! Field names, defaults and JSON shape follow the seed's dataclasses exactly
//! (`dataclasses.asdict` plus enum values), so metadata written by the Python
//! library deserializes here and ours reads back there. Unknown fields (such
//! as the seed's `config_dataclass`, a Python type) are accepted and ignored.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::execution_mode::{CloudProvider, ExecutionMode};

fn default_ssh_port() -> u16 {
    22
}

fn default_status() -> String {
    "unknown".to_owned()
}

fn empty_object() -> Arc<Value> {
    Arc::new(Value::Object(Map::new()))
}

/// Information about a remote or cloud resource used by a plugin
/// (the seed's `RemoteResourceInfo`).
///
/// ```
/// use plugboard_core::{CloudProvider, RemoteResource};
///
/// let r: RemoteResource = serde_json::from_str(r#"{"provider": "aws"}"#).unwrap();
/// assert_eq!(r.provider, CloudProvider::Aws);
/// assert_eq!(r.ssh_port, 22);
/// assert_eq!(r.status, "unknown");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteResource {
    /// Cloud provider or service.
    pub provider: CloudProvider,
    /// Cloud region or zone.
    #[serde(default)]
    pub region: Option<String>,
    /// VM or instance identifier.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// Job or task identifier on the remote system.
    #[serde(default)]
    pub job_id: Option<String>,
    /// HTTP endpoint for API access.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// SSH host for remote access.
    #[serde(default)]
    pub ssh_host: Option<String>,
    /// SSH port number (default 22).
    #[serde(default = "default_ssh_port")]
    pub ssh_port: u16,
    /// Current status (provisioning, running, stopping, stopped…; default `"unknown"`).
    #[serde(default = "default_status")]
    pub status: String,
    /// Instance type (e.g. `p3.2xlarge`).
    #[serde(default)]
    pub resource_type: Option<String>,
    /// Number of GPUs.
    #[serde(default)]
    pub gpu_count: u32,
    /// GPU model (e.g. `A100`).
    #[serde(default)]
    pub gpu_type: Option<String>,
    /// Estimated hourly cost in USD.
    #[serde(default)]
    pub estimated_cost_per_hour: Option<f64>,
    /// Additional provider-specific metadata.
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

/// The seed's name for [`RemoteResource`].
pub type RemoteResourceInfo = RemoteResource;

impl RemoteResource {
    /// A resource of `provider` with every other field at the seed's default.
    pub fn new(provider: CloudProvider) -> Self {
        RemoteResource {
            provider,
            region: None,
            instance_id: None,
            job_id: None,
            endpoint_url: None,
            ssh_host: None,
            ssh_port: default_ssh_port(),
            status: default_status(),
            resource_type: None,
            gpu_count: 0,
            gpu_type: None,
            estimated_cost_per_hour: None,
            metadata: Map::new(),
        }
    }

    /// True when the status is exactly `"running"` (the seed's test for a live,
    /// billing resource).
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }
}

/// Metadata describing a plugin for display and resource management without
/// loading the plugin instance.
///
/// ```
/// use plugboard_core::{ExecutionMode, PluginMetadata};
/// use serde_json::json;
///
/// let m = PluginMetadata::new("whisper_tiny", "transcription", "Whisper Tiny Model")
///     .with_schema(json!({"type": "object", "properties": {}}));
/// assert_eq!(m.unique_id(), "transcription_whisper_tiny");
/// assert_eq!(m.execution_mode, ExecutionMode::InProcess);
/// assert!(m.is_local_execution());
/// assert!(!m.has_active_resources());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginMetadata {
    /// Internal plugin identifier.
    pub name: String,
    /// Plugin category (application-defined).
    pub category: String,
    /// Display title.
    pub title: String,
    /// JSON Schema of the plugin's configuration. Shared, not copied: a
    /// registry keeps one schema for every plugin whose schema is the same
    /// (assign with `schema.into()`; edit with [`Arc::make_mut`]).
    #[serde(default = "empty_object")]
    pub config_schema: Arc<Value>,
    /// Plugin description.
    #[serde(default)]
    pub description: Option<String>,
    /// Plugin version.
    #[serde(default)]
    pub version: Option<String>,
    /// Whether the plugin has a saved configuration.
    #[serde(default)]
    pub is_configured: bool,
    /// How the plugin executes (default `in_process`).
    #[serde(default)]
    pub execution_mode: ExecutionMode,
    /// Whether the plugin spawns child processes.
    #[serde(default)]
    pub manages_child_processes: bool,
    /// Whether the plugin manages containers, servers or other outside resources.
    #[serde(default)]
    pub manages_external_resources: bool,
    /// Process ids the plugin has spawned.
    #[serde(default)]
    pub spawned_pids: Vec<u32>,
    /// Container id, if the plugin runs in a container.
    #[serde(default)]
    pub container_id: Option<String>,
    /// Conda environment name, if the plugin runs in one.
    #[serde(default)]
    pub conda_env_name: Option<String>,
    /// Remote resource information, if the plugin runs remotely (boxed:
    /// most plugins have none, and a registry holds many plugins).
    #[serde(default)]
    pub remote_resource: Option<Box<RemoteResource>>,
}

impl PluginMetadata {
    /// Metadata with the given identity, an empty object schema and every
    /// other field at the seed's default.
    pub fn new(name: impl Into<String>, category: impl Into<String>, title: impl Into<String>) -> Self {
        PluginMetadata {
            name: name.into(),
            category: category.into(),
            title: title.into(),
            config_schema: empty_object(),
            description: None,
            version: None,
            is_configured: false,
            execution_mode: ExecutionMode::InProcess,
            manages_child_processes: false,
            manages_external_resources: false,
            spawned_pids: Vec::new(),
            container_id: None,
            conda_env_name: None,
            remote_resource: None,
        }
    }

    /// Replaces the config schema (builder style). A schema equal to the
    /// one the calling thread gave a plugin last (same JSON, keys in the same
    /// order) is replaced by that one, so a manager building many plugins
    /// with one schema holds it once; the JSON is unchanged. The thread
    /// remembers that schema weakly, so `Arc::get_mut` on it returns `None`;
    /// change a schema with `Arc::make_mut`, which copies a shared one.
    ///
    /// ```
    /// use plugboard_core::PluginMetadata;
    /// use serde_json::json;
    ///
    /// let schema = json!({"type": "object", "properties": {"device": {"type": "string"}}});
    /// let a = PluginMetadata::new("a", "", "A").with_schema(schema.clone());
    /// let b = PluginMetadata::new("b", "", "B").with_schema(schema);
    /// assert!(std::sync::Arc::ptr_eq(&a.config_schema, &b.config_schema));
    /// ```
    pub fn with_schema(mut self, schema: impl Into<Arc<Value>>) -> Self {
        self.config_schema = crate::schema_pool::share_recent(schema.into());
        self
    }

    /// Replaces the execution mode (builder style).
    pub fn with_mode(mut self, mode: ExecutionMode) -> Self {
        self.execution_mode = mode;
        self
    }

    /// `"{category}_{name}"`, the id configs and the host use.
    pub fn unique_id(&self) -> String {
        let mut id = String::with_capacity(self.category.len() + 1 + self.name.len());
        id.push_str(&self.category);
        id.push('_');
        id.push_str(&self.name);
        id
    }

    /// True when the plugin runs locally (in_process, subprocess, docker,
    /// conda_env, external).
    pub fn is_local_execution(&self) -> bool {
        self.execution_mode.is_local()
    }

    /// True when the plugin runs on remote or cloud resources.
    pub fn is_cloud_execution(&self) -> bool {
        !self.is_local_execution()
    }

    /// True when the plugin holds child processes, a container, or a remote
    /// resource whose status is `"running"`.
    pub fn has_active_resources(&self) -> bool {
        !self.spawned_pids.is_empty()
            || self.container_id.is_some()
            || self.remote_resource.as_deref().is_some_and(RemoteResource::is_running)
    }
}
