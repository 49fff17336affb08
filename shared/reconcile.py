"""The reconciler: find work requests and instances that events left behind.

ApiServerSource and the broker can lose events, so a periodic pass checks
the database against the runtime:

1. REQUESTED requests older than the grace period get a scheduling pass
   for their model (their `workrequest.submitted` event may be lost).
2. SCHEDULING or PROCESSING requests whose instance is gone or failed go
   back to REQUESTED, up to MAX_ATTEMPTS attempts, then FAILED.
3. Instances past their model's time limit are stopped, and their
   requests fail with "timed out".
4. Instances with no live request (orphans) are stopped.
5. Requests not finished within the retention are failed.

Every change is the same conditional UPDATE the event functions use (on the
expected status and attempt), so a pass racing with them never moves a
request backwards, and running it twice does nothing the second time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shared import podstatus, scheduling
from shared.logs import get_logger, log_event
from shared.runtime.base import Runtime, RuntimeUnavailable
from shared.tables import model, work_request
from shared.workrequests import RUNNING, Status, fail, get_state, transition

logger = get_logger(__name__)

MAX_ROWS_PER_STEP = 500


@dataclass(frozen=True)
class ReconcileSettings:
    grace_seconds: int
    max_attempts: int
    retention_days: int
    jobs_url: str


@dataclass
class ReconcileReport:
    """The changes one reconciler pass made."""

    scheduled_models: list[str] = field(default_factory=list)
    started: int = 0
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    timed_out: list[str] = field(default_factory=list)
    orphans_stopped: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _schedule_waiting(
    engine: Engine, runtime: Runtime, settings, report, requeued_models: set[str]
) -> None:
    with engine.connect() as connection:
        models = connection.execute(
            sa.select(work_request.c.model_id)
            .where(
                work_request.c.status == Status.REQUESTED,
                work_request.c.last_updated
                < sa.func.now() - timedelta(seconds=settings.grace_seconds),
            )
            .distinct()
        ).scalars()
        model_ids = sorted(set(models) | requeued_models)
    for model_id in model_ids:
        report.started += scheduling.schedule_model(
            engine, runtime, model_id, jobs_url=settings.jobs_url
        )
        report.scheduled_models.append(model_id)


def _requeue_or_fail(engine: Engine, row: sa.Row, why: str, settings, report) -> None:
    request_id = str(row.id)
    with engine.begin() as connection:
        if row.attempts >= settings.max_attempts:
            changed = fail(
                connection,
                request_id,
                f"{why}; gave up after {row.attempts} attempts",
                attempt=row.attempts,
                expected=RUNNING,
            )
            target = report.failed
        else:
            changed = transition(
                connection,
                request_id,
                (Status(row.status),),
                Status.REQUESTED,
                attempt=row.attempts,
                reason=f"queued again: {why}",
                instance_name=None,
                pod_ready_timestamp=None,
                job_submitted_timestamp=None,
            )
            target = report.requeued
    if changed:
        target.append(request_id)
        log_event(logger, "reconcile.recovered", request_id=request_id, why=why)


def _recover_running(engine: Engine, runtime: Runtime, settings, report) -> set[str]:
    """Re-queue or fail running requests whose instance is gone or failed.

    Returns the models of re-queued requests, to schedule them at once.
    """
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(
                work_request.c.id,
                work_request.c.model_id,
                work_request.c.status,
                work_request.c.attempts,
                work_request.c.instance_name,
            )
            .where(
                work_request.c.status.in_([str(status) for status in RUNNING]),
                work_request.c.last_updated
                < sa.func.now() - timedelta(seconds=settings.grace_seconds),
            )
            .order_by(work_request.c.last_updated)
            .limit(MAX_ROWS_PER_STEP)
        ).all()

    limits = podstatus.Limits.from_settings()
    models: set[str] = set()
    for row in rows:
        pod = runtime.get_instance(row.instance_name) if row.instance_name else None
        reason = "the instance is gone"
        if pod is not None:
            found = podstatus.failure_reason(pod, limits=limits)
            if found is None:
                continue
            reason = found
            runtime.delete_instance(row.instance_name)
        _requeue_or_fail(engine, row, reason, settings, report)
        models.add(row.model_id)
    return models


def _model_limits(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(sa.select(model.c.id, model.c.timeout_seconds))
        return {row.id: row.timeout_seconds for row in rows}


def _sweep_instances(engine: Engine, runtime: Runtime, settings, report) -> None:
    limits = _model_limits(engine)
    now = datetime.now(UTC)
    for pod in runtime.list_instances():
        identity = podstatus.identify(pod)
        if identity is None:
            continue
        with engine.begin() as connection:
            state = get_state(connection, identity.request_id)
            live = (
                state is not None
                and state.status in RUNNING
                and state.attempts == identity.attempt
            )
            created = podstatus.parse_time(
                (pod.get("metadata") or {}).get("creationTimestamp")
            )
            limit = limits.get(identity.model_id)
            overdue = (
                live
                and created is not None
                and limit is not None
                and now - created > timedelta(seconds=limit + settings.grace_seconds)
            )
            if overdue:
                fail(
                    connection,
                    identity.request_id,
                    f"timed out: the instance ran longer than the model's limit "
                    f"of {limit} s",
                    attempt=identity.attempt,
                    expected=RUNNING,
                )
        if overdue:
            runtime.delete_instance(identity.name)
            report.timed_out.append(identity.name)
        elif not live and _old_enough(pod, now, settings):
            runtime.delete_instance(identity.name)
            report.orphans_stopped.append(identity.name)


def _old_enough(pod: dict[str, Any], now: datetime, settings) -> bool:
    """Leave brand-new pods alone: their request may not be committed yet."""
    created = podstatus.parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
    return created is None or now - created > timedelta(seconds=settings.grace_seconds)


def _expire_unfinished(engine: Engine, settings, report) -> None:
    with engine.begin() as connection:
        rows = connection.execute(
            work_request.update()
            .where(
                work_request.c.status.in_(
                    [str(Status.REQUESTED), *[str(status) for status in RUNNING]]
                ),
                work_request.c.request_timestamp
                < sa.func.now() - timedelta(days=settings.retention_days),
            )
            .values(
                status=Status.FAILED,
                status_reason=f"did not finish within the retention of "
                f"{settings.retention_days} days",
                processed_timestamp=sa.func.now(),
                last_updated=sa.func.now(),
            )
            .returning(work_request.c.id)
        ).scalars()
        report.expired = [str(request_id) for request_id in rows]


def run_reconcile(
    engine: Engine, runtime: Runtime, settings: ReconcileSettings
) -> ReconcileReport:
    """Run every step once; return what changed. Safe to run concurrently."""
    report = ReconcileReport()
    _expire_unfinished(engine, settings, report)
    try:
        requeued_models = _recover_running(engine, runtime, settings, report)
        _sweep_instances(engine, runtime, settings, report)
        _schedule_waiting(engine, runtime, settings, report, requeued_models)
    except RuntimeUnavailable as error:
        log_event(logger, "reconcile.runtime_unavailable", level=40, error=str(error))
        raise
    log_event(
        logger,
        "reconcile.done",
        started=report.started,
        requeued=len(report.requeued),
        failed=len(report.failed),
        timed_out=len(report.timed_out),
        orphans_stopped=len(report.orphans_stopped),
        expired=len(report.expired),
    )
    return report
