"""The HTTP side of the fake Kubernetes API server: routes, errors and watches.

`FakeKubeHandler` turns each request into a call on the `FakeKube` set on
the server, unless a failure queued with `fail_next` or `drop_next` comes
first. `WatchStream` writes a pod watch as a chunked response of JSON lines.
"""

from __future__ import annotations

import copy
import json
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from shared.loopback import JsonHandler
from tests.fake_kube import ApiError, InjectedFailure, RecordedRequest, status_body
from tests.kube_selectors import SelectorError, match_labels, parse_label_selector

if TYPE_CHECKING:
    from tests.fake_kube import FakeKube

MAX_WATCH_SECONDS = 10.0
PODS_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
POD_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)$")
EVENTS_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/events$")


class FakeKubeHandler(JsonHandler):
    """Route requests to the FakeKube set on the server."""

    protocol_version = "HTTP/1.1"

    @property
    def fake(self) -> FakeKube:
        return self.server.fake  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        raw = self.read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        record = RecordedRequest(
            method,
            parts.path,
            query,
            {key.lower(): value for key, value in self.headers.items()},
            body,
        )

        with self.fake.lock:
            self.fake.requests.append(record)
            failure = self.fake.take_failure(method)
        if failure is not None:
            record.status = failure.status
            self._send_failure(failure)
            return

        if method == "GET" and query.get("watch") in ("true", "1"):
            record.status = 200
            self._watch(parts.path, query)
            return
        try:
            with self.fake.lock:
                status, payload = self._route(method, parts.path, query, body)
        except SelectorError as error:
            status, payload = 400, status_body(400, str(error))
        except ApiError as error:
            status, payload = error.code, error.body
        record.status = status
        self._send(status, payload)

    def _route(
        self, method: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, dict[str, Any]]:
        fake = self.fake
        if match := PODS_PATH.match(path):
            if method == "POST":
                return 201, fake.create_pod(match.group(1), body)
            if method == "GET":
                return 200, fake.list_pods(match.group(1), query)
        if match := POD_PATH.match(path):
            namespace, name = match.groups()
            if method == "GET":
                return 200, fake.get_pod(namespace, name)
            if method == "DELETE":
                grace = query.get("gracePeriodSeconds")
                if grace is None and isinstance(body, dict):
                    grace = body.get("gracePeriodSeconds")
                seconds = None if grace is None else int(grace)
                return 200, fake.delete_pod(namespace, name, seconds)
        if (match := EVENTS_PATH.match(path)) and method == "GET":
            return 200, fake.list_events(match.group(1), query)
        raise ApiError(404, "the server could not find the requested resource")

    def _send(
        self, status: int, payload: Any, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_failure(self, failure: InjectedFailure) -> None:
        self.close_connection = True
        if failure.drop == "before-response":
            return
        if failure.drop == "mid-body":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"kind": "Pod", "metadata": {')
            return

        headers = {}
        details: dict[str, Any] = {}
        if failure.retry_after is not None:
            headers["Retry-After"] = failure.retry_after
            if failure.retry_after.isdigit():
                details["retryAfterSeconds"] = int(failure.retry_after)
        body = status_body(
            failure.status, f"injected failure {failure.status}", **details
        )
        self._send(failure.status, body, headers)

    def _watch(self, path: str, query: dict[str, str]) -> None:
        match = PODS_PATH.match(path)
        if match is None:
            self._send(404, status_body(404, f"no watch at {path}"))
            return
        try:
            stream = WatchStream(self, match.group(1), query)
        except (SelectorError, ValueError) as error:
            self._send(400, status_body(400, f"invalid watch request: {error}"))
            return

        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            stream.run()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # The client stopped watching.


class WatchStream:
    """The events of one pod watch, written as chunks of JSON lines.

    The constructor raises SelectorError or ValueError for an invalid query.
    """

    def __init__(self, handler: FakeKubeHandler, namespace: str, query: dict):
        self.handler = handler
        self.fake = handler.fake
        self.namespace = namespace
        self.requirements = parse_label_selector(query.get("labelSelector", ""))
        requested = float(query.get("timeoutSeconds") or MAX_WATCH_SECONDS)
        self.deadline = time.monotonic() + min(requested, MAX_WATCH_SECONDS)
        raw_version = query.get("resourceVersion", "")
        self.start_version = int(raw_version) if raw_version else 0

    def run(self) -> None:
        with self.fake.lock:
            first, sent = self._first_events()
        for event in first:
            self._write(event)

        while sent is not None:
            with self.fake.lock:
                new = [c for c in self.fake.changes if c.resource_version > sent]
                if not new:
                    remaining = self.deadline - time.monotonic()
                    if remaining <= 0 or self.fake.stopping:
                        return
                    self.fake.lock.wait(min(remaining, 0.2))
                    continue
            sent = new[-1].resource_version
            for change in new:
                if change.namespace == self.namespace and self._matches(change.object):
                    self._write({"type": change.type, "object": change.object})

    def _first_events(self) -> tuple[list[dict[str, Any]], int | None]:
        """Return the events before live changes, and the version they reach.

        Without a resourceVersion (or with 0) a watch starts with an ADDED
        event per existing pod. A version older than the history gets one
        ERROR event and the version None, which ends the watch.
        """
        fake = self.fake
        if self.start_version == 0:
            added = [
                {"type": "ADDED", "object": copy.deepcopy(pod)}
                for (namespace, _), pod in sorted(fake.pods.items())
                if namespace == self.namespace and self._matches(pod)
            ]
            return added, fake.resource_version

        if self.start_version < fake.oldest_watchable:
            message = (
                f"too old resource version: {self.start_version} "
                f"({fake.oldest_watchable})"
            )
            return [{"type": "ERROR", "object": status_body(410, message)}], None
        return [], self.start_version

    def _write(self, event: dict[str, Any]) -> None:
        line = json.dumps(event).encode("utf-8") + b"\n"
        self.handler.wfile.write(f"{len(line):X}\r\n".encode() + line + b"\r\n")
        self.handler.wfile.flush()

    def _matches(self, pod: dict[str, Any]) -> bool:
        return match_labels(self.requirements, pod["metadata"].get("labels"))
