"""Names and signatures are the seed's: every public function and method,
with its parameter names, kinds and defaults, as documented in the seed's
README (and, when the upstream package is installed, as it defines them)."""

import importlib
import inspect

import pytest

from conftest import seed_references

# (module, object, method or None, parameters as "name=default" or "name")
DOCUMENTED = [
    ("core.registry", "UnifiedPluginRegistry", "__init__", ["self", "config_dir=None"]),
    ("core.registry", "UnifiedPluginRegistry", "register_plugin_manager", ["self", "category", "manager", "display_name=None", "auto_discover=True"]),
    ("core.registry", "UnifiedPluginRegistry", "register_plugin_system", ["self", "category", "plugin_interface", "display_name=None", "auto_discover=True"]),
    ("core.registry", "UnifiedPluginRegistry", "_discover_and_register_plugins", ["self", "category", "manager"]),
    ("core.registry", "UnifiedPluginRegistry", "get_manager", ["self", "category", "manager_type=None"]),
    ("core.registry", "UnifiedPluginRegistry", "get_categories", ["self"]),
    ("core.registry", "UnifiedPluginRegistry", "get_category_display_name", ["self", "category"]),
    ("core.registry", "UnifiedPluginRegistry", "get_plugin", ["self", "unique_id"]),
    ("core.registry", "UnifiedPluginRegistry", "get_plugins_by_category", ["self", "category"]),
    ("core.registry", "UnifiedPluginRegistry", "get_all_plugins", ["self"]),
    ("core.registry", "UnifiedPluginRegistry", "get_categories_with_plugins", ["self"]),
    ("core.registry", "UnifiedPluginRegistry", "load_plugin_config", ["self", "unique_id"]),
    ("core.registry", "UnifiedPluginRegistry", "save_plugin_config", ["self", "unique_id", "config"]),
    ("core.registry", "UnifiedPluginRegistry", "delete_plugin_config", ["self", "unique_id"]),
    ("core.metadata", "PluginMetadata", "get_unique_id", ["self"]),
    ("core.metadata", "PluginMetadata", "is_local_execution", ["self"]),
    ("core.metadata", "PluginMetadata", "is_cloud_execution", ["self"]),
    ("core.metadata", "PluginMetadata", "has_active_resources", ["self"]),
    ("protocols.lifecycle", "LifecycleAwarePlugin", "get_execution_mode", ["self"]),
    ("protocols.lifecycle", "LifecycleAwarePlugin", "get_child_pids", ["self"]),
    ("protocols.lifecycle", "LifecycleAwarePlugin", "get_managed_resources", ["self"]),
    ("protocols.lifecycle", "LifecycleAwarePlugin", "force_cleanup", ["self"]),
    ("protocols.lifecycle", "is_lifecycle_aware", None, ["plugin"]),
    ("protocols.lifecycle", "get_all_managed_pids", None, ["plugin"]),
    ("protocols.cloud_aware", "CloudAwarePlugin", "get_remote_resource_info", ["self"]),
    ("protocols.cloud_aware", "CloudAwarePlugin", "provision_remote_resource", ["self", "**config"]),
    ("protocols.cloud_aware", "CloudAwarePlugin", "check_remote_resource_status", ["self"]),
    ("protocols.cloud_aware", "CloudAwarePlugin", "terminate_remote_resource", ["self"]),
    ("protocols.cloud_aware", "CloudAwarePlugin", "estimate_cost", ["self", "duration_hours"]),
    ("protocols.cloud_aware", "is_cloud_aware", None, ["plugin"]),
    ("protocols.cloud_aware", "has_active_cloud_resources", None, ["plugin"]),
    ("protocols.cloud_aware", "get_total_estimated_cost", None, ["plugins", "duration_hours=1.0"]),
    ("utils.helpers", "filter_plugins_by_execution_mode", None, ["plugins", "mode"]),
    ("utils.helpers", "get_cloud_plugins", None, ["plugins"]),
    ("utils.helpers", "get_local_plugins", None, ["plugins"]),
    ("utils.helpers", "get_configured_plugins", None, ["plugins"]),
    ("utils.helpers", "get_unconfigured_plugins", None, ["plugins"]),
    ("utils.helpers", "get_plugin_stats", None, ["plugins"]),
]

EXPORTS = {
    "core.execution_mode": ["PluginExecutionMode", "CloudProviderType"],
    "core.metadata": ["RemoteResourceInfo", "PluginMetadata"],
    "core.registry": ["T", "UnifiedPluginRegistry"],
    "protocols.lifecycle": ["LifecycleAwarePlugin", "is_lifecycle_aware", "get_all_managed_pids"],
    "protocols.cloud_aware": ["CloudAwarePlugin", "is_cloud_aware", "has_active_cloud_resources", "get_total_estimated_cost"],
    "utils.helpers": [
        "filter_plugins_by_execution_mode",
        "get_cloud_plugins",
        "get_local_plugins",
        "get_configured_plugins",
        "get_unconfigured_plugins",
        "get_plugin_stats",
    ],
}


def params(fn):
    out = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            out.append(f"**{p.name}")
        elif p.default is p.empty:
            out.append(p.name)
        else:
            out.append(f"{p.name}={p.default!r}")
    return out


def lookup(package, module, obj, method):
    target = getattr(importlib.import_module(f"{package}.{module}"), obj)
    return getattr(target, method) if method else target


@pytest.mark.parametrize("module,obj,method,expected", DOCUMENTED, ids=[f"{o}.{m}" if m else o for _, o, m, _ in DOCUMENTED])
def test_signature_is_the_seeds(module, obj, method, expected):
    assert params(lookup("plugboard", module, obj, method)) == expected
    if any(r[0] == "upstream" for r in seed_references()):
        assert params(lookup("cjm_fasthtml_plugins", module, obj, method)) == expected


@pytest.mark.parametrize("module", sorted(EXPORTS))
def test_module_exports_are_the_seeds(module):
    m = importlib.import_module(f"plugboard.{module}")
    assert m.__all__ == EXPORTS[module]
    if any(r[0] == "upstream" for r in seed_references()):
        assert importlib.import_module(f"cjm_fasthtml_plugins.{module}").__all__ == EXPORTS[module]


def test_protocols_are_runtime_checkable():
    from plugboard.protocols.cloud_aware import CloudAwarePlugin
    from plugboard.protocols.lifecycle import LifecycleAwarePlugin, get_all_managed_pids, is_lifecycle_aware

    class Proc:
        def get_execution_mode(self):
            return None

        def get_child_pids(self):
            return [4242, 4343]

        def get_managed_resources(self):
            return {}

        def force_cleanup(self):
            return None

    assert isinstance(Proc(), LifecycleAwarePlugin) and not isinstance(Proc(), CloudAwarePlugin)
    assert is_lifecycle_aware(Proc()) and not is_lifecycle_aware(object())
    assert get_all_managed_pids(Proc()) == [4242, 4343]
    assert get_all_managed_pids({"not": "a plugin"}) == []


def test_discover_and_register_adds_like_the_seeds(tmp_path):
    from plugboard.core.registry import UnifiedPluginRegistry

    class M:
        def __init__(self, names):
            self.names = names

        def discover_plugins(self):
            return [type("P", (), {"name": n, "version": None})() for n in self.names]

        def get_plugin_config_dataclass(self, name):
            return None

    r = UnifiedPluginRegistry(tmp_path)
    r.register_plugin_manager("c", M(["a"]))
    assert [m.name for m in r._discover_and_register_plugins("c", M(["b"]))] == ["b"]
    assert [p.get_unique_id() for p in r.get_all_plugins()] == ["c_a", "c_b"]
