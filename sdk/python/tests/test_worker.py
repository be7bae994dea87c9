"""Tests of the Python worker SDK against a real server on a Unix socket."""
import http.client
import json
import os
import socket
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from plugboard_worker import Cancelled, InvalidInput, Worker, serve, validate  # noqa: E402


class Counter(Worker):
    name = "counter"
    version = "1.0.0"
    streaming = True
    cancel = True
    config_schema = {
        "type": "object",
        "properties": {"scale": {"type": "integer", "minimum": 1, "default": 1}},
        "additionalProperties": False,
    }

    def execute(self, input, ctx):
        if not isinstance(input, dict) or not isinstance(input.get("n"), int):
            raise InvalidInput("n must be an integer")
        for i in range(input["n"]):
            ctx.check_cancelled()
            time.sleep(input.get("sleep", 0))
            ctx.progress((i + 1) / input["n"], f"{i + 1}")
        if input.get("boom"):
            raise RuntimeError("boom")
        return {"count": input["n"] * self.config["scale"]}


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


class SdkTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp()
        cls.sock = os.path.join(cls.dir, "w.sock")
        cls.thread = threading.Thread(target=serve, args=(Counter(), cls.sock, "secret"), daemon=True)
        cls.thread.start()
        for _ in range(200):
            if os.path.exists(cls.sock):
                break
            time.sleep(0.01)

    def request(self, method, path, body=None, token="secret", headers=None):
        conn = UnixConnection(self.sock)
        h = {"Content-Type": "application/json"}
        if token:
            h["Authorization"] = "Bearer " + token
        h.update(headers or {})
        data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        raw = resp.read()
        conn.close()
        return resp.status, raw

    def test_manifest_and_health(self):
        status, raw = self.request("GET", "/v1/manifest")
        self.assertEqual(status, 200)
        m = json.loads(raw)
        self.assertEqual((m["protocol_version"], m["name"], m["version"]), (1, "counter", "1.0.0"))
        self.assertTrue(m["capabilities"]["streaming"])
        status, raw = self.request("GET", "/v1/health")
        self.assertEqual(json.loads(raw)["status"], "ok")

    def test_token_is_required(self):
        self.assertEqual(self.request("GET", "/v1/health", token=None)[0], 401)
        self.assertEqual(self.request("GET", "/v1/health", token="nope")[0], 401)

    def test_version_mismatch_names_both(self):
        status, raw = self.request("GET", "/v1/health", headers={"plugboard-protocol": "7"})
        self.assertEqual(status, 400)
        self.assertIn("host speaks protocol 7, this worker speaks protocol 1", raw.decode())

    def test_bad_requests(self):
        self.assertEqual(self.request("POST", "/v1/execute", b"{oops")[0], 400)
        self.assertEqual(self.request("POST", "/v1/execute", {"x": 1})[0], 400)
        self.assertEqual(self.request("GET", "/v1/missing")[0], 404)
        self.assertEqual(self.request("GET", "/v1/execute")[0], 405)
        status, raw = self.request("POST", "/v1/execute", {"input": {"n": "x"}})
        self.assertEqual(status, 422)
        self.assertEqual(json.loads(raw)["error"]["code"], "invalid_input")
        status, raw = self.request("POST", "/v1/execute", {"input": {"n": 1, "boom": True}})
        self.assertEqual(status, 500)
        self.assertIn("RuntimeError: boom", raw.decode())

    def test_execute_stream_and_config(self):
        status, raw = self.request("POST", "/v1/execute", {"input": {"n": 3}})
        self.assertEqual((status, json.loads(raw)), (200, {"output": {"count": 3}}))
        status, raw = self.request("POST", "/v1/execute/stream", {"input": {"n": 2}})
        events = [json.loads(line) for line in raw.decode().splitlines() if line]
        self.assertEqual([e["type"] for e in events], ["progress", "progress", "result"])
        self.assertEqual(events[-1]["output"], {"count": 2})
        status, raw = self.request("POST", "/v1/config/validate", {"scale": 0, "other": 1})
        result = json.loads(raw)
        self.assertFalse(result["valid"])
        self.assertEqual(len(result["violations"]), 2)
        status, raw = self.request("POST", "/v1/config/apply", {"scale": 10})
        self.assertTrue(json.loads(raw)["valid"])
        status, raw = self.request("POST", "/v1/execute", {"input": {"n": 2}})
        self.assertEqual(json.loads(raw)["output"], {"count": 20})
        self.request("POST", "/v1/config/apply", {"scale": 1})

    def test_cancel(self):
        result = {}

        def call():
            result["resp"] = self.request("POST", "/v1/execute", {"input": {"n": 1000, "sleep": 0.01}, "request_id": "c1"})

        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.2)
        status, raw = self.request("POST", "/v1/cancel", {"request_id": "c1"})
        self.assertTrue(json.loads(raw)["cancelled"])
        t.join(5)
        self.assertEqual(result["resp"][0], 499)
        status, raw = self.request("POST", "/v1/cancel", {"request_id": "none"})
        self.assertFalse(json.loads(raw)["cancelled"])

    def test_null_and_negative_bodies_get_an_answer(self):
        status, raw = self.request("POST", "/v1/execute", b"null")
        self.assertEqual(status, 400)
        status, raw = self.request("POST", "/v1/config/validate", b"null")
        self.assertEqual(status, 200)
        self.assertFalse(json.loads(raw)["valid"])
        conn = UnixConnection(self.sock)
        conn.putrequest("POST", "/v1/execute")
        conn.putheader("Authorization", "Bearer secret")
        conn.putheader("Content-Length", "-1")
        conn.endheaders()
        self.assertEqual(conn.getresponse().status, 400)
        conn.close()

    def test_too_large(self):
        conn = UnixConnection(self.sock)
        conn.putrequest("POST", "/v1/execute")
        conn.putheader("Authorization", "Bearer secret")
        conn.putheader("Content-Length", str(17 * 1024 * 1024))
        conn.endheaders()
        resp = conn.getresponse()
        self.assertEqual(resp.status, 413)
        conn.close()

    def test_validate_helper(self):
        schema = {"type": "object", "required": ["a"], "properties": {"a": {"type": "string", "enum": ["x"]}}}
        self.assertEqual(validate(schema, {"a": "x"}), [])
        self.assertEqual(validate(schema, {})[0]["reason"], '"a" is a required property')
        self.assertEqual(validate(schema, {"a": "y"})[0]["pointer"], "/a")
        self.assertEqual(validate({"type": "integer"}, True)[0]["pointer"], "")

    # Raw sockets: these requests are ones http.client would not send as is.

    def raw(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(self.sock)
        return sock, sock.makefile("rb")

    @staticmethod
    def read_response(reader):
        """(status, headers, body) of one Content-Length-framed answer; None if the peer closed."""
        status_line = reader.readline()
        if not status_line:
            return None
        status = int(status_line.split()[1])
        headers = {}
        while True:
            line = reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = reader.read(int(headers.get("content-length", "0")))
        return status, headers, body

    def head(self, method, path, extra=""):
        return f"{method} {path} HTTP/1.1\r\nHost: w\r\nAuthorization: Bearer secret\r\n{extra}".encode()

    def test_deeply_nested_body_answers_400_defect_17(self):
        sock, reader = self.raw()
        with sock, reader:
            for path, body in (
                ("/v1/execute", b'{"input": ' + b"[" * 10000 + b"]" * 10000 + b"}"),
                ("/v1/config/validate", b'{"scale": ' + b'{"a": ' * 10000 + b"1" + b"}" * 10000 + b"}"),
            ):
                sock.sendall(self.head("POST", path, f"Content-Length: {len(body)}\r\n\r\n") + body)
                status, _, raw = self.read_response(reader)
                self.assertEqual(status, 400, raw)
                error = json.loads(raw)["error"]
                self.assertEqual(error["code"], "bad_request")
                self.assertIn("nested too deeply", error["message"])
            # The body was read whole: the same connection goes on serving.
            sock.sendall(self.head("GET", "/v1/health", "\r\n"))
            status, _, raw = self.read_response(reader)
            self.assertEqual((status, json.loads(raw)["status"]), (200, "ok"))

    def test_chunked_request_body_is_read_defect_17(self):
        sock, reader = self.raw()
        with sock, reader:
            body = json.dumps({"input": {"n": 2}}).encode()
            chunks = [body[:5], body[5:9], body[9:]]
            framed = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\nX-Trailer: 1\r\n\r\n"
            sock.sendall(self.head("POST", "/v1/execute", "Transfer-Encoding: chunked\r\n\r\n") + framed)
            status, headers, raw = self.read_response(reader)
            self.assertEqual((status, json.loads(raw)), (200, {"output": {"count": 2}}))
            self.assertNotEqual(headers.get("connection"), "close")
            # Its bytes were not taken for a next request: the connection is in step.
            sock.sendall(self.head("GET", "/v1/health", "\r\n"))
            status, _, raw = self.read_response(reader)
            self.assertEqual((status, json.loads(raw)["status"]), (200, "ok"))

    def test_bad_chunked_bodies_are_refused_and_closed_defect_17(self):
        cases = [
            ("Transfer-Encoding: chunked\r\n\r\n", b"zz\r\nabc\r\n0\r\n\r\n", 400),
            ("Transfer-Encoding: chunked\r\n\r\n", b"10\r\nabc\r\n0\r\n\r\n", 400),
            ("Transfer-Encoding: gzip, chunked\r\n\r\n", b"0\r\n\r\n", 400),
            ("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", b"0\r\n\r\n", 400),
            ("Transfer-Encoding: chunked\r\n\r\n", b"%x\r\n" % (17 * 1024 * 1024), 413),
        ]
        for extra, payload, expected in cases:
            sock, reader = self.raw()
            with sock, reader:
                sock.sendall(self.head("POST", "/v1/execute", extra) + payload)
                sock.shutdown(socket.SHUT_WR)  # a short chunk ends at end of stream
                status, headers, raw = self.read_response(reader)
                self.assertEqual(status, expected, (extra, payload, raw))
                self.assertIn("code", json.loads(raw)["error"])
                self.assertEqual(headers.get("connection"), "close", (extra, payload))
                self.assertIsNone(self.read_response(reader))

    def test_request_heads_are_read_exactly(self):
        # Field names in any case, HTTP/1.0 closing, malformed heads refused.
        sock, reader = self.raw()
        with sock, reader:
            sock.sendall(b"GET /v1/health HTTP/1.1\r\nhOsT: w\r\nAUTHORIZATION: Bearer secret\r\n\r\n")
            status, headers, raw = self.read_response(reader)
            self.assertEqual(status, 200, raw)
            self.assertEqual(json.loads(raw)["status"], "ok")
            self.assertNotEqual(headers.get("connection"), "close")
        # A head split over two writes, and one with bare LF line ends, are
        # read line by line to the same result.
        sock, reader = self.raw()
        with sock, reader:
            sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: w\r\nAuthor")
            time.sleep(0.05)
            sock.sendall(b"ization: Bearer secret\r\n\r\n")
            status, _, raw = self.read_response(reader)
            self.assertEqual(status, 200, raw)
            sock.sendall(b"GET /v1/health HTTP/1.1\nAuthorization: Bearer secret\n\n")
            status, _, raw = self.read_response(reader)
            self.assertEqual(status, 200, raw)
        cases = [
            (b"GET /v1/health HTTP/1.0\r\nAuthorization: Bearer secret\r\n\r\n", 200),
            (b"GET /v1/health HTTP/1.1\r\nAuthorization: Bearer secret\r\nConnection: close\r\n\r\n", 200),
            (b"GET /v1/health HTTP/1.1\r\nAuthorization: Bearer secret\r\nno colon here\r\n\r\n", 400),
            (b"GET /v1/health HTTP/1.1\r\nAuthorization : Bearer secret\r\n\r\n", 400),
            (b"GET /v1/health HTTP/1.1\r\nAuthorization: Bearer secret\r\n folded\r\n\r\n", 400),
            (b"GET /v1/health HTTP/x.y\r\n\r\n", 400),
            (b"GET /v1/health HTTP/2.0\r\n\r\n", 505),
            (b"GET /v1/health\r\n\r\n", 400),
            (b"GET /v1/health HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431),
            (b"GET /v1/health HTTP/1.1\r\nX-A: " + b"b" * 70000 + b"\r\n\r\n", 431),
            (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414),
            (b"PUT /v1/health HTTP/1.1\r\nAuthorization: Bearer secret\r\n\r\n", 405),
        ]
        for request, expected in cases:
            sock, reader = self.raw()
            with sock, reader:
                sock.sendall(request)
                status, _, raw = self.read_response(reader)
                self.assertEqual(status, expected, (request[:60], raw[:200]))
                if status >= 400:
                    # Refusals are in the protocol's JSON, like every answer.
                    self.assertIn("code", json.loads(raw)["error"], request[:60])
                # Each of these ends the connection after its answer.
                self.assertIsNone(self.read_response(reader), request[:60])


class NotifyTest(unittest.TestCase):
    """The readiness notification: the manifest line, then READY=1, written
    to the descriptor named by PLUGBOARD_NOTIFY_FD once the worker serves."""

    def test_the_manifest_comes_before_ready(self):
        lines = self.notification("{'type': 'object', 'description': 'two\\nlines'}")
        self.assertEqual(lines[1:], [b"READY=1", b""])
        self.assertTrue(lines[0].startswith(b"MANIFEST="), lines[0])
        manifest = json.loads(lines[0][len(b"MANIFEST="):])
        self.assertEqual(manifest["name"], "noted")
        self.assertEqual(manifest["version"], "2.0.0")
        self.assertEqual(manifest["config_schema"]["description"], "two\nlines")

    def test_a_manifest_too_large_for_one_pipe_write_is_left_out(self):
        # Over PIPE_BUF the write could block; the host asks for it instead.
        self.assertEqual(self.notification("{'description': 'x' * 5000}"), [b"READY=1", b""])
        # So is one that is not strict JSON (NaN).
        self.assertEqual(self.notification("{'default': float('nan')}"), [b"READY=1", b""])

    def notification(self, schema):
        """The lines a worker with this config schema writes to its
        notification pipe."""
        import subprocess
        sdk = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
        sock = os.path.join(tempfile.mkdtemp(), "n.sock")
        code = (
            "import sys; sys.path.insert(0, sys.argv[1])\n"
            "from plugboard_worker import Worker, serve\n"
            "class W(Worker):\n"
            "    name = 'noted'\n"
            "    version = '2.0.0'\n"
            f"    config_schema = {schema}\n"
            "    def execute(self, input, ctx):\n"
            "        return input\n"
            "serve(W(), sys.argv[2])\n"
        )
        r, w = os.pipe()
        env = dict(os.environ, PLUGBOARD_NOTIFY_FD=str(w))
        proc = subprocess.Popen([sys.executable, "-c", code, sdk, sock], env=env, pass_fds=(w,), stdin=subprocess.PIPE)
        # Read on a thread, so a worker that never notifies fails the test
        # instead of hanging it.
        notes = []

        def read_to_eof():
            data = b""
            while chunk := os.read(r, 65536):
                data += chunk
            notes.append(data)

        reader = threading.Thread(target=read_to_eof, daemon=True)
        os.close(w)
        try:
            reader.start()
            reader.join(timeout=20)
            self.assertTrue(notes, "the worker did not notify within 20 s")
            self.assertTrue(os.path.exists(sock), "notified before it served")
            lines = notes[0].split(b"\n")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            proc.stdin.close()
            os.close(r)
        return lines


if __name__ == "__main__":
    unittest.main()
