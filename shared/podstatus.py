"""Read a Pod object: whose it is, whether it is ready, whether it failed.

Works on the JSON form of a core/v1 Pod, as ApiServerSource sends it and as
the local runtime builds it. Pure functions, no I/O. Fields of the wrong
type are treated as absent, because an event whose pod cannot be read must
be acknowledged and logged, not retried forever.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.runtime.base import (
    AGENT_CONTAINER,
    ATTEMPT_ANNOTATION,
    MODEL_LABEL,
    REQUEST_ANNOTATION,
    instance_name,
)

# Image pulls can fail for a moment (registry hiccup, credentials still
# propagating) and kubelet retries them, so they fail the request only after
# a grace period. These reasons never resolve by themselves.
RETRIED_PULL_REASONS = ("ErrImagePull", "ImagePullBackOff")
PERMANENT_WAIT_REASONS = (
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
)
NODE_LOST_REASONS = ("NodeLost", "NodeShutdown", "UnexpectedAdmissionError")
# Signals behind the usual exit codes above 128.
SIGNALS = {
    130: "SIGINT",
    134: "SIGABRT",
    137: "SIGKILL",
    139: "SIGSEGV",
    143: "SIGTERM",
}
DEFAULT_IMAGE_PULL_GRACE_SECONDS = 120
DEFAULT_UNSCHEDULABLE_TIMEOUT_SECONDS = 900


@dataclass(frozen=True)
class Limits:
    """How long a pod may stay in a state that may still resolve."""

    image_pull_grace_seconds: float = DEFAULT_IMAGE_PULL_GRACE_SECONDS
    unschedulable_timeout_seconds: float = DEFAULT_UNSCHEDULABLE_TIMEOUT_SECONDS

    @classmethod
    def from_settings(cls) -> Limits:
        from shared.settings import get_settings

        settings = get_settings()
        return cls(
            settings.image_pull_grace_seconds, settings.unschedulable_timeout_seconds
        )


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


def parse_time(value: Any) -> datetime | None:
    """Parse a Kubernetes timestamp (RFC 3339) to an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _age_seconds(since: Any, now: datetime) -> float | None:
    started = parse_time(since)
    return None if started is None else (now - started).total_seconds()


def _exit_text(code: int, reason: str | None) -> str:
    signal = SIGNALS.get(code)
    detail = reason or "Error"
    if signal:
        detail += f", killed by {signal}"
    return f"exited with code {code} ({detail})"


def _termination_failure(status: dict[str, Any]) -> str | None:
    name = _text(status.get("name")) or "?"
    for key in ("state", "lastState"):
        terminated = _object(_object(status.get(key)).get("terminated"))
        if terminated.get("reason") == "OOMKilled":
            return f"container {name} ran out of memory (OOMKilled)"
        code = terminated.get("exitCode")
        if key == "state" and isinstance(code, int) and code != 0:
            reason = _text(terminated.get("reason"))
            return f"container {name} {_exit_text(code, reason)}"
    return None


def _waiting_failure(
    status: dict[str, Any], pod_age: float | None, limits: Limits
) -> str | None:
    waiting = _object(_object(status.get("state")).get("waiting"))
    reason = waiting.get("reason")
    name = _text(status.get("name")) or "?"
    message = _text(waiting.get("message")) or ""
    if reason in PERMANENT_WAIT_REASONS:
        return f"container {name} cannot start: {reason} {message}".strip()
    past_grace = pod_age is not None and pod_age >= limits.image_pull_grace_seconds
    if reason in RETRIED_PULL_REASONS and past_grace:
        return (
            f"container {name} image could not be pulled for "
            f"{int(pod_age or 0)} s: {reason} {message}"
        ).strip()
    return None


def _unschedulable(status: dict[str, Any], now: datetime, limits: Limits) -> str | None:
    for condition in _objects(status.get("conditions")):
        if condition.get("type") != "PodScheduled":
            continue
        if (
            condition.get("status") != "False"
            or condition.get("reason") != "Unschedulable"
        ):
            return None
        age = _age_seconds(condition.get("lastTransitionTime"), now)
        if age is not None and age >= limits.unschedulable_timeout_seconds:
            message = _text(condition.get("message")) or "no node fits"
            return f"the pod could not be scheduled for {int(age)} s: {message}"
    return None


def failure_reason(
    pod: dict[str, Any], now: datetime | None = None, limits: Limits | None = None
) -> str | None:
    """Return why the instance failed, or None while it is healthy.

    Checks out-of-memory kills (in `state` or `lastState`, also when the
    phase is Succeeded), non-zero exits, image errors (permanent ones at
    once, pull errors past a grace period), scheduling past a timeout,
    eviction, deadlines and lost nodes. A pending pod without container
    statuses is normal.
    """
    now = now or datetime.now(UTC)
    limits = limits or Limits()
    status = _object(pod.get("status"))
    reason = _text(status.get("reason"))
    message = _text(status.get("message"))
    if reason == "Evicted":
        return f"the pod was evicted: {message or 'node pressure'}"
    if reason == "DeadlineExceeded":
        return "the instance ran past its time limit (DeadlineExceeded)"
    if reason in NODE_LOST_REASONS or status.get("phase") == "Unknown":
        return f"the node running the pod was lost ({reason or 'phase Unknown'})"

    pod_age = _age_seconds(_object(pod.get("metadata")).get("creationTimestamp"), now)
    for container in _container_statuses(pod):
        found = _termination_failure(container) or _waiting_failure(
            container, pod_age, limits
        )
        if found is not None:
            return found

    unschedulable = _unschedulable(status, now, limits)
    if unschedulable is not None:
        return unschedulable
    if status.get("phase") == "Failed":
        return f"the pod failed: {reason or message or 'unknown reason'}"
    return None


def agent_finished(pod: dict[str, Any]) -> bool:
    """True when the job agent container has exited (with any code)."""
    return container_terminated(pod, AGENT_CONTAINER) is not None
