"""A real HTTP server on 127.0.0.1 that records the CloudEvents it receives.

Broker and pod server tests point subscribers and sinks at it instead of
mocking HTTP. It responds to each request with the next status of a script
(default 200), so a test can make a subscriber fail and then recover.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cloudevents.http import CloudEvent, from_http


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - name fixed by http.server
        capture: CaptureServer = self.server.capture  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status = capture.record(dict(self.headers.items()), body)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class CaptureServer:
    """Record requests and respond with scripted statuses, then `default_status`."""

    def __init__(self, statuses: Iterable[int] = (), default_status: int = 200):
        self._statuses = list(statuses)
        self._default_status = default_status
        self._lock = threading.Condition()
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.capture = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> CaptureServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def record(self, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            self.requests.append((headers, body))
            self._lock.notify_all()
            return self._statuses.pop(0) if self._statuses else self._default_status

    def events(self) -> list[CloudEvent]:
        with self._lock:
            return [from_http(headers, body) for headers, body in self.requests]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[CloudEvent]:
        """Wait until `count` requests arrived; return them as CloudEvents."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)
        return self.events()
