"""The same JSON and files as the seed, both ways.

* metadata: ``asdict()`` of ours equals ``asdict()`` of the seed's
  dataclasses built with the same arguments (field names, order, defaults);
  JSON written from either reads into the other and back unchanged;
* configs: a file the seed wrote (``json.dump(config, f, indent=2)``) loads
  here; a file we wrote loads with the seed's reader;
* helpers and schemas: ``get_plugin_stats`` agrees with the seed's on every
  count (``by_category`` filled here), ``dataclass_to_jsonschema`` builds
  the seed's schema.

The seed reference is the upstream package when it is importable, and
always its re-creation from the documented signatures (conftest.py)."""

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import List, Optional

import pytest

from conftest import IN_CI, seed_references
from plugboard.core import execution_mode as our_em
from plugboard.core import metadata as our_md
from plugboard.core._dataclass_schema import dataclass_to_jsonschema
from plugboard.core.registry import UnifiedPluginRegistry
from plugboard.utils.helpers import get_plugin_stats

REFS = seed_references()
IDS = [r[0] for r in REFS]


def to_json(obj) -> str:
    """The seed's JSON of a dataclass: ``asdict`` with enum values."""
    return json.dumps(asdict(obj), default=lambda o: o.value if isinstance(o, Enum) else None, indent=2)


def build(em, md):
    """The seed documents' three plugins, built from modules em and md."""
    simple = md.PluginMetadata(
        name="whisper_tiny",
        category="transcription",
        title="Whisper Tiny Model",
        config_schema={"type": "object", "properties": {"device": {"type": "string", "enum": ["cpu", "cuda"], "default": "cpu"}}},
        version="1.0.0",
        is_configured=True,
    )
    vllm = md.PluginMetadata(
        name="voxtral_vllm",
        category="transcription",
        title="Voxtral via vLLM Server",
        config_schema={"type": "object", "properties": {}},
        execution_mode=em.PluginExecutionMode.SUBPROCESS,
        manages_child_processes=True,
        manages_external_resources=True,
        spawned_pids=[54321, 54322, 54323],
    )
    cloud = md.PluginMetadata(
        name="llm_finetune_aws",
        category="finetuning",
        title="AWS LLM Finetuning",
        config_schema={"type": "object", "properties": {}},
        execution_mode=em.PluginExecutionMode.CLOUD_GPU,
        manages_external_resources=True,
        remote_resource=md.RemoteResourceInfo(
            provider=em.CloudProviderType.AWS,
            instance_id="i-abcd1234",
            status="running",
            gpu_count=8,
            gpu_type="A100",
            estimated_cost_per_hour=24.50,
            metadata={"tags": {"owner": "plugboard"}},
        ),
    )
    container = md.PluginMetadata(name="c", category="media", title="C", config_schema={}, container_id="abc", execution_mode=em.PluginExecutionMode.DOCKER)
    return [simple, vllm, cloud, container]


def load_into(em, md, data):
    """JSON (a dict) into module md's PluginMetadata."""
    d = dict(data)
    d["execution_mode"] = em.PluginExecutionMode(d["execution_mode"])
    if d.get("remote_resource") is not None:
        rr = dict(d["remote_resource"])
        rr["provider"] = em.CloudProviderType(rr["provider"])
        d["remote_resource"] = md.RemoteResourceInfo(**rr)
    return md.PluginMetadata(**d)


@pytest.mark.parametrize("ref", REFS, ids=IDS)
def test_enum_members_and_values(ref):
    _, em, _ = ref
    for name in ("PluginExecutionMode", "CloudProviderType"):
        theirs = [(m.name, m.value) for m in getattr(em, name)]
        ours = [(m.name, m.value) for m in getattr(our_em, name)]
        assert ours == theirs
        assert issubclass(getattr(our_em, name), Enum)


@pytest.mark.parametrize("ref", REFS, ids=IDS)
def test_dataclass_fields_order_and_defaults(ref):
    _, _, md = ref
    for name in ("RemoteResourceInfo", "PluginMetadata"):
        theirs = dataclasses.fields(getattr(md, name))
        ours = dataclasses.fields(getattr(our_md, name))
        assert [f.name for f in ours] == [f.name for f in theirs]
        for a, b in zip(ours, theirs):
            assert (a.default == b.default) or (
                isinstance(a.default, Enum) and a.default.value == b.default.value
            ), a.name
            assert (a.default_factory is dataclasses.MISSING) == (b.default_factory is dataclasses.MISSING), a.name
            if a.default_factory is not dataclasses.MISSING:
                assert a.default_factory() == b.default_factory()


@pytest.mark.parametrize("ref", REFS, ids=IDS)
def test_asdict_shapes_are_identical(ref):
    _, em, md = ref
    for ours, theirs in zip(build(our_em, our_md), build(em, md)):
        assert to_json(ours) == to_json(theirs)
        assert list(asdict(ours)) == list(asdict(theirs))


@pytest.mark.parametrize("ref", REFS, ids=IDS)
def test_json_round_trip_both_ways(ref):
    _, em, md = ref
    # Theirs -> JSON -> ours -> JSON: unchanged.
    for theirs in build(em, md):
        text = to_json(theirs)
        ours = load_into(our_em, our_md, json.loads(text))
        assert to_json(ours) == text
        if hasattr(theirs, "get_unique_id"):  # the re-creation has the fields only
            assert ours.get_unique_id() == theirs.get_unique_id()
            assert ours.has_active_resources() == theirs.has_active_resources()
            assert ours.is_local_execution() == theirs.is_local_execution()
    # Ours -> JSON -> theirs -> JSON: unchanged.
    for ours in build(our_em, our_md):
        text = to_json(ours)
        theirs = load_into(em, md, json.loads(text))
        assert to_json(theirs) == text


def test_the_core_fixture_reads_and_writes_back_unchanged():
    # The seed-written metadata the Rust core's own tests read.
    path = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "plugboard-core", "tests", "fixtures", "seed_metadata.json")
    with open(path) as f:
        fixture = json.load(f)
    assert fixture
    for item in fixture:
        ours = load_into(our_em, our_md, item)
        assert json.loads(to_json(ours)) == item


@pytest.mark.parametrize("ref", REFS, ids=IDS)
def test_plugin_stats_agree_with_the_seed(ref):
    name, em, md = ref
    ours = get_plugin_stats(build(our_em, our_md))
    expected = {"total": 4, "configured": 1, "unconfigured": 3, "local": 3, "cloud": 1, "with_active_resources": 3}
    assert {k: v for k, v in ours.items() if k != "by_category"} == expected
    assert list(ours) == list(expected) + ["by_category"]
    assert ours["by_category"] == {"finetuning": 1, "media": 1, "transcription": 2}
    if name == "upstream":
        from cjm_fasthtml_plugins.utils.helpers import get_plugin_stats as seed_stats

        theirs = seed_stats(build(em, md))
        assert {k: v for k, v in theirs.items() if k != "by_category"} == expected
        assert theirs["by_category"] == {}


def test_plugin_stats_asks_other_objects_their_methods():
    class Duck:
        category = "ducks"
        is_configured = True

        def is_local_execution(self):
            return False

        def is_cloud_execution(self):
            return False  # neither: the seed counts what the methods say

        def has_active_resources(self):
            return True

    class Sub(our_md.PluginMetadata):
        def is_local_execution(self):
            return False

    stats = get_plugin_stats([Duck(), Sub(name="s", category="c", title="S", config_schema={})])
    assert stats == {"total": 2, "configured": 1, "unconfigured": 1, "local": 0, "cloud": 1, "with_active_resources": 1, "by_category": {"c": 1, "ducks": 1}}
    assert get_plugin_stats([])["by_category"] == {}
    assert get_plugin_stats(iter(build(our_em, our_md)))["total"] == 4


def test_a_config_the_seed_wrote_reads_here(config_dir):
    config = {"device": "cuda", "beam": 5, "language": None, "ratio": 0.5, "tags": ["a", "é"], "nested": {"k": True}}
    with open(config_dir / "transcription_whisper.json", "w") as f:
        json.dump(config, f, indent=2)  # exactly how the seed saves
    r = UnifiedPluginRegistry(config_dir)
    assert r.load_plugin_config("transcription_whisper") == config


@pytest.mark.parametrize("ref", REFS, ids=IDS)
def test_a_config_we_wrote_reads_in_the_seed(ref, config_dir):
    config = {"device": "cuda", "beam": 5, "language": None, "ratio": 0.5, "big": 2**63, "tags": ["a", "é"], "nested": {"k": True}}
    r = UnifiedPluginRegistry(config_dir)
    assert r.save_plugin_config("transcription_whisper", config)
    if ref[0] == "upstream":
        from cjm_fasthtml_plugins.core.registry import UnifiedPluginRegistry as SeedRegistry

        assert SeedRegistry(config_dir).load_plugin_config("transcription_whisper") == config
    with open(config_dir / "transcription_whisper.json") as f:
        assert json.load(f) == config  # the seed's reader


# ---------------------------------------------------------------- schemas from dataclasses


class Color(Enum):
    RED = "red"


@dataclass
class Everything:
    """Every kind of field the converter knows."""

    name: str = field(default="x", metadata={"title": "Name", "minLength": 1, "maxLength": 9, "pattern": "^x", "format": "hostname", "description": "d"})
    count: int = field(default=3, metadata={"minimum": 0, "maximum": 10})
    ratio: float = 0.5
    on: bool = True
    maybe: Optional[int] = None
    items: List[str] = field(default_factory=lambda: ["a"])
    maybe_items: Optional[List[float]] = None
    untyped_list: list = field(default_factory=list)
    mode: str = field(default="a", metadata={"enum": ["a", "b"], "ignored": 1})
    required: str = field(default="r")
    other: dict = field(default_factory=dict)


@dataclass
class NoDoc:
    a: int = 1


class Named:
    __schema_name__ = "n"
    __schema_title__ = "T"
    __schema_description__ = "D"


@dataclass
class WithNames(Named):
    b: Optional[str] = None


def _theirs():
    try:
        from cjm_fasthtml_jsonschema.core.dataclass import dataclass_to_jsonschema as theirs
    except ImportError:
        if IN_CI:
            raise  # .ci/run installs cjm-fasthtml-jsonschema; the comparison must run
        return None
    return theirs


@pytest.mark.parametrize("cls", [Everything, NoDoc, WithNames])
def test_dataclass_schema_is_the_seeds(cls):
    ours = dataclass_to_jsonschema(cls)
    theirs = _theirs()
    if theirs is not None:
        assert json.dumps(ours) == json.dumps(theirs(cls))
    assert ours["type"] == "object" and list(ours)[:3] == ["name", "title", "description"]


def test_dataclass_schema_details():
    s = dataclass_to_jsonschema(Everything)
    p = s["properties"]
    assert s["title"] == "Everything" and s["description"] == "Every kind of field the converter knows."
    assert p["maybe"] == {"type": ["integer", "null"], "default": None}
    assert p["maybe_items"] == {"type": ["array", "null"], "items": {"type": "number"}, "default": None}
    assert p["items"] == {"type": "array", "items": {"type": "string"}, "default": ["a"]}
    assert p["mode"] == {"type": "string", "enum": ["a", "b"], "default": "a"}
    assert dataclass_to_jsonschema(WithNames)["name"] == "n"
    assert dataclass_to_jsonschema(NoDoc)["description"].startswith("NoDoc(")
    with pytest.raises(TypeError, match="is not a dataclass"):
        dataclass_to_jsonschema(None)


# ---------------------------------------------------------------- the registry beside the seed's


@dataclass
class SttConfig:
    """Speech to text settings."""

    device: str = field(default="cpu", metadata={"enum": ["cpu", "cuda"]})
    beam: int = field(default=5, metadata={"minimum": 1})


@dataclass
class _Found:
    name: str
    version: Optional[str] = None


class _Manager:
    def discover_plugins(self):
        return [_Found("whisper", "1.0"), _Found("voxtral", "0.2")]

    def get_plugin_config_dataclass(self, name):
        return SttConfig


# The upstream package is not on PyPI: this comparison is collected only where
# it is importable (a checkout of its source on the path), never as a skip.
UPSTREAM = [r for r in REFS if r[0] == "upstream"]


def the_same_calls_answer_the_same_as_the_seeds_registry(ref, tmp_path):
    from cjm_fasthtml_plugins.core.registry import UnifiedPluginRegistry as SeedRegistry

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "stt_voxtral.json").write_text('{"device": "cuda", "beam": 2}')
    (tmp_path / "b" / "stt_voxtral.json").write_text('{"device": "cuda", "beam": 2}')
    seed, ours = SeedRegistry(tmp_path / "a"), UnifiedPluginRegistry(tmp_path / "b")
    for r in (seed, ours):
        r.register_plugin_manager("stt", _Manager(), "Speech")
        r.register_plugin_manager("llm", _Manager(), auto_discover=False)

    def answers(r):
        return [
            [asdict(p) for p in r.get_all_plugins()],
            r.get_categories(),
            r.get_categories_with_plugins(),
            [r.get_category_display_name(c) for c in ("stt", "llm", "x_y")],
            asdict(r.get_plugin("stt_whisper")),
            r.get_plugin("nope"),
            [p.name for p in r.get_plugins_by_category("stt")],
            r.load_plugin_config("stt_voxtral"),
            r.save_plugin_config("stt_whisper", {"device": "cuda", "beam": 3}),
            r.get_plugin("stt_whisper").is_configured,
            r.load_plugin_config("stt_whisper"),
            r.delete_plugin_config("stt_whisper"),
            r.delete_plugin_config("stt_whisper"),
            r.get_plugin("stt_whisper").is_configured,
            type(r.get_manager("stt")).__name__,
        ]

    def plain(o):
        return o.value if isinstance(o, Enum) else getattr(o, "__qualname__", repr(o))

    assert json.dumps(answers(ours), default=plain) == json.dumps(answers(seed), default=plain)


if UPSTREAM:
    test_the_same_calls_answer_the_same_as_the_seeds_registry = pytest.mark.parametrize(
        "ref", UPSTREAM, ids=[r[0] for r in UPSTREAM]
    )(the_same_calls_answer_the_same_as_the_seeds_registry)
