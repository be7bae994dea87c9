"""Shared fixtures of the plugboard Python package's tests.

The seed's own dataclasses are the reference for JSON round trips: the
upstream package ``cjm_fasthtml_plugins`` when it is importable, and always
the re-creation from its documented signatures that the Rust core's tests
use too (crates/plugboard-core/tests/python/seed_model.py).
"""

import importlib
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "crates" / "plugboard-core" / "tests" / "python"))

IN_CI = bool(os.environ.get("CI"))


def seed_references():
    """(name, execution_mode module, metadata module) of each seed model available."""
    refs = [("recreation", importlib.import_module("seed_model"), importlib.import_module("seed_model"))]
    try:
        em = importlib.import_module("cjm_fasthtml_plugins.core.execution_mode")
        md = importlib.import_module("cjm_fasthtml_plugins.core.metadata")
    except Exception:
        pass
    else:
        refs.append(("upstream", em, md))
    return refs


@pytest.fixture
def config_dir(tmp_path):
    """A fresh config directory."""
    d = tmp_path / "configs"
    d.mkdir()
    return d
