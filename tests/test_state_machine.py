"""The work request state machine under duplicated, reordered and replayed
events: scheduler passes, pod events and job reports, on real PostgreSQL.

The runtime here is a recording stand-in (the real local runtime runs in the
end-to-end test); everything else is the production code path.
"""

from __future__ import annotations

import copy
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from shared import catalog, instances, jobs, scheduling, workrequests
from shared.auth import Owner
from shared.runtime.base import InstanceSpec, RuntimeUnavailable
from shared.tokens import JobGrant, verify_job_token
from shared.workrequests import Status

OWNER = Owner(auth_type="anonymous", session_id=str(uuid.uuid4()))


class RecordingRuntime:
    """Keeps instances in memory, and fails the next `fail_creates` creates."""

    def __init__(self) -> None:
        self.instances: dict[str, InstanceSpec] = {}
        self.created: list[str] = []
        self.deleted: list[str] = []
        self.fail_creates = 0
        self.lock = threading.Lock()

    def create_instance(self, spec: InstanceSpec) -> None:
        with self.lock:
            if self.fail_creates:
                self.fail_creates -= 1
                raise RuntimeUnavailable("runtime is down")
            if spec.name not in self.instances:
                self.instances[spec.name] = spec
                self.created.append(spec.name)

    def delete_instance(self, name: str) -> bool:
        with self.lock:
            self.deleted.append(name)
            return self.instances.pop(name, None) is not None

    def get_instance(self, name: str) -> dict[str, Any] | None:
        return None

    def list_instances(self, model_id: str | None = None) -> list[dict[str, Any]]:
        return []


@pytest.fixture
def runtime():
    return RecordingRuntime()


def submit(db, model_id="demo-molweight", inputs=("CCO", "CCN")) -> str:
    with db.begin() as connection:
        return workrequests.create(connection, OWNER, model_id, list(inputs)).id


def state(db, request_id):
    with db.connect() as connection:
        return workrequests.get_state(connection, request_id)


def schedule(db, runtime, model_id="demo-molweight") -> int:
    return scheduling.schedule_model(db, runtime, model_id, jobs_url="http://jobs")


def pod(
    spec: InstanceSpec,
    phase="Running",
    ready=False,
    agent=None,
    model=None,
    ready_at="2026-12-04T10:00:05Z",
):
    """Build a Pod object as ApiServerSource would send it."""
    model_state = model or {"running": {"startedAt": "2026-12-04T10:00:00Z"}}
    agent_state = agent or {"running": {"startedAt": "2026-12-04T10:00:00Z"}}
    conditions = [{"type": "PodScheduled", "status": "True"}]
    if ready:
        conditions.append(
            {
                "type": "Ready",
                "status": "True",
                "lastTransitionTime": ready_at,
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": spec.name,
            "namespace": "models",
            "labels": spec.labels(),
            "annotations": spec.annotations(),
        },
        "status": {
            "phase": phase,
            "conditions": conditions,
            "containerStatuses": [
                {"name": "model", "ready": ready, "state": model_state},
                {"name": "agent", "ready": ready, "state": agent_state},
            ],
        },
    }


def grant_for(spec: InstanceSpec) -> JobGrant:
    return verify_job_token(spec.job_token)


def fetch(db, spec):
    with db.begin() as connection:
        return jobs.fetch_job(connection, grant_for(spec))


def post_result(db, spec, rows):
    with db.begin() as connection:
        return jobs.record_result(connection, grant_for(spec), rows)


def watch(db, runtime, event, pod_object):
    return instances.handle_pod_event(db, runtime, event, copy.deepcopy(pod_object))


def test_submitted_event_claims_and_creates_once(demo_models, runtime):
    request_id = submit(demo_models)

    assert schedule(demo_models, runtime) == 1
    assert schedule(demo_models, runtime) == 0
    assert schedule(demo_models, runtime) == 0

    current = state(demo_models, request_id)
    assert current.status == Status.SCHEDULING
    assert current.attempts == 1
    assert runtime.created == [f"wr-{request_id}-1"]


def test_max_instances_respected_and_fifo(demo_models, runtime):
    with demo_models.begin() as connection:
        catalog.upsert_model(
            connection, "demo-molweight", execution_mode="sync", max_instances=2
        )
    ids = [submit(demo_models) for _ in range(4)]

    assert schedule(demo_models, runtime) == 2
    assert [state(demo_models, i).status for i in ids] == [
        Status.SCHEDULING,
        Status.SCHEDULING,
        Status.REQUESTED,
        Status.REQUESTED,
    ]

    # The first finishes: the next pass takes the third, not the fourth.
    spec = runtime.instances[f"wr-{ids[0]}-1"]
    fetch(demo_models, spec)
    post_result(demo_models, spec, [{"mw": 1.0}, {"mw": 2.0}])
    assert schedule(demo_models, runtime) == 1
    assert state(demo_models, ids[2]).status == Status.SCHEDULING
    assert state(demo_models, ids[3]).status == Status.REQUESTED


def test_concurrent_passes_never_exceed_max_instances(demo_models):
    with demo_models.begin() as connection:
        catalog.upsert_model(
            connection, "demo-molweight", execution_mode="sync", max_instances=3
        )
    for _ in range(10):
        submit(demo_models)
    runtime = RecordingRuntime()

    threads = [
        threading.Thread(target=schedule, args=(demo_models, runtime)) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(runtime.created) == 3
    assert len(set(runtime.created)) == 3


def test_runtime_failure_requeues_claim(demo_models, runtime):
    request_id = submit(demo_models)
    runtime.fail_creates = 1

    with pytest.raises(RuntimeUnavailable):
        schedule(demo_models, runtime)

    assert state(demo_models, request_id).status == Status.REQUESTED
    assert schedule(demo_models, runtime) == 1
    assert state(demo_models, request_id).attempts == 2
    assert runtime.created == [f"wr-{request_id}-2"]


def test_disabled_model_fails_queued_requests(demo_models, runtime):
    request_id = submit(demo_models)
    with demo_models.begin() as connection:
        catalog.upsert_model(
            connection, "demo-molweight", execution_mode="sync", enabled=False
        )

    assert schedule(demo_models, runtime) == 0

    current = state(demo_models, request_id)
    assert current.status == Status.FAILED
    assert runtime.created == []


def test_full_lifecycle_with_replayed_events(demo_models, runtime):
    request_id = submit(demo_models)
    schedule(demo_models, runtime)
    spec = runtime.instances[f"wr-{request_id}-1"]

    with demo_models.connect() as connection:
        requested_at = connection.execute(
            sa.text("SELECT request_timestamp FROM work_request WHERE id = :id"),
            {"id": request_id},
        ).scalar()
    ready_at = requested_at + timedelta(microseconds=1)
    added = pod(spec, phase="Pending")
    ready = pod(spec, ready=True, ready_at=ready_at.isoformat())
    watch(demo_models, runtime, "add", added)
    watch(demo_models, runtime, "update", ready)

    job = fetch(demo_models, spec)
    assert job.inputs == ["CCO", "CCN"]
    assert job.execution_mode == "sync"
    assert fetch(demo_models, spec).inputs == ["CCO", "CCN"]
    assert state(demo_models, request_id).status == Status.PROCESSING

    report = post_result(demo_models, spec, [{"mw": 46.07}, {"mw": 45.08}])
    assert report.status == Status.COMPLETED
    assert post_result(demo_models, spec, [{"mw": 0}, {"mw": 0}]).status == (
        Status.COMPLETED
    )

    finished = pod(
        spec,
        ready=True,
        agent={"terminated": {"exitCode": 0, "reason": "Completed"}},
    )
    outcome = watch(demo_models, runtime, "update", finished)
    assert outcome.action == "finished"
    assert runtime.deleted == [spec.name]

    # Replays of every earlier event, in any order, move nothing backwards.
    for event, replay in [("add", added), ("update", ready), ("update", finished)]:
        watch(demo_models, runtime, event, replay)
    schedule(demo_models, runtime)

    current = state(demo_models, request_id)
    assert current.status == Status.COMPLETED
    assert current.attempts == 1
    with demo_models.connect() as connection:
        _, stored = workrequests.load_data(connection, request_id)
        row = connection.execute(
            sa.text(
                "SELECT pod_ready_timestamp, job_submitted_timestamp, "
                "processed_timestamp FROM work_request WHERE id = :id"
            ),
            {"id": request_id},
        ).one()
    assert stored["rows"] == [{"mw": 46.07}, {"mw": 45.08}]
    assert row.pod_ready_timestamp == ready_at
    assert row.job_submitted_timestamp is not None
    assert row.processed_timestamp >= row.job_submitted_timestamp


def test_delete_event_releases_slot(demo_models, runtime):
    request_id = submit(demo_models)
    schedule(demo_models, runtime)
    spec = runtime.instances[f"wr-{request_id}-1"]
    fetch(demo_models, spec)
    post_result(demo_models, spec, [{"mw": 1}, {"mw": 2}])

    outcome = watch(demo_models, runtime, "delete", pod(spec))

    assert outcome.release is True
    assert outcome.model_id == "demo-molweight"
    assert state(demo_models, request_id).status == Status.COMPLETED


@pytest.mark.parametrize(
    ("model_state", "phase", "fragment"),
    [
        (
            {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
            "Failed",
            "OOMKilled",
        ),
        ({"terminated": {"exitCode": 1, "reason": "Error"}}, "Failed", "code 1"),
        (
            {"waiting": {"reason": "ErrImageNeverPull", "message": "no such image"}},
            "Pending",
            "ErrImageNeverPull",
        ),
    ],
)
def test_instance_failure_fails_request(
    demo_models, runtime, model_state, phase, fragment
):
    request_id = submit(demo_models)
    schedule(demo_models, runtime)
    spec = runtime.instances[f"wr-{request_id}-1"]

    outcome = watch(
        demo_models, runtime, "update", pod(spec, phase=phase, model=model_state)
    )

    assert outcome.action == "failed"
    current = state(demo_models, request_id)
    assert current.status == Status.FAILED
    with demo_models.connect() as connection:
        reason = connection.execute(
            sa.text("SELECT status_reason FROM work_request WHERE id = :id"),
            {"id": request_id},
        ).scalar()
    assert fragment in reason
    assert runtime.deleted == [spec.name]


def test_oomkilled_in_last_state_counts_when_succeeded(demo_models, runtime):
    request_id = submit(demo_models)
    schedule(demo_models, runtime)
    spec = runtime.instances[f"wr-{request_id}-1"]
    event = pod(spec, phase="Succeeded")
    event["status"]["containerStatuses"][0]["lastState"] = {
        "terminated": {"exitCode": 137, "reason": "OOMKilled"}
    }

    watch(demo_models, runtime, "update", event)

    assert state(demo_models, request_id).status == Status.FAILED


def test_pending_pod_without_statuses_is_normal(demo_models, runtime):
    request_id = submit(demo_models)
    schedule(demo_models, runtime)
    spec = runtime.instances[f"wr-{request_id}-1"]
    event = pod(spec, phase="Pending")
    del event["status"]["containerStatuses"]

    outcome = watch(demo_models, runtime, "add", event)

    assert outcome.action == "observed"
    assert state(demo_models, request_id).status == Status.SCHEDULING


def test_agent_exit_without_result_fails(demo_models, runtime):
    request_id = submit(demo_models)
    schedule(demo_models, runtime)
    spec = runtime.instances[f"wr-{request_id}-1"]
    fetch(demo_models, spec)

    event = pod(spec, agent={"terminated": {"exitCode": 0, "reason": "Completed"}})
    watch(demo_models, runtime, "update", event)

    assert state(demo_models, request_id).status == Status.FAILED


def test_failure_arriving_after_completion_changes_nothing(demo_models, runtime):
    request_id = submit(demo_models)
    schedule(demo_models, runtime)
    spec = runtime.instances[f"wr-{request_id}-1"]
    fetch(demo_models, spec)
    post_result(demo_models, spec, [{"mw": 1}, {"mw": 2}])

    crashed = pod(
        spec, phase="Failed", model={"terminated": {"exitCode": 1, "reason": "Error"}}
    )
    watch(demo_models, runtime, "update", crashed)
    with demo_models.begin() as connection:
        report = jobs.record_failure(connection, grant_for(spec), "late failure")

    assert report.status == Status.COMPLETED
    assert state(demo_models, request_id).status == Status.COMPLETED


def test_row_count_mismatch_fails_request(demo_models, runtime):
    request_id = submit(demo_models)
    schedule(demo_models, runtime)
    spec = runtime.instances[f"wr-{request_id}-1"]
    fetch(demo_models, spec)

    report = post_result(demo_models, spec, [{"mw": 1}])

    assert report.status == Status.FAILED
    assert "1 rows for 2 inputs" in report.problem
    assert state(demo_models, request_id).status == Status.FAILED


def test_events_of_a_stale_attempt_are_ignored(demo_models, runtime):
    request_id = submit(demo_models)
    runtime.fail_creates = 0
    schedule(demo_models, runtime)
    old_spec = runtime.instances[f"wr-{request_id}-1"]
    # Put the request back in the queue as a later re-queue would.
    with demo_models.begin() as connection:
        workrequests.transition(
            connection, request_id, (Status.SCHEDULING,), Status.REQUESTED
        )
    schedule(demo_models, runtime)

    crashed = pod(
        old_spec,
        phase="Failed",
        model={"terminated": {"exitCode": 1, "reason": "Error"}},
    )
    outcome = watch(demo_models, runtime, "update", crashed)

    assert outcome.action == "stale_attempt"
    current = state(demo_models, request_id)
    assert current.status == Status.SCHEDULING
    assert current.attempts == 2
    with demo_models.begin() as connection, pytest.raises(Exception) as raised:
        jobs.fetch_job(connection, grant_for(old_spec))
    assert getattr(raised.value, "status", None) == 409


def test_foreign_pod_is_ignored(demo_models, runtime):
    outcome = watch(
        demo_models,
        runtime,
        "add",
        {"kind": "Pod", "metadata": {"name": "nginx", "labels": {"app": "web"}}},
    )

    assert outcome.action == "ignored"
    assert runtime.deleted == []


def test_instance_log_keeps_every_event(demo_models, runtime):
    request_id = submit(demo_models)
    schedule(demo_models, runtime)
    spec = runtime.instances[f"wr-{request_id}-1"]
    for event, phase in [
        ("add", "Pending"),
        ("update", "Running"),
        ("delete", "Running"),
    ]:
        watch(demo_models, runtime, event, pod(spec, phase=phase))

    with demo_models.connect() as connection:
        log = instances.instance_log(connection, request_id)

    events = [entry["event"] for entry in log]
    assert events[:2] == ["pod.add", "pod.update"]
    assert "pod.delete" in events
    assert all(entry["instance_name"] == spec.name for entry in log)


@pytest.mark.parametrize(
    "reported",
    [
        "1970-01-01T00:00:00Z",
        "2999-01-01T00:00:00Z",
        "9999-12-31T23:59:59-12:00",
        "yesterday",
        17,
    ],
)
def test_ready_time_kept_between_request_and_now(demo_models, runtime, reported):
    request_id = submit(demo_models)
    schedule(demo_models, runtime)
    spec = runtime.instances[f"wr-{request_id}-1"]

    outcome = watch(
        demo_models, runtime, "update", pod(spec, ready=True, ready_at=reported)
    )

    assert outcome.action == "observed"
    with demo_models.connect() as connection:
        row = connection.execute(
            sa.text(
                "SELECT request_timestamp <= pod_ready_timestamp AS after_request, "
                "pod_ready_timestamp <= now() AS before_now FROM work_request "
                "WHERE id = :id"
            ),
            {"id": request_id},
        ).one()
    assert row.after_request
    assert row.before_now


def test_requeued_claim_not_failed_by_leftover_pod(demo_models, runtime):
    request_id = submit(demo_models)
    runtime.fail_creates = 0
    schedule(demo_models, runtime)
    spec = runtime.instances[f"wr-{request_id}-1"]
    # The create timed out although the pod was made, so the claim went back.
    with demo_models.begin() as connection:
        workrequests.transition(
            connection, request_id, (Status.SCHEDULING,), Status.REQUESTED
        )

    crashed = pod(spec, agent={"terminated": {"exitCode": 1, "reason": "Error"}})
    outcome = watch(demo_models, runtime, "update", crashed)

    assert outcome.action == "stale_attempt"
    assert state(demo_models, request_id).status == Status.REQUESTED
    assert spec.name in runtime.deleted


@pytest.mark.parametrize(
    "mangle",
    [
        lambda p: p.update(metadata="not an object"),
        lambda p: p["metadata"].update(labels=["a"]),
        lambda p: p["metadata"]["annotations"].update({"modelhub.io/attempt": ["1"]}),
        lambda p: p["metadata"]["annotations"].update(
            {"modelhub.io/request-id": "nope"}
        ),
        lambda p: p["metadata"].update(name="wr-someone-else-1"),
        lambda p: p["metadata"]["labels"].update({"modelhub.io/model": "x\x00y"}),
    ],
    ids=[
        "metadata",
        "labels",
        "attempt list",
        "request not uuid",
        "name mismatch",
        "nul",
    ],
)
def test_malformed_identity_is_ignored(demo_models, runtime, mangle):
    request_id = submit(demo_models)
    schedule(demo_models, runtime)
    event = pod(runtime.instances[f"wr-{request_id}-1"])
    mangle(event)

    outcome = watch(demo_models, runtime, "update", event)

    assert outcome.action == "ignored"
    assert state(demo_models, request_id).status == Status.SCHEDULING


@pytest.mark.parametrize(
    "mangle",
    [
        lambda p: p.update(status="broken"),
        lambda p: p["status"].update(
            containerStatuses=[{"name": "model", "state": "x"}]
        ),
        lambda p: p["status"].update(
            conditions=[{"type": "Ready", "status": "True", "lastTransitionTime": 5}]
        ),
        lambda p: p["status"].update(weird=float("nan"), text="nul\x00here"),
    ],
    ids=["status string", "state string", "time integer", "nan and nul"],
)
def test_malformed_status_is_logged_not_crashing(demo_models, runtime, mangle):
    request_id = submit(demo_models)
    schedule(demo_models, runtime)
    event = pod(runtime.instances[f"wr-{request_id}-1"])
    mangle(event)

    outcome = watch(demo_models, runtime, "update", event)

    assert outcome.action == "observed"
    with demo_models.connect() as connection:
        logged = connection.execute(
            sa.text("SELECT count(*) FROM model_instance_log WHERE request_id = :id"),
            {"id": request_id},
        ).scalar()
    assert logged == 1


def test_stored_snapshot_has_no_job_token(demo_models, runtime):
    request_id = submit(demo_models)
    schedule(demo_models, runtime)
    spec = runtime.instances[f"wr-{request_id}-1"]
    event = pod(spec)
    event["spec"] = {
        "containers": [
            {"name": "model", "image": "x"},
            {"name": "agent", "env": [{"name": "JOB_TOKEN", "value": spec.job_token}]},
        ]
    }

    watch(demo_models, runtime, "update", event)

    with demo_models.connect() as connection:
        stored = connection.execute(
            sa.text("SELECT pod::text FROM model_instance_log WHERE request_id = :id"),
            {"id": request_id},
        ).scalar()
    assert spec.job_token not in stored
    assert '"agent"' in stored
