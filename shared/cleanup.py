"""Age-based cleanup: old finished work requests, their data and instance
log, expired sessions and old login failures.

Deletes in bounded batches. Each batch is one short transaction under
`lock_timeout` and `statement_timeout`, and takes its rows with
`FOR UPDATE SKIP LOCKED`, so two overlapping runs share the work instead of
waiting on each other. New submissions touch other rows and so do not wait
on the deletes (tests/test_cron.py checks that no insert waits as long as
the lock timeout). An interrupted run loses at most one batch's work, and
the next run carries on, because only the rows themselves record progress.

Requests that have not finished are never deleted. Those past the
retention are reported (the reconciler fails them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from shared.logs import get_logger, log_event

logger = get_logger(__name__)

_DELETE_REQUESTS = """
WITH doomed AS (
    SELECT id FROM work_request
    WHERE request_timestamp < now() - make_interval(days => :days)
      AND status IN ('COMPLETED', 'FAILED')
    ORDER BY request_timestamp
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
), logs AS (
    DELETE FROM model_instance_log
    WHERE request_id IN (SELECT id FROM doomed)
    RETURNING 1
), data AS (
    DELETE FROM work_request_data
    WHERE id IN (SELECT id FROM doomed)
    RETURNING 1
), requests AS (
    DELETE FROM work_request
    WHERE id IN (SELECT id FROM doomed)
    RETURNING 1
)
SELECT (SELECT count(*) FROM requests), (SELECT count(*) FROM data),
       (SELECT count(*) FROM logs)
"""

_DELETE_ORPHAN_LOGS = """
DELETE FROM model_instance_log WHERE id IN (
    SELECT id FROM model_instance_log
    WHERE log_timestamp < now() - make_interval(days => :days)
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
)
"""

_DELETE_SESSIONS = """
DELETE FROM auth_session WHERE id IN (
    SELECT id FROM auth_session
    WHERE expires_at < now()
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
)
"""

_DELETE_FAILURES = """
DELETE FROM login_failure WHERE id IN (
    SELECT id FROM login_failure
    WHERE failed_at < now() - make_interval(secs => :window)
    LIMIT :batch
    FOR UPDATE SKIP LOCKED
)
"""

_STUCK = """
SELECT id, status FROM work_request
WHERE request_timestamp < now() - make_interval(days => :days)
  AND status NOT IN ('COMPLETED', 'FAILED')
ORDER BY request_timestamp
LIMIT 100
"""


@dataclass
class CleanupReport:
    """The counts of one cleanup run, and the unfinished requests it found."""

    requests: int = 0
    data_rows: int = 0
    log_rows: int = 0
    sessions: int = 0
    login_failures: int = 0
    batches: int = 0
    seconds: float = 0.0
    stuck_request_ids: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class CleanupSettings:
    retention_days: int
    batch_size: int
    lock_timeout_ms: int
    statement_timeout_ms: int
    login_window_seconds: int
    max_batches: int = 100_000


@contextmanager
def _short_transaction(
    engine: Engine, settings: CleanupSettings
) -> Iterator[Connection]:
    """Open a transaction whose locks and statements give up quickly."""
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "SELECT set_config('lock_timeout', :lock, true), "
                "set_config('statement_timeout', :statement, true)"
            ),
            {
                "lock": f"{settings.lock_timeout_ms}ms",
                "statement": f"{settings.statement_timeout_ms}ms",
            },
        )
        yield connection


def _delete_all(
    engine: Engine, sql: str, settings: CleanupSettings, **values: Any
) -> tuple[int, int]:
    """Repeat one batched DELETE until a batch comes back short.

    Returns (rows deleted, batches run).
    """
    total = 0
    batches = 0
    while batches < settings.max_batches:
        with _short_transaction(engine, settings) as connection:
            deleted = connection.execute(
                sa.text(sql), {"batch": settings.batch_size, **values}
            ).rowcount
        batches += 1
        total += deleted
        if deleted < settings.batch_size:
            break
    return total, batches


def run_cleanup(engine: Engine, settings: CleanupSettings) -> CleanupReport:
    """Delete what is past the retention, batch by batch; return the counts."""
    started = time.monotonic()
    report = CleanupReport()
    days = settings.retention_days

    while report.batches < settings.max_batches:
        with _short_transaction(engine, settings) as connection:
            requests, data_rows, log_rows = connection.execute(
                sa.text(_DELETE_REQUESTS), {"days": days, "batch": settings.batch_size}
            ).one()
        report.batches += 1
        report.requests += requests
        report.data_rows += data_rows
        report.log_rows += log_rows
        if requests < settings.batch_size:
            break

    logs, batches = _delete_all(engine, _DELETE_ORPHAN_LOGS, settings, days=days)
    report.log_rows += logs
    report.batches += batches
    report.sessions, batches = _delete_all(engine, _DELETE_SESSIONS, settings)
    report.batches += batches
    report.login_failures, batches = _delete_all(
        engine, _DELETE_FAILURES, settings, window=settings.login_window_seconds
    )
    report.batches += batches

    with engine.connect() as connection:
        stuck = connection.execute(sa.text(_STUCK), {"days": days}).all()
    report.stuck_request_ids = [str(row.id) for row in stuck]
    report.seconds = round(time.monotonic() - started, 3)

    log_event(logger, "cleanup.done", **report.to_json())
    if stuck:
        log_event(
            logger,
            "cleanup.unfinished_past_retention",
            level=30,
            count=len(stuck),
            request_ids=report.stuck_request_ids[:10],
        )
    return report
