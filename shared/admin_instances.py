"""Administrators' view of live model instances, their stop action, and the
instance history.

Live instances come from the runtime (local or Kubernetes) through the
`Runtime` protocol, so both runtimes serve the same view. Their Kubernetes
events are the raw core/v1 Events that `instance_watch` stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from werkzeug.datastructures import MultiDict

from shared import instances, params, podstatus
from shared.http import ApiError
from shared.instance_events import parse_instance_name
from shared.runtime.base import Runtime
from shared.tables import model_instance_log
from shared.workrequests import RUNNING, fail, get_state

LIST_PARAMETERS = {"model_id", "status", "started_from", "started_to"}
PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
STOP_REASON = "stopped by admin"
HISTORY_LIMIT = 1000


def _started_at(pod: dict[str, Any]) -> datetime | None:
    status = pod.get("status") or {}
    metadata = pod.get("metadata") or {}
    return podstatus.parse_time(status.get("startTime")) or podstatus.parse_time(
        metadata.get("creationTimestamp")
    )


def _events_by_instance(
    connection: Connection, names: list[str]
) -> dict[str, list[Any]]:
    if not names:
        return {}
    rows = connection.execute(
        sa.select(model_instance_log.c.instance_name, model_instance_log.c.k8s_event)
        .where(
            model_instance_log.c.instance_name.in_(names),
            model_instance_log.c.k8s_event.is_not(None),
        )
        .order_by(model_instance_log.c.id)
    )
    found: dict[str, list[Any]] = {}
    for row in rows:
        found.setdefault(row.instance_name, []).append(row.k8s_event)
    return found


def _summary(pod: dict[str, Any], events: list[Any]) -> dict[str, Any] | None:
    identity = podstatus.identify(pod)
    if identity is None:
        return None
    started = _started_at(pod)
    return {
        "name": identity.name,
        "model_id": identity.model_id,
        "request_id": identity.request_id,
        "attempt": identity.attempt,
        "started_at": started.isoformat() if started else None,
        "phase": podstatus.phase(pod),
        "ready": podstatus.ready_since(pod) is not None,
        "failure": podstatus.failure_reason(
            pod, limits=podstatus.Limits.from_settings()
        ),
        "events": events,
    }


def list_instances(engine: Engine, runtime: Runtime, args: MultiDict) -> dict[str, Any]:
    """Return every live instance, filtered by model, start day and phase."""
    params.reject_unknown(args, LIST_PARAMETERS)
    model_ids = params.model_ids(args)
    phases = params.choices(args, "status", PHASES)
    start, end = params.day_range(args, "started_from", "started_to")

    pods = runtime.list_instances(model_ids[0] if len(model_ids) == 1 else None)
    with engine.connect() as connection:
        names = [str((pod.get("metadata") or {}).get("name")) for pod in pods]
        events = _events_by_instance(connection, names)

    items = []
    for pod in pods:
        name = str((pod.get("metadata") or {}).get("name"))
        summary = _summary(pod, events.get(name, []))
        if summary is None:
            continue
        if model_ids and summary["model_id"] not in model_ids:
            continue
        if phases and summary["phase"] not in phases:
            continue
        started = _started_at(pod)
        if start is not None and (started is None or started < start):
            continue
        if end is not None and (started is None or started >= end):
            continue
        items.append(summary)
    items.sort(key=lambda item: (item["started_at"] or "", item["name"]))
    return {"items": items}


def stop_instance(engine: Engine, runtime: Runtime, name: str, admin_id: str) -> dict:
    """Fail the instance's request ("stopped by admin"), then delete it."""
    parsed = parse_instance_name(name)
    if parsed is None:
        raise ApiError(
            404, "instance_not_found", f"instance {name[:80]!r} does not exist"
        )
    request_id, attempt = parsed
    pod = runtime.get_instance(name)

    with engine.begin() as connection:
        state = get_state(connection, request_id, lock=True)
        current = state is not None and state.instance_name == name
        if pod is None and not current:
            raise ApiError(
                404, "instance_not_found", f"instance {name!r} does not exist"
            )
        failed = False
        if state is not None:
            failed = fail(
                connection, request_id, STOP_REASON, attempt=attempt, expected=RUNNING
            )
            identity = podstatus.PodIdentity(name, state.model_id, request_id, attempt)
            instances.append_log(
                connection, identity, "admin.stop", None, f"{STOP_REASON} {admin_id}"
            )

    deleted = runtime.delete_instance(name)
    return {
        "name": name,
        "request_id": request_id,
        "request_failed": failed,
        "instance_deleted": deleted,
    }


def history(connection: Connection, *, name: str | None, request_id: str | None):
    """Return the instance log of one instance or one request, oldest first."""
    query = sa.select(
        model_instance_log.c.id,
        model_instance_log.c.model_id,
        model_instance_log.c.instance_name,
        model_instance_log.c.request_id,
        model_instance_log.c.event,
        model_instance_log.c.pod_phase,
        model_instance_log.c.detail,
        model_instance_log.c.k8s_event,
        model_instance_log.c.log_timestamp,
    ).order_by(model_instance_log.c.id)
    if name is not None:
        query = query.where(model_instance_log.c.instance_name == name)
    if request_id is not None:
        query = query.where(model_instance_log.c.request_id == request_id)
    rows = []
    for row in connection.execute(query.limit(HISTORY_LIMIT + 1)):
        record = dict(row._mapping)
        record["log_timestamp"] = record["log_timestamp"].isoformat()
        record["request_id"] = (
            str(record["request_id"]) if record["request_id"] else None
        )
        rows.append(record)
    # NOTE: past HISTORY_LIMIT entries only the oldest are returned, with
    # `truncated` set. Paging is not built.
    return {"items": rows[:HISTORY_LIMIT], "truncated": len(rows) > HISTORY_LIMIT}
