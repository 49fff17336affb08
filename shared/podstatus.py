"""Read a Pod object: whose it is, whether it is ready, whether it failed.

Works on the JSON form of a core/v1 Pod, as ApiServerSource sends it and as
the local runtime builds it. Pure functions, no I/O. Fields of the wrong
type are treated as absent, because an event whose pod cannot be read must
be acknowledged and logged, not retried forever.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from shared.runtime.base import (
    AGENT_CONTAINER,
    ATTEMPT_ANNOTATION,
    MODEL_LABEL,
    REQUEST_ANNOTATION,
    instance_name,
)

IMAGE_PULL_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName")
CONFIG_ERROR_REASONS = ("CreateContainerConfigError", "CreateContainerError")


@dataclass(frozen=True)
class PodIdentity:
    """The hub's labels and annotations on an instance pod."""

    name: str
    model_id: str
    request_id: str
    attempt: int


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _objects(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and "\x00" not in value else None


def identify(pod: dict[str, Any]) -> PodIdentity | None:
    """Return the instance identity, or None for a pod the hub did not make.

    The pod name must be the one the hub derives from the request id and
    attempt, so an event cannot steer the hub to another request's pod.
    """
    metadata = _object(pod.get("metadata"))
    labels = _object(metadata.get("labels"))
    annotations = _object(metadata.get("annotations"))
    name = _text(metadata.get("name"))
    model_id = _text(labels.get(MODEL_LABEL))
    raw_request = _text(annotations.get(REQUEST_ANNOTATION))
    raw_attempt = _text(annotations.get(ATTEMPT_ANNOTATION))
    if not (name and model_id and raw_request and raw_attempt):
        return None
    if not raw_attempt.isdigit():
        return None

    try:
        request_id = str(uuid.UUID(raw_request))
    except ValueError:
        return None
    attempt = int(raw_attempt)
    if name != instance_name(request_id, attempt):
        return None
    return PodIdentity(name, model_id, request_id, attempt)


def phase(pod: dict[str, Any]) -> str | None:
    return _text(_object(pod.get("status")).get("phase"))


def ready_since(pod: dict[str, Any]) -> str | None:
    """Return when the pod became Ready (its condition's time), or None.

    Returns "" when the pod is Ready but the time is missing or unreadable.
    """
    for condition in _objects(_object(pod.get("status")).get("conditions")):
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            return _text(condition.get("lastTransitionTime")) or ""
    return None


def _container_statuses(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return _objects(_object(pod.get("status")).get("containerStatuses"))


def container_terminated(pod: dict[str, Any], container: str) -> dict[str, Any] | None:
    """Return the `terminated` state of one container, or None."""
    for status in _container_statuses(pod):
        if status.get("name") == container:
            terminated = _object(status.get("state")).get("terminated")
            return terminated if isinstance(terminated, dict) else None
    return None


def _termination_failure(status: dict[str, Any]) -> str | None:
    name = _text(status.get("name")) or "?"
    for key in ("state", "lastState"):
        terminated = _object(_object(status.get(key)).get("terminated"))
        if terminated.get("reason") == "OOMKilled":
            return f"container {name} ran out of memory (OOMKilled)"
        code = terminated.get("exitCode")
        if key == "state" and isinstance(code, int) and code != 0:
            reason = _text(terminated.get("reason")) or "Error"
            return f"container {name} exited with code {code} ({reason})"
    return None


def _waiting_failure(status: dict[str, Any]) -> str | None:
    waiting = _object(_object(status.get("state")).get("waiting"))
    reason = waiting.get("reason")
    if reason in IMAGE_PULL_REASONS or reason in CONFIG_ERROR_REASONS:
        name = _text(status.get("name")) or "?"
        message = _text(waiting.get("message")) or ""
        return f"container {name} cannot start: {reason} {message}".strip()
    return None


def failure_reason(pod: dict[str, Any]) -> str | None:
    """Return why the instance failed, or None while it is healthy.

    Checks out-of-memory kills (also when the phase is Succeeded), non-zero
    exits, image and configuration errors, eviction and deadlines. A pending
    pod without container statuses is normal.
    """
    status = _object(pod.get("status"))
    reason = _text(status.get("reason"))
    message = _text(status.get("message"))
    if reason == "Evicted":
        return f"the pod was evicted: {message or 'node pressure'}"
    if reason == "DeadlineExceeded":
        return "the instance ran past its time limit (DeadlineExceeded)"

    for container in _container_statuses(pod):
        found = _termination_failure(container) or _waiting_failure(container)
        if found is not None:
            return found

    if status.get("phase") == "Failed":
        return f"the pod failed: {reason or message or 'unknown reason'}"
    return None


def agent_finished(pod: dict[str, Any]) -> bool:
    """True when the job agent container has exited (with any code)."""
    return container_terminated(pod, AGENT_CONTAINER) is not None
