"""plugboard.client against a real host: ``plugboard serve`` on a private
data dir with the repository's example plugins, stopped by its pid at the
end. The word counter is started, configured, called and stopped from
Python; the slow job is streamed and cancelled.

The host binary is ``$PLUGBOARD_EXE`` (the Rust test that runs this suite
sets it), else the debug build under ``$CARGO_TARGET_DIR`` or ``target/``."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import IN_CI, REPO
from plugboard.client import Client, CostReport, Error, HostPlugin, Progress, Result, WorkerStatus
from plugboard.core.execution_mode import PluginExecutionMode
from plugboard.core.metadata import PluginMetadata
from plugboard.errors import CallFailedError, HostError, HostUnavailableError, PluginNotFoundError
from plugboard.utils.helpers import get_plugin_stats

TOKEN = "py-client-test-token-0123456789"


def host_binary():
    candidates = [os.environ.get("PLUGBOARD_EXE")]
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        candidates.append(str(Path(target) / "debug" / "plugboard"))
    candidates.append(str(REPO / "target" / "debug" / "plugboard"))
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    return None


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    exe = host_binary()
    if exe is None:
        if IN_CI:
            pytest.fail("the plugboard binary is needed under CI: build it (cargo build -p plugboard-cli) or set PLUGBOARD_EXE")
        pytest.skip("no plugboard binary: build it with cargo build -p plugboard-cli, or set PLUGBOARD_EXE")
    root = tmp_path_factory.mktemp("host")
    env = dict(
        os.environ,
        PLUGBOARD_PLUGINS=str(REPO / "examples" / "plugins"),
        PLUGBOARD_DATA_DIR=str(root / "data"),
        PLUGBOARD_CONFIG_DIR=str(root / "configs"),
        PLUGBOARD_TOKEN="",
    )
    proc = subprocess.Popen(
        [exe, "serve", "--bind", "127.0.0.1:0", "--token", TOKEN],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    url = None
    deadline = time.monotonic() + 60
    try:
        for line in proc.stdout:
            m = re.search(r"dashboard:\s+(http://[0-9.]+:\d+)/", line)
            if m:
                url = m.group(1)
            if line.startswith("press Ctrl-C") or time.monotonic() > deadline:
                break
        sock = root / "data" / "host.sock"
        while not sock.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert sock.exists(), f"the host did not start (exit code {proc.poll()})"
        assert url, "the host did not print its HTTP address"
        yield {"data_dir": root / "data", "url": url, "pid": proc.pid}
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()


def test_word_counter_from_python(host):
    c = Client(host["data_dir"])
    assert c.health()["status"] == "ok"
    plugins = {p.unique_id: p for p in c.list()}
    assert {"text_word_count", "demo_slow_job"} <= set(plugins)
    wc = c.show("text_word_count")
    assert isinstance(wc, HostPlugin) and isinstance(wc.metadata, PluginMetadata)
    assert wc.metadata.execution_mode is PluginExecutionMode.SUBPROCESS
    assert wc.metadata.get_unique_id() == "text_word_count"
    assert get_plugin_stats([p.metadata for p in plugins.values()])["by_category"]["text"] >= 1

    with pytest.raises(HostError) as e:
        c.config_set("text_word_count", {"min_length": 0, "lowercase": "yes"})
    assert e.value.code == "invalid_config" and e.value.status == 422
    assert [v.pointer for v in e.value.violations] == ["/lowercase", "/min_length"]
    assert c.config_set("text_word_count", {"min_length": 3}) == {"min_length": 3, "lowercase": True}
    assert c.config_get("text_word_count")["min_length"] == 3

    status = c.start("text_word_count")
    assert isinstance(status, WorkerStatus) and status.state == "running" and status.pid
    assert c.status("text_word_count").state == "running"
    assert any(r.plugin_id == "text_word_count" for r in c.ps())
    out = c.call("text_word_count", {"text": "a cat and an ox and the bat"})
    assert out["words"] == 5  # min_length 3, from the saved config: cat, and, and, the, bat
    assert out["top"][0] == ["and", 2]
    with pytest.raises(HostError, match="already") as e:
        c.start("text_word_count")
    assert e.value.code == "already_running"

    assert c.stop("text_word_count").state == "stopped"
    assert not any(r.plugin_id == "text_word_count" for r in c.ps())
    assert c.config_delete("text_word_count") is True
    assert c.config_delete("text_word_count") is False


def test_slow_job_streams_progress_then_its_result(host):
    c = Client(host["data_dir"])
    c.start("demo_slow_job")
    try:
        stream = c.stream("demo_slow_job", {"steps": 4, "step_ms": 20})
        events = list(stream)
        assert [type(e) for e in events] == [Progress] * 4 + [Result]
        assert [e.progress for e in events[:4]] == [0.25, 0.5, 0.75, 1.0]
        assert events[0].message == "step 1 of 4"
        assert events[-1].output == {"steps_done": 4} == stream.output
        assert stream.request_id
    finally:
        c.stop("demo_slow_job")


def test_a_streamed_call_is_cancelled(host):
    c = Client(host["data_dir"])
    c.start("demo_slow_job")
    try:
        stream = c.stream("demo_slow_job", {"steps": 200, "step_ms": 50})
        first = next(stream)
        assert isinstance(first, Progress)
        assert c.cancel("demo_slow_job", stream.request_id) is True
        with pytest.raises(CallFailedError) as e:
            for _ in stream:
                pass
        assert e.value.code == "cancelled"

        quiet = c.stream("demo_slow_job", {"steps": 200, "step_ms": 50}, raise_on_error=False)
        next(quiet)
        c.cancel("demo_slow_job", quiet.request_id)
        last = list(quiet)[-1]
        assert isinstance(last, Error) and last.code == "cancelled"
    finally:
        c.stop("demo_slow_job")


def test_errors_carry_the_hosts_message(host, tmp_path):
    c = Client(host["data_dir"])
    with pytest.raises(PluginNotFoundError) as e:
        c.show("text_nope")
    assert e.value.status == 404 and "text_nope" in e.value.message
    with pytest.raises(PluginNotFoundError):
        c.start("text_nope")
    with pytest.raises(PluginNotFoundError):
        c.call("text_nope", {})
    with pytest.raises(HostError) as e:
        c.status("demo_process_tree")  # never started by this host
    assert e.value.code == "not_running" and e.value.status == 409
    with pytest.raises(HostUnavailableError, match=r"no plugboard host answers at the Unix socket .*host\.sock"):
        Client(tmp_path).health()
    with pytest.raises(ValueError):
        c.show("")


def test_http_with_token(host):
    c = Client(url=host["url"], token=TOKEN)
    assert TOKEN not in repr(c) and "token=(set)" in repr(c)
    assert any(p.unique_id == "text_word_count" for p in c.list())
    c.start("text_word_count")
    assert c.call("text_word_count", {"text": "a b"})["words"] == 2
    c.stop("text_word_count")
    with pytest.raises(HostError) as e:
        Client(url=host["url"], token="wrong").list()
    assert e.value.status == 401 and e.value.code == "unauthorized"
    assert TOKEN not in str(e.value)


def test_cost(host):
    report = Client(host["data_dir"]).cost(since="day", hours=2)
    assert isinstance(report, CostReport) and report.hours == 2
    assert report.total_accrued_usd >= 0 and isinstance(report.plugins, list)
