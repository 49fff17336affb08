"""Small threaded HTTP servers on 127.0.0.1 for the local stack.

The local Broker and the local pod server are plain `http.server` servers so
the local stack needs no web framework of its own. This module contains what
both use: a free loopback port, serving from a background thread, stopping,
and JSON responses.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Collection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from shared.logs import get_logger, log_event

LOOPBACK = "127.0.0.1"
MAX_BODY_BYTES = 10 * 1024 * 1024

logger = get_logger(__name__)


def free_ports(count: int, exclude: Collection[int] = ()) -> list[int]:
    """Return `count` distinct TCP ports on 127.0.0.1 that were free a moment ago.

    All probe sockets stay bound until every port is chosen, because the
    kernel may hand out a port again as soon as its socket closes. Ports in
    `exclude` (handed out earlier but perhaps not bound yet) are skipped.

    NOTE: another process may take a port between this call and the
    caller's bind. The local stack accepts that race, which shows up as a
    failed start.
    """
    probes: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(count + len(exclude) + 10):
            if len(ports) == count:
                break
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probes.append(probe)
            probe.bind((LOOPBACK, 0))
            port = probe.getsockname()[1]
            if port not in exclude:
                ports.append(port)
    finally:
        for probe in probes:
            probe.close()

    if len(ports) < count:
        raise OSError(f"found only {len(ports)} of {count} free ports on {LOOPBACK}")
    return ports


def free_port(exclude: Collection[int] = ()) -> int:
    """Return one free TCP port on 127.0.0.1, as `free_ports` does."""
    return free_ports(1, exclude)[0]


class JsonHandler(BaseHTTPRequestHandler):
    """Request handler with JSON helpers and structured access logs."""

    server_version = "modelhub-local"

    def read_body(self) -> bytes:
        """Read the request body, at most MAX_BODY_BYTES."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise ValueError(
                f"request body of {length} bytes is larger than the limit of "
                f"{MAX_BODY_BYTES} bytes"
            )
        return self.rfile.read(length) if length > 0 else b""

    def send_json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_error_json(self, status: int, message: str) -> None:
        self.send_json(status, {"error": message})

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # http.server writes every request to stderr. This sends it to the
        # structured log at debug level instead.
        log_event(
            logger,
            "http.request",
            level=logging.DEBUG,
            server=type(self).__name__,
            line=format % args,
        )


class LoopbackServer:
    """A ThreadingHTTPServer on 127.0.0.1 served from a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0):
        self._server = ThreadingHTTPServer((LOOPBACK, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def httpd(self) -> ThreadingHTTPServer:
        return self._server

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def start(self, name: str) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=name,
            daemon=True,
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting requests and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout)
            self._thread = None
        self._server.server_close()
