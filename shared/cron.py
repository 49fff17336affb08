"""Run the periodic jobs: `python -m shared.cron cleanup|reconcile`.

Kubernetes CronJobs run this in the functions image; the local stack runs
it on the same schedule. It prints the run's report as one JSON line and
exits 0, or 1 when the runtime could not be reached.
"""

from __future__ import annotations

import json
import sys

from shared.cleanup import CleanupSettings, run_cleanup
from shared.db import get_engine
from shared.reconcile import ReconcileSettings, run_reconcile
from shared.runtime.base import RuntimeUnavailable
from shared.settings import get_settings

USAGE = "usage: python -m shared.cron cleanup|reconcile"


def cleanup_settings() -> CleanupSettings:
    settings = get_settings()
    return CleanupSettings(
        retention_days=settings.retention_days,
        batch_size=settings.cleanup_batch_size,
        lock_timeout_ms=settings.cleanup_lock_timeout_ms,
        statement_timeout_ms=settings.cleanup_statement_timeout_ms,
        login_window_seconds=settings.login_failure_window_seconds,
    )


def reconcile_settings() -> ReconcileSettings:
    settings = get_settings()
    return ReconcileSettings(
        grace_seconds=settings.reconcile_grace_seconds,
        max_attempts=settings.max_attempts,
        retention_days=settings.retention_days,
        jobs_url=settings.jobs_url or "",
    )


def run(job: str) -> dict:
    """Run one job and return its report."""
    if job == "cleanup":
        return run_cleanup(get_engine(), cleanup_settings()).to_json()
    from shared.runtime import get_runtime

    return run_reconcile(get_engine(), get_runtime(), reconcile_settings()).to_json()


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("cleanup", "reconcile"):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        report = run(argv[0])
    except RuntimeUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"job": argv[0], **report}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
