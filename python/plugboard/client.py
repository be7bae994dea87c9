"""A client of a running plugboard host (``plugboard serve`` or ``plugboard demo``).

The host answers JSON over HTTP/1.1 on a Unix socket in its data dir
(``{data_dir}/host.sock``, mode 0600: no token needed) and, optionally, over
TCP (``--bind``; a token when it is not loopback-only). docs/host-api.md is
the reference of every endpoint; this module gives each a typed method::

    from plugboard.client import Client

    host = Client()                                   # $PLUGBOARD_DATA_DIR, else ~/.local/share/plugboard
    host.start("text_word_count")
    print(host.call("text_word_count", {"text": "to be or not to be"}))
    for event in host.stream("demo_slow_job", {"steps": 3}):
        print(event)
    host.stop("text_word_count")

Errors are exceptions of ``plugboard.errors`` carrying the host's code and
message: ``PluginNotFoundError`` (unknown id), ``HostUnavailableError`` (no
host at that socket or URL), ``HostError`` for the rest (``code`` says which:
``already_running``, ``invalid_config`` with ``violations``, ``budget_exceeded``…),
``CallFailedError`` when a stream ends with an error event. The stdlib is
all it needs.
"""

import http.client
import json
import os
import socket
import urllib.parse
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

from .core.execution_mode import CloudProviderType, PluginExecutionMode
from .core.metadata import PluginMetadata, RemoteResourceInfo
from .errors import (
    CallFailedError,
    HostError,
    HostUnavailableError,
    PluginNotFoundError,
    Violation,
)

__all__ = [
    "Client",
    "HostPlugin",
    "WorkerStatus",
    "LedgerRow",
    "CostLine",
    "CostReport",
    "Progress",
    "Log",
    "Result",
    "Error",
    "Event",
    "CallStream",
    "default_data_dir",
    "metadata_from_json",
]


def default_data_dir() -> Path:
    """The data dir the ``plugboard`` CLI uses by default:
    ``$PLUGBOARD_DATA_DIR``, else ``$XDG_DATA_HOME/plugboard``, else
    ``~/.local/share/plugboard``."""
    env = os.environ.get("PLUGBOARD_DATA_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "plugboard"


def _pick(cls, data: Dict[str, Any], **override):
    """An instance of dataclass ``cls`` from the fields of ``data`` it
    knows; the whole answer stays in ``raw``."""
    known = {f.name for f in fields(cls)}
    kwargs = {k: v for k, v in data.items() if k in known and k != "raw"}
    kwargs.update(override)
    return cls(**kwargs, raw=data)


def metadata_from_json(data: Dict[str, Any]) -> PluginMetadata:
    """A ``PluginMetadata`` from its JSON (the seed's ``asdict`` shape, enum
    values as strings); fields it does not have are ignored."""
    known = {f.name for f in fields(PluginMetadata)}
    kwargs = {k: v for k, v in data.items() if k in known and k != "config_dataclass"}
    if "execution_mode" in kwargs:
        kwargs["execution_mode"] = PluginExecutionMode(kwargs["execution_mode"])
    rr = kwargs.get("remote_resource")
    if isinstance(rr, dict):
        rr_known = {f.name for f in fields(RemoteResourceInfo)}
        rr = {k: v for k, v in rr.items() if k in rr_known}
        rr["provider"] = CloudProviderType(rr["provider"])
        kwargs["remote_resource"] = RemoteResourceInfo(**rr)
    kwargs.setdefault("config_schema", {})
    return PluginMetadata(**kwargs)


@dataclass
class HostPlugin:
    """A plugin as the host lists it: the seed's metadata, plus what the
    host knows (its manifest, resources, and state when it runs)."""

    unique_id: str
    metadata: PluginMetadata
    manifest_path: Optional[str] = None
    resources: Dict[str, Any] = field(default_factory=dict)
    state: Optional[str] = None  # starting, running, stopped… (None: never started by this host)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "HostPlugin":
        """From the host's JSON."""
        return cls(
            unique_id=data.get("unique_id", ""),
            metadata=metadata_from_json(data),
            manifest_path=data.get("manifest_path"),
            resources=data.get("resources") or {},
            state=data.get("state"),
            raw=data,
        )


@dataclass
class WorkerStatus:
    """A worker's status, the same shape for every execution mode."""

    state: str = "unknown"  # starting, provisioning, running, lost, stopping, stopped, exited, crashed, failed
    backend: Optional[str] = None
    resource: Optional[Dict[str, Any]] = None  # the typed handle, e.g. {"kind": "process", "pid": …}
    endpoint: Optional[str] = None  # unix:/…, tcp://…, http(s)://…
    pid: Optional[int] = None
    pid_start_time: Optional[int] = None
    resource_id: Optional[int] = None
    listen: Optional[str] = None
    log_path: Optional[str] = None
    started_at_ms: Optional[int] = None
    ready_at_ms: Optional[int] = None
    restarts: int = 0
    restart_pending: Optional[Any] = None
    last_exit: Optional[Any] = None
    error: Optional[str] = None
    note: Optional[str] = None
    stderr_tail: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "WorkerStatus":
        """From the host's JSON."""
        return _pick(cls, data)


@dataclass
class LedgerRow:
    """A live resource of the host's ledger (``plugboard ps``)."""

    id: int
    plugin_id: str
    kind: Optional[str] = None  # process, container, instance, remote_process, cluster_job, service
    backend: Optional[str] = None
    status: Optional[str] = None
    owned: Optional[bool] = None
    handle: Optional[Dict[str, Any]] = None
    endpoint: Optional[str] = None
    created_at: Optional[int] = None
    updated_at: Optional[int] = None
    cost_per_hour: Optional[float] = None
    price_source: Optional[str] = None
    note: Optional[str] = None
    deadline_at: Optional[int] = None
    deadline_reason: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "LedgerRow":
        """From the host's JSON."""
        return _pick(cls, data, id=data.get("id", 0), plugin_id=data.get("plugin_id", ""))


@dataclass
class CostLine:
    """Spend of one plugin, provider or category."""

    key: str
    accrued_usd: float = 0.0
    rate_usd_per_hour: float = 0.0
    projected_usd: float = 0.0
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class CostReport:
    """Spend from the host's cost ledger since a time, projected ``hours`` ahead."""

    since_ms: Optional[int]
    now_ms: int
    hours: float
    plugins: List[CostLine]
    providers: List[CostLine]
    categories: List[CostLine]
    total_accrued_usd: float
    total_rate_usd_per_hour: float
    total_projected_usd: float
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "CostReport":
        """From the host's JSON."""

        def lines(key):
            return [_pick(CostLine, d) for d in data.get(key) or []]

        return cls(
            since_ms=data.get("since_ms"),
            now_ms=data.get("now_ms", 0),
            hours=data.get("hours", 0.0),
            plugins=lines("plugins"),
            providers=lines("providers"),
            categories=lines("categories"),
            total_accrued_usd=data.get("total_accrued_usd", 0.0),
            total_rate_usd_per_hour=data.get("total_rate_usd_per_hour", 0.0),
            total_projected_usd=data.get("total_projected_usd", 0.0),
            raw=data,
        )


@dataclass
class Progress:
    """A streamed call's progress (0 to 1) with an optional message."""

    progress: float
    message: Optional[str] = None


@dataclass
class Log:
    """A log line a plugin sent during a streamed call."""

    level: str
    message: str


@dataclass
class Result:
    """A streamed call's output; its last event when it succeeded."""

    output: Any


@dataclass
class Error:
    """A streamed call's failure; its last event when it failed."""

    code: str
    message: str


Event = Union[Progress, Log, Result, Error]


def _event(data: Dict[str, Any]) -> Event:
    kind = data.get("type")
    if kind == "progress":
        return Progress(progress=data.get("progress", 0.0), message=data.get("message"))
    if kind == "log":
        return Log(level=data.get("level", "info"), message=data.get("message", ""))
    if kind == "result":
        return Result(output=data.get("output"))
    if kind == "error":
        err = data.get("error") or {}
        return Error(code=err.get("code", "error"), message=err.get("message", ""))
    return Error(code="bad_event", message=f"the host sent an event of unknown type {kind!r}")


class CallStream:
    """The events of one streamed call, as an iterator: ``Progress`` and
    ``Log`` while it runs, then one ``Result`` or ``Error``.

    ``request_id`` is what :meth:`Client.cancel` takes. Iterating to the end
    closes the connection; so does :meth:`close` or leaving a ``with``
    block. After the end, ``output`` holds the result's output; with
    ``raise_on_error=True`` (the default) an ``Error`` event is raised as
    ``CallFailedError`` instead of being yielded."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, request_id: str, raise_on_error: bool):
        self._conn = conn
        self._resp = resp
        self.request_id = request_id
        self.raise_on_error = raise_on_error
        self.output: Any = None
        self.done = False

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        if self.done:
            raise StopIteration
        while True:
            line = self._resp.readline()
            if not line:
                self.close()
                raise HostError(
                    "the host closed the stream before the call's result", code="stream_ended"
                )
            line = line.strip()
            if line:
                break
        event = _event(json.loads(line))
        if isinstance(event, (Result, Error)):
            self.close()
            if isinstance(event, Result):
                self.output = event.output
            elif self.raise_on_error:
                raise CallFailedError(event.message, code=event.code)
        return event

    def close(self) -> None:
        """Ends the stream (the host is not told to cancel: see
        :meth:`Client.cancel`)."""
        self.done = True
        self._conn.close()

    def __enter__(self) -> "CallStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a Unix socket."""

    def __init__(self, path: str, timeout: Optional[float]):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Client:
    """A client of one plugboard host.

    ``Client()`` or ``Client(data_dir)`` talks to the host serving that data
    dir over its Unix socket; ``Client(url="http://127.0.0.1:7878",
    token=...)`` over HTTP (the token defaults to ``$PLUGBOARD_TOKEN``).
    ``timeout`` bounds each request in seconds (a start waits until its
    plugin is ready, so keep it above the plugins' ready timeouts); calls
    take their own."""

    def __init__(
        self,
        data_dir: Optional[Union[str, Path]] = None,
        *,
        url: Optional[str] = None,
        token: Optional[str] = None,
        timeout: float = 120.0,
    ):
        if data_dir is not None and url is not None:
            raise ValueError("give a data dir (Unix socket) or a url (HTTP), not both")
        self.timeout = timeout
        if url is None:
            self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
            self.socket_path: Optional[Path] = self.data_dir / "host.sock"
            self.url: Optional[str] = None
            self._token = None
        else:
            parsed = urllib.parse.urlsplit(url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ValueError(f"url must be http://HOST:PORT or https://HOST:PORT, not {url!r}")
            self.data_dir = None
            self.socket_path = None
            self.url = url.rstrip("/")
            self._parsed = parsed
            self._token = token if token is not None else os.environ.get("PLUGBOARD_TOKEN") or None

    def __repr__(self) -> str:
        where = f"url={self.url!r}" if self.url else f"socket={str(self.socket_path)!r}"
        return f"Client({where}{', token=(set)' if self._token else ''})"

    # -- transport ---------------------------------------------------------

    def _where(self) -> str:
        return self.url or f"the Unix socket {self.socket_path}"

    def _connection(self, timeout: Optional[float]) -> http.client.HTTPConnection:
        if self.socket_path is not None:
            return _UnixConnection(str(self.socket_path), timeout)
        port = self._parsed.port
        if self._parsed.scheme == "https":
            return http.client.HTTPSConnection(self._parsed.hostname, port, timeout=timeout)
        return http.client.HTTPConnection(self._parsed.hostname, port, timeout=timeout)

    def _open(self, method: str, path: str, body: Any = None, timeout: Optional[float] = None):
        """Sends a request; the connection and the response (status checked)."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None or method not in ("GET", "HEAD"):
            data = json.dumps(body if body is not None else {}).encode()
            headers["Content-Type"] = "application/json"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        conn = self._connection(self.timeout if timeout is None else timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
        except (FileNotFoundError, ConnectionRefusedError) as e:
            conn.close()
            hint = " (start one with `plugboard serve`)" if self.socket_path is not None else ""
            raise HostUnavailableError(f"no plugboard host answers at {self._where()}: {e.strerror or e}{hint}") from e
        except socket.timeout as e:
            conn.close()
            raise HostError(f"{method} {path}: no answer from {self._where()} within the timeout", code="timeout") from e
        except OSError as e:
            conn.close()
            raise HostUnavailableError(f"cannot reach the plugboard host at {self._where()}: {e}") from e
        if resp.status >= 400:
            text = resp.read()
            conn.close()
            raise self._error(resp.status, text, method, path)
        return conn, resp

    def _error(self, status: int, text: bytes, method: str, path: str) -> HostError:
        try:
            err = json.loads(text).get("error") or {}
        except (ValueError, AttributeError):
            err = {}
        message = err.get("message") or text.decode(errors="replace").strip() or f"HTTP {status}"
        code = err.get("code") or "error"
        violations = [Violation(v.get("pointer", ""), v.get("reason", "")) for v in err.get("violations") or []]
        cls = PluginNotFoundError if status == 404 else HostError
        return cls(message, status=status, code=code, violations=violations)

    def _request(self, method: str, path: str, body: Any = None, timeout: Optional[float] = None) -> Any:
        conn, resp = self._open(method, path, body, timeout)
        try:
            text = resp.read()
        finally:
            conn.close()
        try:
            return json.loads(text)
        except ValueError as e:
            raise HostError(f"{method} {path}: the host answered something that is not JSON", status=resp.status, code="bad_answer") from e

    @staticmethod
    def _id(plugin_id: str) -> str:
        if not isinstance(plugin_id, str) or not plugin_id:
            raise ValueError("a plugin id must be a non-empty string")
        return urllib.parse.quote(plugin_id, safe="")

    # -- the API -------------------------------------------------------------

    def health(self) -> Dict[str, Any]:
        """The host's health: pid, version, data dir, plugins dirs, config dir, plugin count."""
        return self._request("GET", "/api/v1/health")

    def list(self) -> List[HostPlugin]:
        """Every plugin the host knows."""
        return [HostPlugin.from_json(p) for p in self._request("GET", "/api/v1/plugins")]

    def show(self, plugin_id: str) -> HostPlugin:
        """One plugin (``PluginNotFoundError`` when unknown)."""
        return HostPlugin.from_json(self._request("GET", f"/api/v1/plugins/{self._id(plugin_id)}"))

    def config_get(self, plugin_id: str) -> Dict[str, Any]:
        """The plugin's saved config, schema defaults filled in."""
        return self._request("GET", f"/api/v1/plugins/{self._id(plugin_id)}/config")

    def config_set(self, plugin_id: str, config: Dict[str, Any]) -> Dict[str, Any]:
        """Validates and saves a whole config; answers it as saved (defaults
        filled). An invalid config raises ``HostError`` with code
        ``invalid_config`` and every violation in ``violations``."""
        if not isinstance(config, dict):
            raise TypeError(f"a config must be a dict, not {type(config).__name__}")
        return self._request("PUT", f"/api/v1/plugins/{self._id(plugin_id)}/config", config)

    def config_delete(self, plugin_id: str) -> bool:
        """Deletes the saved config; False when there was none."""
        return bool(self._request("DELETE", f"/api/v1/plugins/{self._id(plugin_id)}/config").get("deleted"))

    def start(self, plugin_id: str) -> WorkerStatus:
        """Starts the plugin and waits until it is ready (its saved config
        applied)."""
        return WorkerStatus.from_json(self._request("POST", f"/api/v1/plugins/{self._id(plugin_id)}/start"))

    def stop(self, plugin_id: str) -> WorkerStatus:
        """Stops the plugin and everything it started."""
        return WorkerStatus.from_json(self._request("POST", f"/api/v1/plugins/{self._id(plugin_id)}/stop"))

    def restart(self, plugin_id: str) -> WorkerStatus:
        """Stops the plugin if it runs, then starts it."""
        return WorkerStatus.from_json(self._request("POST", f"/api/v1/plugins/{self._id(plugin_id)}/restart"))

    def status(self, plugin_id: str) -> WorkerStatus:
        """The plugin's worker status (``HostError`` ``not_running`` when this
        host never started it)."""
        return WorkerStatus.from_json(self._request("GET", f"/api/v1/plugins/{self._id(plugin_id)}/status"))

    def ps(self) -> List[LedgerRow]:
        """Every live resource in the host's ledger."""
        return [LedgerRow.from_json(r) for r in self._request("GET", "/api/v1/ps")]

    def logs(self, plugin_id: str, lines: int = 100) -> List[str]:
        """The last ``lines`` lines of the plugin's log."""
        return self._request("GET", f"/api/v1/plugins/{self._id(plugin_id)}/logs?lines={int(lines)}").get("lines", [])

    def call(self, plugin_id: str, input: Any, timeout: Optional[float] = 600.0) -> Any:
        """Calls the plugin with ``input`` and returns its output (a plugin
        that runs on demand is started first)."""
        answer = self._request("POST", f"/api/v1/plugins/{self._id(plugin_id)}/call", {"input": input}, timeout)
        return answer.get("output")

    def stream(
        self,
        plugin_id: str,
        input: Any,
        request_id: Optional[str] = None,
        timeout: Optional[float] = 600.0,
        raise_on_error: bool = True,
    ) -> CallStream:
        """Calls the plugin and returns the call's events as an iterator
        (:class:`CallStream`); its ``request_id`` (made here unless given)
        is what :meth:`cancel` takes."""
        rid = request_id or uuid.uuid4().hex
        conn, resp = self._open(
            "POST",
            f"/api/v1/plugins/{self._id(plugin_id)}/call?stream=true",
            {"input": input, "request_id": rid},
            timeout,
        )
        return CallStream(conn, resp, rid, raise_on_error)

    def cancel(self, plugin_id: str, request_id: str) -> bool:
        """Asks the plugin to cancel a streamed call; True when it was found."""
        body = {"request_id": request_id}
        return bool(self._request("POST", f"/api/v1/plugins/{self._id(plugin_id)}/cancel", body).get("cancelled"))

    def cost(self, since: Optional[str] = None, hours: float = 1.0) -> CostReport:
        """Spend from the cost ledger since ``day``, ``month``, ``all`` or
        ``YYYY-MM-DD`` (default: all), projected ``hours`` ahead."""
        query = {"hours": repr(float(hours))}
        if since is not None:
            query["since"] = since
        return CostReport.from_json(self._request("GET", "/api/v1/cost?" + urllib.parse.urlencode(query)))

    def budgets(self) -> List[Dict[str, Any]]:
        """Every budget with its use against its limits."""
        return self._request("GET", "/api/v1/budgets")

    def problems(self) -> List[Dict[str, Any]]:
        """Manifests the host could not load, with path and reason."""
        return self._request("GET", "/api/v1/problems")
