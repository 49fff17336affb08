"""Run the periodic jobs on a schedule inside the local stack.

The Kubernetes CronJobs run `python -m shared.cron <job>` on their
schedules; locally, a thread runs the same command, with the functions'
environment, every JOB_INTERVALS seconds. Each run is its own process, as
a CronJob's pod is, and its output goes to `<log dir>/cron.log`.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from shared.logs import get_logger, log_event

logger = get_logger(__name__)

# Same periods as the CronJobs in knative/cronjobs.yaml.
JOB_INTERVALS = {"reconcile": 60.0, "cleanup": 3600.0}
JOB_TIMEOUT_SECONDS = 300


class LocalCron:
    """Run each job every interval until stopped; the first runs come after
    one interval, as on a freshly applied CronJob."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        cwd: Path,
        intervals: dict[str, float] | None = None,
    ) -> None:
        self.env = env
        self.log_path = log_path
        self.cwd = cwd
        self.intervals = dict(intervals or JOB_INTERVALS)
        self.runs: dict[str, int] = dict.fromkeys(self.intervals, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name="local-cron", daemon=True
        )

    def start(self) -> LocalCron:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        now = time.monotonic()
        due = {job: now + interval for job, interval in self.intervals.items()}
        while not self._stop.is_set():
            job, when = min(due.items(), key=lambda item: item[1])
            if self._stop.wait(max(0.0, when - time.monotonic())):
                return
            self.run(job)
            due[job] = time.monotonic() + self.intervals[job]

    def run(self, job: str) -> int:
        """Run one job now, as a CronJob pod would; return its exit code."""
        with self.log_path.open("a", encoding="utf-8") as log:
            try:
                finished = subprocess.run(
                    [sys.executable, "-m", "shared.cron", job],
                    cwd=self.cwd,
                    env=self.env,
                    stdout=log,
                    stderr=log,
                    timeout=JOB_TIMEOUT_SECONDS,
                    check=False,
                )
                code = finished.returncode
            except subprocess.TimeoutExpired:
                code = -1
        self.runs[job] += 1
        log_event(logger, "localcron.ran", job=job, exit_code=code)
        return code
