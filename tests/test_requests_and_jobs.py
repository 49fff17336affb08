"""The requests, jobs and session functions through functions-framework."""

from __future__ import annotations

import csv
import io
import time

import jwt
import pytest

from shared import scheduling
from shared.settings import get_settings
from tests.test_state_machine import RecordingRuntime


def submit(client, auth, inputs, model_id="demo-molweight"):
    response = client.post(
        "/", json={"model_id": model_id, "inputs": inputs}, headers=auth
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def start_instance(db, request_id):
    runtime = RecordingRuntime()
    scheduling.schedule_model(db, runtime, "demo-molweight", jobs_url="http://jobs")
    spec = next(s for s in runtime.instances.values() if s.request_id == request_id)
    return {"Authorization": f"Bearer {spec.job_token}"}


def complete(db, jobs_client, request_id, rows):
    agent = start_instance(db, request_id)
    assert jobs_client.get("/job", headers=agent).status_code == 200
    response = jobs_client.post("/job/result", json={"results": rows}, headers=agent)
    assert response.status_code == 200, response.get_json()
    return agent


def test_anonymous_session_opens_with_expiry(auth_client):
    response = auth_client.post("/anonymous")

    body = response.get_json()
    assert response.status_code == 201
    assert body["session"]["auth_type"] == "anonymous"
    assert body["access_expires_at"] > time.time()
    assert body["user"] is None
    assert auth_client.get("/anonymous").status_code == 405


def test_owner_lists_and_reads_own_requests(submit_client, requests_client, auth):
    first = submit(submit_client, auth, ["CCO"])
    second = submit(submit_client, auth, ["CCN", "CCC"])

    listing = requests_client.get("/", headers=auth)
    one = requests_client.get(f"/{first}", headers=auth)

    assert listing.status_code == 200
    assert [item["id"] for item in listing.get_json()["items"]] == [second, first]
    assert one.status_code == 200
    assert one.get_json()["status"] == "REQUESTED"
    assert one.get_json()["request_timestamp"].endswith("+00:00")
    assert "input" not in one.get_json()


def test_other_session_gets_404(submit_client, requests_client, auth_client, auth):
    request_id = submit(submit_client, auth, ["CCO"])
    other_token = auth_client.post("/anonymous").get_json()["access_token"]
    other = {"Authorization": f"Bearer {other_token}"}

    assert requests_client.get(f"/{request_id}", headers=other).status_code == 404
    assert (
        requests_client.get(f"/{request_id}/results", headers=other).status_code == 404
    )
    assert requests_client.get("/", headers=other).get_json()["items"] == []


@pytest.mark.parametrize(
    ("path", "status", "error"),
    [
        ("/not-a-uuid", 404, "request_not_found"),
        ("/00000000-0000-0000-0000-000000000000", 404, "request_not_found"),
        ("/?limit=0", 400, "invalid_limit"),
        ("/?limit=abc", 400, "invalid_limit"),
        ("/?status=DONE", 400, "invalid_status"),
    ],
)
def test_requests_bad_queries(requests_client, auth, db, path, status, error):
    response = requests_client.get(path, headers=auth)

    assert response.status_code == status
    assert response.get_json()["error"] == error


def test_results_before_completion_is_409(
    submit_client, requests_client, demo_models, auth
):
    request_id = submit(submit_client, auth, ["CCO"])

    response = requests_client.get(f"/{request_id}/results", headers=auth)

    assert response.status_code == 409
    assert response.get_json()["status"] == "REQUESTED"


def test_results_json_and_csv_keep_order_and_duplicates(
    submit_client, requests_client, jobs_client, demo_models, auth
):
    inputs = ["CCO", "c1ccccc1", "CCO", "C[N+](C)(C)C"]
    request_id = submit(submit_client, auth, inputs)
    rows = [
        {"mw": 46.07, "name": "=HYPERLINK(1)", "valid": True},
        {"mw": 78.11, "name": "benzene, aromatic", "valid": True},
        {"mw": 46.07, "name": 'say "hi"\nthere', "valid": True},
        None,
    ]
    complete(demo_models, jobs_client, request_id, rows)

    as_json = requests_client.get(f"/{request_id}/results", headers=auth)
    as_csv = requests_client.get(f"/{request_id}/results?format=csv", headers=auth)

    body = as_json.get_json()
    assert body["columns"] == ["input", "mw", "name", "valid"]
    assert [row["input"] for row in body["rows"]] == inputs
    assert body["rows"][2]["mw"] == 46.07
    assert body["rows"][3] == {
        "input": "C[N+](C)(C)C",
        "mw": None,
        "name": None,
        "valid": None,
    }

    assert as_csv.mimetype == "text/csv"
    assert "attachment" in as_csv.headers["Content-Disposition"]
    parsed = list(csv.reader(io.StringIO(as_csv.get_data(as_text=True))))
    assert parsed[0] == ["input", "mw", "name", "valid"]
    assert [row[0] for row in parsed[1:]] == inputs
    assert parsed[1] == ["CCO", "46.07", "'=HYPERLINK(1)", "true"]
    assert parsed[2][2] == "benzene, aromatic"
    assert parsed[3][2] == 'say "hi"\nthere'
    assert parsed[4] == ["C[N+](C)(C)C", "", "", ""]


def test_results_bad_format(
    submit_client, requests_client, jobs_client, demo_models, auth
):
    request_id = submit(submit_client, auth, ["CCO"])
    complete(demo_models, jobs_client, request_id, [{"mw": 1}])

    response = requests_client.get(f"/{request_id}/results?format=xml", headers=auth)

    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_format"


def test_jobs_rejects_session_token(jobs_client, auth, db):
    response = jobs_client.get("/job", headers=auth)

    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"


def test_session_endpoints_reject_job_token(
    submit_client, requests_client, demo_models, auth
):
    request_id = submit(submit_client, auth, ["CCO"])
    agent = start_instance(demo_models, request_id)

    assert requests_client.get("/", headers=agent).status_code == 401


def test_expired_session_token_says_expired(requests_client, db):
    now = int(time.time())
    token = jwt.encode(
        {
            "sub": "6f1c0e8e-8c38-4a3c-9d7c-2b2f0f9d0c11",
            "sid": "6f1c0e8e-8c38-4a3c-9d7c-2b2f0f9d0c11",
            "kind": "anonymous",
            "typ": "access",
            "iat": now - 100,
            "exp": now - 60,
        },
        get_settings().secret_key,
        algorithm="HS256",
    )

    response = requests_client.get("/", headers={"Authorization": f"Bearer {token}"})

    assert response.status_code == 401
    assert response.get_json()["error"] == "token_expired"


def test_jobs_result_count_mismatch_is_422(
    submit_client, jobs_client, requests_client, demo_models, auth
):
    request_id = submit(submit_client, auth, ["CCO", "CCN"])
    agent = start_instance(demo_models, request_id)
    jobs_client.get("/job", headers=agent)

    response = jobs_client.post("/job/result", json={"results": [{}]}, headers=agent)

    assert response.status_code == 422
    assert response.get_json()["error"] == "invalid_result"
    current = requests_client.get(f"/{request_id}", headers=auth).get_json()
    assert current["status"] == "FAILED"
    assert "1 rows for 2 inputs" in current["status_reason"]


def test_jobs_failure_report(
    submit_client, jobs_client, requests_client, demo_models, auth
):
    request_id = submit(submit_client, auth, ["CCO"])
    agent = start_instance(demo_models, request_id)

    missing = jobs_client.post("/job/failure", json={}, headers=agent)
    response = jobs_client.post(
        "/job/failure", json={"reason": "model crashed"}, headers=agent
    )

    assert missing.status_code == 400
    assert response.status_code == 200
    assert response.get_json()["status"] == "FAILED"
    current = requests_client.get(f"/{request_id}", headers=auth).get_json()
    assert current["status_reason"] == "model crashed"
    assert jobs_client.get("/job", headers=agent).status_code == 409


def test_jobs_result_before_fetch_is_409(submit_client, jobs_client, demo_models, auth):
    request_id = submit(submit_client, auth, ["CCO"])
    agent = start_instance(demo_models, request_id)

    response = jobs_client.post("/job/result", json={"results": [{}]}, headers=agent)

    assert response.status_code == 409
    assert response.get_json()["error"] == "request_not_processing"


def test_results_sanitised_and_input_column_kept(
    submit_client, requests_client, jobs_client, demo_models, auth
):
    request_id = submit(submit_client, auth, ["CCO", "CCN"])
    agent = start_instance(demo_models, request_id)
    jobs_client.get("/job", headers=agent)
    body = (
        '{"results": [{"input": "echo", "mw": NaN, "note": "a\\u0000b\\ud800"},'
        ' {"input": "echo2", "mw": Infinity, "note": "ok"}]}'
    )

    response = jobs_client.post(
        "/job/result", data=body, content_type="application/json", headers=agent
    )
    results = requests_client.get(f"/{request_id}/results", headers=auth).get_json()

    assert response.status_code == 200, response.get_json()
    assert results["columns"] == ["input", "model_input", "mw", "note"]
    assert results["rows"][0]["input"] == "CCO"
    assert results["rows"][0]["model_input"] == "echo"
    assert results["rows"][0]["mw"] is None
    assert results["rows"][0]["note"] == "ab\ufffd"
    assert results["rows"][1]["mw"] is None


def test_too_deep_result_fails_request(
    submit_client, requests_client, jobs_client, demo_models, auth
):
    request_id = submit(submit_client, auth, ["CCO"])
    agent = start_instance(demo_models, request_id)
    jobs_client.get("/job", headers=agent)
    nested: list = []
    for _ in range(40):
        nested = [nested]

    response = jobs_client.post(
        "/job/result", json={"results": [{"deep": nested}]}, headers=agent
    )

    assert response.status_code == 422
    current = requests_client.get(f"/{request_id}", headers=auth).get_json()
    assert current["status"] == "FAILED"


def test_failure_reason_with_bad_text_keeps_pool_healthy(
    submit_client, requests_client, jobs_client, demo_models, auth
):
    first = submit(submit_client, auth, ["CCO"])
    agent = start_instance(demo_models, first)

    failed = jobs_client.post(
        "/job/failure",
        data='{"reason": "model said \\ud800\\u0000 boom"}',
        content_type="application/json",
        headers=agent,
    )
    listing = requests_client.get("/", headers=auth)

    assert failed.status_code == 200
    assert listing.status_code == 200
    current = requests_client.get(f"/{first}", headers=auth).get_json()
    assert current["status_reason"] == "model said \ufffd boom"


def test_list_rejects_bad_model_filter(requests_client, auth, db):
    response = requests_client.get("/?model_id=%00", headers=auth)

    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_model_id"
