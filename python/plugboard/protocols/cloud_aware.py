"""Protocol for plugins that use cloud or remote computing resources

A runtime-checkable ``Protocol``: any object with these five methods is a
``CloudAwarePlugin``; the helpers count only plugins whose resource's
status is ``"running"``, as in the seed.
"""

from typing import Any, List, Optional, Protocol, runtime_checkable

from ..core.metadata import RemoteResourceInfo

__all__ = ["CloudAwarePlugin", "is_cloud_aware", "has_active_cloud_resources", "get_total_estimated_cost"]


@runtime_checkable
class CloudAwarePlugin(Protocol):
    """Protocol for plugins that use cloud/remote resources."""

    def get_remote_resource_info(self) -> Optional[RemoteResourceInfo]:  # RemoteResourceInfo if resources are provisioned, None otherwise
        """Get information about remote/cloud resources."""
        ...

    def provision_remote_resource(self, **config) -> RemoteResourceInfo:  # RemoteResourceInfo with details about provisioned resource
        """Provision cloud resources (VM, container, etc.)."""
        ...

    def check_remote_resource_status(self) -> str:  # Status string (e.g., 'running', 'stopped', 'provisioning')
        """Check status of remote resource."""
        ...

    def terminate_remote_resource(self) -> bool:  # True if termination succeeded
        """Terminate/stop cloud resources to avoid costs."""
        ...

    def estimate_cost(
        self,
        duration_hours: float,  # Estimated runtime in hours
    ) -> float:  # Estimated cost in USD
        """Estimate cost for running this duration."""
        ...


def is_cloud_aware(
    plugin: Any,  # Plugin instance to check
) -> bool:  # True if plugin implements the protocol
    """Check if a plugin implements the CloudAwarePlugin protocol."""
    return isinstance(plugin, CloudAwarePlugin)


def has_active_cloud_resources(
    plugin: Any,  # Plugin instance
) -> bool:  # True if plugin has running cloud resources
    """Check if plugin has active cloud resources."""
    if not is_cloud_aware(plugin):
        return False
    info = plugin.get_remote_resource_info()
    return bool(info) and info.status == "running"


def get_total_estimated_cost(
    plugins: List[Any],  # List of plugin instances
    duration_hours: float = 1.0,  # Duration to estimate for
) -> float:  # Total estimated cost in USD
    """Get total estimated cost for multiple plugins (those with a running
    resource; others count zero)."""
    total = 0.0
    for plugin in plugins:
        if has_active_cloud_resources(plugin):
            total += plugin.estimate_cost(duration_hours)
    return total
