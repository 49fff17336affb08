"""Tests of the job agent against real model servers and a fake hub.

The model servers are real subprocesses of `shared.demo.model_server`. The
hub's jobs function is a small Flask app in a thread that records every call
and responds from a per-route script, so a test can make it fail on purpose.
Most tests run the agent in-process through `Agent.run()`, and two run it
as `python -m shared.agent` to check the exit codes of the real entry point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask, Response, request
from werkzeug.serving import make_server

from shared.agent import Agent, AgentConfig, ConfigError, RetryPolicy, parse_retry_after
from shared.demo.models import DEMO_MODELS
from tests.test_model_server import ROOT, ModelServer, free_port, start_model_server

TOKEN = "instance-token-for-tests"
ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
CAFFEINE = "Cn1cnc2c1c(=O)n(C)c(=O)n2C"
IBUPROFEN = "CC(C)Cc1ccc(cc1)C(C)C(=O)O"
INPUTS = [IBUPROFEN, ASPIRIN, "not a smiles", CAFFEINE, ASPIRIN]

FAST_RETRY = RetryPolicy(
    max_attempts=4,
    base_delay_seconds=0.05,
    max_delay_seconds=0.2,
    max_retry_after_seconds=2.0,
    max_total_seconds=5.0,
)

JOB_ROUTE = "GET /job"
RESULT_ROUTE = "POST /job/result"
FAILURE_ROUTE = "POST /job/failure"


@dataclass
class HubCall:
    """One request the fake hub received."""

    route: str
    authorization: str | None
    body: Any


@dataclass
class FakeHub:
    """The hub's jobs function routes that the agent calls, recording each call."""

    job: dict[str, Any]
    calls: list[HubCall] = field(default_factory=list)
    scripts: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def script(self, route: str, *statuses: int, headers: dict | None = None) -> None:
        """Respond to the next calls to `route` with these statuses, in order."""
        self.scripts.setdefault(route, []).extend(
            (status, headers or {}) for status in statuses
        )

    def calls_to(self, route: str) -> list[HubCall]:
        with self.lock:
            return [call for call in self.calls if call.route == route]

    def handle(self, route: str) -> Response:
        authorization = request.headers.get("Authorization")
        body = request.get_json(silent=True)
        with self.lock:
            self.calls.append(HubCall(route, authorization, body))
            queue = self.scripts.get(route, [])
            scripted = queue.pop(0) if queue else None

        if authorization != f"Bearer {TOKEN}":
            return json_response(401, {"error": "invalid token"})
        if scripted is not None:
            status, headers = scripted
            return json_response(status, {"error": "scripted"}, headers)
        if route == JOB_ROUTE:
            return json_response(200, self.job)
        return json_response(200, {"status": "ok"})


def json_response(status: int, body: Any, headers: dict | None = None) -> Response:
    return Response(
        json.dumps(body), status=status, headers=headers, mimetype="application/json"
    )


def make_hub_app(hub: FakeHub) -> Flask:
    app = Flask("fake_hub")
    app.add_url_rule("/jobs/job", "job", lambda: hub.handle(JOB_ROUTE), methods=["GET"])
    app.add_url_rule(
        "/jobs/job/result", "result", lambda: hub.handle(RESULT_ROUTE), methods=["POST"]
    )
    app.add_url_rule(
        "/jobs/job/failure",
        "failure",
        lambda: hub.handle(FAILURE_ROUTE),
        methods=["POST"],
    )
    return app


def job_for(model_id: str, inputs: list[str] = INPUTS) -> dict[str, Any]:
    return {
        "request_id": "req-123",
        "model_id": model_id,
        "execution_mode": DEMO_MODELS[model_id].execution_mode,
        "inputs": inputs,
    }


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    """Serve a FakeHub on 127.0.0.1 in a thread. Tests may replace `hub.job`."""
    fake = FakeHub(job=job_for("demo-molweight"))
    server = make_server("127.0.0.1", 0, make_hub_app(fake), threaded=True)
    fake.url = f"http://127.0.0.1:{server.port}/jobs"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def sync_server(tmp_path_factory) -> Iterator[ModelServer]:
    server = start_model_server("demo-molweight", tmp_path_factory.mktemp("sync"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def async_server(tmp_path_factory) -> Iterator[ModelServer]:
    server = start_model_server("demo-descriptors", tmp_path_factory.mktemp("async"))
    yield server
    server.stop()


@pytest.fixture
def model_server(tmp_path) -> Iterator:
    """Yield a function that starts model servers, and stop them all after."""
    servers: list[ModelServer] = []

    def start(model_id: str, *options: str) -> ModelServer:
        server = start_model_server(model_id, tmp_path, *options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def make_config(model_url: str, hub: FakeHub, **overrides: Any) -> AgentConfig:
    settings: dict[str, Any] = {
        "model_url": model_url,
        "jobs_url": hub.url,
        "job_token": TOKEN,
        "execution_mode": hub.job["execution_mode"],
        "model_timeout_seconds": 10.0,
        "health_timeout_seconds": 5.0,
        "poll_interval_seconds": 0.05,
        "request_timeout_seconds": 5.0,
    }
    settings.update(overrides)
    return AgentConfig(**settings)


def run_agent(model_url: str, hub: FakeHub, **overrides: Any) -> int:
    return Agent(make_config(model_url, hub, **overrides), FAST_RETRY).run()


def failure_reasons(hub: FakeHub) -> list[str]:
    return [call.body["reason"] for call in hub.calls_to(FAILURE_ROUTE)]


def logged_text(caplog) -> str:
    """Return every agent log record's event and fields as one string."""
    lines = []
    for record in caplog.records:
        fields = getattr(record, "fields", {})
        lines.append(record.getMessage() + " " + json.dumps(fields, default=str))
    return "\n".join(lines)


def test_sync_happy_path(sync_server, hub, caplog):
    caplog.set_level("DEBUG")

    exit_code = run_agent(sync_server.url, hub)

    assert exit_code == 0
    job_calls = hub.calls_to(JOB_ROUTE)
    result_calls = hub.calls_to(RESULT_ROUTE)
    assert len(job_calls) == 1
    assert job_calls[0].authorization == f"Bearer {TOKEN}"
    assert len(result_calls) == 1
    assert result_calls[0].authorization == f"Bearer {TOKEN}"
    expected = [DEMO_MODELS["demo-molweight"].compute(smiles) for smiles in INPUTS]
    assert result_calls[0].body == {"results": expected}
    assert hub.calls_to(FAILURE_ROUTE) == []

    logs = logged_text(caplog)
    assert "agent.results_posted" in logs
    assert TOKEN not in logs
    assert ASPIRIN not in logs


def test_async_happy_path(async_server, hub):
    hub.job = job_for("demo-descriptors")

    exit_code = run_agent(async_server.url, hub)

    assert exit_code == 0
    result_calls = hub.calls_to(RESULT_ROUTE)
    assert len(result_calls) == 1
    expected = [DEMO_MODELS["demo-descriptors"].compute(smiles) for smiles in INPUTS]
    assert result_calls[0].body == {"results": expected}
    assert hub.calls_to(FAILURE_ROUTE) == []


def test_model_never_healthy(model_server, hub):
    server = model_server("demo-molweight", "--startup-delay", "60")

    started = time.monotonic()
    exit_code = run_agent(server.url, hub, health_timeout_seconds=1.0)
    elapsed = time.monotonic() - started

    assert exit_code == 1
    assert failure_reasons(hub) == ["model server did not become healthy within 1 s"]
    assert hub.calls_to(JOB_ROUTE) == []
    assert elapsed < 5


def test_model_unreachable_health_timeout(hub):
    closed_port = free_port()

    exit_code = run_agent(
        f"http://127.0.0.1:{closed_port}", hub, health_timeout_seconds=0.5
    )

    assert exit_code == 1
    assert failure_reasons(hub) == ["model server did not become healthy within 0.5 s"]


def test_async_job_failed_reported(model_server, hub):
    hub.job = job_for("demo-descriptors")
    server = model_server("demo-descriptors", "--fault", "job-failed")

    exit_code = run_agent(server.url, hub)

    assert exit_code == 1
    reasons = failure_reasons(hub)
    assert len(reasons) == 1
    assert reasons[0].startswith("model job failed: simulated model failure")
    assert hub.calls_to(RESULT_ROUTE) == []


def test_get_job_409_not_retried(sync_server, hub):
    hub.script(JOB_ROUTE, 409)

    exit_code = run_agent(sync_server.url, hub)

    assert exit_code == 1
    assert len(hub.calls_to(JOB_ROUTE)) == 1
    assert hub.calls_to(RESULT_ROUTE) == []
    assert hub.calls_to(FAILURE_ROUTE) == []


def test_wrong_token_not_retried(sync_server, hub):
    config = make_config(sync_server.url, hub, job_token="wrong-token")

    exit_code = Agent(config, FAST_RETRY).run()

    assert exit_code == 1
    assert len(hub.calls_to(JOB_ROUTE)) == 1
    assert hub.calls_to(RESULT_ROUTE) == []


def test_get_job_503_retried(sync_server, hub):
    hub.script(JOB_ROUTE, 503, 502)

    exit_code = run_agent(sync_server.url, hub)

    assert exit_code == 0
    assert len(hub.calls_to(JOB_ROUTE)) == 3
    assert len(hub.calls_to(RESULT_ROUTE)) == 1


def test_result_503_retried(sync_server, hub):
    hub.script(RESULT_ROUTE, 503)

    exit_code = run_agent(sync_server.url, hub)

    assert exit_code == 0
    result_calls = hub.calls_to(RESULT_ROUTE)
    assert len(result_calls) == 2
    assert result_calls[0].body == result_calls[1].body
    assert hub.calls_to(FAILURE_ROUTE) == []


def test_result_429_honours_retry_after(sync_server, hub):
    hub.script(RESULT_ROUTE, 429, headers={"Retry-After": "1"})

    started = time.monotonic()
    exit_code = run_agent(sync_server.url, hub)
    elapsed = time.monotonic() - started

    assert exit_code == 0
    assert len(hub.calls_to(RESULT_ROUTE)) == 2
    assert elapsed >= 1.0


def test_result_503_retries_exhausted(sync_server, hub):
    hub.script(RESULT_ROUTE, *[503] * FAST_RETRY.max_attempts)

    exit_code = run_agent(sync_server.url, hub)

    assert exit_code == 1
    assert len(hub.calls_to(RESULT_ROUTE)) == FAST_RETRY.max_attempts
    assert failure_reasons(hub) == [
        f"POST /job/result failed after {FAST_RETRY.max_attempts} attempts: HTTP 503"
    ]


def test_result_422_not_reported(sync_server, hub):
    hub.script(RESULT_ROUTE, 422)

    exit_code = run_agent(sync_server.url, hub)

    assert exit_code == 1
    assert len(hub.calls_to(RESULT_ROUTE)) == 1
    assert hub.calls_to(FAILURE_ROUTE) == []


def test_model_non_list_reported(model_server, hub):
    server = model_server("demo-molweight", "--fault", "non-list")

    exit_code = run_agent(server.url, hub)

    assert exit_code == 1
    assert failure_reasons(hub) == [
        "model returned an object for POST /run, expected a list of result rows"
    ]
    assert hub.calls_to(RESULT_ROUTE) == []


def test_execution_mode_mismatch_reported(sync_server, hub):
    hub.job = job_for("demo-descriptors")

    exit_code = run_agent(sync_server.url, hub, execution_mode="sync")

    assert exit_code == 1
    assert failure_reasons(hub) == [
        "the job's execution mode is 'async' but the agent's EXECUTION_MODE is 'sync'"
    ]


@pytest.mark.parametrize("model_id", ["demo-molweight", "demo-descriptors"])
def test_model_timeout_reported(model_server, hub, model_id):
    hub.job = job_for(model_id)
    server = model_server(model_id, "--run-delay", "5")

    started = time.monotonic()
    exit_code = run_agent(server.url, hub, model_timeout_seconds=1.0)
    elapsed = time.monotonic() - started

    assert exit_code == 1
    assert failure_reasons(hub) == ["model did not finish within 1 s"]
    assert hub.calls_to(RESULT_ROUTE) == []
    assert elapsed < 4


def test_failure_reason_truncated(model_server, hub):
    hub.job = job_for("demo-descriptors")
    server = model_server("demo-descriptors", "--fault", "job-failed")
    agent = Agent(make_config(server.url, hub), FAST_RETRY)

    agent.report_failure("x" * 2000)

    reasons = failure_reasons(hub)
    assert len(reasons) == 1
    assert len(reasons[0]) == 500


def agent_env(model_url: str, hub: FakeHub) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "LOG_FORMAT": "json",
        "MODEL_URL": model_url,
        "JOBS_URL": hub.url,
        "JOB_TOKEN": TOKEN,
        "EXECUTION_MODE": hub.job["execution_mode"],
        "MODEL_TIMEOUT_SECONDS": "10",
        "HEALTH_TIMEOUT_SECONDS": "5",
        "POLL_INTERVAL_SECONDS": "0.05",
        "REQUEST_TIMEOUT_SECONDS": "5",
    }


def run_agent_process(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shared.agent"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_agent_process_happy_path(sync_server, hub):
    completed = run_agent_process(agent_env(sync_server.url, hub))

    assert completed.returncode == 0, completed.stderr
    assert len(hub.calls_to(RESULT_ROUTE)) == 1
    assert TOKEN not in completed.stderr
    assert ASPIRIN not in completed.stderr


def test_agent_process_invalid_config(hub):
    env = agent_env("ftp://127.0.0.1:1", hub)
    env["EXECUTION_MODE"] = "batch"
    env["POLL_INTERVAL_SECONDS"] = "-1"
    del env["JOB_TOKEN"]

    completed = run_agent_process(env)

    assert completed.returncode == 2
    assert "MODEL_URL is 'ftp://127.0.0.1:1'" in completed.stderr
    assert "EXECUTION_MODE is 'batch'" in completed.stderr
    assert "POLL_INTERVAL_SECONDS is '-1'" in completed.stderr
    assert "JOB_TOKEN is missing" in completed.stderr
    assert hub.calls == []


def test_config_defaults_and_trailing_slash():
    config = AgentConfig.from_env(
        {
            "MODEL_URL": "http://127.0.0.1:80/",
            "JOBS_URL": "http://127.0.0.1:8080/jobs/",
            "JOB_TOKEN": TOKEN,
            "EXECUTION_MODE": "async",
            "MODEL_TIMEOUT_SECONDS": "3600",
        }
    )

    assert config.model_url == "http://127.0.0.1:80"
    assert config.jobs_url == "http://127.0.0.1:8080/jobs"
    assert config.health_timeout_seconds == 300
    assert config.poll_interval_seconds == 2
    assert config.request_timeout_seconds == 30
    assert TOKEN not in repr(config)


@pytest.mark.parametrize("value", ["0", "abc", "nan", "inf", "-5"])
def test_config_rejects_bad_seconds(value):
    env = {
        "MODEL_URL": "http://127.0.0.1:80",
        "JOBS_URL": "http://127.0.0.1:8080/jobs",
        "JOB_TOKEN": TOKEN,
        "EXECUTION_MODE": "sync",
        "MODEL_TIMEOUT_SECONDS": value,
    }

    with pytest.raises(ConfigError, match="MODEL_TIMEOUT_SECONDS"):
        AgentConfig.from_env(env)


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("", None), ("3", 3.0), ("soon", None), ("-1", None)],
)
def test_parse_retry_after(header, expected):
    assert parse_retry_after(header) == expected


def test_parse_retry_after_http_date():
    header = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))

    delay = parse_retry_after(header)

    assert delay is not None
    assert 25 <= delay <= 31
