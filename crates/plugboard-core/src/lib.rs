//! plugboard-core: the model, registry, config store and helpers of
//! plugboard, with the names and JSON of the Python library it succeeds
//! (cjm-fasthtml-plugins).
//!
//! It is synchronous and light on dependencies so that anything (a host, a
//! CLI, a worker, a test) can read plugin metadata and configs without a
//! runtime. Running plugins is the host crate's business.
//!
//! ```
//! use plugboard_core::{plugin_stats, ExecutionMode, PluginMetadata, UnifiedPluginRegistry};
//!
//! let registry = UnifiedPluginRegistry::new(std::env::temp_dir().join("plugboard-doc-configs"));
//! let stats = plugin_stats(registry.all_plugins());
//! assert_eq!(stats.total, 0);
//! assert!(ExecutionMode::Docker.is_local());
//! ```

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod capability;
pub mod config_store;
pub mod error;
pub mod execution_mode;
pub mod files;
pub mod helpers;
pub mod metadata;
pub mod process;
pub mod registry;
pub mod schema;
mod schema_pool;

pub use capability::{
    CapabilityError, CloudAware, Lifecycle, Plugin, all_managed_pids, has_active_cloud_resources, is_cloud_aware,
    is_lifecycle_aware, total_estimated_cost,
};
pub use config_store::ConfigStore;
pub use error::{ConfigError, InvalidId, UnknownVariant, Violation};
pub use execution_mode::{CloudProvider, ExecutionMode};
pub use helpers::{
    PluginStats, cloud_plugins, configured_plugins, filter_plugins_by_execution_mode, local_plugins, plugin_stats,
    unconfigured_plugins,
};
pub use metadata::{PluginMetadata, RemoteResource, RemoteResourceInfo};
pub use registry::{PluginManager, RegistryError, UnifiedPluginRegistry};
pub use schema::{CompiledSchema, schema_for};

/// The README's code, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;

/// The seed's name for [`ExecutionMode`].
pub type PluginExecutionMode = ExecutionMode;
/// The seed's name for [`CloudProvider`].
pub type CloudProviderType = CloudProvider;
