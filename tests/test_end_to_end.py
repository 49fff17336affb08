"""Work requests end to end through the local stack.

Every function runs as its own functions-framework process, events go
through the local broker by the Knative Trigger files, and each instance is
a real RDKit model server plus the job agent.
"""

from __future__ import annotations

import os
import time
from datetime import datetime

import pytest
import requests

from shared import catalog
from shared.localstack import LocalStack

pytestmark = pytest.mark.e2e

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
CAFFEINE = "Cn1c(=O)c2c(ncn2C)n(C)c1=O"
TIMEOUT = 30


@pytest.fixture
def stack(db, tmp_path):
    with db.begin() as connection:
        catalog.upsert_model(
            connection, "demo-molweight", execution_mode="sync", max_instances=1
        )
        catalog.upsert_model(connection, "demo-descriptors", execution_mode="async")
        catalog.upsert_model(connection, "no-such-image", execution_mode="sync")
    with LocalStack(
        env=dict(os.environ),
        log_dir=tmp_path / "logs",
        cron_intervals={"reconcile": 1.0, "cleanup": 2.0},
    ) as running:
        yield running


def wait_terminal(stack, headers, request_ids, timeout=90.0):
    deadline = time.monotonic() + timeout
    bodies = {}
    while time.monotonic() < deadline:
        for request_id in request_ids:
            response = requests.get(
                f"{stack.urls['requests']}/{request_id}",
                headers=headers,
                timeout=TIMEOUT,
            )
            bodies[request_id] = response.json()
        if all(b["status"] in ("COMPLETED", "FAILED") for b in bodies.values()):
            return bodies
        time.sleep(0.3)
    raise AssertionError(f"requests did not finish in {timeout} s: {bodies}")


def wait_no_instances(stack, timeout=30.0):
    deadline = time.monotonic() + timeout
    while stack.pods.list() and time.monotonic() < deadline:
        time.sleep(0.2)
    return stack.pods.list()


def test_requests_run_end_to_end(stack):
    token = requests.post(stack.urls["auth"] + "/anonymous", timeout=TIMEOUT).json()[
        "access_token"
    ]
    headers = {"Authorization": f"Bearer {token}"}
    submit_url = stack.urls["submit"] + "/"

    first = requests.post(
        submit_url,
        json={
            "model_id": "demo-molweight",
            "inputs": [ASPIRIN, CAFFEINE, ASPIRIN, "C1CC"],
        },
        headers=headers,
        timeout=TIMEOUT,
    ).json()
    second = requests.post(
        submit_url,
        json={"model_id": "demo-molweight", "inputs": [CAFFEINE]},
        headers=headers,
        timeout=TIMEOUT,
    ).json()
    csv_body = f"smiles\r\n{CAFFEINE}\r\n\r\n{ASPIRIN}\r\n".encode()
    descriptors = requests.post(
        submit_url,
        params={"model_id": "demo-descriptors"},
        data=csv_body,
        headers={**headers, "Content-Type": "text/csv"},
        timeout=TIMEOUT,
    ).json()
    missing_image = requests.post(
        submit_url,
        json={"model_id": "no-such-image", "inputs": [ASPIRIN]},
        headers=headers,
        timeout=TIMEOUT,
    ).json()

    ids = [first["id"], second["id"], descriptors["id"], missing_image["id"]]
    bodies = wait_terminal(stack, headers, ids)

    assert bodies[first["id"]]["status"] == "COMPLETED"
    assert bodies[second["id"]]["status"] == "COMPLETED"
    assert bodies[descriptors["id"]]["status"] == "COMPLETED"
    assert bodies[missing_image["id"]]["status"] == "FAILED"
    assert "ErrImageNeverPull" in bodies[missing_image["id"]]["status_reason"]

    # max_instances=1: the second request's job started after the first ended.
    first_done = datetime.fromisoformat(bodies[first["id"]]["processed_timestamp"])
    second_started = datetime.fromisoformat(
        bodies[second["id"]]["job_submitted_timestamp"]
    )
    assert second_started >= first_done
    for body in bodies.values():
        if body["status"] == "COMPLETED":
            assert body["pod_ready_timestamp"] is not None
            assert body["job_submitted_timestamp"] >= body["request_timestamp"]

    results = requests.get(
        f"{stack.urls['requests']}/{first['id']}/results",
        headers=headers,
        timeout=TIMEOUT,
    ).json()
    rows = results["rows"]
    assert [row["input"] for row in rows] == [ASPIRIN, CAFFEINE, ASPIRIN, "C1CC"]
    assert rows[0]["mw"] == pytest.approx(180.16, abs=0.01)
    assert rows[1]["mw"] == pytest.approx(194.19, abs=0.01)
    assert rows[2] == rows[0]
    assert rows[3]["valid"] is False
    assert rows[3]["mw"] is None

    csv_text = requests.get(
        f"{stack.urls['requests']}/{descriptors['id']}/results",
        params={"format": "csv"},
        headers=headers,
        timeout=TIMEOUT,
    ).text
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("input,logp,tpsa")
    assert len(lines) == 3
    assert lines[1].startswith(CAFFEINE + ",")

    assert wait_no_instances(stack) == []

    # The periodic jobs ran on their local schedule, as CronJobs would.
    deadline = time.monotonic() + 10
    while stack.cron.runs["cleanup"] < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stack.cron.runs["reconcile"] >= 1
    assert stack.cron.runs["cleanup"] >= 1
    cron_log = (stack.log_dir / "cron.log").read_text()
    assert '"job": "reconcile"' in cron_log
    assert '"job": "cleanup"' in cron_log
