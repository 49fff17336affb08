"""A fake Kubernetes API server on 127.0.0.1 for tests of the Kubernetes runtime.

It serves the part of the core/v1 API that the runtime and the official
client use, and behaves like a real API server where their code depends on
it:

    POST   /api/v1/namespaces/{ns}/pods         201 Pod, 409 AlreadyExists,
                                                422 Invalid, 404 (namespace)
    GET    /api/v1/namespaces/{ns}/pods         PodList by labelSelector and
                                                fieldSelector, or a watch
    GET    /api/v1/namespaces/{ns}/pods/{name}  200 Pod, 404 NotFound
    DELETE /api/v1/namespaces/{ns}/pods/{name}  200 Pod, 404 NotFound
    GET    /api/v1/namespaces/{ns}/events       EventList by fieldSelector

Errors carry a Status body. Every change raises the resourceVersion. A
watch (`?watch=true`) streams newline-delimited events over a chunked
response until its timeoutSeconds (at most 10 s) pass. After
`compact()`, a watch from an older resourceVersion gets an ERROR event
whose Status has code 410, as a real API server's watch cache sends it.

Tests queue failures with `fail_next(status)`: the next matching requests
get that status (and a Retry-After header for 429) instead of the normal
response. `drop_next()` closes the connection instead, before the response
or in the middle of its body. Created pods stay Pending, because no
scheduler or kubelet runs here.
"""

from __future__ import annotations

import copy
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from shared.loopback import LoopbackServer
from tests.kube_selectors import (
    match_fields,
    match_labels,
    parse_field_selector,
    parse_label_selector,
)

DEFAULT_NAMESPACES = ("default", "models")
FIRST_RESOURCE_VERSION = 1000
DNS_SUBDOMAIN = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
# The field selectors a real API server accepts for each resource.
POD_FIELDS = frozenset(
    {"metadata.name", "metadata.namespace", "spec.nodeName", "status.phase"}
)
EVENT_FIELDS = frozenset(
    {
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
        "metadata.name",
        "metadata.namespace",
    }
)
STATUS_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
# The tolerations that the DefaultTolerationSeconds admission plugin adds.
DEFAULT_TOLERATIONS = [
    {
        "key": f"node.kubernetes.io/{condition}",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    }
    for condition in ("not-ready", "unreachable")
]


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def status_body(
    code: int, message: str, reason: str | None = None, **details: Any
) -> dict[str, Any]:
    """Return a Status object as the API server sends it with an error."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or STATUS_REASONS.get(code, ""),
        "details": details,
        "code": code,
    }


class ApiError(Exception):
    """An error response: an HTTP status with a Status body."""

    def __init__(self, code: int, message: str, reason: str | None = None, **details):
        super().__init__(message)
        self.code = code
        self.body = status_body(code, message, reason, **details)


@dataclass
class InjectedFailure:
    """A queued failure. `drop` is "", "before-response" or "mid-body"."""

    status: int
    method: str | None
    retry_after: str | None = None
    drop: str = ""


@dataclass
class RecordedRequest:
    """One request as the fake received it, with header names in lower case."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    status: int = 0


@dataclass
class Change:
    resource_version: int
    namespace: str
    type: str
    object: dict[str, Any]


@dataclass
class FakeKube:
    """The fake API server's state, and the server that serves it."""

    namespaces: set[str] = field(default_factory=lambda: set(DEFAULT_NAMESPACES))
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    resource_version: int = FIRST_RESOURCE_VERSION

    def __post_init__(self) -> None:
        self.lock = threading.Condition()
        self.changes: list[Change] = []
        # A watch from a resourceVersion below this one gets 410 Expired.
        self.oldest_watchable = self.resource_version
        self.failures: deque[InjectedFailure] = deque()
        self.stopping = False
        # Imported here because the handler module imports this one.
        from tests.fake_kube_http import FakeKubeHandler

        self._server = LoopbackServer(FakeKubeHandler)
        self._server.httpd.fake = self  # type: ignore[attr-defined]

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> FakeKube:
        self._server.start("fake-kube")
        return self

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            self.lock.notify_all()
        self._server.stop()

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        method: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        """Fail the next `times` requests (of `method`, if given) with `status`."""
        with self.lock:
            for _ in range(times):
                self.failures.append(InjectedFailure(status, method, retry_after))

    def drop_next(self, *, method: str | None = None, mid_body: bool = False):
        """Close the connection of the next request (of `method`, if given).

        Without `mid_body` it closes before any response. With it, it sends
        200 and half of the promised body first.
        """
        drop = "mid-body" if mid_body else "before-response"
        with self.lock:
            self.failures.append(InjectedFailure(0, method, drop=drop))

    def compact(self) -> int:
        """Forget the change history and return the oldest watchable version."""
        with self.lock:
            self.changes.clear()
            self.oldest_watchable = self.resource_version
            return self.oldest_watchable

    def statuses(self, method: str) -> list[int]:
        """Return the response statuses of the recorded requests of `method`."""
        return [r.status for r in self.requests if r.method == method]

    def add_event(
        self,
        namespace: str,
        involved_name: str,
        reason: str,
        message: str,
        *,
        involved_kind: str = "Pod",
        type: str = "Normal",  # noqa: A002 - the Event field's name.
    ) -> dict[str, Any]:
        """Store a core/v1 Event as the scheduler or kubelet would write it."""
        with self.lock:
            pod = self.pods.get((namespace, involved_name), {})
            event = {
                "kind": "Event",
                "apiVersion": "v1",
                "metadata": {
                    "name": f"{involved_name}.{uuid.uuid4().hex[:16]}",
                    "namespace": namespace,
                    "uid": str(uuid.uuid4()),
                    "resourceVersion": self._next_version(),
                    "creationTimestamp": now_rfc3339(),
                },
                "involvedObject": {
                    "kind": involved_kind,
                    "namespace": namespace,
                    "name": involved_name,
                    "uid": pod.get("metadata", {}).get("uid", ""),
                    "apiVersion": "v1",
                },
                "reason": reason,
                "message": message,
                "source": {"component": "default-scheduler"},
                "firstTimestamp": now_rfc3339(),
                "lastTimestamp": now_rfc3339(),
                "count": 1,
                "type": type,
                # Events written through core/v1 leave eventTime null.
                "eventTime": None,
                "reportingComponent": "",
                "reportingInstance": "",
            }
            self.events.append(event)
            return copy.deepcopy(event)

    def set_pod_status(self, namespace: str, name: str, status: dict[str, Any]):
        """Replace a pod's status, as the kubelet would, and record MODIFIED."""
        with self.lock:
            pod = self.pods[(namespace, name)]
            pod["status"] = copy.deepcopy(status)
            pod["metadata"]["resourceVersion"] = self._next_version()
            self._record(namespace, "MODIFIED", pod)

    # The methods below run with self.lock held.

    def _next_version(self) -> str:
        self.resource_version += 1
        return str(self.resource_version)

    def _record(self, namespace: str, kind: str, pod: dict[str, Any]) -> None:
        self.changes.append(
            Change(self.resource_version, namespace, kind, copy.deepcopy(pod))
        )
        self.lock.notify_all()

    def take_failure(self, method: str) -> InjectedFailure | None:
        for failure in self.failures:
            if failure.method in (None, method):
                self.failures.remove(failure)
                return failure
        return None

    def create_pod(self, namespace: str, body: Any) -> dict[str, Any]:
        if namespace not in self.namespaces:
            raise ApiError(
                404,
                f'namespaces "{namespace}" not found',
                name=namespace,
                kind="namespaces",
            )
        if not isinstance(body, dict) or body.get("kind", "Pod") != "Pod":
            raise ApiError(400, "the request body is not a Pod object")
        metadata = body.get("metadata") or {}
        if metadata.get("namespace", namespace) != namespace:
            raise ApiError(
                400,
                "the namespace of the provided object does not match the "
                "namespace sent on the request",
            )

        name = metadata.get("name") or ""
        _validate_pod(name, body)
        if (namespace, name) in self.pods:
            raise ApiError(
                409,
                f'pods "{name}" already exists',
                "AlreadyExists",
                name=name,
                kind="pods",
            )

        pod = _with_defaults(copy.deepcopy(body), namespace, self._next_version())
        self.pods[(namespace, name)] = pod
        self._record(namespace, "ADDED", pod)
        return copy.deepcopy(pod)

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        pod = self.pods.get((namespace, name))
        if pod is None:
            raise ApiError(404, f'pods "{name}" not found', name=name, kind="pods")
        return copy.deepcopy(pod)

    def delete_pod(
        self, namespace: str, name: str, grace_seconds: int | None
    ) -> dict[str, Any]:
        # A pod that no kubelet runs is removed at once, as an unscheduled
        # pod is on a real cluster.
        pod = self.get_pod(namespace, name)
        del self.pods[(namespace, name)]
        pod["metadata"]["resourceVersion"] = self._next_version()
        pod["metadata"]["deletionTimestamp"] = now_rfc3339()
        pod["metadata"]["deletionGracePeriodSeconds"] = (
            30 if grace_seconds is None else grace_seconds
        )
        self._record(namespace, "DELETED", pod)
        return pod

    def list_pods(self, namespace: str, query: dict[str, str]) -> dict[str, Any]:
        requirements = parse_label_selector(query.get("labelSelector", ""))
        fields = parse_field_selector(query.get("fieldSelector", ""), POD_FIELDS)
        items = [
            copy.deepcopy(pod)
            for (pod_namespace, _), pod in sorted(self.pods.items())
            if pod_namespace == namespace
            and match_labels(requirements, pod["metadata"].get("labels"))
            and match_fields(fields, pod)
        ]
        return {
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(self.resource_version)},
            "items": items,
        }

    def list_events(self, namespace: str, query: dict[str, str]) -> dict[str, Any]:
        fields = parse_field_selector(query.get("fieldSelector", ""), EVENT_FIELDS)
        items = [
            copy.deepcopy(event)
            for event in self.events
            if event["metadata"]["namespace"] == namespace
            and match_fields(fields, event)
        ]
        return {
            "kind": "EventList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(self.resource_version)},
            "items": items,
        }


def _validate_pod(name: str, body: dict[str, Any]) -> None:
    causes = []
    if not name:
        causes.append(
            ("metadata.name", "Required value: name or generateName is required")
        )
    elif len(name) > 253 or not DNS_SUBDOMAIN.fullmatch(name):
        causes.append(
            (
                "metadata.name",
                f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must '
                "consist of lower case alphanumeric characters, '-' or '.'",
            )
        )
    if not (body.get("spec") or {}).get("containers"):
        causes.append(("spec.containers", "Required value"))
    if causes:
        raise ApiError(
            422,
            f'Pod "{name}" is invalid: '
            + ", ".join(f"{path}: {text}" for path, text in causes),
            name=name,
            kind="Pod",
            causes=[{"field": path, "message": text} for path, text in causes],
        )


def _with_defaults(pod: dict[str, Any], namespace: str, version: str) -> dict:
    """Fill in what the API server and its admission plugins add on create."""
    pod["apiVersion"] = "v1"
    pod["kind"] = "Pod"
    metadata = pod.setdefault("metadata", {})
    metadata.update(
        namespace=namespace,
        uid=str(uuid.uuid4()),
        resourceVersion=version,
        creationTimestamp=now_rfc3339(),
    )
    spec = pod.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec["tolerations"] = list(spec.get("tolerations") or []) + copy.deepcopy(
        DEFAULT_TOLERATIONS
    )
    for container in spec.get("containers", []):
        image = str(container.get("image", ""))
        latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
        container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
    pod["status"] = {"phase": "Pending", "qosClass": "Burstable"}
    return pod
