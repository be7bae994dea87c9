//! Optional capabilities a live plugin may expose, asked for at run time.
//!
//! The seed's `LifecycleAwarePlugin` and `CloudAwarePlugin` are runtime-
//! checkable protocols: any object may or may not satisfy them. Here a plugin
//! answers [`Plugin::lifecycle`] and [`Plugin::cloud`] with `Some` when it has
//! the capability, so the helper functions keep the seed's meaning for a mixed
//! list of plugins. Methods take `&self` because the host shares plugins
//! between tasks; implementors keep mutable state behind a lock.

use serde_json::{Map, Value};

use crate::execution_mode::ExecutionMode;
use crate::metadata::RemoteResource;
use crate::process;

/// The error a capability method returns: whatever the plugin's backend hit.
pub type CapabilityError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A live plugin instance. Every capability is optional.
///
/// ```
/// use plugboard_core::{is_cloud_aware, is_lifecycle_aware, Plugin};
///
/// struct Plain;
/// impl Plugin for Plain {}
///
/// assert!(!is_lifecycle_aware(&Plain));
/// assert!(!is_cloud_aware(&Plain));
/// ```
pub trait Plugin: Send + Sync {
    /// The lifecycle capability, when the plugin manages processes,
    /// containers or other outside resources.
    fn lifecycle(&self) -> Option<&dyn Lifecycle> {
        None
    }

    /// The cloud capability, when the plugin uses remote or cloud resources.
    fn cloud(&self) -> Option<&dyn CloudAware> {
        None
    }
}

/// Any JSON value stands for "not a plugin" (the seed's `{"not": "a plugin"}`):
/// it has no capability.
impl Plugin for Value {}

/// For plugins that manage child processes, containers or other resources
/// (the seed's `LifecycleAwarePlugin`).
pub trait Lifecycle: Send + Sync {
    /// How this plugin executes.
    fn execution_mode(&self) -> ExecutionMode;

    /// Process ids the plugin started directly (its descendants are found by
    /// [`all_managed_pids`]).
    fn child_pids(&self) -> Vec<u32>;

    /// What else the plugin holds: server URLs, container ids, conda envs,
    /// log paths, ledger ids…
    fn managed_resources(&self) -> Map<String, Value>;

    /// Ends everything the plugin holds (kills processes, stops containers…).
    fn force_cleanup(&self) -> Result<(), CapabilityError>;
}

/// For plugins that use cloud or remote resources (the seed's
/// `CloudAwarePlugin`).
pub trait CloudAware: Send + Sync {
    /// The resource, if one is provisioned.
    fn remote_resource_info(&self) -> Option<RemoteResource>;

    /// Provisions a resource (VM, container, job…) with provider-specific config.
    fn provision(&self, config: &Map<String, Value>) -> Result<RemoteResource, CapabilityError>;

    /// The resource's status (`provisioning`, `running`, `stopped`,
    /// `not_provisioned`…).
    fn check_status(&self) -> Result<String, CapabilityError>;

    /// Terminates the resource so it stops billing; `Ok(false)` when there
    /// was nothing to terminate.
    fn terminate(&self) -> Result<bool, CapabilityError>;

    /// Estimated cost in USD of running for `hours`.
    fn estimate_cost(&self, hours: f64) -> f64;
}

/// True when the plugin exposes the lifecycle capability.
pub fn is_lifecycle_aware(plugin: &dyn Plugin) -> bool {
    plugin.lifecycle().is_some()
}

/// Every live process the plugin manages: its child pids and all their live
/// descendants (children of children included), read from `/proc`. Empty when
/// the plugin is not lifecycle-aware.
#[doc(alias = "get_all_managed_pids")]
pub fn all_managed_pids(plugin: &dyn Plugin) -> Vec<u32> {
    match plugin.lifecycle() {
        Some(l) => process::live_tree(&l.child_pids()),
        None => Vec::new(),
    }
}

/// True when the plugin exposes the cloud capability.
pub fn is_cloud_aware(plugin: &dyn Plugin) -> bool {
    plugin.cloud().is_some()
}

/// True when the plugin is cloud-aware and its resource's status is `"running"`.
pub fn has_active_cloud_resources(plugin: &dyn Plugin) -> bool {
    plugin
        .cloud()
        .and_then(CloudAware::remote_resource_info)
        .is_some_and(|r| r.is_running())
}

/// The estimated cost in USD of running `hours` for every plugin in the list
/// that is cloud-aware with a running resource; others count zero.
#[doc(alias = "get_total_estimated_cost")]
pub fn total_estimated_cost(plugins: &[&dyn Plugin], hours: f64) -> f64 {
    plugins
        .iter()
        .filter(|p| has_active_cloud_resources(**p))
        .filter_map(|p| p.cloud())
        .map(|c| c.estimate_cost(hours))
        .sum()
}
