"""A threaded JSON-over-HTTP server on 127.0.0.1 for fakes of REST APIs that cannot run here (KFP, Kubernetes)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

# handle(method, path, query, body) -> (status, JSON payload)
Handle = Callable[[str, str, dict[str, list[str]], Any], tuple[int, Any]]


@contextlib.contextmanager
def serve_json(handle: Handle) -> Iterator[str]:
    """Serve ``handle`` for GET/POST/PATCH/DELETE; yields the base URL; shuts the server down after."""

    class Handler(BaseHTTPRequestHandler):
        def _serve(self):
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, payload = handle(self.command, url.path, parse_qs(url.query), body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, *args):  # quiet: the tests assert on the fake's recorded state
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
