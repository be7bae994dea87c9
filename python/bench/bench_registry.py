"""plugboard's Python API beside the seed's own implementation, same run.

    pip install maturin && maturin develop --release --manifest-path python/Cargo.toml
    pip install cjm-fasthtml-plugins          # the seed (or put its source on PYTHONPATH)
    python python/bench/bench_registry.py [--plugins 10000]

Each figure is the median of several repetitions; the seed's figure is
measured in the same process, on the same plugins, interleaved with ours.

* register: ``register_plugin_manager`` of a manager that discovers N
  plugins (one config dataclass shared by all, as a manager of one plugin
  family does); both registries turn it into a schema with the same
  converter (``cjm_fasthtml_jsonschema``'s when installed) and check which
  plugins have a saved config (a tenth of them do).
* stats: ``get_plugin_stats`` over the N registered plugins (the seed's
  leaves ``by_category`` empty; ours fills it).
* save / load: 200 configs saved (ours validated, fsynced and renamed; the
  seed's a plain write) and loaded (ours with defaults filled).
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

try:
    from cjm_fasthtml_plugins.core.registry import UnifiedPluginRegistry as SeedRegistry
    from cjm_fasthtml_plugins.utils.helpers import get_plugin_stats as seed_stats
except ImportError:
    sys.exit("the seed (cjm_fasthtml_plugins) is not importable: install it, or put its source on PYTHONPATH")

from plugboard.core.registry import UnifiedPluginRegistry
from plugboard.utils.helpers import get_plugin_stats


@dataclass
class SttConfig:
    """Speech to text settings."""

    device: str = field(default="cpu", metadata={"enum": ["cpu", "cuda"]})
    beam_size: int = field(default=5, metadata={"minimum": 1, "maximum": 20})
    language: Optional[str] = None
    temperature: float = 0.0


@dataclass
class Found:
    name: str
    version: str = "1.0"


class Manager:
    def __init__(self, n):
        self.found = [Found(f"p{i:06d}") for i in range(n)]

    def discover_plugins(self):
        return list(self.found)

    def get_plugin_config_dataclass(self, name):
        return SttConfig


def timed(fn, reps):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def fmt(s):
    return f"{s * 1e3:.2f} ms" if s >= 1e-3 else f"{s * 1e6:.1f} µs"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--plugins", type=int, default=10_000)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    n = args.plugins
    manager = Manager(n)
    root = Path(tempfile.mkdtemp(prefix="pb-bench-"))
    try:
        dirs = {}
        for who in ("ours", "seed"):
            d = root / who
            d.mkdir()
            for i in range(0, n, 10):
                (d / f"stt_p{i:06d}.json").write_text('{"device": "cuda"}')
            dirs[who] = d

        rows = []
        last = {}

        def reg(who):
            cls = UnifiedPluginRegistry if who == "ours" else SeedRegistry
            r = cls(dirs[who])
            r.register_plugin_manager("stt", manager)
            last[who] = r

        # Interleave: one of ours, one of the seed's, and so on.
        times = {"ours": [], "seed": []}
        for _ in range(args.reps):
            for who in ("ours", "seed"):
                t = time.perf_counter()
                reg(who)
                times[who].append(time.perf_counter() - t)
        rows.append((f"register {n:,} plugins", statistics.median(times["ours"]), statistics.median(times["seed"])))
        plugins_ours = last["ours"].get_all_plugins()
        plugins_seed = last["seed"].get_all_plugins()
        assert len(plugins_ours) == len(plugins_seed) == n
        so, ss = get_plugin_stats(plugins_ours), seed_stats(plugins_seed)
        assert {k: v for k, v in so.items() if k != "by_category"} == {k: v for k, v in ss.items() if k != "by_category"}
        assert so["configured"] == n // 10

        stats_reps = max(args.reps, 21)
        t_ours = timed(lambda: get_plugin_stats(plugins_ours), stats_reps)
        t_seed = timed(lambda: seed_stats(plugins_seed), stats_reps)
        rows.append((f"get_plugin_stats over {n:,}", t_ours, t_seed))

        ids = [f"stt_p{i:06d}" for i in range(200)]
        config = {"device": "cuda", "beam_size": 3, "language": "fr", "temperature": 0.2}

        def save(r):
            for uid in ids:
                assert r.save_plugin_config(uid, config)

        def load(r):
            for uid in ids:
                r.load_plugin_config(uid)

        rows.append(("save 200 configs", timed(lambda: save(last["ours"]), 3), timed(lambda: save(last["seed"]), 3)))
        rows.append(("load 200 configs", timed(lambda: load(last["ours"]), args.reps), timed(lambda: load(last["seed"]), args.reps)))

        print(f"| what | plugboard | seed (cjm-fasthtml-plugins), same run | ratio |")
        print(f"| --- | --- | --- | --- |")
        for what, ours, seed in rows:
            print(f"| {what} | {fmt(ours)} | {fmt(seed)} | {ours / seed:.2f}x |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
