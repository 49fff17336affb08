"""Tests of the demo model server, run as a real subprocess on 127.0.0.1.

`start_model_server` and `ModelServer` are also used by the job agent tests.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from shared.demo.models import DEMO_MODELS

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_SECONDS = 20.0
STOP_TIMEOUT_SECONDS = 5.0
HTTP_TIMEOUT_SECONDS = 5.0

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
CAFFEINE = "Cn1cnc2c1c(=O)n(C)c(=O)n2C"
IBUPROFEN = "CC(C)Cc1ccc(cc1)C(C)C(=O)O"
INPUTS = [CAFFEINE, ASPIRIN, "not a smiles", ASPIRIN, IBUPROFEN]
SHARED_SERVERS = {"demo-molweight": "sync_server", "demo-descriptors": "async_server"}


def free_port() -> int:
    """Return a port that was free a moment ago (the OS picks it for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ModelServer:
    """A model server subprocess and where it listens."""

    process: subprocess.Popen
    url: str
    log_path: Path

    def stop(self) -> int | None:
        """Send SIGTERM, wait, and kill on timeout. Return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        return self.process.returncode


def start_model_server(model_id: str, log_dir: Path, *options: str) -> ModelServer:
    """Start the model server and wait until /healthz returns 200 or 503."""
    port = free_port()
    log_path = log_dir / f"model-server-{model_id}-{port}.log"
    command = [
        sys.executable,
        "-m",
        "shared.demo.model_server",
        "--model",
        model_id,
        "--port",
        str(port),
        *options,
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT
        )
    server = ModelServer(process, f"http://127.0.0.1:{port}", log_path)

    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"model server exited with {process.returncode}: {log_path.read_text()}"
            )
        try:
            requests.get(f"{server.url}/healthz", timeout=1)
        except requests.ConnectionError:
            time.sleep(0.02)
            continue
        return server

    server.stop()
    raise RuntimeError(
        f"model server did not listen on {server.url} within "
        f"{START_TIMEOUT_SECONDS} s: {log_path.read_text()}"
    )


StartServer = Callable[..., ModelServer]


@pytest.fixture
def model_server(tmp_path) -> Iterator[StartServer]:
    """Yield a function that starts model servers, and stop them all after."""
    servers: list[ModelServer] = []

    def start(model_id: str, *options: str) -> ModelServer:
        server = start_model_server(model_id, tmp_path, *options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def sync_server(tmp_path_factory) -> Iterator[ModelServer]:
    """A demo-molweight server shared by the tests that do not change it."""
    server = start_model_server("demo-molweight", tmp_path_factory.mktemp("sync"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def async_server(tmp_path_factory) -> Iterator[ModelServer]:
    """A demo-descriptors server shared by the tests that do not change it."""
    server = start_model_server("demo-descriptors", tmp_path_factory.mktemp("async"))
    yield server
    server.stop()


def wait_for_job(url: str, job_id: str) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = requests.get(
            f"{url}/job/status/{job_id}", timeout=HTTP_TIMEOUT_SECONDS
        ).json()
        if status["status"] != "pending":
            return status
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still pending after 10 s")


def expected_rows(model_id: str, inputs: list[str]) -> list[dict]:
    return [DEMO_MODELS[model_id].compute(smiles) for smiles in inputs]


def test_healthz_ok(sync_server):
    response = requests.get(f"{sync_server.url}/healthz", timeout=HTTP_TIMEOUT_SECONDS)

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_503_during_startup_delay(model_server):
    server = model_server("demo-molweight", "--startup-delay", "1.5")

    loading = requests.get(f"{server.url}/healthz", timeout=HTTP_TIMEOUT_SECONDS)
    run_while_loading = requests.post(
        f"{server.url}/run", json=[ASPIRIN], timeout=HTTP_TIMEOUT_SECONDS
    )
    time.sleep(1.6)
    ready = requests.get(f"{server.url}/healthz", timeout=HTTP_TIMEOUT_SECONDS)

    assert loading.status_code == 503
    assert run_while_loading.status_code == 503
    assert ready.status_code == 200


@pytest.mark.parametrize("model_id", ["demo-molweight", "demo-qed"])
def test_sync_run_keeps_order_and_duplicates(model_server, model_id):
    server = model_server(model_id)

    response = requests.post(
        f"{server.url}/run?orient=records&min_workers=1&max_workers=12",
        json=INPUTS,
        timeout=HTTP_TIMEOUT_SECONDS,
    )

    assert response.status_code == 200
    rows = response.json()
    assert len(rows) == len(INPUTS)
    assert rows == expected_rows(model_id, INPUTS)
    assert rows[1] == rows[3]
    assert rows[2]["valid"] is False


def test_sync_run_empty_list(sync_server):
    response = requests.post(f"{sync_server.url}/run", json=[], timeout=5)

    assert response.status_code == 200
    assert response.json() == []


def test_async_submit_status_result(async_server):
    server = async_server

    submitted = requests.post(
        f"{server.url}/job/submit?orient=records", json=INPUTS, timeout=5
    )
    assert submitted.status_code == 200
    body = submitted.json()
    assert set(body) == {"job_id", "message"}

    status = wait_for_job(server.url, body["job_id"])
    result = requests.get(f"{server.url}/job/result/{body['job_id']}", timeout=5)

    assert status == {"job_id": body["job_id"], "status": "completed"}
    assert result.status_code == 200
    assert result.json() == expected_rows("demo-descriptors", INPUTS)


def test_async_pending_result_conflict(model_server):
    server = model_server("demo-descriptors", "--run-delay", "1")

    job_id = requests.post(
        f"{server.url}/job/submit", json=[ASPIRIN], timeout=5
    ).json()["job_id"]
    status = requests.get(f"{server.url}/job/status/{job_id}", timeout=5)
    result = requests.get(f"{server.url}/job/result/{job_id}", timeout=5)

    assert status.json()["status"] == "pending"
    assert result.status_code == 409
    assert result.json()["error"] == "job not completed"


def test_async_fault_job_failed(model_server):
    server = model_server("demo-descriptors", "--fault", "job-failed")

    job_id = requests.post(
        f"{server.url}/job/submit", json=[ASPIRIN], timeout=5
    ).json()["job_id"]
    status = wait_for_job(server.url, job_id)

    assert status["status"] == "failed"
    assert "simulated model failure" in status["reason"]


def test_sync_fault_non_list(model_server):
    server = model_server("demo-molweight", "--fault", "non-list")

    response = requests.post(f"{server.url}/run", json=[ASPIRIN], timeout=5)

    assert response.status_code == 200
    assert isinstance(response.json(), dict)


@pytest.mark.parametrize(
    ("model_id", "path"),
    [("demo-molweight", "/run"), ("demo-descriptors", "/job/submit")],
)
@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not json", "invalid JSON body"),
        (b'{"smiles": "CCO"}', "invalid input"),
        (b'"CCO"', "invalid input"),
        (b'["CCO", 5]', "invalid input"),
        (b'["CCO", null]', "invalid input"),
        (b"", "invalid JSON body"),
    ],
)
def test_bad_body_returns_400(request, model_id, path, body, error):
    server = request.getfixturevalue(SHARED_SERVERS[model_id])

    response = requests.post(f"{server.url}{path}", data=body, timeout=5)

    assert response.status_code == 400
    assert response.json()["error"] == error
    assert response.json()["detail"]


@pytest.mark.parametrize("route", ["status", "result"])
def test_unknown_job_id_returns_404(async_server, route):
    response = requests.get(f"{async_server.url}/job/{route}/no-such-job", timeout=5)

    assert response.status_code == 404
    assert "no-such-job" in response.json()["detail"]


@pytest.mark.parametrize(
    ("model_id", "method", "path"),
    [
        ("demo-molweight", "POST", "/job/submit"),
        ("demo-molweight", "GET", "/job/status/abc"),
        ("demo-descriptors", "POST", "/run"),
        ("demo-descriptors", "GET", "/nowhere"),
    ],
)
def test_other_mode_routes_return_404(request, model_id, method, path):
    server = request.getfixturevalue(SHARED_SERVERS[model_id])

    response = requests.request(method, f"{server.url}{path}", json=[], timeout=5)

    assert response.status_code == 404
    assert response.json()["error"] == f"not found: {path}"


def test_sigterm_stops_cleanly(model_server):
    server = model_server("demo-qed")

    exit_code = server.stop()

    assert exit_code == 0
    assert "model_server.stopped" in server.log_path.read_text()


def test_invalid_port_exits_2(tmp_path):
    command = [
        sys.executable,
        "-m",
        "shared.demo.model_server",
        "--model",
        "demo-qed",
        "--port",
        "70000",
    ]

    completed = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=20, check=False
    )

    assert completed.returncode == 2
    assert "--port is 70000" in completed.stderr
