"""The job agent's calls on its one work request: fetch the inputs, report.

The agent fetches the inputs (the request moves to PROCESSING and gets its
`job_submitted_timestamp`), then posts either the model's rows (COMPLETED,
`processed_timestamp`) or a failure (FAILED with the reason). Each call is
bound to the request and attempt named in the agent's job token, and each is
idempotent: a retried fetch returns the same inputs, a retried result post
after success returns success again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shared.http import ApiError
from shared.results import UnstorableValue, clean_text, pack_result
from shared.tables import model, work_request, work_request_data
from shared.tokens import JobGrant
from shared.workrequests import Status, fail, get_state, load_data, transition

REASON_LIMIT = 500


@dataclass(frozen=True)
class Job:
    """The inputs an agent runs, with the request they belong to."""

    request_id: str
    model_id: str
    execution_mode: str
    inputs: list[str]


def _current_state(connection: Connection, grant: JobGrant) -> sa.Row:
    # Locked, so an admin action on the request waits for this report
    # instead of interleaving with it.
    state = get_state(connection, grant.request_id, lock=True)
    if state is None:
        raise ApiError(
            404, "request_not_found", f"work request {grant.request_id} does not exist"
        )
    if state.attempts != grant.attempt:
        raise ApiError(
            409,
            "attempt_superseded",
            f"attempt {grant.attempt} of work request {grant.request_id} was "
            f"replaced by attempt {state.attempts}; stop this instance",
        )
    return state


def fetch_job(connection: Connection, grant: JobGrant) -> Job:
    """Hand the agent its inputs and mark the request PROCESSING."""
    state = _current_state(connection, grant)
    moved = transition(
        connection,
        grant.request_id,
        (Status.SCHEDULING,),
        Status.PROCESSING,
        attempt=grant.attempt,
        job_submitted_timestamp=sa.func.now(),
        # The agent requests its job only after the model server passed
        # its health check, so the model is ready by now even when no Ready
        # pod event was seen (a fast run can finish before the next probe).
        pod_ready_timestamp=sa.func.coalesce(
            work_request.c.pod_ready_timestamp, sa.func.now()
        ),
    )
    if not moved and state.status != Status.PROCESSING:
        raise ApiError(
            409,
            "request_not_runnable",
            f"work request {grant.request_id} is {state.status}; "
            "there is nothing to run",
            status=state.status,
        )

    inputs, _ = load_data(connection, grant.request_id)
    execution_mode = connection.execute(
        sa.select(model.c.execution_mode).where(model.c.id == state.model_id)
    ).scalar_one()
    return Job(grant.request_id, state.model_id, execution_mode, inputs)


def _check_rows(rows: Any, input_size: int) -> str | None:
    """Return why `rows` is not a valid result for `input_size` inputs."""
    if not isinstance(rows, list):
        return f"the result is a {type(rows).__name__}, not a list of rows"
    if len(rows) != input_size:
        return (
            f"the model returned {len(rows)} rows for {input_size} inputs; "
            "every input needs exactly one row"
        )
    for position, row in enumerate(rows):
        if row is not None and not isinstance(row, dict):
            return f"row {position + 1} is a {type(row).__name__}, not an object"
    return None


@dataclass(frozen=True)
class Report:
    """The request's status after a report, and why a result was rejected."""

    status: str
    problem: str | None = None


def record_result(connection: Connection, grant: JobGrant, rows: Any) -> Report:
    """Store the model's rows and complete the request.

    A result with the wrong shape or row count fails the request instead;
    the report then names the problem.
    """
    state = _current_state(connection, grant)
    if state.status == Status.COMPLETED:
        return Report(Status.COMPLETED)
    if state.status != Status.PROCESSING:
        raise ApiError(
            409,
            "request_not_processing",
            f"work request {grant.request_id} is {state.status}; "
            "a result is only taken while it is PROCESSING",
            status=state.status,
        )

    problem = _check_rows(rows, state.input_size)
    if problem is not None:
        fail(connection, grant.request_id, problem, attempt=grant.attempt)
        return Report(Status.FAILED, problem)

    try:
        packed = pack_result(rows)
    except UnstorableValue as error:
        fail(connection, grant.request_id, str(error), attempt=grant.attempt)
        return Report(Status.FAILED, str(error))
    completed = transition(
        connection,
        grant.request_id,
        (Status.PROCESSING,),
        Status.COMPLETED,
        attempt=grant.attempt,
        processed_timestamp=sa.func.now(),
        status_reason=None,
    )
    if not completed:
        raise ApiError(
            409,
            "request_not_processing",
            f"work request {grant.request_id} changed while the result arrived; "
            "it was not stored",
        )
    connection.execute(
        work_request_data.update()
        .where(work_request_data.c.id == grant.request_id)
        .values(result=packed)
    )
    return Report(Status.COMPLETED)


def record_failure(connection: Connection, grant: JobGrant, reason: Any) -> Report:
    """Fail the request with the agent's reason; return the resulting status."""
    if not isinstance(reason, str) or not reason.strip():
        raise ApiError(400, "missing_reason", 'send {"reason": "<why the job failed>"}')
    state = _current_state(connection, grant)
    if state.status in (Status.COMPLETED, Status.FAILED):
        return Report(state.status)

    reason = clean_text(reason.strip())[:REASON_LIMIT]
    fail(connection, grant.request_id, reason, attempt=grant.attempt)
    return Report(Status.FAILED)


def instance_of(connection: Connection, request_id: str) -> str | None:
    """Return the name of the request's current instance."""
    return connection.execute(
        sa.select(work_request.c.instance_name).where(work_request.c.id == request_id)
    ).scalar()
