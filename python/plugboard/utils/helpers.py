"""Utility functions for plugin registry operations

The five filters are plain Python (they return the caller's own objects);
``get_plugin_stats`` runs in plugboard's Rust core in one pass and fills
``by_category``, which the seed always left empty.
"""

from typing import Any, Dict, List

from .. import _native
from ..core.execution_mode import PluginExecutionMode
from ..core.metadata import _LOCAL_MODES, PluginMetadata

__all__ = [
    "filter_plugins_by_execution_mode",
    "get_cloud_plugins",
    "get_local_plugins",
    "get_configured_plugins",
    "get_unconfigured_plugins",
    "get_plugin_stats",
]

_LOCAL_TUPLE = tuple(_LOCAL_MODES)


def filter_plugins_by_execution_mode(
    plugins: List[PluginMetadata],  # List of plugin metadata
    mode: PluginExecutionMode,  # Execution mode to filter by
) -> List[PluginMetadata]:  # Filtered list
    """Filter plugins by execution mode."""
    return [p for p in plugins if p.execution_mode == mode]


def get_cloud_plugins(
    plugins: List[PluginMetadata],  # List of plugin metadata
) -> List[PluginMetadata]:  # List of cloud/remote plugins
    """Get all cloud/remote execution plugins."""
    return [p for p in plugins if p.is_cloud_execution()]


def get_local_plugins(
    plugins: List[PluginMetadata],  # List of plugin metadata
) -> List[PluginMetadata]:  # List of local plugins
    """Get all local execution plugins."""
    return [p for p in plugins if p.is_local_execution()]


def get_configured_plugins(
    plugins: List[PluginMetadata],  # List of plugin metadata
) -> List[PluginMetadata]:  # List of configured plugins
    """Get plugins that have saved configuration."""
    return [p for p in plugins if p.is_configured]


def get_unconfigured_plugins(
    plugins: List[PluginMetadata],  # List of plugin metadata
) -> List[PluginMetadata]:  # List of unconfigured plugins
    """Get plugins that need configuration."""
    return [p for p in plugins if not p.is_configured]


def get_plugin_stats(
    plugins: List[PluginMetadata],  # List of plugin metadata
) -> Dict[str, Any]:  # Dictionary with plugin statistics
    """Get statistics about a list of plugins: ``total``, ``configured``,
    ``unconfigured``, ``local``, ``cloud``, ``with_active_resources`` and
    ``by_category`` (plugins per category, sorted by category)."""
    return _native.plugin_stats(plugins, PluginMetadata, _LOCAL_TUPLE)
