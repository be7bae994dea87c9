"""UnifiedPluginRegistry: every seed method, its edge cases, and the
documented differences from the seed (docs/python.md)."""

import json
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

import pytest

from plugboard.core.execution_mode import PluginExecutionMode
from plugboard.core.metadata import PluginMetadata
from plugboard.core.registry import T, UnifiedPluginRegistry
from plugboard.errors import (
    ConfigError,
    CorruptConfigError,
    InvalidConfigError,
    InvalidIdError,
    SchemaError,
)


@dataclass
class WhisperConfig:
    """Whisper settings."""

    device: str = field(default="cpu", metadata={"enum": ["cpu", "cuda"], "title": "Device"})
    beam_size: int = field(default=5, metadata={"minimum": 1, "maximum": 20})
    language: Optional[str] = None
    api_token: str = field(default="", metadata={"format": "password"})


@dataclass
class LlmConfig:
    temperature: float = 0.7
    stop: List[str] = field(default_factory=list)


@dataclass
class PluginData:
    """What a seed-style manager's discover_plugins() yields."""

    name: str
    version: Optional[str] = None


class Manager:
    """A plugin manager written for the seed: discover_plugins() and
    get_plugin_config_dataclass(name)."""

    def __init__(self, plugins, configs=None):
        self.plugins = plugins
        self.configs = configs or {}
        self.discovered = 0

    def discover_plugins(self):
        self.discovered += 1
        return [PluginData(n, "1.0") for n in self.plugins]

    def get_plugin_config_dataclass(self, name):
        return self.configs.get(name)


def stt():
    return Manager(["whisper", "voxtral"], {"whisper": WhisperConfig, "voxtral": WhisperConfig})


@pytest.fixture
def registry(config_dir):
    r = UnifiedPluginRegistry(config_dir)
    r.register_plugin_manager("transcription", stt(), "Speech to text")
    return r


# ---------------------------------------------------------------- the seed's API


def test_module_exports_T_and_registry():
    import typing

    assert isinstance(T, typing.TypeVar)
    import plugboard.core.registry as m

    assert m.__all__ == ["T", "UnifiedPluginRegistry"]


def test_default_config_dir_is_configs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = UnifiedPluginRegistry()
    assert (tmp_path / "configs").is_dir()
    assert r.save_plugin_config("a_b", {"x": 1})
    assert json.loads((tmp_path / "configs" / "a_b.json").read_text()) == {"x": 1}


def test_config_dir_is_created_with_parents(tmp_path):
    UnifiedPluginRegistry(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()


def test_register_discovers_with_metadata_from_the_config_dataclass(registry):
    m = registry.get_plugin("transcription_whisper")
    assert m.name == "whisper" and m.category == "transcription" and m.version == "1.0"
    assert m.title == "WhisperConfig"  # the schema's title: the dataclass name
    assert m.description == "Whisper settings."
    assert m.config_dataclass is WhisperConfig
    assert m.config_schema["properties"]["device"] == {
        "type": "string",
        "title": "Device",
        "enum": ["cpu", "cuda"],
        "default": "cpu",
    }
    assert m.config_schema["properties"]["language"] == {"type": ["string", "null"], "default": None}
    assert m.is_configured is False


def test_register_returns_the_discovered_metadata(config_dir):
    r = UnifiedPluginRegistry(config_dir)
    found = r.register_plugin_manager("transcription", stt())
    assert [m.get_unique_id() for m in found] == ["transcription_whisper", "transcription_voxtral"]
    assert found[0] is r.get_plugin("transcription_whisper")


def test_register_without_discovery(config_dir):
    r = UnifiedPluginRegistry(config_dir)
    manager = stt()
    assert r.register_plugin_manager("transcription", manager, auto_discover=False) == []
    assert manager.discovered == 0
    assert r.get_categories() == ["transcription"]
    assert r.get_categories_with_plugins() == []
    assert r.get_manager("transcription") is manager


def test_is_configured_reads_the_config_dir(config_dir):
    (config_dir / "transcription_voxtral.json").write_text("{}")
    r = UnifiedPluginRegistry(config_dir)
    r.register_plugin_manager("transcription", stt())
    assert r.get_plugin("transcription_voxtral").is_configured
    assert not r.get_plugin("transcription_whisper").is_configured


def test_get_manager_and_categories(registry):
    class Other:
        def discover_plugins(self):
            return [PluginData("llama")]

        def get_plugin_config_dataclass(self, name):
            return LlmConfig

    other = Other()
    registry.register_plugin_manager("llm", other)
    assert registry.get_manager("llm") is other
    assert registry.get_manager("llm", Other) is other
    assert registry.get_manager("nope") is None
    assert registry.get_categories() == ["llm", "transcription"]
    assert registry.get_category_display_name("transcription") == "Speech to text"
    assert registry.get_category_display_name("llm") == "Llm"
    assert registry.get_category_display_name("never_registered") == "Never_Registered"
    assert registry.get_categories_with_plugins() == ["llm", "transcription"]
    assert [p.name for p in registry.get_plugins_by_category("llm")] == ["llama"]
    assert registry.get_plugins_by_category("nope") == []
    assert [p.get_unique_id() for p in registry.get_all_plugins()] == [
        "transcription_whisper",
        "transcription_voxtral",
        "llm_llama",
    ]


def test_unknown_id(registry, config_dir):
    assert registry.get_plugin("transcription_nope") is None
    # Configs of unknown ids load and save, unvalidated, as in the seed.
    assert registry.load_plugin_config("x_unknown") == {}
    assert registry.save_plugin_config("x_unknown", {"anything": [1, 2]})
    assert registry.load_plugin_config("x_unknown") == {"anything": [1, 2]}
    assert registry.delete_plugin_config("x_unknown")
    assert not (config_dir / "x_unknown.json").exists()


def test_missing_config_file_loads_defaults(registry):
    assert registry.load_plugin_config("transcription_whisper") == {
        "device": "cpu",
        "beam_size": 5,
        "language": None,
        "api_token": "",
    }


def test_save_load_delete_round_trip(registry, config_dir):
    assert registry.save_plugin_config("transcription_whisper", {"device": "cuda", "beam_size": 3})
    assert registry.get_plugin("transcription_whisper").is_configured
    saved = json.loads((config_dir / "transcription_whisper.json").read_text())
    assert saved == {"device": "cuda", "beam_size": 3}  # defaults are not written back
    assert registry.load_plugin_config("transcription_whisper")["beam_size"] == 3
    assert registry.load_plugin_config("transcription_whisper")["api_token"] == ""
    assert registry.delete_plugin_config("transcription_whisper")
    assert not registry.get_plugin("transcription_whisper").is_configured
    assert not (config_dir / "transcription_whisper.json").exists()
    # Deleting again is still a success, as in the seed.
    assert registry.delete_plugin_config("transcription_whisper")


def test_saved_file_is_pretty_json_of_the_config(registry, config_dir):
    registry.save_plugin_config("transcription_whisper", {"device": "cuda", "language": "fr"})
    text = (config_dir / "transcription_whisper.json").read_text()
    assert text.startswith('{\n  "device": "cuda",\n  "language": "fr"\n}')


def test_corrupt_file(registry, config_dir):
    (config_dir / "transcription_whisper.json").write_text('{"device": "cuda",\n  oops}')
    with pytest.raises(CorruptConfigError) as e:
        registry.load_plugin_config("transcription_whisper")
    assert isinstance(e.value, ValueError)  # the seed raised json.JSONDecodeError, a ValueError
    assert e.value.line == 2 and e.value.column == 3
    assert "transcription_whisper.json" in str(e.value) and "line 2, column 3" in str(e.value)


def test_file_that_is_not_an_object(registry, config_dir):
    (config_dir / "transcription_whisper.json").write_text("[1, 2]")
    with pytest.raises(CorruptConfigError, match="expected a JSON object, found an array"):
        registry.load_plugin_config("transcription_whisper")


def test_a_fifo_is_refused_without_blocking(registry, config_dir):
    os.mkfifo(config_dir / "transcription_whisper.json")
    with pytest.raises(ConfigError, match="FIFO"):
        registry.load_plugin_config("transcription_whisper")


def test_reregistering_a_category_replaces_manager_name_and_plugins(registry):
    first = registry.get_plugin("transcription_whisper")
    newer = Manager(["whisper", "parakeet"], {"whisper": WhisperConfig})
    found = registry.register_plugin_manager("transcription", newer)
    assert registry.get_manager("transcription") is newer
    assert registry.get_category_display_name("transcription") == "Transcription"
    ids = [p.get_unique_id() for p in registry.get_all_plugins()]
    assert ids == ["transcription_whisper", "transcription_parakeet"]  # voxtral is gone with its manager
    assert registry.get_plugin("transcription_whisper") is found[0] and found[0] is not first


def test_reregistering_keeps_other_categories(registry):
    registry.register_plugin_manager("llm", Manager(["llama"], {"llama": LlmConfig}))
    registry.register_plugin_manager("transcription", Manager([]))
    assert [p.get_unique_id() for p in registry.get_all_plugins()] == ["llm_llama"]


def test_failed_discovery_leaves_the_registry_as_it_was(registry):
    before = registry.get_manager("transcription")

    class Broken:
        def discover_plugins(self):
            raise RuntimeError("plugin dir unreadable")

    with pytest.raises(RuntimeError, match="unreadable"):
        registry.register_plugin_manager("transcription", Broken())
    assert registry.get_manager("transcription") is before
    assert len(registry.get_all_plugins()) == 2


def test_manager_returning_no_config_dataclass(config_dir):
    r = UnifiedPluginRegistry(config_dir)
    r.register_plugin_manager("tools", Manager(["plain"]))
    m = r.get_plugin("tools_plain")
    assert m.config_schema == {"type": "object", "title": "plain", "properties": {}}
    assert m.config_dataclass is None and m.title == "plain" and m.description is None
    assert r.load_plugin_config("tools_plain") == {}
    assert r.save_plugin_config("tools_plain", {"free": "form"})


def test_manager_with_the_older_schema_method(config_dir):
    class OldStyle:
        def discover_plugins(self):
            return [PluginData("a", "2"), PluginData("b")]

        def get_plugin_config_schema(self, name):
            if name == "b":
                return None
            return {"type": "object", "title": "A!", "properties": {"n": {"type": "integer", "default": 4}}}

    r = UnifiedPluginRegistry(config_dir)
    r.register_plugin_manager("old", OldStyle())
    assert r.get_plugin("old_a").title == "A!"
    assert r.load_plugin_config("old_a") == {"n": 4}
    assert r.get_plugin("old_b").config_schema["title"] == "b"


def test_manager_returning_something_else_than_a_dataclass(config_dir):
    class Wrong(Manager):
        def get_plugin_config_dataclass(self, name):
            return dict

    r = UnifiedPluginRegistry(config_dir)
    with pytest.raises(TypeError, match="is not a dataclass"):
        r.register_plugin_manager("w", Wrong(["x"]))
    assert r.get_categories() == []


def test_register_plugin_system_needs_cjm_plugin_system(config_dir):
    try:
        import cjm_plugin_system  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="cjm-plugin-system"):
            UnifiedPluginRegistry(config_dir).register_plugin_system("x", object)


def test_changing_a_schema_is_seen(registry):
    m = registry.get_plugin("transcription_whisper")
    assert registry.save_plugin_config("transcription_whisper", {"beam_size": 15})
    m.config_schema["properties"]["beam_size"]["maximum"] = 10
    assert not registry.save_plugin_config("transcription_whisper", {"beam_size": 15})


# ---------------------------------------------------------------- documented differences


def test_difference_an_id_that_escapes_the_dir_is_refused(registry, tmp_path, config_dir, capsys):
    outside = tmp_path / "outside.json"
    for bad in ["../outside", "/etc/passwd", "a/b", "", ".hidden", "x\x00y", "a" * 201]:
        assert registry.save_plugin_config(bad, {"x": 1}) is False
        assert "refused" in capsys.readouterr().out
        with pytest.raises(InvalidIdError):
            registry.load_plugin_config(bad)
        assert registry.delete_plugin_config(bad) is False
    assert not outside.exists()
    assert os.listdir(config_dir) == []


def test_difference_a_failed_save_leaves_the_old_file(registry, config_dir, capsys):
    assert registry.save_plugin_config("transcription_whisper", {"device": "cuda"})
    before = (config_dir / "transcription_whisper.json").read_bytes()
    # The seed's json.dump wrote `{"device": ` and then failed on the set.
    assert registry.save_plugin_config("transcription_whisper", {"device": "cpu", "bad": {1, 2}}) is False
    assert "the value at /bad is a set, which JSON cannot hold" in capsys.readouterr().out
    assert not registry.save_plugin_config("transcription_whisper", {"device": "cpu", "x": float("nan")})
    assert (config_dir / "transcription_whisper.json").read_bytes() == before
    assert sorted(os.listdir(config_dir)) == [".transcription_whisper.json.lock", "transcription_whisper.json"]


def test_difference_a_failed_rename_leaves_no_temp_file(registry, config_dir, capsys):
    # A directory where the config file should be: the rename into place fails.
    (config_dir / "transcription_whisper.json").mkdir()
    assert registry.save_plugin_config("transcription_whisper", {"device": "cuda"}) is False
    assert "Error saving config for transcription_whisper: cannot rename into place" in capsys.readouterr().out
    assert sorted(os.listdir(config_dir)) == [".transcription_whisper.json.lock", "transcription_whisper.json"]
    assert not registry.get_plugin("transcription_whisper").is_configured


def test_difference_an_invalid_config_is_refused_with_every_violation(registry, config_dir, capsys):
    bad = {"device": "tpu", "beam_size": 0, "language": 3}
    assert registry.save_plugin_config("transcription_whisper", bad) is False
    out = capsys.readouterr().out
    assert out.startswith("Error saving config for transcription_whisper: config for transcription_whisper is invalid (3 violations): ")
    for where in ["/beam_size:", "/device:", "/language:"]:
        assert where in out
    assert not (config_dir / "transcription_whisper.json").exists()
    assert not registry.get_plugin("transcription_whisper").is_configured
    with pytest.raises(InvalidConfigError) as e:
        registry.validate_plugin_config("transcription_whisper", bad)
    assert [v.pointer for v in e.value.violations] == ["/beam_size", "/device", "/language"]
    assert e.value.unique_id == "transcription_whisper"
    registry.validate_plugin_config("transcription_whisper", {"device": "cuda"})


def test_difference_a_config_must_be_a_dict(registry, capsys):
    assert registry.save_plugin_config("transcription_whisper", [1, 2]) is False
    assert "must be a dict, not list" in capsys.readouterr().out


def test_secrets_never_appear_in_errors(registry, capsys):
    for secret in ["hunter2-very-secret", 12345678]:
        assert not registry.save_plugin_config("transcription_whisper", {"api_token": secret, "beam_size": 0})
        out = capsys.readouterr().out
        assert str(secret) not in out and "/beam_size" in out
        assert ("/api_token" in out) == isinstance(secret, int)
        with pytest.raises(InvalidConfigError) as e:
            registry.validate_plugin_config("transcription_whisper", {"api_token": secret, "beam_size": 0})
        assert str(secret) not in str(e.value) and all(str(secret) not in v.reason for v in e.value.violations)


def test_secrets_by_name_and_write_only(config_dir, capsys):
    class Schemas:
        def discover_plugins(self):
            return [PluginData("x")]

        def get_plugin_config_schema(self, name):
            return {
                "type": "object",
                "properties": {
                    "openai_api_key": {"type": "string", "maxLength": 3},
                    "nested": {"type": "object", "properties": {"pin": {"type": "string", "writeOnly": True, "enum": ["a"]}}},
                },
            }

    r = UnifiedPluginRegistry(config_dir)
    r.register_plugin_manager("s", Schemas())
    assert not r.save_plugin_config("s_x", {"openai_api_key": "sk-abcdef", "nested": {"pin": "9876"}})
    out = capsys.readouterr().out
    assert "sk-abcdef" not in out and "9876" not in out and "(secret)" in out


def test_difference_load_fills_defaults_and_nested_defaults(config_dir):
    class Schemas:
        def discover_plugins(self):
            return [PluginData("x")]

        def get_plugin_config_schema(self, name):
            return {
                "type": "object",
                "properties": {
                    "a": {"type": "integer", "default": 1},
                    "opts": {"type": "object", "default": {}, "properties": {"b": {"type": "string", "default": "z"}}},
                },
            }

    r = UnifiedPluginRegistry(config_dir)
    r.register_plugin_manager("s", Schemas())
    (config_dir / "s_x.json").write_text('{"a": 7}')
    assert r.load_plugin_config("s_x") == {"a": 7, "opts": {"b": "z"}}
    assert json.loads((config_dir / "s_x.json").read_text()) == {"a": 7}


def test_a_schema_that_is_not_json_schema(config_dir, capsys):
    class Broken:
        def discover_plugins(self):
            return [PluginData("x")]

        def get_plugin_config_schema(self, name):
            return {"type": "object", "properties": {"a": {"type": "no-such-type"}}}

    r = UnifiedPluginRegistry(config_dir)
    r.register_plugin_manager("b", Broken())
    with pytest.raises(SchemaError, match="/properties/a/type"):
        r.load_plugin_config("b_x")
    assert not r.save_plugin_config("b_x", {})
    assert "not a valid JSON Schema" in capsys.readouterr().out


def test_keys_are_written_as_json_writes_them(registry, config_dir):
    assert registry.save_plugin_config("x_keys", {1: "a", None: "b", True: "c", 2.5: "d"})
    assert json.loads((config_dir / "x_keys.json").read_text()) == json.loads(
        json.dumps({1: "a", None: "b", True: "c", 2.5: "d"})
    )


def test_tuples_save_as_lists(registry):
    assert registry.save_plugin_config("x_t", {"t": (1, 2)})
    assert registry.load_plugin_config("x_t") == {"t": [1, 2]}


def test_circular_config_is_refused(registry, capsys):
    loop = []
    loop.append(loop)
    assert not registry.save_plugin_config("x_loop", {"l": loop})
    assert "circular" in capsys.readouterr().out
