"""Admin functions: every request (without sensitive data), audited views,
status actions on each state, live instances, stop and history.

The runtime is the real local pod server (with no processes, so instances
stay Pending) and emitted events land in a capturing HTTP server.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from werkzeug.datastructures import MultiDict

from shared import scheduling, tokens, workrequests
from shared.auth import Owner
from shared.events import WORK_REQUEST_SUBMITTED
from shared.runtime.local import LocalRuntime
from shared.workrequests import Status
from tests.conftest import load_function

SMILES = ["CC(=O)Oc1ccccc1C(=O)O", "Cn1c(=O)c2c(ncn2C)n(C)c1=O"]
ADMIN_ID = str(uuid.uuid4())
# Keys that would carry inputs or results; none may appear in a list.
SENSITIVE_KEYS = {"input", "inputs", "result", "results", "rows", "data"}


def headers(permissions=("ADMIN",), kind="user", subject=ADMIN_ID):
    token, _ = tokens.issue_access_token(
        subject=subject,
        session_id=str(uuid.uuid4()),
        kind=kind,
        permissions=list(permissions),
    )
    return {"Authorization": f"Bearer {token}", "User-Agent": "pytest-admin"}


ADMIN = headers()


@pytest.fixture
def env(runtime_env, demo_models):
    return demo_models


@pytest.fixture
def admin_client(env):
    return load_function("admin_requests", "admin_requests_api").test_client()


@pytest.fixture
def jobs_client(env):
    return load_function("jobs", "jobs").test_client()


@pytest.fixture
def instances_client(env):
    return load_function("admin_instances", "admin_instances_api").test_client()


def create(db, owner=None, model_id="demo-molweight", inputs=SMILES, at=None):
    owner = owner or Owner("anonymous", session_id=str(uuid.uuid4()))
    with db.begin() as connection:
        created = workrequests.create(connection, owner, model_id, list(inputs))
        if at is not None:
            connection.execute(
                sa.text(
                    "UPDATE work_request SET request_timestamp = :at WHERE id = :id"
                ),
                {"at": at, "id": created.id},
            )
    return created.id


def force_state(db, request_id, status, attempts=1, instance=True):
    with db.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE work_request SET status = :status, attempts = :attempts, "
                "instance_name = :instance, pod_ready_timestamp = now(), "
                "job_submitted_timestamp = now(), processed_timestamp = "
                "CASE WHEN :status IN ('COMPLETED', 'FAILED') THEN now() END "
                "WHERE id = :id"
            ),
            {
                "status": status,
                "attempts": attempts,
                "instance": f"wr-{request_id}-{attempts}" if instance else None,
                "id": request_id,
            },
        )
        if status == "COMPLETED":
            connection.execute(
                sa.text("UPDATE work_request_data SET result = :r WHERE id = :id"),
                {
                    "r": json.dumps(
                        {"columns": ["mw"], "rows": [{"mw": 1}, {"mw": 2}]}
                    ),
                    "id": request_id,
                },
            )


def state(db, request_id):
    with db.connect() as connection:
        return connection.execute(
            sa.text("SELECT * FROM work_request WHERE id = :id"), {"id": request_id}
        ).one()


def audit_count(db):
    with db.connect() as connection:
        return connection.execute(sa.text("SELECT count(*) FROM audit_log")).scalar()


# --- the list -------------------------------------------------------------------


def test_list_has_no_sensitive_fields(admin_client, env):
    request_id = create(env)
    force_state(env, request_id, "COMPLETED")

    response = admin_client.get("/", headers=ADMIN)

    body = response.get_json()
    assert response.status_code == 200
    assert len(body["items"]) == 1
    for item in body["items"]:
        assert SENSITIVE_KEYS.isdisjoint(item)
        assert item["has_result"] is True
        assert item["status"] == "COMPLETED"
        assert item["auth_type"] == "anonymous"
        assert item["session_id"] is not None
        assert item["request_timestamp"].endswith("+00:00")
    text = response.get_data(as_text=True)
    for smiles in SMILES:
        assert smiles not in text
    assert audit_count(env) == 0


def test_list_empty(admin_client, env):
    body = admin_client.get("/", headers=ADMIN).get_json()

    assert body == {"items": [], "next_after": None}


def test_list_paging_is_stable(admin_client, env):
    start = datetime(2026, 11, 1, tzinfo=UTC)
    ids = [create(env, at=start + timedelta(minutes=i // 2)) for i in range(5)]

    seen = []
    cursor = None
    pages = 0
    while pages < 10:
        query = {"limit": 2, **({"after": cursor} if cursor else {})}
        body = admin_client.get("/", query_string=query, headers=ADMIN).get_json()
        seen += [item["id"] for item in body["items"]]
        pages += 1
        cursor = body["next_after"]
        if cursor is None:
            break

    assert pages == 3
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen))


def test_list_exactly_one_page(admin_client, env):
    for _ in range(3):
        create(env)

    body = admin_client.get("/?limit=3", headers=ADMIN).get_json()

    assert len(body["items"]) == 3
    assert body["next_after"] is None


def test_list_one_item_per_page_edge(admin_client, env):
    only = create(env)

    body = admin_client.get("/?limit=1", headers=ADMIN).get_json()

    assert [item["id"] for item in body["items"]] == [only]
    assert body["next_after"] is None


def test_list_filters(admin_client, env):
    user = str(uuid.uuid4())
    session = str(uuid.uuid4())
    by_user = create(
        env, Owner("user", user_id=user), at=datetime(2026, 11, 10, 23, 59, tzinfo=UTC)
    )
    by_session = create(
        env,
        Owner("anonymous", session_id=session),
        model_id="demo-descriptors",
        at=datetime(2026, 11, 11, 0, 0, tzinfo=UTC),
    )
    other = create(env, at=datetime(2026, 11, 12, tzinfo=UTC))

    def ids(query):
        response = admin_client.get("/", query_string=query, headers=ADMIN)
        assert response.status_code == 200, response.get_json()
        return {item["id"] for item in response.get_json()["items"]}

    assert ids({"user_id": user}) == {by_user}
    assert ids({"session_id": session}) == {by_session}
    assert ids({"user_id": user, "session_id": session}) == {by_user, by_session}
    assert ids({"model_id": "demo-descriptors"}) == {by_session}
    assert ids({"date_from": "2026-11-11", "date_to": "2026-11-11"}) == {by_session}
    assert ids({"date_to": "2026-11-10"}) == {by_user}
    assert ids({"date_from": "2026-11-12"}) == {other}


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("date_from=2026-11-12&date_to=2026-11-11", "date_from"),
        ("date_to=11/12/2026", "date_to"),
        ("user_id=nope", "user_id"),
        ("limit=0", "limit"),
        ("after=%%%", "after"),
        ("colour=red", "colour"),
    ],
)
def test_list_bad_parameters(admin_client, env, query, parameter):
    response = admin_client.get(f"/?{query}", headers=ADMIN)

    assert response.status_code == 400
    assert response.get_json()["parameter"] == parameter


# --- sensitive view and audit ------------------------------------------------


def test_sensitive_view_audited(admin_client, env):
    request_id = create(env)
    force_state(env, request_id, "COMPLETED")

    response = admin_client.get(
        f"/{request_id}/sensitive",
        headers=ADMIN,
        environ_base={"REMOTE_ADDR": "10.20.30.40"},
    )

    body = response.get_json()
    assert response.status_code == 200
    assert body["inputs"] == SMILES
    assert body["result"]["rows"] == [{"mw": 1}, {"mw": 2}]
    with env.connect() as connection:
        record = connection.execute(sa.text("SELECT * FROM audit_log")).one()
    assert str(record.admin_user_id) == ADMIN_ID
    assert str(record.request_id) == request_id
    assert record.client_address == "10.20.30.40"
    assert record.user_agent == "pytest-admin"
    assert record.action == "view_sensitive"

    listing = admin_client.get(f"/audit?request_id={request_id}", headers=ADMIN)
    assert [item["request_id"] for item in listing.get_json()["items"]] == [request_id]


@pytest.mark.parametrize(
    "auth",
    [headers(permissions=()), headers(kind="anonymous"), {}],
    ids=["plain user", "anonymous", "no token"],
)
def test_non_admin_gets_no_data_and_no_audit(admin_client, instances_client, env, auth):
    request_id = create(env)

    responses = [
        admin_client.get(f"/{request_id}/sensitive", headers=auth),
        admin_client.get("/", headers=auth),
        admin_client.get("/audit", headers=auth),
        admin_client.post(
            f"/{request_id}/status",
            json={"status": "FAILED", "reason": "x"},
            headers=auth,
        ),
        instances_client.get("/", headers=auth),
        instances_client.post(f"/wr-{request_id}-1/stop", headers=auth),
    ]

    for response in responses:
        assert response.status_code in (401, 403)
        assert "inputs" not in (response.get_json() or {})
    assert audit_count(env) == 0
    assert state(env, request_id).status == "REQUESTED"


def test_sensitive_view_of_missing_request(admin_client, env):
    assert (
        admin_client.get(f"/{uuid.uuid4()}/sensitive", headers=ADMIN).status_code == 404
    )
    assert admin_client.get("/nope/sensitive", headers=ADMIN).status_code == 404
    assert audit_count(env) == 0


# --- status actions -----------------------------------------------------------

ACTIONS = [
    ("REQUESTED", "REQUESTED", 409),
    ("REQUESTED", "FAILED", 200),
    ("SCHEDULING", "REQUESTED", 200),
    ("SCHEDULING", "FAILED", 200),
    ("PROCESSING", "REQUESTED", 200),
    ("PROCESSING", "FAILED", 200),
    ("COMPLETED", "REQUESTED", 409),
    ("COMPLETED", "FAILED", 409),
    ("FAILED", "REQUESTED", 200),
    ("FAILED", "FAILED", 409),
]


@pytest.mark.parametrize(("current", "target", "code"), ACTIONS)
def test_status_action_on_each_state(admin_client, env, current, target, code):
    request_id = create(env)
    if current != "REQUESTED":
        force_state(
            env, request_id, current, instance=current in ("SCHEDULING", "PROCESSING")
        )

    response = admin_client.post(
        f"/{request_id}/status",
        json={"status": target, "reason": "checking"},
        headers=ADMIN,
    )

    assert response.status_code == code, response.get_json()
    after = state(env, request_id)
    if code == 409:
        assert response.get_json()["error"] == "invalid_transition"
        assert after.status == current
    else:
        assert after.status == target
        assert "checking" in after.status_reason


def test_requeue_stops_instance_and_schedules_again(admin_client, env, pods, sink):
    request_id = create(env)
    scheduling.schedule_model(
        env, LocalRuntime(pods.url), "demo-molweight", jobs_url="http://jobs"
    )
    old = f"wr-{request_id}-1"
    assert pods.get(old) is not None
    force_state(env, request_id, "PROCESSING")

    response = admin_client.post(
        f"/{request_id}/status", json={"status": "REQUESTED"}, headers=ADMIN
    )

    assert response.status_code == 200
    assert response.get_json()["instance_stopped"] is True
    after = state(env, request_id)
    assert after.status == "REQUESTED"
    assert after.attempts == 1
    assert after.instance_name is None
    assert after.job_submitted_timestamp is None
    deadline = time.monotonic() + 10
    while pods.get(old) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pods.get(old) is None
    events = [e for e in sink.wait_for(1) if e["type"] == WORK_REQUEST_SUBMITTED]
    assert events[0].get_data()["request_id"] == request_id

    scheduling.schedule_model(
        env, LocalRuntime(pods.url), "demo-molweight", jobs_url="http://jobs"
    )
    assert state(env, request_id).attempts == 2
    assert pods.get(f"wr-{request_id}-2") is not None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "COMPLETED"}, "status"),
        ({"status": "FAILED"}, "reason"),
        ({"status": "FAILED", "reason": "  "}, "reason"),
        ({"status": "REQUESTED", "reason": 5}, "reason"),
    ],
)
def test_status_action_body_checked(admin_client, env, body, field):
    request_id = create(env)

    response = admin_client.post(f"/{request_id}/status", json=body, headers=ADMIN)

    assert response.status_code == 422
    assert response.get_json()["field"] == field


# --- live instances -------------------------------------------------------------


def start_instances(env, pods, count=2, model_id="demo-molweight"):
    ids = [create(env, model_id=model_id) for _ in range(count)]
    scheduling.schedule_model(
        env, LocalRuntime(pods.url), model_id, jobs_url="http://jobs"
    )
    return ids


def test_instances_listed_with_events(instances_client, env, pods):
    ids = start_instances(env, pods)
    name = f"wr-{ids[0]}-1"
    raw_event = {
        "kind": "Event",
        "reason": "Pulling",
        "eventTime": None,
        "involvedObject": {"kind": "Pod", "name": name},
    }
    with env.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO model_instance_log (model_id, instance_name, request_id, "
                "event, k8s_event) VALUES ('demo-molweight', :n, :r, 'k8s.event', :e)"
            ),
            {"n": name, "r": ids[0], "e": json.dumps(raw_event)},
        )

    response = instances_client.get("/", headers=ADMIN)

    items = {item["name"]: item for item in response.get_json()["items"]}
    assert response.status_code == 200
    assert set(items) == {f"wr-{i}-1" for i in ids}
    assert items[name]["request_id"] == ids[0]
    assert items[name]["model_id"] == "demo-molweight"
    assert items[name]["phase"] == "Pending"
    assert items[name]["started_at"] is not None
    assert items[name]["events"] == [raw_event]


def test_instances_filters(instances_client, env, pods):
    start_instances(env, pods, 1)
    start_instances(env, pods, 1, model_id="demo-descriptors")
    today = datetime.now(UTC).date().isoformat()

    def names(query):
        response = instances_client.get("/", query_string=query, headers=ADMIN)
        assert response.status_code == 200, response.get_json()
        return [item["model_id"] for item in response.get_json()["items"]]

    assert names({"model_id": "demo-descriptors"}) == ["demo-descriptors"]
    assert len(names({"status": "Pending"})) == 2
    assert names({"status": "Running"}) == []
    assert len(names({"started_from": today, "started_to": today})) == 2
    assert names({"started_to": "2020-01-01"}) == []
    bad = instances_client.get("/?status=Sleeping", headers=ADMIN)
    assert bad.status_code == 400
    assert bad.get_json()["parameter"] == "status"


def test_stop_instance_fails_request(instances_client, env, pods):
    (request_id,) = start_instances(env, pods, 1)
    name = f"wr-{request_id}-1"

    response = instances_client.post(f"/{name}/stop", headers=ADMIN)
    history = instances_client.get(f"/{name}/history", headers=ADMIN).get_json()[
        "items"
    ]
    by_request = instances_client.get(
        f"/history?request_id={request_id}", headers=ADMIN
    ).get_json()["items"]

    assert response.status_code == 200
    assert response.get_json()["request_failed"] is True
    after = state(env, request_id)
    assert after.status == "FAILED"
    assert after.status_reason == "stopped by admin"
    assert [entry["event"] for entry in history][-1] == "admin.stop"
    assert history == by_request
    assert [entry["id"] for entry in history] == sorted(
        entry["id"] for entry in history
    )
    deadline = time.monotonic() + 10
    while pods.get(name) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pods.get(name) is None


def test_stop_unknown_instance(instances_client, env):
    assert (
        instances_client.post(f"/wr-{uuid.uuid4()}-1/stop", headers=ADMIN).status_code
        == 404
    )
    assert instances_client.post("/nginx/stop", headers=ADMIN).status_code == 404


def test_history_needs_request_id(instances_client, env):
    response = instances_client.get("/history?request_id=x", headers=ADMIN)

    assert response.status_code == 400
    assert response.get_json()["parameter"] == "request_id"


# --- the same admin actions on the Kubernetes runtime (fake API server) ----------


@pytest.fixture
def kube():
    from tests.fake_kube import FakeKube

    server = FakeKube().start()
    yield server
    server.stop()


def kube_runtime(url: str):
    from kubernetes import client

    from shared.runtime.kubernetes import KubernetesRuntime, new_api_client

    api_client = new_api_client(client.Configuration(host=url))
    return KubernetesRuntime(api_client, namespace="models", agent_image="agent:test")


def test_stop_and_list_on_kubernetes(env, kube):
    from shared import admin_instances

    runtime = kube_runtime(kube.url)
    request_id = create(env)
    scheduling.schedule_model(env, runtime, "demo-molweight", jobs_url="http://jobs")
    name = f"wr-{request_id}-1"

    listed = admin_instances.list_instances(env, runtime, MultiDict())
    result = admin_instances.stop_instance(env, runtime, name, ADMIN_ID)

    assert [item["name"] for item in listed["items"]] == [name]
    assert listed["items"][0]["request_id"] == request_id
    assert result["request_failed"] is True
    assert result["instance_deleted"] is True
    assert runtime.get_instance(name) is None
    after = state(env, request_id)
    assert after.status == "FAILED"
    assert after.status_reason == "stopped by admin"


def test_requeue_stops_kubernetes_pod(env, kube):
    from shared import admin_requests

    runtime = kube_runtime(kube.url)
    request_id = create(env)
    scheduling.schedule_model(env, runtime, "demo-molweight", jobs_url="http://jobs")
    name = f"wr-{request_id}-1"

    with env.begin() as connection:
        row = admin_requests.plan_action(connection, request_id, Status.REQUESTED)
        admin_requests.apply_action(connection, row, Status.REQUESTED, "", ADMIN_ID)
    assert runtime.delete_instance(row.instance_name) is True

    assert runtime.get_instance(name) is None
    assert state(env, request_id).status == "REQUESTED"


# --- races and odd input -----------------------------------------------------


def test_result_after_requeue_is_rejected(admin_client, env, pods, jobs_client):
    request_id = create(env)
    scheduling.schedule_model(
        env, LocalRuntime(pods.url), "demo-molweight", jobs_url="http://jobs"
    )
    token = tokens.issue_job_token(
        tokens.JobGrant(request_id, f"wr-{request_id}-1", 1, "demo-molweight")
    )
    agent = {"Authorization": f"Bearer {token}"}
    assert jobs_client.get("/job", headers=agent).status_code == 200

    requeued = admin_client.post(
        f"/{request_id}/status", json={"status": "REQUESTED"}, headers=ADMIN
    )
    late = jobs_client.post(
        "/job/result", json={"results": [{"mw": 1}, {"mw": 2}]}, headers=agent
    )

    assert requeued.status_code == 200
    assert late.status_code == 409
    with env.connect() as connection:
        stored = connection.execute(
            sa.text("SELECT result FROM work_request_data WHERE id = :id"),
            {"id": request_id},
        ).scalar()
    assert stored is None
    assert state(env, request_id).status == "REQUESTED"


def test_requeue_with_runtime_down_changes_nothing(admin_client, env, pods):
    request_id = create(env)
    force_state(env, request_id, "PROCESSING")
    pods.stop()

    response = admin_client.post(
        f"/{request_id}/status", json={"status": "REQUESTED"}, headers=ADMIN
    )

    assert response.status_code == 503
    assert response.get_json()["error"] == "runtime_unavailable"
    assert state(env, request_id).status == "PROCESSING"


def test_instances_runtime_down_is_503(instances_client, env, pods):
    pods.stop()

    assert instances_client.get("/", headers=ADMIN).status_code == 503


@pytest.mark.parametrize("suffix", ["01", "1 ", "\u0661"])
def test_stop_alias_names_rejected(instances_client, env, pods, suffix):
    (request_id,) = start_instances(env, pods, 1)

    response = instances_client.post(f"/wr-{request_id}-{suffix}/stop", headers=ADMIN)

    assert response.status_code == 404
    assert state(env, request_id).status == "SCHEDULING"
    assert pods.get(f"wr-{request_id}-1") is not None


def test_history_with_nul_name_is_404(instances_client, env):
    assert instances_client.get("/a%00b/history", headers=ADMIN).status_code == 404


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("date_to=9999-12-31", 200),
        ("date_from=0001-01-01", 200),
        ("limit=%C2%B2", 400),
        ("limit=1&limit=2", 400),
        (
            "after="
            + "MDAwMS0wMS0wMVQwMDowMDowMCsxNDowMHwwMDAwMDAwMC0wMDAwLTAwMDAtMDAwMC0wMDAwMDAwMDAwMDA",
            400,
        ),
    ],
)
def test_list_edge_values(admin_client, env, query, code):
    assert admin_client.get(f"/?{query}", headers=ADMIN).status_code == code


@pytest.mark.parametrize(
    ("query", "code"),
    [("before=99999999999999999999", 400), ("before=%C2%B2", 400), ("before=5", 200)],
)
def test_audit_edge_values(admin_client, env, query, code):
    assert admin_client.get(f"/audit?{query}", headers=ADMIN).status_code == code
