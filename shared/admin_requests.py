"""Administrators' view of every work request, their actions, and the audit.

The list never carries inputs or results: those leave the backend only
through `view_sensitive`, which writes an audit record (who, when, which
request, from where) in the same transaction that reads the data, before
the response is sent.

Status actions follow the state machine. A request can go back to
REQUESTED from SCHEDULING, PROCESSING or FAILED: its instance is stopped
first, and the next claim counts one more attempt. It can go to FAILED
from any state that has not finished. Anything else is a 409 with the
reason.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from werkzeug.datastructures import MultiDict

from shared import params, workrequests
from shared.http import ApiError
from shared.results import clean_text
from shared.runtime.base import Runtime, RuntimeUnavailable
from shared.tables import audit_log, work_request, work_request_data
from shared.workrequests import RUNNING, Status

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
LIST_PARAMETERS = {
    "user_id",
    "session_id",
    "model_id",
    "status",
    "date_from",
    "date_to",
    "limit",
    "after",
}
REASON_LIMIT = 500
REQUEUE_FROM = (Status.SCHEDULING, Status.PROCESSING, Status.FAILED)
FAIL_FROM = (Status.REQUESTED, *RUNNING)

LIST_COLUMNS = (
    work_request.c.id,
    work_request.c.model_id,
    work_request.c.status,
    work_request.c.status_reason,
    work_request.c.auth_type,
    work_request.c.user_id,
    work_request.c.session_id,
    work_request.c.input_size,
    work_request.c.attempts,
    work_request.c.instance_name,
    work_request.c.request_timestamp,
    work_request.c.pod_ready_timestamp,
    work_request.c.job_submitted_timestamp,
    work_request.c.processed_timestamp,
    work_request.c.last_updated,
)


@dataclass(frozen=True)
class Viewer:
    """The administrator acting, and where the call came from."""

    user_id: str
    address: str
    user_agent: str | None


def _json_row(row: sa.Row) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, value in row._mapping.items():
        if isinstance(value, datetime):
            record[key] = value.isoformat()
        elif value is not None and key in ("id", "user_id", "session_id"):
            record[key] = str(value)
        else:
            record[key] = value
    return record


def _encode_cursor(row: dict[str, Any]) -> str:
    raw = f"{row['request_timestamp']}|{row['id']}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(value: str) -> tuple[datetime, str]:
    try:
        padded = value + "=" * (-len(value) % 4)
        moment, _, request_id = base64.urlsafe_b64decode(padded).decode().partition("|")
        parsed = datetime.fromisoformat(moment)
        if parsed.tzinfo is None:
            raise ValueError("cursor time has no zone")
        return parsed.astimezone(UTC), str(uuid.UUID(request_id))
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError) as error:
        raise params.invalid(
            "after", "is not a cursor from this list; pass next_after unchanged"
        ) from error


def list_requests(connection: Connection, args: MultiDict) -> dict[str, Any]:
    """Return one page of every owner's requests, newest first."""
    params.reject_unknown(args, LIST_PARAMETERS)
    limit = params.limit(args, DEFAULT_LIMIT, MAX_LIMIT)
    start, end = params.day_range(args)
    model_ids = params.model_ids(args)

    query = sa.select(
        *LIST_COLUMNS,
        work_request_data.c.result.is_not(None).label("has_result"),
    ).select_from(
        work_request.outerjoin(
            work_request_data, work_request_data.c.id == work_request.c.id
        )
    )
    user_ids = params.uuids(args, "user_id")
    session_ids = params.uuids(args, "session_id")
    owners = []
    if user_ids:
        owners.append(work_request.c.user_id.in_(user_ids))
    if session_ids:
        owners.append(work_request.c.session_id.in_(session_ids))
    if owners:
        query = query.where(sa.or_(*owners))
    if model_ids:
        query = query.where(work_request.c.model_id.in_(model_ids))
    statuses = params.choices(args, "status", tuple(Status))
    if statuses:
        query = query.where(work_request.c.status.in_(statuses))
    if start is not None:
        query = query.where(work_request.c.request_timestamp >= start)
    if end is not None:
        query = query.where(work_request.c.request_timestamp < end)
    if args.get("after"):
        moment, request_id = _decode_cursor(args["after"])
        query = query.where(
            sa.tuple_(work_request.c.request_timestamp, work_request.c.id)
            < sa.tuple_(sa.literal(moment), sa.cast(request_id, work_request.c.id.type))
        )

    query = query.order_by(
        work_request.c.request_timestamp.desc(), work_request.c.id.desc()
    ).limit(limit + 1)
    rows = [_json_row(row) for row in connection.execute(query)]
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": rows, "next_after": _encode_cursor(rows[-1]) if more else None}


def _load(connection: Connection, request_id: str, *, lock: bool = False) -> sa.Row:
    query = sa.select(*LIST_COLUMNS).where(work_request.c.id == request_id)
    if lock:
        query = query.with_for_update()
    row = connection.execute(query).first()
    if row is None:
        raise ApiError(
            404, "request_not_found", f"work request {request_id} does not exist"
        )
    return row


def parse_id(raw: str) -> str:
    request_id = workrequests.parse_request_id(raw)
    if request_id is None:
        raise ApiError(
            404, "request_not_found", f"work request {raw[:40]!r} does not exist"
        )
    return request_id


def check_action(body: Any) -> tuple[Status, str]:
    """Check a status action body; return the target status and reason."""
    if not isinstance(body, dict):
        raise ApiError(
            400, "invalid_body", 'send {"status": "REQUESTED" or "FAILED", "reason"}'
        )
    target = body.get("status")
    if target not in (Status.REQUESTED, Status.FAILED):
        raise ApiError(
            422,
            "invalid_field",
            f"status: {str(target)[:40]!r} cannot be set; use REQUESTED (re-queue) "
            "or FAILED",
            field="status",
        )
    reason = body.get("reason")
    if target == Status.FAILED and (not isinstance(reason, str) or not reason.strip()):
        raise ApiError(
            422,
            "invalid_field",
            "reason: is required to fail a request; say why",
            field="reason",
        )
    if reason is not None and not isinstance(reason, str):
        raise ApiError(422, "invalid_field", "reason: must be a string", field="reason")
    return Status(target), (reason or "").strip()[:REASON_LIMIT]


def plan_action(connection: Connection, request_id: str, target: Status) -> sa.Row:
    """Lock the request and check the transition; return the row."""
    row = _load(connection, request_id, lock=True)
    allowed = REQUEUE_FROM if target == Status.REQUESTED else FAIL_FROM
    if row.status not in allowed:
        names = ", ".join(str(status) for status in allowed)
        raise ApiError(
            409,
            "invalid_transition",
            f"work request {request_id} is {row.status}; it can be set to "
            f"{target} only from {names}",
            status=row.status,
        )
    return row


def apply_action(
    connection: Connection, row: sa.Row, target: Status, reason: str, admin_id: str
) -> bool:
    """Apply a checked action to a request whose instance is already gone."""
    note = reason or f"set to {target} by an administrator"
    if target == Status.FAILED:
        return workrequests.fail(
            connection,
            str(row.id),
            f"failed by admin: {note}",
            expected=(Status(row.status),),
        )
    return workrequests.transition(
        connection,
        str(row.id),
        (Status(row.status),),
        Status.REQUESTED,
        reason=f"re-queued by admin: {note}",
        instance_name=None,
        pod_ready_timestamp=None,
        job_submitted_timestamp=None,
        processed_timestamp=None,
    )


def set_status(
    connection: Connection,
    runtime: Runtime,
    request_id: str,
    target: Status,
    reason: str,
    admin_id: str,
) -> tuple[sa.Row, bool]:
    """Stop the request's instance, then apply the action, under a row lock.

    The lock makes the instance's own reports and pod events wait until the
    action is committed, so they find the new state and change nothing.
    If the instance cannot be stopped, nothing changes: raises a 503.
    Returns the row as it was and whether the instance was stopped.
    """
    row = plan_action(connection, request_id, target)
    stopped = False
    if row.instance_name:
        try:
            stopped = runtime.delete_instance(row.instance_name)
        except RuntimeUnavailable as error:
            raise ApiError(
                503,
                "runtime_unavailable",
                f"instance {row.instance_name} could not be stopped ({error}); "
                "the request was not changed, so retry later",
            ) from error
    apply_action(connection, row, target, reason, admin_id)
    return row, stopped


def view_sensitive(
    connection: Connection, request_id: str, viewer: Viewer
) -> dict[str, Any]:
    """Audit the view, then return the full request with inputs and results."""
    row = _load(connection, request_id)
    connection.execute(
        audit_log.insert().values(
            admin_user_id=viewer.user_id,
            action="view_sensitive",
            request_id=request_id,
            client_address=clean_text(viewer.address)[:100],
            user_agent=clean_text(viewer.user_agent or "")[:300] or None,
        )
    )
    inputs, result = workrequests.load_data(connection, request_id)
    body = _json_row(row)
    body["inputs"] = inputs
    body["result"] = result
    return body


AUDIT_PARAMETERS = {"request_id", "admin_user_id", "limit", "before"}


def list_audit(connection: Connection, args: MultiDict) -> dict[str, Any]:
    """Return audit records, newest first, paged by `before` (a record id)."""
    params.reject_unknown(args, AUDIT_PARAMETERS)
    limit = params.limit(args, DEFAULT_LIMIT, MAX_LIMIT)
    query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit + 1)
    request_ids = params.uuids(args, "request_id")
    if request_ids:
        query = query.where(audit_log.c.request_id.in_(request_ids))
    admin_ids = params.uuids(args, "admin_user_id")
    if admin_ids:
        query = query.where(audit_log.c.admin_user_id.in_(admin_ids))
    before = params.single(args, "before")
    if before is not None:
        if not (before.isascii() and before.isdigit() and len(before) < 19):
            raise params.invalid("before", f"{before[:20]!r} is not a record id")
        query = query.where(audit_log.c.id < int(before))

    rows = [_json_row(row) for row in connection.execute(query)]
    for row in rows:
        for key in ("admin_user_id", "request_id"):
            row[key] = str(row[key]) if row[key] is not None else None
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": rows, "next_before": rows[-1]["id"] if more else None}
