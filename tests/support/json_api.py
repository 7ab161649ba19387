"""A threaded JSON-over-HTTP server on 127.0.0.1 for fakes of REST APIs that cannot run here (KFP, Kubernetes).

A JSON body reaches the handler parsed; a multipart/form-data body (KFP's pipeline upload) as {field: text}.
``headers``, when given, receives each request's headers (to check what authentication a client sent). A handler
that answers the status ``RESET`` gets the connection closed with no answer at all, as a dropped connection.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

# handle(method, path, query, body) -> (status, JSON payload)
Handle = Callable[[str, str, dict[str, list[str]], Any], tuple[int, Any]]
RESET = 0  # the status a handler answers to drop the connection instead


@contextlib.contextmanager
def serve_json(handle: Handle, headers: list[dict[str, str]] | None = None) -> Iterator[str]:
    """Serve ``handle`` for GET/POST/PATCH/DELETE; yields the base URL; shuts the server down after."""

    class Handler(BaseHTTPRequestHandler):
        def _serve(self):
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            content_type = self.headers.get("Content-Type") or ""
            body = _form(raw, content_type) if content_type.startswith("multipart/") else (
                json.loads(raw) if raw else None)
            if headers is not None:
                headers.append({k.lower(): v for k, v in self.headers.items()})  # names are case-insensitive
            status, payload = handle(self.command, url.path, parse_qs(url.query), body)
            if status == RESET:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, *args):  # quiet: the tests assert on the fake's recorded state
            pass

    with serve(Handler) as url:
        yield url


@contextlib.contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` on 127.0.0.1 (a free port) in a thread until the block ends; yields its http://host:port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # A short poll interval: shutdown() waits for it, and every test using a fake stops one.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _form(raw: bytes, content_type: str) -> dict[str, str]:
    """The fields of a multipart/form-data body, by name (file contents as text)."""
    from email import message_from_bytes
    from email.policy import HTTP

    message = message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw, policy=HTTP)
    return {part.get_param("name", header="content-disposition"): part.get_content()
            for part in message.iter_parts()}
