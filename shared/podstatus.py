"""Read a Pod object: whose it is, whether it is ready, whether it failed.

Works on the JSON form of a core/v1 Pod, as ApiServerSource sends it and as
the local runtime builds it. Pure functions, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.runtime.base import (
    AGENT_CONTAINER,
    ATTEMPT_ANNOTATION,
    MODEL_LABEL,
    REQUEST_ANNOTATION,
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


def identify(pod: dict[str, Any]) -> PodIdentity | None:
    """Return the instance identity, or None for a pod the hub did not make."""
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    name = metadata.get("name")
    model_id = labels.get(MODEL_LABEL)
    request_id = annotations.get(REQUEST_ANNOTATION)
    try:
        attempt = int(annotations.get(ATTEMPT_ANNOTATION, ""))
    except ValueError:
        return None
    if not (name and model_id and request_id):
        return None
    return PodIdentity(str(name), str(model_id), str(request_id), attempt)


def phase(pod: dict[str, Any]) -> str | None:
    return (pod.get("status") or {}).get("phase")


def ready_since(pod: dict[str, Any]) -> str | None:
    """Return when the pod became Ready (its condition's time), or None."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            return condition.get("lastTransitionTime") or ""
    return None


def _container_statuses(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return list((pod.get("status") or {}).get("containerStatuses") or [])


def container_terminated(pod: dict[str, Any], container: str) -> dict[str, Any] | None:
    """Return the `terminated` state of one container, or None."""
    for status in _container_statuses(pod):
        if status.get("name") == container:
            return (status.get("state") or {}).get("terminated")
    return None


def _termination_failure(status: dict[str, Any]) -> str | None:
    name = status.get("name", "?")
    for key in ("state", "lastState"):
        terminated = (status.get(key) or {}).get("terminated") or {}
        if terminated.get("reason") == "OOMKilled":
            return f"container {name} ran out of memory (OOMKilled)"
        code = terminated.get("exitCode")
        if key == "state" and code not in (None, 0):
            reason = terminated.get("reason") or "Error"
            return f"container {name} exited with code {code} ({reason})"
    return None


def _waiting_failure(status: dict[str, Any]) -> str | None:
    waiting = (status.get("state") or {}).get("waiting") or {}
    reason = waiting.get("reason")
    if reason in IMAGE_PULL_REASONS or reason in CONFIG_ERROR_REASONS:
        message = waiting.get("message") or ""
        name = status.get("name", "?")
        return f"container {name} cannot start: {reason} {message}".strip()
    return None


def failure_reason(pod: dict[str, Any]) -> str | None:
    """Return why the instance failed, or None while it is healthy.

    Checks out-of-memory kills (also when the phase is Succeeded), non-zero
    exits, image and configuration errors, eviction and deadlines. A pending
    pod without container statuses is normal.
    """
    status = pod.get("status") or {}
    if status.get("reason") == "Evicted":
        return f"the pod was evicted: {status.get('message') or 'node pressure'}"
    if status.get("reason") == "DeadlineExceeded":
        return "the instance ran past its time limit (DeadlineExceeded)"

    for container in _container_statuses(pod):
        reason = _termination_failure(container) or _waiting_failure(container)
        if reason is not None:
            return reason

    if status.get("phase") == "Failed":
        why = status.get("reason") or status.get("message") or "unknown reason"
        return f"the pod failed: {why}"
    return None


def agent_finished(pod: dict[str, Any]) -> bool:
    """True when the job agent container has exited (with any code)."""
    return container_terminated(pod, AGENT_CONTAINER) is not None
