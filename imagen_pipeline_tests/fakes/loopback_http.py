"""What the HTTP fakes share: the requests they record, canned replies, and serving a fake
on an ephemeral loopback port.

A fake is any object with a ``port`` attribute and a ``handle(handler, method)`` method that
answers one request; this module runs the threaded HTTP/1.1 server around it.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit


def closed_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago): connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def send(
    handler: BaseHTTPRequestHandler,
    status: int,
    payload: bytes,
    content_type: str,
    headers: dict[str, str] | None = None,
) -> None:
    """Answer with ``payload`` (Content-Type and Content-Length set) plus ``headers``."""
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(payload)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(payload)


@dataclass(frozen=True)
class Received:
    """One request as a fake received it (path unquoted, header names lower-cased)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    @classmethod
    def read(cls, handler: BaseHTTPRequestHandler, method: str) -> Received:
        """Read the request ``handler`` is answering, body included."""
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        return cls(
            method=method,
            path=unquote(parts.path),
            query=parse_qs(parts.query),
            headers={key.lower(): value for key, value in handler.headers.items()},
            body=handler.rfile.read(length) if length else b"",
        )

    def json(self) -> Any:
        """The body parsed as JSON (None when empty)."""
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    """A canned response a fake returns instead of the normal one."""

    status: int
    body: dict[str, Any] | str
    headers: dict[str, str] = field(default_factory=dict)


class HttpFake(Protocol):
    """What :func:`serving` needs of a fake."""

    port: int

    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        """Answer one request."""


FakeT = TypeVar("FakeT", bound=HttpFake)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        self.server.fake.handle(self, "GET")

    def do_POST(self) -> None:
        self.server.fake.handle(self, "POST")

    def do_PUT(self) -> None:
        self.server.fake.handle(self, "PUT")

    def do_DELETE(self) -> None:
        self.server.fake.handle(self, "DELETE")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, fake: HttpFake) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up early and connections a fake drops on purpose are expected."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


@contextmanager
def serving(fake: FakeT) -> Iterator[FakeT]:
    """Serve ``fake`` on an ephemeral loopback port (set as ``fake.port``) for the block."""
    server = _Server(fake)
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
