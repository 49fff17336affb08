"""Work requests: creation, the owner's view, and the state machine.

States move only forward:

    REQUESTED -> SCHEDULING -> PROCESSING -> COMPLETED
         \\            \\             \\-----> FAILED
          \\            \\-------------------> FAILED
           \\--------------------------------> FAILED

Every change is one conditional UPDATE on the expected current state (and,
for instance-driven changes, the expected attempt), so a duplicated,
reordered or replayed event that arrives late changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shared.auth import Owner
from shared.tables import work_request, work_request_data


class Status(StrEnum):
    REQUESTED = "REQUESTED"
    SCHEDULING = "SCHEDULING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


TERMINAL = (Status.COMPLETED, Status.FAILED)
RUNNING = (Status.SCHEDULING, Status.PROCESSING)
STATUS_REASON_LIMIT = 500

PUBLIC_COLUMNS = (
    work_request.c.id,
    work_request.c.model_id,
    work_request.c.status,
    work_request.c.status_reason,
    work_request.c.input_size,
    work_request.c.request_timestamp,
    work_request.c.pod_ready_timestamp,
    work_request.c.job_submitted_timestamp,
    work_request.c.processed_timestamp,
    work_request.c.last_updated,
)


@dataclass(frozen=True)
class WorkRequest:
    """The fields of a work request that its owner may see."""

    id: str
    model_id: str
    status: str
    status_reason: str | None
    input_size: int
    request_timestamp: datetime
    pod_ready_timestamp: datetime | None
    job_submitted_timestamp: datetime | None
    processed_timestamp: datetime | None
    last_updated: datetime

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        for name, value in self.__dict__.items():
            body[name] = value.isoformat() if isinstance(value, datetime) else value
        return body


def _from_row(row: sa.Row) -> WorkRequest:
    values = row._mapping
    return WorkRequest(
        **{name: values[name] for name in WorkRequest.__dataclass_fields__}
    )


def parse_request_id(value: str) -> str | None:
    """Return the canonical UUID text, or None when `value` is no UUID."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        return None


def create(
    connection: Connection, owner: Owner, model_id: str, inputs: list[str]
) -> WorkRequest:
    """Store a new REQUESTED work request and its inputs in one transaction."""
    request_id = str(uuid.uuid4())
    row = connection.execute(
        work_request.insert()
        .values(
            id=request_id,
            model_id=model_id,
            status=Status.REQUESTED,
            auth_type=owner.auth_type,
            user_id=owner.user_id,
            session_id=owner.session_id,
            input_size=len(inputs),
            attempts=0,
        )
        .returning(*PUBLIC_COLUMNS)
    ).one()
    connection.execute(
        work_request_data.insert().values(
            id=request_id, input=inputs, request_date=row.request_timestamp
        )
    )
    return _from_row(row)


def _owned_by(owner: Owner) -> sa.ColumnElement[bool]:
    if owner.user_id is not None:
        return work_request.c.user_id == owner.user_id
    return work_request.c.session_id == owner.session_id


def get_owned(
    connection: Connection, owner: Owner, request_id: str
) -> WorkRequest | None:
    """Return the owner's request; None when it does not exist or is not theirs."""
    row = connection.execute(
        sa.select(*PUBLIC_COLUMNS).where(
            work_request.c.id == request_id, _owned_by(owner)
        )
    ).first()
    return None if row is None else _from_row(row)


def list_owned(
    connection: Connection,
    owner: Owner,
    *,
    limit: int,
    status: str | None = None,
    model_id: str | None = None,
) -> list[WorkRequest]:
    """Return the owner's newest requests first."""
    query = (
        sa.select(*PUBLIC_COLUMNS)
        .where(_owned_by(owner))
        .order_by(work_request.c.request_timestamp.desc(), work_request.c.id)
        .limit(limit)
    )
    if status is not None:
        query = query.where(work_request.c.status == status)
    if model_id is not None:
        query = query.where(work_request.c.model_id == model_id)
    return [_from_row(row) for row in connection.execute(query)]


def load_data(connection: Connection, request_id: str) -> tuple[list[str], Any]:
    """Return the inputs and the stored result (None until completed)."""
    row = connection.execute(
        sa.select(work_request_data.c.input, work_request_data.c.result).where(
            work_request_data.c.id == request_id
        )
    ).one()
    return row.input, row.result


def transition(
    connection: Connection,
    request_id: str,
    expected: tuple[Status, ...],
    new_status: Status,
    *,
    attempt: int | None = None,
    reason: str | None = None,
    **values: Any,
) -> bool:
    """Move a request to `new_status` if it is in one of `expected`.

    With `attempt`, the change applies only to that attempt, so events of an
    instance from an earlier attempt cannot touch a re-queued request.
    Returns True when the row changed.
    """
    conditions = [
        work_request.c.id == request_id,
        work_request.c.status.in_([str(status) for status in expected]),
    ]
    if attempt is not None:
        conditions.append(work_request.c.attempts == attempt)
    if reason is not None:
        values["status_reason"] = reason[:STATUS_REASON_LIMIT]

    result = connection.execute(
        work_request.update()
        .where(*conditions)
        .values(status=new_status, last_updated=sa.func.now(), **values)
    )
    return result.rowcount == 1


def fail(
    connection: Connection,
    request_id: str,
    reason: str,
    *,
    attempt: int | None = None,
    expected: tuple[Status, ...] = (Status.REQUESTED, *RUNNING),
) -> bool:
    """Fail a request that has not finished yet; True when it changed."""
    return transition(
        connection,
        request_id,
        expected,
        Status.FAILED,
        attempt=attempt,
        reason=reason,
        processed_timestamp=sa.func.now(),
    )


def get_state(
    connection: Connection, request_id: str, *, lock: bool = False
) -> sa.Row | None:
    """Return status, attempts, model and instance name of a request.

    `lock` holds a row lock until the transaction ends, so a decision made
    on this state cannot be overtaken by another writer.
    """
    query = sa.select(
        work_request.c.id,
        work_request.c.model_id,
        work_request.c.status,
        work_request.c.attempts,
        work_request.c.instance_name,
        work_request.c.input_size,
        work_request.c.pod_ready_timestamp,
    ).where(work_request.c.id == request_id)
    if lock:
        query = query.with_for_update()
    return connection.execute(query).first()
