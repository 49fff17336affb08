"""Follow model instances through their Pod events.

`handle_pod_event` takes one ApiServerSource event (add, update or delete of
an instance pod). It appends the event to `model_instance_log`, records when
the pod became ready, fails the request when the instance fails, removes
instances that have finished, and reports a freed slot so the scheduler can
start the model's next request.

Each step is a conditional update keyed on the request's state and attempt,
so duplicated, reordered or replayed events change nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from shared import podstatus
from shared.logs import get_logger, log_event
from shared.results import UnstorableValue, clean_json, clean_text
from shared.runtime.base import Runtime
from shared.tables import model_instance_log, work_request
from shared.workrequests import RUNNING, TERMINAL, Status, fail, get_state

logger = get_logger(__name__)

ADDED = "add"
UPDATED = "update"
DELETED = "delete"


@dataclass(frozen=True)
class WatchOutcome:
    """The outcome of one pod event, for logs and tests."""

    action: str
    request_id: str | None = None
    model_id: str | None = None
    release: bool = False


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        return None


def append_log(
    connection: Connection,
    identity: podstatus.PodIdentity,
    event: str,
    pod: dict[str, Any] | None,
    detail: str | None = None,
) -> None:
    connection.execute(
        model_instance_log.insert().values(
            model_id=identity.model_id,
            instance_name=identity.name,
            request_id=identity.request_id,
            event=event,
            pod_phase=podstatus.phase(pod) if pod else None,
            detail=clean_text(detail) if detail else None,
            pod=_storable(pod),
        )
    )


def _without_env(pod: dict[str, Any]) -> dict[str, Any]:
    """Drop container environments, because the agent's contains its job token."""
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return pod
    redacted = dict(spec)
    for key in ("containers", "initContainers"):
        containers = spec.get(key)
        if isinstance(containers, list):
            redacted[key] = [
                {name: value for name, value in container.items() if name != "env"}
                if isinstance(container, dict)
                else container
                for container in containers
            ]
    return {**pod, "spec": redacted}


def _storable(pod: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return the pod as it may be stored: clean JSON, no environments."""
    if pod is None:
        return None
    try:
        return clean_json(_without_env(pod))
    except UnstorableValue as error:
        return {"unstorable": str(error)}


def _record_ready(connection: Connection, identity, pod: dict[str, Any]) -> None:
    since = podstatus.ready_since(pod)
    if since is None:
        return
    # The pod's clock may be wrong: keep the time between the request and now.
    ready_at = _parse_time(since)
    reported = sa.func.now() if ready_at is None else sa.literal(ready_at)
    clamped = sa.func.greatest(
        work_request.c.request_timestamp, sa.func.least(reported, sa.func.now())
    )
    connection.execute(
        work_request.update()
        .where(
            work_request.c.id == identity.request_id,
            work_request.c.attempts == identity.attempt,
            work_request.c.pod_ready_timestamp.is_(None),
        )
        .values(
            pod_ready_timestamp=clamped,
            last_updated=sa.func.now(),
        )
    )


def _judge(connection: Connection, identity, event: str, pod: dict[str, Any]):
    """Decide what the event means; return (action, delete_instance, release)."""
    state = get_state(connection, identity.request_id)
    if state is None:
        return "unknown_request", event != DELETED, event == DELETED
    if state.attempts != identity.attempt or state.status == Status.REQUESTED:
        # An instance of an earlier attempt, or of a claim that was put back
        # in the queue: it must not touch the request, and it should go.
        return "stale_attempt", event != DELETED, False

    if event == DELETED:
        if state.status in RUNNING:
            fail(
                connection,
                identity.request_id,
                "the instance was deleted before the request finished",
                attempt=identity.attempt,
                expected=RUNNING,
            )
            return "failed_on_delete", False, True
        return "deleted", False, True

    _record_ready(connection, identity, pod)

    if state.status in TERMINAL:
        return "finished", True, False

    reason = podstatus.failure_reason(pod, limits=podstatus.Limits.from_settings())
    if reason is not None:
        fail(
            connection,
            identity.request_id,
            reason,
            attempt=identity.attempt,
            expected=RUNNING,
        )
        append_log(connection, identity, "instance.failed", None, reason)
        return "failed", True, False

    if podstatus.agent_finished(pod):
        # Exit code 0 but the request is still running: the agent never
        # reported. Re-read under the conditional update, since a result
        # posted just before the exit has already completed it.
        changed = fail(
            connection,
            identity.request_id,
            "the job agent exited without reporting a result",
            attempt=identity.attempt,
            expected=RUNNING,
        )
        return ("failed" if changed else "finished"), True, False
    return "observed", False, False


def handle_pod_event(
    engine: Engine, runtime: Runtime, event: str, pod: dict[str, Any]
) -> WatchOutcome:
    """Apply one pod event. Safe to call again with the same or older events."""
    identity = podstatus.identify(pod)
    if identity is None:
        metadata = pod.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        log_event(
            logger, "instance_watch.foreign_pod", pod=str(name)[:100], change=event
        )
        return WatchOutcome("ignored")

    with engine.begin() as connection:
        append_log(connection, identity, f"pod.{event}", pod)
        action, delete, release = _judge(connection, identity, event, pod)

    if delete:
        gone = not runtime.delete_instance(identity.name)
        # An instance that was already gone will send no delete event, so
        # this event is the last word on its slot.
        release = release or gone

    log_event(
        logger,
        "instance_watch.event",
        change=event,
        action=action,
        request_id=identity.request_id,
        model_id=identity.model_id,
        instance=identity.name,
        phase=podstatus.phase(pod),
    )
    return WatchOutcome(action, identity.request_id, identity.model_id, release)


def instance_log(connection: Connection, request_id: str) -> list[dict[str, Any]]:
    """Return the instance log of a request, oldest first."""
    rows = connection.execute(
        sa.select(
            model_instance_log.c.instance_name,
            model_instance_log.c.event,
            model_instance_log.c.pod_phase,
            model_instance_log.c.detail,
            model_instance_log.c.log_timestamp,
        )
        .where(model_instance_log.c.request_id == request_id)
        .order_by(model_instance_log.c.id)
    )
    return [dict(row._mapping) for row in rows]


__all__ = ["handle_pod_event", "instance_log", "WatchOutcome", "Status"]
