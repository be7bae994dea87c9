"""plugboard_worker: write a plugboard worker in Python (standard library only).

Subclass :class:`Worker`, implement :meth:`Worker.execute`, and call
:func:`run`. The worker serves plugboard protocol v1 (HTTP/1.1 + JSON) on the
address the host gives in ``PLUGBOARD_LISTEN`` (a Unix socket path, or
``tcp://HOST:PORT``), requires the bearer token in ``PLUGBOARD_TOKEN`` when one
is set, streams progress as NDJSON, honours cancel, and exits when its stdin
closes (the host died) or on ``POST /v1/shutdown``. Your own prints go to
stdout as usual: the protocol never uses it.

    from plugboard_worker import Worker, run

    class Upper(Worker):
        name = "upper"
        version = "0.1.0"
        def execute(self, input, ctx):
            return {"text": input["text"].upper()}

    if __name__ == "__main__":
        run(Upper())
"""

import itertools
import json
import os
import socket
import socketserver
import sys
import threading

try:  # what hmac.compare_digest is, without loading OpenSSL for it
    from _operator import _compare_digest as _same_secret
except ImportError:  # pragma: no cover - interpreters without it
    from hmac import compare_digest as _same_secret

__all__ = ["Worker", "Context", "ExecError", "InvalidInput", "Cancelled", "run", "serve", "validate", "PROTOCOL_VERSION"]

PROTOCOL_VERSION = 1
MAX_REQUEST_BYTES = 16 * 1024 * 1024
VERSION_HEADER = "plugboard-protocol"


class ExecError(Exception):
    """A call failed; ``code`` is the protocol error code."""

    code = "plugin_error"
    status = 500


class InvalidInput(ExecError):
    """The input was rejected (HTTP 422)."""

    code = "invalid_input"
    status = 422


class Cancelled(ExecError):
    """The call was cancelled (HTTP 499)."""

    code = "cancelled"
    status = 499

    def __init__(self, message="cancelled"):
        super().__init__(message)


class Context:
    """What a running call sees: its cancel flag and a way to report progress."""

    def __init__(self, cancel_event, sink=None):
        self._cancel = cancel_event
        self._sink = sink

    @property
    def cancelled(self):
        """True once the caller asked to cancel; long calls check it often."""
        return self._cancel.is_set()

    def check_cancelled(self):
        """Raise :class:`Cancelled` once cancelled."""
        if self._cancel.is_set():
            raise Cancelled()

    def progress(self, fraction, message=None):
        """Report progress (0 to 1) on streaming calls; a no-op otherwise."""
        if self._sink is not None:
            self._sink({"type": "progress", "progress": max(0.0, min(1.0, float(fraction))), "message": message})

    def log(self, level, message):
        """Send a log line on streaming calls; a no-op otherwise."""
        if self._sink is not None:
            self._sink({"type": "log", "level": level, "message": str(message)})


_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
}


def _is_type(value, t):
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "null":
        return value is None
    py = _TYPES.get(t)
    return py is not None and isinstance(value, py)


def validate(schema, value, pointer=""):
    """Check ``value`` against the common JSON Schema keywords (type, enum,
    const, minimum, maximum, exclusiveMinimum, exclusiveMaximum, minLength,
    maxLength, required, properties, additionalProperties, items); returns a
    list of ``{"pointer", "reason"}``. Hosts validate fully; this keeps a
    worker honest on its own."""
    errors = []
    if not isinstance(schema, dict):
        return errors
    t = schema.get("type")
    if t is not None:
        types = t if isinstance(t, list) else [t]
        if not any(_is_type(value, x) for x in types):
            errors.append({"pointer": pointer, "reason": f"{json.dumps(value)} is not of type {' or '.join(types)}"})
            return errors
    if "enum" in schema and value not in schema["enum"]:
        errors.append({"pointer": pointer, "reason": f"{json.dumps(value)} is not one of {json.dumps(schema['enum'])}"})
    if "const" in schema and value != schema["const"]:
        errors.append({"pointer": pointer, "reason": f"{json.dumps(value)} is not {json.dumps(schema['const'])}"})
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for key, bad in (
            ("minimum", lambda v, m: v < m),
            ("maximum", lambda v, m: v > m),
            ("exclusiveMinimum", lambda v, m: v <= m),
            ("exclusiveMaximum", lambda v, m: v >= m),
        ):
            if key in schema and bad(value, schema[key]):
                errors.append({"pointer": pointer, "reason": f"{value} violates {key} {schema[key]}"})
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append({"pointer": pointer, "reason": f"shorter than {schema['minLength']} characters"})
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append({"pointer": pointer, "reason": f"longer than {schema['maxLength']} characters"})
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                errors.append({"pointer": pointer, "reason": f"{json.dumps(name)} is a required property"})
        for name, sub in value.items():
            child = pointer + "/" + name.replace("~", "~0").replace("/", "~1")
            if name in props:
                errors.extend(validate(props[name], sub, child))
            elif schema.get("additionalProperties") is False:
                errors.append({"pointer": pointer, "reason": f"additional property {json.dumps(name)} is not allowed"})
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors.extend(validate(schema["items"], item, f"{pointer}/{i}"))
    return errors


def _defaults(schema):
    out = {}
    for name, sub in (schema.get("properties") or {}).items():
        if isinstance(sub, dict) and "default" in sub:
            out[name] = sub["default"]
    return out


class Worker:
    """Base class of a worker. Set ``name``, ``version``, ``config_schema``
    (a JSON Schema dict), ``streaming`` and ``cancel``, and implement
    :meth:`execute`. The applied config is in ``self.config`` (schema defaults
    filled in)."""

    name = "worker"
    version = None
    config_schema = {"type": "object", "properties": {}}
    streaming = False
    cancel = False
    #: An input the plugin accepts (JSON-compatible), sent in the manifest as
    #: ``input_example`` for callers to start from; ``None`` sends nothing.
    input_example = None

    def __init__(self):
        self.config = _defaults(self.config_schema)

    def manifest(self):
        """The protocol manifest of this worker."""
        manifest = {
            "protocol_version": PROTOCOL_VERSION,
            "name": self.name,
            "version": self.version,
            "config_schema": self.config_schema,
            "capabilities": {"streaming": bool(self.streaming), "cancel": bool(self.cancel)},
        }
        if self.input_example is not None:
            manifest["input_example"] = self.input_example
        return manifest

    def validate_config(self, config):
        """Every violation of ``config``; empty when valid."""
        return validate(self.config_schema, config)

    def apply_config(self, config):
        """Validate and apply ``config``; returns the violations (empty when applied)."""
        errors = self.validate_config(config)
        if not errors:
            merged = _defaults(self.config_schema)
            merged.update(config)
            self.config = merged
        return errors

    def execute(self, input, ctx):
        """Run one call and return a JSON-compatible output. Raise
        :class:`InvalidInput`, :class:`Cancelled` or :class:`ExecError`."""
        raise ExecError(f"{type(self).__name__}.execute is not implemented")


class _Flag:
    """A call's cancel flag: set once by the cancel request's thread, read by
    the call's (a ``threading.Event`` without the condition variable, which
    cost a call more than the rest of its bookkeeping)."""

    __slots__ = ("_set",)

    def __init__(self):
        self._set = False

    def set(self):
        self._set = True

    def is_set(self):
        return self._set


class _State:
    def __init__(self, worker, token):
        self.worker = worker
        self.token = token or None
        self.calls = {}
        self.lock = threading.Lock()
        self.server = None
        self.anonymous = itertools.count()

    def register(self, request_id):
        # A call sent without an id cannot be cancelled by id: a counter
        # names it (health counts it) without asking the OS for randomness.
        request_id = request_id or "anonymous-%d" % next(self.anonymous)
        event = _Flag()
        with self.lock:
            self.calls[request_id] = event
        return request_id, event

    def unregister(self, request_id):
        with self.lock:
            self.calls.pop(request_id, None)


def _handler(state):
    class Handler(socketserver.StreamRequestHandler):
        """One connection: reads requests one after another until either
        side closes. The standard library's ``http.server`` is not used: its
        import and its per-request machinery (the ``email`` package for
        header fields, formatted log and date lines) cost more than the rest
        of a call."""

        def handle(self):
            self.close_connection = False
            while not self.close_connection:
                self._one_request()

        def _one_request(self):
            self.close_connection = True
            raw = self.rfile.readline(_MAX_HEADER_LINE + 1)
            if not raw:
                return
            if len(raw) > _MAX_HEADER_LINE:
                self._head_error(414, "too_large", "request line is longer than 65536 bytes")
                return
            if not self.parse_request(raw):
                return
            if self.command == "POST":
                self._guarded(self._post)
            elif self.command == "GET":
                self._guarded(self._get)
            else:
                self._refuse(405, "method_not_allowed", f"{self.command} is not a method of protocol v1 (GET, POST)")

        def parse_request(self, raw):
            # The same request line and fields as the standard library reads,
            # with the same limits, refusing what cannot be read exactly
            # (folded lines, names with spaces) instead of guessing.
            self.command = None
            requestline = str(raw, "iso-8859-1").rstrip("\r\n")
            words = requestline.split()
            if not words:
                return False
            if len(words) != 3:
                self._head_error(400, "bad_request", "bad request line %r" % requestline[:80])
                return False
            command, path, version = words
            if version == "HTTP/1.1":
                number = (1, 1)
            elif version == "HTTP/1.0":
                number = (1, 0)
            else:
                number = self._version(version)
                if number is None:
                    return False
            self.command, self.path = command, path
            if self.path.startswith("//"):
                self.path = "/" + self.path.lstrip("/")
            headers = self._read_headers()
            if headers is None:
                return False
            self.headers = headers
            self.close_connection = number < (1, 1)
            connection = headers.get("connection", "").lower()
            if connection == "close":
                self.close_connection = True
            elif connection == "keep-alive":
                self.close_connection = False
            if headers.get("expect", "").lower() == "100-continue" and number >= (1, 1):
                self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return True

        def _version(self, version):
            """The (major, minor) of a request's HTTP version other than 1.1
            and 1.0; None once refused."""
            major, dot, minor = version[5:].partition(".") if version.startswith("HTTP/") else ("", "", "")
            if not (
                dot
                and major.isascii()
                and minor.isascii()
                and major.isdigit()
                and minor.isdigit()
                and len(major) <= 10
                and len(minor) <= 10
            ):
                self._head_error(400, "bad_request", "bad request version %r" % version[:40])
                return None
            number = (int(major), int(minor))
            if number >= (2, 0):
                self._head_error(505, "bad_request", "HTTP version %s is not served: use HTTP/1.1" % version[5:])
                return None
            return number

        def _read_headers(self):
            # Field names lower-cased; the first of repeated fields wins.
            headers = {}
            # The whole header block is usually in the read buffer already:
            # split it at once rather than line by line. Only when it ends
            # there and uses CRLF throughout; the line reader below reads
            # everything else, to the same result.
            buffered = self.rfile.peek(1)
            end = buffered.find(b"\r\n\r\n")
            if buffered.startswith(b"\r\n"):
                self.rfile.read(2)
                return headers
            block = buffered[:end]
            if 0 < end and block.count(b"\n") == block.count(b"\r\n"):
                lines = block.decode("iso-8859-1").split("\r\n")
                if len(lines) > _MAX_HEADERS:
                    self._head_error(431, "too_large", "more than 100 header fields")
                    return None
                self.rfile.read(end + 4)
                # No line is longer than the read buffer, far below the limit.
                for line in lines:
                    if not self._field(headers, line):
                        return None
                return headers
            for _ in range(_MAX_HEADERS + 1):
                line = self.rfile.readline(_MAX_HEADER_LINE + 1)
                if len(line) > _MAX_HEADER_LINE:
                    self._head_error(431, "too_large", "a header line is longer than 65536 bytes")
                    return None
                if line in (b"\r\n", b"\n", b""):
                    return headers
                if not self._field(headers, line.decode("iso-8859-1").rstrip("\r\n")):
                    return None
            self._head_error(431, "too_large", "more than 100 header fields")
            return None

        def _field(self, headers, line):
            """Adds one header line (without its line end) to ``headers``;
            False once a malformed line has been refused."""
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                self._head_error(400, "bad_request", "bad header line %r" % line[:80])
                return False
            headers.setdefault(name.lower(), value.strip())
            return True

        def _head_error(self, status, code, message):
            # A request whose head cannot be read: answer in the protocol's
            # JSON and close, since where it ends is unknown.
            self._error(status, code, message, close=True)

        def _send(self, status, body, content_type="application/json", close=False):
            # Head and body in one write: written apart, the host may wake
            # for the head alone and wait again for the body.
            data = json.dumps(body).encode()
            self._answered = True
            head = "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (
                status,
                _REASONS.get(status, ""),
                content_type,
                len(data),
            )
            if close:
                # Announced, so the client does not reuse the connection.
                head += "Connection: close\r\n"
                self.close_connection = True
            self.wfile.write(head.encode("latin-1") + b"\r\n" + data)

        def _error(self, status, code, message, close=False):
            self._send(status, {"error": {"code": code, "message": message}}, close=close)

        def _refuse(self, status, code, message):
            # Answered before the request body was read: close the connection
            # rather than parse the unread body as the next request.
            self._error(status, code, message, close=True)

        def _gate(self):
            if state.token is not None:
                given = self.headers.get("authorization", "")
                if not given.startswith("Bearer ") or not _same_secret(given[7:].encode(), state.token.encode()):
                    self._refuse(401, "unauthorized", "missing or wrong bearer token")
                    return False
            theirs = self.headers.get(VERSION_HEADER)
            if theirs is not None and theirs.strip() != str(PROTOCOL_VERSION):
                self._refuse(
                    400,
                    "version_mismatch",
                    f"protocol version mismatch: the host speaks protocol {theirs.strip()}, "
                    f"this worker speaks protocol {PROTOCOL_VERSION}",
                )
                return False
            return True

        def _body(self):
            te = self.headers.get("transfer-encoding")
            if te is not None:
                if self.headers.get("content-length") is not None:
                    # Both framings: refuse (and close) rather than guess
                    # where this request ends and the next one starts.
                    self._refuse(400, "bad_request", "request has both Transfer-Encoding and Content-Length")
                    return _INVALID
                codings = [c.strip().lower() for c in te.split(",") if c.strip()]
                if codings != ["chunked"]:
                    self._refuse(
                        400,
                        "bad_request",
                        f"unsupported Transfer-Encoding {te.strip()!r}: send Content-Length or chunked",
                    )
                    return _INVALID
                raw = self._read_chunked()
                if raw is _INVALID:
                    return _INVALID
            else:
                length = self.headers.get("content-length")
                try:
                    n = int(length) if length is not None else 0
                except ValueError:
                    self._refuse(400, "bad_request", "Content-Length is not a number")
                    return _INVALID
                if n < 0:
                    self._refuse(400, "bad_request", "Content-Length is negative")
                    return _INVALID
                if n > MAX_REQUEST_BYTES:
                    self._refuse(413, "too_large", f"request body is larger than {MAX_REQUEST_BYTES} bytes")
                    return _INVALID
                raw = self.rfile.read(n)
                if len(raw) < n:
                    self._refuse(400, "bad_request", f"request body ended after {len(raw)} of {n} bytes")
                    return _INVALID
            try:
                return json.loads(raw.decode("utf-8"))
            except RecursionError:
                # The body was read whole, so the connection stays usable.
                self._error(400, "bad_request", "request body is not valid: JSON nested too deeply")
                return _INVALID
            except (ValueError, UnicodeDecodeError) as e:
                self._error(400, "bad_request", f"request body is not valid: {e}")
                return _INVALID

        def _read_chunked(self):
            """The body of a ``Transfer-Encoding: chunked`` request, at most
            MAX_REQUEST_BYTES; answers (and closes) and returns _INVALID when
            it is malformed or too large."""
            parts = []
            total = 0
            while True:
                line = self.rfile.readline(_MAX_CHUNK_LINE + 1)
                if len(line) > _MAX_CHUNK_LINE or not line.endswith(b"\n"):
                    self._refuse(400, "bad_request", "chunked body: a chunk-size line is missing or too long")
                    return _INVALID
                size_text = line.split(b";", 1)[0].strip()
                try:
                    if not size_text or size_text.lstrip(b"0123456789abcdefABCDEF"):
                        raise ValueError
                    size = int(size_text, 16)
                except ValueError:
                    self._refuse(400, "bad_request", "chunked body: a chunk size is not a hexadecimal number")
                    return _INVALID
                if size == 0:
                    break
                total += size
                if total > MAX_REQUEST_BYTES:
                    self._refuse(413, "too_large", f"request body is larger than {MAX_REQUEST_BYTES} bytes")
                    return _INVALID
                data = self.rfile.read(size)
                if len(data) < size or self.rfile.read(2) != b"\r\n":
                    self._refuse(400, "bad_request", "chunked body: a chunk is shorter than its size")
                    return _INVALID
                parts.append(data)
            # Trailer fields (ignored) up to the empty line, bounded.
            for _ in range(_MAX_TRAILERS + 1):
                line = self.rfile.readline(_MAX_CHUNK_LINE + 1)
                if line in (b"\r\n", b"\n"):
                    return b"".join(parts)
                if not line or len(line) > _MAX_CHUNK_LINE:
                    break
            self._refuse(400, "bad_request", "chunked body: the trailer section does not end")
            return _INVALID

        def _guarded(self, handle):
            # Whatever a request does, it gets an answer in the protocol's
            # JSON and the worker keeps serving.
            self._answered = False
            try:
                handle()
            except RecursionError:
                if not self._answered:
                    self._error(400, "bad_request", "request body is not valid: JSON nested too deeply", close=True)
                else:
                    self.close_connection = True
            except Exception as e:
                if not self._answered:
                    self._error(500, "plugin_error", f"{type(e).__name__}: {e}", close=True)
                else:
                    self.close_connection = True

        def do_GET(self):
            self._guarded(self._get)

        def do_POST(self):
            self._guarded(self._post)

        def _get(self):
            if not self._gate():
                return
            # A body on a GET is never read: close after answering rather than
            # parse it as the next request.
            close = self.headers.get("transfer-encoding") is not None or self.headers.get(
                "Content-Length", "0"
            ).strip() not in ("", "0")
            if self.path == "/v1/manifest":
                self._send(200, state.worker.manifest(), close=close)
            elif self.path == "/v1/health":
                with state.lock:
                    active = len(state.calls)
                self._send(
                    200, {"status": "ok", "protocol_version": PROTOCOL_VERSION, "active_calls": active}, close=close
                )
            elif self.path in _POST_PATHS:
                self._error(405, "method_not_allowed", f"{self.path} takes POST, not GET", close=close)
            else:
                self._error(404, "not_found", f"no endpoint {self.path}", close=close)

        def _post(self):
            if not self._gate():
                return
            if self.path in ("/v1/manifest", "/v1/health"):
                self._refuse(405, "method_not_allowed", f"{self.path} takes GET, not POST")
                return
            if self.path not in _POST_PATHS:
                self._refuse(404, "not_found", f"no endpoint {self.path}")
                return
            body = self._body()
            if body is _INVALID:
                return
            if self.path == "/v1/config/validate":
                errors = state.worker.validate_config(body)
                self._send(200, {"valid": not errors, "violations": errors})
            elif self.path == "/v1/config/apply":
                errors = state.worker.apply_config(body)
                self._send(200, {"valid": not errors, "violations": errors})
            elif self.path == "/v1/execute":
                self._execute(body)
            elif self.path == "/v1/execute/stream":
                self._stream(body)
            elif self.path == "/v1/cancel":
                rid = body.get("request_id") if isinstance(body, dict) else None
                with state.lock:
                    event = state.calls.get(rid)
                if event is not None:
                    event.set()
                self._send(200, {"cancelled": event is not None})
            else:
                self._send(200, {"shutting_down": True})
                threading.Thread(target=state.server.shutdown, daemon=True).start()

        def _call(self, body):
            if not isinstance(body, dict) or "input" not in body:
                self._error(400, "bad_request", 'request body must be {"input": ..., "request_id": optional}')
                return None
            return body

        def _execute(self, body):
            body = self._call(body)
            if body is None:
                return
            rid, event = state.register(body.get("request_id"))
            try:
                output = state.worker.execute(body["input"], Context(event))
                self._send(200, {"output": output})
            except ExecError as e:
                self._error(e.status, e.code, str(e) if not isinstance(e, Cancelled) else "cancelled")
            except Exception as e:  # the plugin failed; the worker goes on
                self._error(500, "plugin_error", f"{type(e).__name__}: {e}")
            finally:
                state.unregister(rid)

        def _stream(self, body):
            body = self._call(body)
            if body is None:
                return
            rid, event = state.register(body.get("request_id"))
            self._answered = True
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n")
            write_lock = threading.Lock()

            def emit(ev):
                data = (json.dumps(ev) + "\n").encode()
                with write_lock:
                    try:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()
                    except OSError:
                        event.set()  # the host went away: cancel

            try:
                output = state.worker.execute(body["input"], Context(event, emit))
                emit({"type": "result", "output": output})
            except ExecError as e:
                emit({"type": "error", "error": {"code": e.code, "message": str(e)}})
            except Exception as e:
                emit({"type": "error", "error": {"code": "plugin_error", "message": f"{type(e).__name__}: {e}"}})
            finally:
                state.unregister(rid)
                try:
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except OSError:
                    pass

    return Handler


# The reason phrases of the statuses a worker answers with.
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    422: "Unprocessable Entity",
    431: "Request Header Fields Too Large",
    499: "Client Closed Request",
    500: "Internal Server Error",
    505: "HTTP Version Not Supported",
}

# Returned by the body reader after it has already answered with an error
# (a JSON null body is a valid body, so None cannot mean that).
_INVALID = object()

# Bounds of a request's header block (the standard library's own).
_MAX_HEADER_LINE = 65536
_MAX_HEADERS = 100

# Bounds of a chunked request body's framing: one chunk-size or trailer line,
# and the number of trailer lines.
_MAX_CHUNK_LINE = 4096
_MAX_TRAILERS = 64

_POST_PATHS = ("/v1/config/validate", "/v1/config/apply", "/v1/execute", "/v1/execute/stream", "/v1/cancel", "/v1/shutdown")


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _TcpServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().server_bind()


def serve(worker, listen, token=None):
    """Serve ``worker`` on ``listen`` (socket path or ``tcp://HOST:PORT``)
    until shutdown."""
    state = _State(worker, token)
    handler = _handler(state)
    if listen.startswith("tcp://"):
        host, _, port = listen[len("tcp://"):].rpartition(":")
        server = _TcpServer((host or "127.0.0.1", int(port)), handler)
    else:
        try:
            os.unlink(listen)
        except FileNotFoundError:
            pass
        server = _UnixServer(listen, handler)
        os.chmod(listen, 0o600)
    state.server = server
    _notify_ready(worker)
    with server:
        server.serve_forever(poll_interval=0.2)
    if not listen.startswith("tcp://"):
        try:
            os.unlink(listen)
        except FileNotFoundError:
            pass


def _notify_ready(worker):
    """Tell the host this worker serves: write its manifest (``MANIFEST=``
    and the JSON of ``GET /v1/manifest`` on one line, so the host need not
    ask for it), then ``READY=1`` and a newline, to the descriptor named by
    ``PLUGBOARD_NOTIFY_FD`` and close it (once; nothing when the host
    offered none). One write of at most PIPE_BUF (4096) bytes, which never
    blocks on an empty pipe: a manifest that is larger, or not JSON, is
    left out, and the host asks for it (and reports what is wrong)."""
    global _NOTIFIED
    value = os.environ.get("PLUGBOARD_NOTIFY_FD", "")
    if _NOTIFIED or not value.isdigit() or int(value) <= 2:
        return
    _NOTIFIED = True
    fd = int(value)
    try:
        import stat
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return
    except OSError:
        return
    try:
        line = b"MANIFEST=" + json.dumps(worker.manifest(), separators=(",", ":"), allow_nan=False).encode() + b"\n"
    except Exception:
        line = b""
    ready = b"READY=1\n"
    if len(line) + len(ready) > _NOTIFY_MAX_BYTES:
        line = b""
    try:
        os.write(fd, line + ready)
    except OSError:
        pass
    try:
        os.close(fd)
    except OSError:
        pass


_NOTIFIED = False
_NOTIFY_MAX_BYTES = 4096


def _watch_stdin():
    try:
        while sys.stdin.buffer.read(65536):
            pass
    except (OSError, ValueError):
        pass
    os._exit(0)


def run(worker):
    """Serve ``worker`` on the address and token the host gave in the
    environment; exit when stdin closes or on shutdown."""
    listen = os.environ.get("PLUGBOARD_LISTEN")
    if not listen:
        sys.stderr.write(
            "plugboard worker: PLUGBOARD_LISTEN is not set: a plugboard worker is started by a plugboard host, "
            "which gives it an address\n"
        )
        sys.exit(2)
    if not sys.stdin.isatty():
        threading.Thread(target=_watch_stdin, daemon=True).start()
    try:
        serve(worker, listen, os.environ.get("PLUGBOARD_TOKEN"))
    except Exception as e:  # report in one line, exit without waiting on the stdin thread
        sys.stderr.write(f"plugboard worker: cannot serve on {listen}: {type(e).__name__}: {e}\n")
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)
