"""The job agent: runs one work request on the model server beside it.

Every model instance runs this agent next to the model server (a sidecar
container on Kubernetes, a second process locally). The agent waits for the
model server to become healthy, fetches its work request from the hub's jobs
function, runs the model over the inputs and posts the result rows, or a
failure reason, back to the hub. Then it exits with 0 when the hub accepted
the results, 1 on any failure and 2 on invalid configuration.

Run it as `python -m shared.agent`. Environment variables are its whole
configuration (see `AgentConfig.from_env`). Transient errors (connection
errors, timeouts, HTTP 5xx and 429) are retried with exponential backoff,
and every other error is final. The agent never logs inputs, results or the
job token. Its failure reasons quote none of them either, except that a
failed model job's own reason is forwarded unchanged.
"""

from __future__ import annotations

import logging
import math
import os
import random
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from shared.logs import get_logger, log_event

EXECUTION_MODES = ("sync", "async")
MAX_SECONDS = 7 * 24 * 3600
MAX_REASON_CHARS = 500
HEALTH_POLL_SECONDS = 0.25
# First pause between async job status polls; it doubles up to the interval.
FIRST_POLL_SECONDS = 0.1
RUN_QUERY = "orient=records&min_workers=1&max_workers=12"

# The hub returns these when the request must not run here: 401 or 403 for a
# rejected token, 404 for an unknown request and 409 when it no longer wants
# the request run. Retrying or reporting a failure cannot help.
FINAL_HUB_STATUSES = frozenset({401, 403, 404, 409})
RESULT_REJECTED_STATUS = 422

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2

logger = get_logger(__name__)


class ConfigError(ValueError):
    """One or more environment variables are missing or invalid."""


class AgentError(Exception):
    """The work request cannot finish.

    `reason` explains why. The agent writes it without inputs or results, but
    a failed model job's own reason is forwarded as the model wrote it.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JobFailed(AgentError):
    """The run failed and the agent reports `reason` to the hub."""


class JobAbandoned(AgentError):
    """The hub rejected the token or the request, so the agent reports nothing."""


class DeadlineExceeded(JobFailed):
    """A call did not finish before its deadline."""


@dataclass(frozen=True)
class AgentConfig:
    """The agent's settings, read from environment variables."""

    model_url: str
    jobs_url: str
    job_token: str = field(repr=False)
    execution_mode: str
    model_timeout_seconds: float
    health_timeout_seconds: float = 300.0
    poll_interval_seconds: float = 2.0
    request_timeout_seconds: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AgentConfig:
        """Read and validate the settings, raising ConfigError with every problem."""
        errors: list[str] = []
        config = cls(
            model_url=_read_url(env, "MODEL_URL", errors),
            jobs_url=_read_url(env, "JOBS_URL", errors),
            job_token=_read_token(env, errors),
            execution_mode=_read_mode(env, errors),
            model_timeout_seconds=_read_seconds(
                env, "MODEL_TIMEOUT_SECONDS", 3600.0, errors
            ),
            health_timeout_seconds=_read_seconds(
                env, "HEALTH_TIMEOUT_SECONDS", 300.0, errors
            ),
            poll_interval_seconds=_read_seconds(
                env, "POLL_INTERVAL_SECONDS", 2.0, errors
            ),
            request_timeout_seconds=_read_seconds(
                env, "REQUEST_TIMEOUT_SECONDS", 30.0, errors
            ),
        )
        if errors:
            raise ConfigError("invalid agent configuration:\n  " + "\n  ".join(errors))
        return config


def _read_url(env: Mapping[str, str], name: str, errors: list[str]) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        errors.append(f"{name} is missing: set it to an http(s) URL")
        return ""

    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        errors.append(
            f"{name} is {raw!r}: use an http(s) URL with a host, such as "
            "http://127.0.0.1:8001"
        )
        return ""
    if parts.query or parts.fragment:
        errors.append(f"{name} is {raw!r}: remove the query string and fragment")
        return ""
    return raw.rstrip("/")


def _read_token(env: Mapping[str, str], errors: list[str]) -> str:
    # The token is never echoed, not even in the error message.
    token = env.get("JOB_TOKEN", "").strip()
    if not token:
        errors.append("JOB_TOKEN is missing: set it to the instance's bearer token")
    elif any(character.isspace() for character in token):
        errors.append("JOB_TOKEN contains whitespace: set it to the bearer token only")
    return token


def _read_mode(env: Mapping[str, str], errors: list[str]) -> str:
    mode = env.get("EXECUTION_MODE", "").strip()
    if mode not in EXECUTION_MODES:
        errors.append(f"EXECUTION_MODE is {mode!r}: set it to 'sync' or 'async'")
    return mode


def _read_seconds(
    env: Mapping[str, str], name: str, default: float, errors: list[str]
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default

    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_SECONDS:
        errors.append(
            f"{name} is {raw!r}: set it to a number of seconds greater than 0 "
            f"and at most {MAX_SECONDS}"
        )
        return default
    return value


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long transient errors are retried, per call."""

    max_attempts: int = 6
    base_delay_seconds: float = 0.5
    max_delay_seconds: float = 10.0
    max_retry_after_seconds: float = 60.0
    max_total_seconds: float = 120.0

    def backoff_seconds(self, attempt: int) -> float:
        """Return the delay after failed attempt `attempt` (1-based), jittered."""
        delay = min(
            self.max_delay_seconds, self.base_delay_seconds * 2 ** (attempt - 1)
        )
        # Jitter spreads the retries of many instances hitting one hub.
        return delay * random.uniform(0.5, 1.0)  # noqa: S311 (not for security)


def parse_retry_after(value: str | None) -> float | None:
    """Return the Retry-After delay in seconds, or None if absent or invalid."""
    if not value:
        return None

    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - time.time())


def is_transient_status(status: int) -> bool:
    return status == 429 or 500 <= status <= 599


@dataclass(frozen=True)
class Job:
    """The work request the hub sent: its ids and the SMILES inputs."""

    request_id: str
    model_id: str
    execution_mode: str
    inputs: list[str] = field(repr=False)


def parse_job(payload: Any) -> Job:
    """Validate the GET /job response body, raising JobFailed when it is malformed."""
    if not isinstance(payload, dict):
        raise JobFailed(
            f"hub returned a job that is {json_type(payload)}, not an object"
        )

    for key in ("request_id", "model_id", "execution_mode"):
        if not isinstance(payload.get(key), str) or not payload[key]:
            raise JobFailed(f"hub returned a job without a string {key!r}")

    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        raise JobFailed("hub returned a job whose 'inputs' is not a list of strings")

    return Job(
        request_id=payload["request_id"],
        model_id=payload["model_id"],
        execution_mode=payload["execution_mode"],
        inputs=inputs,
    )


def json_type(value: Any) -> str:
    """Return the JSON name of a decoded value's type, for failure reasons."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def truncate_reason(reason: str) -> str:
    if len(reason) <= MAX_REASON_CHARS:
        return reason
    return reason[: MAX_REASON_CHARS - 3] + "..."


def format_seconds(value: float) -> str:
    return f"{value:g}"


class RetryingClient:
    """Send HTTP requests, retrying transient errors under a RetryPolicy."""

    def __init__(
        self,
        session: requests.Session,
        policy: RetryPolicy,
        request_timeout: float,
        log_fields: dict[str, Any],
    ) -> None:
        self.session = session
        self.policy = policy
        self.request_timeout = request_timeout
        self.log_fields = log_fields

    def send(
        self,
        method: str,
        url: str,
        *,
        action: str,
        deadline: float = math.inf,
        read_timeout: float | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send the request, retrying transient errors, and return the response.

        `action` is a static label such as "GET /job" for logs and reasons.
        `deadline` is a time.monotonic() value no attempt or wait may pass,
        and `read_timeout` replaces the request timeout for reading the
        response. Raises DeadlineExceeded past the deadline and JobFailed once
        the attempts or the policy's total time run out.
        """
        retry_until = min(deadline, time.monotonic() + self.policy.max_total_seconds)
        problem = "no attempt made"

        for attempt in range(1, self.policy.max_attempts + 1):
            timeout = self._timeout(action, deadline, read_timeout)
            try:
                response = self.session.request(method, url, timeout=timeout, **kwargs)
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as error:
                problem = type(error).__name__
                retry_after = None
            else:
                if not is_transient_status(response.status_code):
                    return response
                problem = f"HTTP {response.status_code}"
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                response.close()

            if attempt == self.policy.max_attempts:
                break
            delay = self._retry_delay(attempt, retry_after)
            if time.monotonic() + delay >= deadline:
                raise DeadlineExceeded(f"{action} did not finish before the deadline")
            if time.monotonic() + delay > retry_until:
                break

            log_event(
                logger,
                "agent.retrying",
                level=logging.WARNING,
                action=action,
                attempt=attempt,
                delay_seconds=round(delay, 3),
                error=problem,
                **self.log_fields,
            )
            time.sleep(delay)

        raise JobFailed(f"{action} failed after {attempt} attempts: {problem}")

    def _retry_delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is None:
            return self.policy.backoff_seconds(attempt)
        return min(retry_after, self.policy.max_retry_after_seconds)

    def _timeout(
        self, action: str, deadline: float, read_timeout: float | None
    ) -> tuple[float, float]:
        """Return (connect, read) timeouts capped at the deadline, or raise."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded(f"{action} did not finish before the deadline")

        read = self.request_timeout if read_timeout is None else read_timeout
        return min(self.request_timeout, remaining), min(read, remaining)


class Agent:
    """Run one work request: wait for the model, fetch, run and report."""

    def __init__(
        self,
        config: AgentConfig,
        retry_policy: RetryPolicy | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.config = config
        self.log_fields: dict[str, Any] = {}
        self.session = session or requests.Session()
        self.client = RetryingClient(
            self.session,
            retry_policy or RetryPolicy(),
            config.request_timeout_seconds,
            self.log_fields,
        )

    def run(self) -> int:
        """Run the work request and return the process exit code (0 or 1)."""
        log_event(logger, "agent.started", execution_mode=self.config.execution_mode)
        try:
            self.wait_for_model()
            job = self.fetch_job()
            rows = self.run_model(job)
            self.post_results(rows)
        except JobAbandoned as error:
            log_event(
                logger,
                "agent.abandoned",
                level=logging.ERROR,
                reason=error.reason,
                **self.log_fields,
            )
            return EXIT_FAILED
        except JobFailed as error:
            self.report_failure(error.reason)
            return EXIT_FAILED
        except Exception as error:
            # A bug must still end the request, or the hub waits for its timeout.
            log_event(
                logger,
                "agent.crashed",
                level=logging.ERROR,
                exc_info=True,
                **self.log_fields,
            )
            self.report_failure(f"job agent crashed: {type(error).__name__}")
            return EXIT_FAILED
        finally:
            self.session.close()

        log_event(logger, "agent.finished", **self.log_fields)
        return EXIT_OK

    def wait_for_model(self) -> None:
        """Poll GET /healthz until it returns 200 or the health timeout passes."""
        timeout = self.config.health_timeout_seconds
        started = time.monotonic()
        deadline = started + timeout
        url = f"{self.config.model_url}/healthz"

        attempts = 0
        last_problem = "no attempt made"
        while time.monotonic() < deadline:
            attempts += 1
            last_problem = self._check_health(url, deadline)
            if not last_problem:
                log_event(
                    logger,
                    "agent.model_healthy",
                    wait_seconds=round(time.monotonic() - started, 3),
                )
                return
            time.sleep(max(0.0, min(HEALTH_POLL_SECONDS, deadline - time.monotonic())))

        # One event for the whole wait: a failed poll is expected while the
        # model loads, so logging each one would flood the log.
        log_event(
            logger,
            "agent.model_unhealthy",
            level=logging.ERROR,
            attempts=attempts,
            error=last_problem,
        )
        raise JobFailed(
            f"model server did not become healthy within {format_seconds(timeout)} s"
        )

    def _check_health(self, url: str, deadline: float) -> str:
        """Return "" when GET /healthz returns 200, else what went wrong."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "health timeout passed"

        timeout = min(self.config.request_timeout_seconds, remaining)
        try:
            response = self.session.get(url, timeout=timeout)
        except requests.RequestException as error:
            return type(error).__name__
        response.close()
        if response.status_code != 200:
            return f"HTTP {response.status_code}"
        return ""

    def fetch_job(self) -> Job:
        """Fetch the work request from the hub (GET /job)."""
        response = self.client.send(
            "GET",
            f"{self.config.jobs_url}/job",
            action="GET /job",
            headers=self._hub_headers(),
        )
        if response.status_code in FINAL_HUB_STATUSES:
            raise JobAbandoned(f"hub returned HTTP {response.status_code} for GET /job")
        if response.status_code != 200:
            raise JobFailed(f"hub returned HTTP {response.status_code} for GET /job")

        job = parse_job(_decode_json(response, "hub", "GET /job"))
        self.log_fields.update(request_id=job.request_id, model_id=job.model_id)
        log_event(
            logger, "agent.job_fetched", inputs=len(job.inputs), **self.log_fields
        )

        if job.execution_mode != self.config.execution_mode:
            raise JobFailed(
                f"the job's execution mode is {job.execution_mode!r} but the "
                f"agent's EXECUTION_MODE is {self.config.execution_mode!r}"
            )
        return job

    def run_model(self, job: Job) -> list[Any]:
        """Run the model over the job's inputs within MODEL_TIMEOUT_SECONDS."""
        timeout = self.config.model_timeout_seconds
        started = time.monotonic()
        deadline = started + timeout

        try:
            if self.config.execution_mode == "sync":
                rows = self._run_sync(job.inputs, deadline)
            else:
                rows = self._run_async(job.inputs, deadline)
        except DeadlineExceeded as error:
            raise JobFailed(
                f"model did not finish within {format_seconds(timeout)} s"
            ) from error

        if len(rows) != len(job.inputs):
            raise JobFailed(
                f"model returned {len(rows)} rows for {len(job.inputs)} inputs"
            )
        log_event(
            logger,
            "agent.model_finished",
            rows=len(rows),
            seconds=round(time.monotonic() - started, 3),
            **self.log_fields,
        )
        return rows

    def _run_sync(self, inputs: list[str], deadline: float) -> list[Any]:
        # The model computes while the request is open, so reading the
        # response may take the whole model budget, not REQUEST_TIMEOUT_SECONDS.
        response = self.client.send(
            "POST",
            f"{self.config.model_url}/run?{RUN_QUERY}",
            action="POST /run",
            deadline=deadline,
            read_timeout=math.inf,
            json=inputs,
        )
        _raise_for_model_status(response, "POST /run")
        return _require_rows(_decode_json(response, "model", "POST /run"), "POST /run")

    def _run_async(self, inputs: list[str], deadline: float) -> list[Any]:
        # NOTE: a submit retried after a lost response may start a second job
        # on the model server. The agent polls only the job whose id it got.
        response = self.client.send(
            "POST",
            f"{self.config.model_url}/job/submit",
            action="POST /job/submit",
            deadline=deadline,
            json=inputs,
        )
        _raise_for_model_status(response, "POST /job/submit")
        submitted = _decode_json(response, "model", "POST /job/submit")
        job_id = submitted.get("job_id") if isinstance(submitted, dict) else None
        if not isinstance(job_id, str) or not job_id:
            raise JobFailed("model returned no string job_id for POST /job/submit")

        log_event(logger, "agent.model_job_submitted", job_id=job_id, **self.log_fields)
        self._wait_for_model_job(job_id, deadline)

        response = self.client.send(
            "GET",
            f"{self.config.model_url}/job/result/{job_id}",
            action="GET /job/result",
            deadline=deadline,
        )
        _raise_for_model_status(response, "GET /job/result")
        payload = _decode_json(response, "model", "GET /job/result")
        return _require_rows(payload, "GET /job/result")

    def _wait_for_model_job(self, job_id: str, deadline: float) -> None:
        """Poll GET /job/status until the job completes or fails.

        The pause starts at FIRST_POLL_SECONDS and doubles up to
        POLL_INTERVAL_SECONDS, so short jobs finish without waiting a whole
        interval. Raises DeadlineExceeded once `deadline` passes, because
        send() checks it on every poll. The poll count is capped to match.
        """
        url = f"{self.config.model_url}/job/status/{job_id}"
        interval = self.config.poll_interval_seconds
        pause = min(FIRST_POLL_SECONDS, interval)
        max_polls = math.ceil(self.config.model_timeout_seconds / pause)

        for _ in range(max_polls + 1):
            response = self.client.send(
                "GET", url, action="GET /job/status", deadline=deadline
            )
            _raise_for_model_status(response, "GET /job/status")
            payload = _decode_json(response, "model", "GET /job/status")
            status = payload.get("status") if isinstance(payload, dict) else None

            if status == "completed":
                return
            if status == "failed":
                raise JobFailed(_job_failed_reason(payload))
            if not isinstance(status, str):
                raise JobFailed("model returned no string status for GET /job/status")

            time.sleep(max(0.0, min(pause, deadline - time.monotonic())))
            pause = min(pause * 2, interval)

        raise DeadlineExceeded("GET /job/status polled the maximum number of times")

    def post_results(self, rows: list[Any]) -> None:
        """Post the rows to the hub (POST /job/result)."""
        response = self.client.send(
            "POST",
            f"{self.config.jobs_url}/job/result",
            action="POST /job/result",
            headers=self._hub_headers(),
            json={"results": rows},
        )
        status = response.status_code
        if 200 <= status <= 299:
            log_event(logger, "agent.results_posted", rows=len(rows), **self.log_fields)
            return
        if status == RESULT_REJECTED_STATUS or status in FINAL_HUB_STATUSES:
            # With 422 the hub has already failed the request itself.
            raise JobAbandoned(f"hub rejected POST /job/result with HTTP {status}")
        raise JobFailed(f"hub rejected POST /job/result with HTTP {status}")

    def report_failure(self, reason: str) -> None:
        """Send the failure reason to the hub (POST /job/failure), logging errors."""
        reason = truncate_reason(reason)
        log_event(
            logger,
            "agent.failed",
            level=logging.ERROR,
            reason=reason,
            **self.log_fields,
        )

        try:
            response = self.client.send(
                "POST",
                f"{self.config.jobs_url}/job/failure",
                action="POST /job/failure",
                headers=self._hub_headers(),
                json={"reason": reason},
            )
        except AgentError as error:
            log_event(
                logger,
                "agent.failure_report_failed",
                level=logging.ERROR,
                error=error.reason,
                **self.log_fields,
            )
            return

        if not 200 <= response.status_code <= 299:
            log_event(
                logger,
                "agent.failure_report_rejected",
                level=logging.ERROR,
                status=response.status_code,
                **self.log_fields,
            )
            return
        log_event(logger, "agent.failure_reported", **self.log_fields)

    def _hub_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.job_token}"}


def _decode_json(response: requests.Response, peer: str, action: str) -> Any:
    try:
        return response.json()
    except requests.JSONDecodeError as error:
        raise JobFailed(f"{peer} returned invalid JSON for {action}") from error


def _raise_for_model_status(response: requests.Response, action: str) -> None:
    # The body is left out of the reason because it may echo inputs.
    if response.status_code != 200:
        raise JobFailed(f"model returned HTTP {response.status_code} for {action}")


def _require_rows(payload: Any, action: str) -> list[Any]:
    if not isinstance(payload, list):
        raise JobFailed(
            f"model returned {json_type(payload)} for {action}, expected a list "
            "of result rows"
        )
    return payload


def _job_failed_reason(payload: dict[str, Any]) -> str:
    detail = payload.get("reason") or payload.get("error") or payload.get("detail")
    if isinstance(detail, str) and detail:
        return f"model job failed: {detail}"
    return "model job failed without a reason"


def main(env: Mapping[str, str] | None = None) -> int:
    """Read the configuration from the environment and run the agent."""
    try:
        config = AgentConfig.from_env(os.environ if env is None else env)
    except ConfigError as error:
        log_event(logger, "agent.config_invalid", level=logging.ERROR, error=str(error))
        print(f"job agent: {error}", file=sys.stderr)
        return EXIT_CONFIG

    return Agent(config).run()


if __name__ == "__main__":
    sys.exit(main())
