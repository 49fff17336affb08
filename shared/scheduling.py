"""Claim queued work requests of a model and start their instances.

One scheduling pass for a model runs in short transactions. Each one locks
the model's row, so two passes for the same model never both see a free
slot. It counts the model's running requests against `max_instances`,
takes the oldest REQUESTED request (FIFO per model) and moves it to
SCHEDULING with its attempt number raised. The instance is created after
the commit. Its name comes from the request id and attempt, so a retried
create is a no-op.

Passes are idempotent: a duplicated or replayed event finds nothing to claim
or no free slot, and never starts a second instance for a request.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from shared import catalog, tokens
from shared.catalog import Model
from shared.logs import get_logger, log_event
from shared.runtime.base import InstanceSpec, Runtime, RuntimeUnavailable, instance_name
from shared.tables import work_request
from shared.workrequests import RUNNING, Status, fail, transition

logger = get_logger(__name__)

# One pass starts at most this many instances; the next event continues.
MAX_CLAIMS_PER_PASS = 50


@dataclass(frozen=True)
class Claim:
    """A request moved to SCHEDULING, with the model it runs on."""

    request_id: str
    attempt: int
    model: Model


def _running_count(connection: Connection, model_id: str) -> int:
    return connection.execute(
        sa.select(sa.func.count())
        .select_from(work_request)
        .where(
            work_request.c.model_id == model_id,
            work_request.c.status.in_([str(status) for status in RUNNING]),
        )
    ).scalar_one()


def _fail_queued_of_disabled(connection: Connection, model_id: str) -> int:
    result = connection.execute(
        work_request.update()
        .where(
            work_request.c.model_id == model_id,
            work_request.c.status == Status.REQUESTED,
        )
        .values(
            status=Status.FAILED,
            status_reason=f"model {model_id} was disabled before the request ran; "
            "submit it again when the model is enabled",
            processed_timestamp=sa.func.now(),
            last_updated=sa.func.now(),
        )
    )
    return result.rowcount


def claim_next(connection: Connection, model_id: str) -> Claim | None:
    """Claim the oldest REQUESTED request of the model if a slot is free."""
    model = catalog.get_model(connection, model_id, lock=True)
    if model is None:
        log_event(logger, "scheduler.unknown_model", model_id=model_id)
        return None
    if not model.enabled:
        failed = _fail_queued_of_disabled(connection, model_id)
        log_event(logger, "scheduler.model_disabled", model_id=model_id, failed=failed)
        return None
    at_capacity = (
        model.max_instances is not None
        and _running_count(connection, model_id) >= model.max_instances
    )
    if at_capacity:
        return None

    oldest = (
        sa.select(work_request.c.id)
        .where(
            work_request.c.model_id == model_id,
            work_request.c.status == Status.REQUESTED,
        )
        .order_by(work_request.c.request_timestamp, work_request.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    row = connection.execute(
        work_request.update()
        .where(work_request.c.id == oldest, work_request.c.status == Status.REQUESTED)
        .values(
            status=Status.SCHEDULING,
            attempts=work_request.c.attempts + 1,
            last_updated=sa.func.now(),
        )
        .returning(work_request.c.id, work_request.c.attempts)
    ).first()
    if row is None:
        return None

    name = instance_name(str(row.id), row.attempts)
    connection.execute(
        work_request.update()
        .where(work_request.c.id == row.id)
        .values(instance_name=name)
    )
    return Claim(request_id=str(row.id), attempt=row.attempts, model=model)


def instance_spec(claim: Claim, jobs_url: str) -> InstanceSpec:
    """Describe the instance that runs one claimed request."""
    name = instance_name(claim.request_id, claim.attempt)
    token = tokens.issue_job_token(
        tokens.JobGrant(
            request_id=claim.request_id,
            instance_name=name,
            attempt=claim.attempt,
            model_id=claim.model.id,
        )
    )
    return InstanceSpec(
        name=name,
        model_id=claim.model.id,
        request_id=claim.request_id,
        attempt=claim.attempt,
        image=claim.model.image_reference,
        execution_mode=claim.model.execution_mode,
        timeout_seconds=claim.model.timeout_seconds,
        jobs_url=jobs_url,
        job_token=token,
        cpu_request_millicores=claim.model.cpu_request_millicores,
        cpu_limit_millicores=claim.model.cpu_limit_millicores,
        memory_request_mib=claim.model.memory_request_mib,
        memory_limit_mib=claim.model.memory_limit_mib,
    )


def _release_claim(engine: Engine, claim: Claim, error: Exception) -> None:
    """Put a claim whose instance could not be created back in the queue."""
    with engine.begin() as connection:
        transition(
            connection,
            claim.request_id,
            (Status.SCHEDULING,),
            Status.REQUESTED,
            attempt=claim.attempt,
            reason=f"instance could not be started, queued again: {error}",
            instance_name=None,
        )


def schedule_model(
    engine: Engine, runtime: Runtime, model_id: str, *, jobs_url: str
) -> int:
    """Start instances for the model's queued requests; return how many.

    Raises RuntimeUnavailable when the runtime fails; the claim is then put
    back as REQUESTED so a redelivered event can try again.
    """
    started = 0
    for _ in range(MAX_CLAIMS_PER_PASS):
        with engine.begin() as connection:
            claim = claim_next(connection, model_id)
        if claim is None:
            break

        spec = instance_spec(claim, jobs_url)
        try:
            runtime.create_instance(spec)
        except RuntimeUnavailable as error:
            _release_claim(engine, claim, error)
            log_event(
                logger,
                "scheduler.create_failed",
                level=40,
                request_id=claim.request_id,
                model_id=model_id,
                instance=spec.name,
                error=str(error),
            )
            raise
        except ValueError as error:
            # The runtime rejected the spec itself: retrying cannot help.
            with engine.begin() as connection:
                fail(connection, claim.request_id, f"instance rejected: {error}")
            continue

        started += 1
        log_event(
            logger,
            "scheduler.instance_created",
            request_id=claim.request_id,
            model_id=model_id,
            instance=spec.name,
            attempt=claim.attempt,
        )
    return started
