"""The scheduler and instance_watch functions, fed real CloudEvents.

Events go through functions-framework in binary and structured mode. The
runtime is the real local pod server. Its command factory starts no
processes, so every instance looks like a pod whose image cannot be pulled.
Emitted events land in a capturing HTTP server set as K_SINK.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import sqlalchemy as sa
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent

from shared import workrequests
from shared.auth import Owner
from shared.events import (
    APISERVER_ADD,
    APISERVER_DELETE,
    APISERVER_UPDATE,
    INSTANCE_RELEASED,
    WORK_REQUEST_SUBMITTED,
)
from tests.conftest import load_function

OWNER = Owner(auth_type="anonymous", session_id=str(uuid.uuid4()))


@pytest.fixture
def event_env(runtime_env):
    return runtime_env


@pytest.fixture
def scheduler_client(demo_models, event_env):
    return load_function("scheduler", "scheduler").test_client()


@pytest.fixture
def watch_client(demo_models, event_env):
    return load_function("instance_watch", "instance_watch").test_client()


def post_event(client, event: CloudEvent, mode: str):
    if mode == "binary":
        headers, body = to_binary(event, data_marshaller=json.dumps)
    else:
        headers, body = to_structured(event)
    return client.post("/", headers=headers, data=body)


def new_request(db) -> str:
    with db.begin() as connection:
        return workrequests.create(connection, OWNER, "demo-molweight", ["CCO"]).id


def submitted_event(request_id: str) -> CloudEvent:
    return CloudEvent(
        {
            "type": WORK_REQUEST_SUBMITTED,
            "source": "/modelhub/submit",
            "id": f"{request_id}.submitted",
        },
        {"request_id": request_id, "model_id": "demo-molweight"},
    )


def pod_event(event_type: str, pod: dict) -> CloudEvent:
    metadata = pod.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else pod.get("name")
    return CloudEvent(
        {
            "type": event_type,
            "source": "https://10.96.0.1:443",
            "id": str(uuid.uuid4()),
            "subject": f"/api/v1/namespaces/models/pods/{name}",
        },
        pod,
    )


def status_of(db, request_id: str) -> str:
    with db.connect() as connection:
        return workrequests.get_state(connection, request_id).status


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_scheduler_creates_one_instance(scheduler_client, demo_models, pods, mode):
    request_id = new_request(demo_models)
    event = submitted_event(request_id)

    first = post_event(scheduler_client, event, mode)
    replay = post_event(scheduler_client, event, mode)

    assert first.status_code == 200
    assert replay.status_code == 200
    assert [pod["metadata"]["name"] for pod in pods.list()] == [f"wr-{request_id}-1"]
    assert status_of(demo_models, request_id) == "SCHEDULING"


def test_scheduler_ignores_event_without_model(scheduler_client, pods):
    event = CloudEvent(
        {"type": WORK_REQUEST_SUBMITTED, "source": "/test", "id": "x"}, {"oops": 1}
    )

    response = post_event(scheduler_client, event, "binary")

    assert response.status_code == 200
    assert pods.list() == []


def test_scheduler_rejects_non_cloudevent(scheduler_client):
    response = scheduler_client.post("/", data=b"hello", content_type="text/plain")

    assert 400 <= response.status_code < 500


def test_scheduler_answers_503_when_runtime_down(
    scheduler_client, demo_models, pods, monkeypatch
):
    request_id = new_request(demo_models)
    pods.stop()

    response = post_event(scheduler_client, submitted_event(request_id), "binary")

    assert response.status_code == 503
    assert status_of(demo_models, request_id) == "REQUESTED"


def wait_for_pod(pods, name: str, predicate, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pod = pods.get(name)
        if pod is not None and predicate(pod):
            return pod
        time.sleep(0.05)
    raise AssertionError(f"pod {name} never reached the expected state")


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_watch_fails_request_on_missing_image(
    scheduler_client, watch_client, demo_models, pods, sink, mode
):
    request_id = new_request(demo_models)
    post_event(scheduler_client, submitted_event(request_id), "binary")
    name = f"wr-{request_id}-1"
    pod = wait_for_pod(
        pods,
        name,
        lambda p: any(
            (s.get("state") or {}).get("waiting", {}).get("reason")
            == "ErrImageNeverPull"
            for s in p["status"].get("containerStatuses", [])
        ),
    )

    added = post_event(watch_client, pod_event(APISERVER_ADD, pod), mode)
    updated = post_event(watch_client, pod_event(APISERVER_UPDATE, pod), mode)

    assert added.status_code == 200
    assert updated.status_code == 200
    assert status_of(demo_models, request_id) == "FAILED"
    deleted = post_event(watch_client, pod_event(APISERVER_DELETE, pod), mode)

    assert deleted.status_code == 200
    released = [e for e in sink.wait_for(1) if e["type"] == INSTANCE_RELEASED]
    assert released
    assert released[0].get_data()["model_id"] == "demo-molweight"


def test_watch_ignores_foreign_pods_and_other_kinds(watch_client, pods):
    foreign = {"kind": "Pod", "metadata": {"name": "web-1", "labels": {"app": "web"}}}
    service = {"kind": "Service", "metadata": {"name": "web"}}

    assert (
        post_event(
            watch_client, pod_event(APISERVER_ADD, foreign), "binary"
        ).status_code
        == 200
    )
    assert (
        post_event(
            watch_client, pod_event(APISERVER_ADD, service), "binary"
        ).status_code
        == 200
    )


def kube_event(
    pod_name: str, reason="FailedScheduling", message="0/3 nodes are available"
):
    """A core/v1 Event as ApiServerSource sends it (eventTime is often null)."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{pod_name}.17f0", "namespace": "models"},
        "involvedObject": {"kind": "Pod", "name": pod_name, "namespace": "models"},
        "reason": reason,
        "message": message,
        "type": "Warning",
        "count": 3,
        "eventTime": None,
        "firstTimestamp": "2026-12-04T10:00:00Z",
        "lastTimestamp": "2026-12-04T10:00:30Z",
    }


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_watch_stores_kubernetes_events(
    scheduler_client, watch_client, demo_models, mode
):
    request_id = new_request(demo_models)
    post_event(scheduler_client, submitted_event(request_id), "binary")
    name = f"wr-{request_id}-1"
    raw = kube_event(name)

    response = post_event(watch_client, pod_event(APISERVER_ADD, raw), mode)

    assert response.status_code == 200
    with demo_models.connect() as connection:
        stored = connection.execute(
            sa.text(
                "SELECT instance_name, detail, k8s_event FROM model_instance_log "
                "WHERE request_id = :id AND event = 'k8s.event'"
            ),
            {"id": request_id},
        ).one()
    assert stored.instance_name == name
    assert stored.detail == "Warning FailedScheduling: 0/3 nodes are available"
    assert stored.k8s_event == raw


@pytest.mark.parametrize(
    "raw",
    [
        kube_event("nginx-123"),
        {"kind": "Event", "involvedObject": {"kind": "Node", "name": "node-1"}},
        {"kind": "Event", "involvedObject": "garbage"},
        kube_event(f"wr-{uuid.uuid4()}-1"),
    ],
    ids=["foreign pod", "node event", "malformed", "unknown request"],
)
def test_watch_ignores_other_events(watch_client, demo_models, raw):
    response = post_event(watch_client, pod_event(APISERVER_ADD, raw), "binary")

    assert response.status_code == 200


def test_reference_mode_fetches_pod(scheduler_client, watch_client, demo_models, pods):
    request_id = new_request(demo_models)
    post_event(scheduler_client, submitted_event(request_id), "binary")
    name = f"wr-{request_id}-1"
    wait_for_pod(
        pods,
        name,
        lambda p: any(
            (s.get("state") or {}).get("waiting", {}).get("reason")
            == "ErrImageNeverPull"
            for s in p["status"].get("containerStatuses", [])
        ),
    )
    reference = {"apiVersion": "v1", "kind": "Pod", "name": name, "namespace": "models"}

    response = post_event(
        watch_client, pod_event(APISERVER_UPDATE, reference), "binary"
    )

    assert response.status_code == 200
    assert status_of(demo_models, request_id) == "FAILED"


def test_reference_to_gone_pod_counts_as_delete(
    scheduler_client, watch_client, demo_models, pods, sink
):
    request_id = new_request(demo_models)
    post_event(scheduler_client, submitted_event(request_id), "binary")
    name = f"wr-{request_id}-1"
    pods.delete(name)
    wait_until_gone = time.monotonic() + 10
    while pods.get(name) is not None and time.monotonic() < wait_until_gone:
        time.sleep(0.05)
    reference = {"apiVersion": "v1", "kind": "Pod", "name": name, "namespace": "models"}

    response = post_event(
        watch_client, pod_event(APISERVER_DELETE, reference), "binary"
    )

    assert response.status_code == 200
    assert status_of(demo_models, request_id) == "FAILED"
    released = [e for e in sink.wait_for(1) if e["type"] == INSTANCE_RELEASED]
    assert released


@pytest.mark.parametrize(
    "reference",
    [
        {"apiVersion": "v1", "kind": "Service", "name": "web", "namespace": "models"},
        {"apiVersion": "v1", "kind": "Pod", "name": "web-1", "namespace": "models"},
    ],
    ids=["not a pod", "foreign pod"],
)
def test_reference_mode_rejected_cleanly(watch_client, demo_models, reference):
    response = post_event(
        watch_client, pod_event(APISERVER_UPDATE, reference), "binary"
    )

    assert response.status_code == 200
