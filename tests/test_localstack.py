"""Tests of the local stack: real function processes, Broker and pod server.

The end-to-end test runs a work request through every function, the demo
model server and the job agent, against the PostgreSQL schema of this test
run (see conftest.py).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import requests

from shared.localstack import FunctionSpec, LocalStack, LocalStackError
from shared.loopback import free_port, free_ports

HTTP_TIMEOUT = 10
INPUTS = ["CCO", "CC(=O)Oc1ccccc1C(=O)O", "not-a-smiles"]


def accepts_connections(url: str) -> bool:
    port = int(url.rsplit(":", 1)[1])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_status(urls, headers, request_id: str, timeout: float = 45.0) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        response = requests.get(
            f"{urls['requests']}/{request_id}", headers=headers, timeout=HTTP_TIMEOUT
        )
        response.raise_for_status()
        body = response.json()
        if body["status"] in ("COMPLETED", "FAILED"):
            return body
        time.sleep(0.25)
    raise AssertionError(f"request {request_id} did not finish. Last: {body}")


@pytest.mark.e2e
def test_work_requests_run_end_to_end(demo_models, tmp_path):
    with LocalStack(env=dict(os.environ), log_dir=tmp_path / "logs") as stack:
        assert stack.broker is not None
        assert stack.pods is not None
        session = requests.post(stack.urls["auth"] + "/anonymous", timeout=HTTP_TIMEOUT)
        headers = {"Authorization": f"Bearer {session.json()['access_token']}"}

        finished = {}
        for model_id in ("demo-molweight", "demo-descriptors"):
            submitted = requests.post(
                stack.urls["submit"] + "/",
                json={"model_id": model_id, "inputs": INPUTS},
                headers=headers,
                timeout=HTTP_TIMEOUT,
            )
            assert submitted.status_code == 201, submitted.text
            request_id = submitted.json()["id"]
            finished[model_id] = wait_for_status(stack.urls, headers, request_id)

        results = requests.get(
            f"{stack.urls['requests']}/{finished['demo-molweight']['id']}/results",
            params={"format": "json"},
            headers=headers,
            timeout=HTTP_TIMEOUT,
        )
        deadline = time.monotonic() + 10
        while stack.pods.list() and time.monotonic() < deadline:
            time.sleep(0.1)
        leftover_pods = stack.pods.list()
        assert stack.broker.wait_idle(10.0)
        dead_letters = stack.broker.dead_letters

    for model_id, body in finished.items():
        assert body["status"] == "COMPLETED", (model_id, body)
        assert body["pod_ready_timestamp"], model_id
    assert results.status_code == 200
    assert len(results.json()["rows"]) == len(INPUTS)
    assert leftover_pods == []
    assert dead_letters == []


def test_urls_and_environment(tmp_path):
    # A function that returns the settings the stack gave it.
    folder = tmp_path / "functions" / "echo"
    folder.mkdir(parents=True)
    (folder / "main.py").write_text(
        "import json, os\n"
        "import functions_framework\n"
        "@functions_framework.http\n"
        "def echo(request):\n"
        "    names = ('K_SINK', 'LOCAL_RUNTIME_URL', 'JOBS_URL', 'RUNTIME',\n"
        "             'THREADS')\n"
        "    return json.dumps({name: os.environ.get(name) for name in names})\n"
    )
    functions = [
        FunctionSpec(service="echo", folder="echo", target="echo"),
        FunctionSpec(service="jobs", folder="echo", target="echo"),
    ]

    stack = LocalStack(
        env=dict(os.environ),
        log_dir=tmp_path / "logs",
        functions=functions,
        repo_root=tmp_path,
        start_timeout=30,
    )
    with stack:
        assert stack.broker is not None
        assert stack.pods is not None
        broker_url, pods_url = stack.broker.url, stack.pods.url
        env = requests.get(stack.urls["echo"], timeout=HTTP_TIMEOUT).json()
        urls = dict(stack.urls)
        log_paths = stack.log_paths

    assert env == {
        "K_SINK": broker_url,
        "LOCAL_RUNTIME_URL": pods_url,
        "JOBS_URL": urls["jobs"],
        "RUNTIME": "local",
        "THREADS": "4",
    }
    assert set(log_paths) == {"echo", "jobs"}
    assert all(path.parent == tmp_path / "logs" for path in log_paths.values())
    for url in urls.values():
        assert not accepts_connections(url), url


def test_function_failing_at_import_fails_fast(tmp_path):
    folder = tmp_path / "functions" / "broken"
    folder.mkdir(parents=True)
    (folder / "main.py").write_text("raise RuntimeError('broken at import')\n")
    functions = [FunctionSpec(service="broken", folder="broken", target="broken")]
    stack = LocalStack(
        env=dict(os.environ),
        log_dir=tmp_path / "logs",
        functions=functions,
        repo_root=tmp_path,
        start_timeout=30,
    )

    started = time.monotonic()
    with pytest.raises(LocalStackError) as failure:
        stack.start()
    elapsed = time.monotonic() - started

    message = str(failure.value)
    assert "'broken' exited with code" in message
    assert "broken at import" in message
    assert elapsed < 20
    assert stack.broker is None
    assert stack.pods is None


def test_missing_function_source_is_reported(tmp_path):
    functions = [FunctionSpec(service="ghost", folder="ghost", target="ghost")]
    stack = LocalStack(
        env=dict(os.environ), functions=functions, repo_root=Path(tmp_path)
    )

    with pytest.raises(LocalStackError, match="no source file"):
        stack.start()


def test_free_ports_are_distinct():
    ports = free_ports(40)

    assert len(set(ports)) == 40
    assert free_port(exclude=ports) not in ports
