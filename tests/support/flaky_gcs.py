"""A fault-injecting HTTP proxy in front of the GCS emulator, and the ``flaky_gcs`` fixture that routes
``core.storage`` through it (registered for every test by tests/conftest.py).

    def test_upload_survives(flaky_gcs, gcs_bucket):
        proxy = flaky_gcs(fault_rate=0.3, seed=1)     # 30% of requests fail
        storage.write_bytes(f"{gcs_bucket}/a", b"x")  # completes through google-cloud-storage's retries
        assert proxy.counts["faults"] > 0

Faults, drawn per request from a seeded ``random.Random`` (the same request order gives the same faults):
- ``503``: answered 503 without reaching the emulator;
- ``reset``: the connection is reset (RST) before the request reaches the emulator;
- ``drop_response``: the emulator executes the request, then the connection is reset instead of answering
  (the client cannot know the write landed: the case idempotent retries and preconditions exist for).
The proxy reads a whole request before forwarding it, so a cut-off request never reaches the emulator.

It also enforces ``ifGenerationMatch`` (0 = must not exist), which gcp-storage-emulator ignores but GCS honours:
a request carrying it is checked against the object's current generation and forwarded under one lock, or
answered 412 like GCS. (A resumable upload is checked when it starts; GCS checks when it finishes.)
``inject(mode, path_contains)`` schedules a fault for a chosen request. ``counts`` tallies requests, each fault
kind, ``faults``, ``forwarded`` and ``precondition_failed``.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import os
import random
import socket
import struct
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

FAULT_MODES = ("503", "reset", "drop_response")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer", "upgrade"}


class Emulator:
    """Direct JSON-API access to the emulator, bypassing the proxy (generation look-ups, test observers)."""

    def __init__(self, url: str):
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname, parsed.port

    def request(self, method: str, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def generation(self, bucket: str, name: str) -> int:
        status, body = self.request("GET", f"/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}")
        return int(json.loads(body)["generation"]) if status == 200 else 0

    def list_names(self, bucket: str, prefix: str = "") -> list[str]:
        status, body = self.request("GET", f"/storage/v1/b/{bucket}/o?prefix={urllib.parse.quote(prefix)}")
        return sorted(item["name"] for item in json.loads(body).get("items", [])) if status == 200 else []

    def read(self, bucket: str, name: str) -> bytes | None:
        status, body = self.request(
            "GET", f"/download/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}?alt=media")
        return body if status == 200 else None


def _object_of(path: str, query: dict[str, list[str]], body: bytes) -> tuple[str, str] | None:
    """(bucket, object name) a JSON-API request addresses, or None."""
    parts = path.split("/")
    if "b" not in parts or parts.index("b") + 1 >= len(parts):
        return None
    b = parts.index("b")
    bucket = parts[b + 1]
    if len(parts) > b + 3 and parts[b + 2] == "o":
        return bucket, urllib.parse.unquote("/".join(parts[b + 3:]))
    if "name" in query:
        return bucket, query["name"][0]
    start = body.find(b"{")  # multipart upload: the name is in the JSON metadata part
    if start >= 0:
        try:
            return bucket, json.JSONDecoder().raw_decode(body[start:].decode("utf-8", "replace"))[0]["name"]
        except (ValueError, KeyError):
            return None
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # clients drop idle pooled connections: normal
            super().handle_error(request, client_address)


class FlakyGCSProxy:
    """See the module docstring. ``url`` is what STORAGE_EMULATOR_HOST should point at."""

    def __init__(self, upstream: str, fault_rate: float = 0.0, seed: int = 0, modes: tuple[str, ...] = FAULT_MODES):
        unknown = set(modes) - set(FAULT_MODES)
        if unknown or not 0.0 <= fault_rate < 1.0:
            raise ValueError(f"fault_rate must lie in [0, 1) and modes in {FAULT_MODES}; got {fault_rate}, {modes}")
        self.emulator = Emulator(upstream)
        self.fault_rate, self.modes = fault_rate, tuple(modes)
        self.counts: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []  # exceptions inside the proxy itself; the fixture fails the test on any
        self._random = random.Random(seed)
        self._scheduled: list[list] = []  # [mode, path substring, times left] from inject()
        self._lock = threading.Lock()  # guards the random draws and the counts
        self._precondition_lock = threading.Lock()  # a conditional check and its write happen as one step
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, name="flaky-gcs", daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FlakyGCSProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def inject(self, mode: str, path_contains: str, times: int = 1) -> None:
        """Fail the next ``times`` requests whose path and query contain ``path_contains`` with ``mode``."""
        if mode not in FAULT_MODES:
            raise ValueError(f"mode must be one of {FAULT_MODES}, got {mode!r}")
        with self._lock:
            self._scheduled.append([mode, path_contains, times])

    def _draw_fault(self, path: str) -> str | None:
        with self._lock:
            self.counts["requests"] += 1
            scheduled = next((s for s in self._scheduled if s[1] in path and s[2] > 0), None)
            if scheduled is not None:
                scheduled[2] -= 1
                mode = scheduled[0]
            elif self._random.random() < self.fault_rate:
                mode = self._random.choice(self.modes)
            else:
                return None
            self.counts[mode] += 1
            self.counts["faults"] += 1
            return mode

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def _handler_class(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet: pytest shows counts instead
                pass

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reset(self) -> None:
                # SO_LINGER 0: close() sends RST, the client sees "connection reset by peer".
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
                conn = http.client.HTTPConnection(proxy.emulator.host, proxy.emulator.port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                    headers["Content-Length"] = str(len(body))
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    result = response.status, response.getheaders(), response.read()
                finally:
                    conn.close()
                proxy._count("forwarded")
                return result

            def _precondition_holds(self, body: bytes) -> bool:
                split = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(split.query)
                if "ifGenerationMatch" not in query:
                    return True
                target = _object_of(split.path, query, body)
                if target is None:
                    raise ValueError(f"ifGenerationMatch on a request without an object: {self.path}")
                return proxy.emulator.generation(*target) == int(query["ifGenerationMatch"][0])

            def _handle(self) -> None:
                try:
                    self._proxy()
                except Exception as exc:  # a proxy bug must fail the test, not look like a flaky network
                    proxy.errors.append(f"{self.command} {self.path}: {exc!r}")
                    raise

            def _proxy(self) -> None:
                body = self._read_body()
                fault = proxy._draw_fault(self.path)
                if fault == "503":
                    self._reply(503, [("Content-Type", "application/json")],
                                json.dumps({"error": {"code": 503, "message": "injected fault"}}).encode())
                    return
                if fault == "reset":
                    self._reset()
                    return
                conditional = "ifGenerationMatch" in self.path
                with proxy._precondition_lock if conditional else contextlib.nullcontext():
                    if not self._precondition_holds(body):
                        proxy._count("precondition_failed")
                        self._reply(412, [("Content-Type", "application/json")], json.dumps({"error": {
                            "code": 412, "message": "At least one of the pre-conditions you specified did not hold.",
                            "errors": [{"reason": "conditionNotMet"}]}}).encode())
                        return
                    status, headers, response_body = self._forward(body)
                if fault == "drop_response":
                    self._reset()
                    return
                self._reply(status, headers, response_body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        return Handler


@pytest.fixture
def flaky_gcs(gcs_emulator, monkeypatch):
    """Factory ``flaky_gcs(fault_rate=0.0, seed=0, modes=FAULT_MODES) -> FlakyGCSProxy``.

    Starts a proxy in front of the session's emulator and points STORAGE_EMULATOR_HOST (hence
    ``core.storage``) at it until the test ends. The back-off of google-cloud-storage's DEFAULT_RETRY is
    shortened (first wait 10 ms, at most 0.2 s) so tests stay fast; what is retried is unchanged.
    ``fault_rate=0`` still enforces ``ifGenerationMatch``, which the bare emulator ignores.
    """
    from google.cloud.storage.retry import DEFAULT_RETRY

    from core import storage

    monkeypatch.setattr(storage, "_retry", lambda: DEFAULT_RETRY.with_delay(initial=0.01, maximum=0.2))
    proxies: list[FlakyGCSProxy] = []
    previous = os.environ["STORAGE_EMULATOR_HOST"]

    def start(fault_rate: float = 0.0, seed: int = 0, modes: tuple[str, ...] = FAULT_MODES) -> FlakyGCSProxy:
        proxy = FlakyGCSProxy(gcs_emulator, fault_rate, seed, modes).start()
        proxies.append(proxy)
        os.environ["STORAGE_EMULATOR_HOST"] = proxy.url
        storage.gcs_client.cache_clear()
        return proxy

    yield start
    os.environ["STORAGE_EMULATOR_HOST"] = previous
    storage.gcs_client.cache_clear()
    for proxy in proxies:
        proxy.stop()
    errors = [error for proxy in proxies for error in proxy.errors]
    assert not errors, f"the flaky GCS proxy itself failed: {errors}"
