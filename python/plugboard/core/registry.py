"""Unified plugin registry for managing multiple domain-specific plugin systems with configuration persistence

The seed's ``UnifiedPluginRegistry``, method for method: the application's
own plugin managers are called the way the seed calls them
(``discover_plugins()``, then ``get_plugin_config_dataclass(name)`` turned
into a JSON Schema), metadata are the seed's dataclasses, configs are
``{config_dir}/{unique_id}.json``. Underneath, plugboard's Rust core checks
ids, validates configs against the plugin's schema (every violation), fills
schema defaults on load, and writes atomically under a per-config lock.

The differences from the seed are listed in docs/python.md; in short:
an id that would escape the config dir is refused; a failed save never
leaves a half-written file; an invalid config is refused with every
violation; ``load_plugin_config`` fills schema defaults and reports a
corrupt file with its line and column; re-registering a category replaces
its plugins; a manager that gives no config dataclass gets an empty object
schema.
"""

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Type, TypeVar

from .. import _native
from ._dataclass_schema import seed_converter
from .execution_mode import PluginExecutionMode  # noqa: F401  (the seed's module exports it here too)
from .metadata import PluginMetadata

__all__ = ["T", "UnifiedPluginRegistry"]

T = TypeVar("T")

_dataclass_to_jsonschema = seed_converter()

# Checks only that a config is a dict of JSON values (plugins with no schema).
_ANY_OBJECT = None


def _any_object() -> "_native.Schema":
    global _ANY_OBJECT
    if _ANY_OBJECT is None:
        _ANY_OBJECT = _native.Schema("any", {"type": "object"})
    return _ANY_OBJECT


def _fallback_schema(name: str) -> Dict[str, Any]:
    """The schema of a plugin whose manager gives no config dataclass (the
    seed's own fallback in its 0.0.5 release)."""
    return {"type": "object", "title": name, "properties": {}}


def _config_schema_for(manager: Any, name: str) -> Tuple[Optional[Type], Dict[str, Any]]:
    """The config dataclass and JSON Schema the manager gives plugin ``name``."""
    if hasattr(manager, "get_plugin_config_dataclass"):
        config_dataclass = manager.get_plugin_config_dataclass(name)
        if config_dataclass is None:
            return None, _fallback_schema(name)
        return config_dataclass, _dataclass_to_jsonschema(config_dataclass)
    if hasattr(manager, "get_plugin_config_schema"):  # managers written for the seed before 0.0.5
        schema = manager.get_plugin_config_schema(name)
        return None, schema if isinstance(schema, dict) else _fallback_schema(name)
    return None, _fallback_schema(name)


class UnifiedPluginRegistry:
    """Unified registry for multiple domain-specific plugin systems with configuration persistence."""

    def __init__(
        self,
        config_dir: Optional[Path] = None,  # Directory for plugin configuration files (default: 'configs')
    ):
        """Initialize the unified plugin registry."""
        self._managers: Dict[str, Any] = {}  # category -> manager
        self._categories: Dict[str, str] = {}  # category -> display_name
        self._plugins: Dict[str, PluginMetadata] = {}  # unique_id -> metadata
        self._config_dir = Path(config_dir or "configs")
        self._config_dir.mkdir(exist_ok=True, parents=True)
        self._store = _native.ConfigStore(str(self._config_dir))
        self._schemas: Dict[str, Tuple[str, "_native.Schema"]] = {}  # unique_id -> (schema text, compiled)

    def register_plugin_manager(
        self,
        category: str,  # Category name (e.g., "transcription", "llm")
        manager: Any,  # Domain-specific plugin manager
        display_name: Optional[str] = None,  # Display name for UI
        auto_discover: bool = True,  # Automatically discover plugins?
    ) -> List[PluginMetadata]:  # List of discovered plugin metadata
        """Register a domain-specific plugin manager.

        Registering a category again replaces its manager, its display name
        and its plugins. When discovery fails, its exception propagates and
        the registry is as it was."""
        discovered = self._discover(category, manager) if auto_discover else []
        self._managers[category] = manager
        self._categories[category] = display_name or category.title()
        kept = {uid: m for uid, m in self._plugins.items() if m.category != category}
        for metadata in discovered:
            kept[metadata.get_unique_id()] = metadata
        for uid in set(self._plugins) - set(kept) | {m.get_unique_id() for m in discovered}:
            self._schemas.pop(uid, None)
        self._plugins = kept
        return discovered

    def register_plugin_system(
        self,
        category: str,  # Category name (e.g., "transcription", "llm")
        plugin_interface: Type,  # Plugin interface class (e.g., TranscriptionPlugin)
        display_name: Optional[str] = None,  # Display name for UI
        auto_discover: bool = True,  # Automatically discover plugins?
    ) -> List[PluginMetadata]:  # List of discovered plugin metadata
        """Create and register a plugin system in one step: a
        ``cjm_plugin_system`` ``PluginManager`` for ``plugin_interface``,
        registered with :meth:`register_plugin_manager` (needs the
        ``cjm-plugin-system`` package, as in the seed)."""
        try:
            from cjm_plugin_system.core.manager import PluginManager
        except ImportError as e:
            raise ImportError(
                "register_plugin_system needs the cjm-plugin-system package "
                "(pip install cjm-plugin-system); register_plugin_manager takes any manager"
            ) from e
        manager = PluginManager(plugin_interface=plugin_interface)
        return self.register_plugin_manager(
            category=category, manager=manager, display_name=display_name, auto_discover=auto_discover
        )

    def _discover(
        self,
        category: str,  # Category name
        manager: Any,  # Plugin manager instance
    ) -> List[PluginMetadata]:  # List of discovered plugin metadata
        """Discover plugins from the manager and describe each (nothing is
        registered yet)."""
        discovered = manager.discover_plugins()
        saved = set(self._store.ids())  # one directory listing, not a stat per plugin
        out = []
        for plugin_data in discovered:
            config_dataclass, config_schema = _config_schema_for(manager, plugin_data.name)
            metadata = PluginMetadata(
                name=plugin_data.name,
                category=category,
                title=config_schema.get("title", plugin_data.name),
                config_schema=config_schema,
                config_dataclass=config_dataclass,
                version=getattr(plugin_data, "version", None),
                description=config_schema.get("description"),
            )
            metadata.is_configured = metadata.get_unique_id() in saved
            out.append(metadata)
        return out

    def _discover_and_register_plugins(
        self,
        category: str,  # Category name
        manager: Any,  # Plugin manager instance
    ) -> List[PluginMetadata]:  # List of discovered plugin metadata
        """Discover plugins from manager and register their metadata (the
        seed's private step, kept for apps that call it: it adds to the
        category's plugins rather than replacing them)."""
        found = self._discover(category, manager)
        for metadata in found:
            uid = metadata.get_unique_id()
            self._plugins[uid] = metadata
            self._schemas.pop(uid, None)
        return found

    def get_manager(
        self,
        category: str,  # Category name
        manager_type: Optional[Type[T]] = None,  # Optional type hint for IDE autocomplete
    ) -> Optional[T]:  # Plugin manager instance
        """Get plugin manager for a specific category."""
        return self._managers.get(category)

    def get_categories(self) -> List[str]:  # Sorted list of category names
        """Get all registered categories."""
        return sorted(self._categories.keys())

    def get_category_display_name(
        self,
        category: str,  # Category name
    ) -> str:  # Display name or category name if not set
        """Get display name for a category."""
        return self._categories.get(category, category.title())

    def get_plugin(
        self,
        unique_id: str,  # Plugin unique identifier (format: 'category_name')
    ) -> Optional[PluginMetadata]:  # Plugin metadata if found, None otherwise
        """Get plugin metadata by unique ID."""
        return self._plugins.get(unique_id)

    def get_plugins_by_category(
        self,
        category: str,  # Category name
    ) -> List[PluginMetadata]:  # List of plugin metadata for the category
        """Get all plugins in a category."""
        return [p for p in self._plugins.values() if p.category == category]

    def get_all_plugins(self) -> List[PluginMetadata]:  # List of all plugin metadata
        """Get all plugins across all categories."""
        return list(self._plugins.values())

    def get_categories_with_plugins(self) -> List[str]:  # Sorted list of categories with plugins
        """Get categories that have registered plugins."""
        return sorted({p.category for p in self._plugins.values()})

    def _schema(self, unique_id: str) -> Optional["_native.Schema"]:
        """The compiled config schema of a registered plugin, compiled once
        (again only when its ``config_schema`` changed); None for an unknown
        id or a plugin without a schema."""
        metadata = self._plugins.get(unique_id)
        if metadata is None or metadata.config_schema is None:
            return None
        schema = metadata.config_schema
        try:
            text = json.dumps(schema, sort_keys=True, default=str)
        except (TypeError, ValueError):
            return _native.Schema(unique_id, schema)
        cached = self._schemas.get(unique_id)
        if cached is not None and cached[0] == text:
            return cached[1]
        compiled = _native.Schema(unique_id, schema)
        self._schemas[unique_id] = (text, compiled)
        return compiled

    def load_plugin_config(
        self,
        unique_id: str,  # Plugin unique identifier
    ) -> Dict[str, Any]:  # Configuration dictionary (empty if no config exists)
        """Load saved configuration for a plugin.

        Missing keys are filled from the schema's defaults (not written
        back); no saved config gives ``{}`` plus defaults. Raises
        ``InvalidIdError`` for an id that could escape the config dir,
        ``CorruptConfigError`` (a ``ValueError``) with file, line and column
        for a file that is not a JSON object, ``SchemaError`` when the
        plugin's schema is not a JSON Schema."""
        return self._store.load(unique_id, self._schema(unique_id))

    def save_plugin_config(
        self,
        unique_id: str,  # Plugin unique identifier
        config: Dict[str, Any],  # Configuration dictionary to save
    ) -> bool:  # True if save succeeded, False otherwise
        """Save configuration for a plugin.

        The config is validated against the plugin's schema first; an
        invalid one is refused with every violation in the printed error
        (secret values left out), and the file is not touched. The write is
        atomic: readers see the old file or the new one, never a mix."""
        try:
            self._store.save(unique_id, config, self._schema(unique_id))
        except Exception as e:
            print(f"Error saving config for {unique_id}: {e}")
            return False
        if unique_id in self._plugins:
            self._plugins[unique_id].is_configured = True
        return True

    def delete_plugin_config(
        self,
        unique_id: str,  # Plugin unique identifier
    ) -> bool:  # True if deletion succeeded, False otherwise
        """Delete saved configuration for a plugin (True also when there
        was none, as in the seed; False for a refused id)."""
        try:
            self._store.delete(unique_id)
        except Exception as e:
            print(f"Error deleting config for {unique_id}: {e}")
            return False
        if unique_id in self._plugins:
            self._plugins[unique_id].is_configured = False
        return True

    def validate_plugin_config(
        self,
        unique_id: str,  # Plugin unique identifier
        config: Dict[str, Any],  # Configuration dictionary to check
    ) -> None:
        """Check a config without saving it (plugboard's addition): raises
        ``InvalidConfigError`` whose ``violations`` lists every violation
        (a form can show each beside its field), ``InvalidIdError`` for a
        refused id, ``TypeError`` for a value JSON cannot hold."""
        _native.check_id(unique_id)
        (self._schema(unique_id) or _any_object()).validate(config)
