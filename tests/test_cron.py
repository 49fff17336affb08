"""Cleanup and reconciler on real PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from shared import cleanup, reconcile, tokens, workrequests
from shared.auth import Owner
from shared.bench.cleanup_data import load_expired
from shared.runtime.base import InstanceSpec
from shared.workrequests import Status
from tests.conftest import load_function

SETTINGS = cleanup.CleanupSettings(
    retention_days=7,
    batch_size=5000,
    lock_timeout_ms=2000,
    statement_timeout_ms=30000,
    login_window_seconds=900,
)
RECONCILE = reconcile.ReconcileSettings(
    grace_seconds=60, max_attempts=3, retention_days=7, jobs_url="http://jobs"
)


def count(db, sql: str) -> int:
    with db.connect() as connection:
        return connection.execute(sa.text(sql)).scalar()


def new_request(db, model_id="demo-molweight") -> str:
    owner = Owner("anonymous", session_id=str(uuid.uuid4()))
    with db.begin() as connection:
        return workrequests.create(connection, owner, model_id, ["CCO", "CCN"]).id


def age(db, request_id: str, *, days: float = 0, seconds: float = 0, **values) -> None:
    sets = ", ".join(f"{key} = :{key}" for key in values)
    with db.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE work_request SET request_timestamp = request_timestamp - "
                "make_interval(days => :days, secs => :secs), last_updated = "
                "last_updated - make_interval(days => :days, secs => :secs)"
                + (f", {sets}" if sets else "")
                + " WHERE id = :id"
            ),
            {"days": days, "secs": seconds, "id": request_id, **values},
        )


# --- cleanup ----------------------------------------------------------------------


def test_cleanup_removes_only_expired_finished_while_inserting(demo_models):
    with demo_models.begin() as connection:
        load_expired(connection, 200_000, "demo-molweight")
    for _ in range(100):
        new_request(demo_models)
    stuck = []
    for status in ("REQUESTED", "SCHEDULING", "PROCESSING", "REQUESTED", "PROCESSING"):
        request_id = new_request(demo_models)
        age(demo_models, request_id, days=10, status=status)
        stuck.append(request_id)

    waits: list[float] = []
    inserted: list[str] = []
    stop = threading.Event()

    def keep_submitting() -> None:
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            inserted.append(new_request(demo_models))
            waits.append(time.monotonic() - started)
            time.sleep(0.01)

    submitter = threading.Thread(target=keep_submitting)
    submitter.start()
    try:
        report = cleanup.run_cleanup(demo_models, SETTINGS)
    finally:
        stop.set()
        submitter.join(timeout=60)

    assert report.requests == 200_000
    assert report.data_rows == 200_000
    assert report.log_rows == 200_000
    assert sorted(report.stuck_request_ids) == sorted(stuck)
    assert count(demo_models, "SELECT count(*) FROM work_request") == 105 + len(
        inserted
    )
    assert count(demo_models, "SELECT count(*) FROM work_request_data") == 105 + len(
        inserted
    )
    assert count(demo_models, "SELECT count(*) FROM model_instance_log") == 0
    assert len(inserted) > 10
    assert max(waits) < SETTINGS.lock_timeout_ms / 1000


def test_overlapping_runs_share_the_work(demo_models):
    with demo_models.begin() as connection:
        load_expired(connection, 20_000, "demo-molweight")
    small = cleanup.CleanupSettings(
        retention_days=7,
        batch_size=500,
        lock_timeout_ms=2000,
        statement_timeout_ms=30000,
        login_window_seconds=900,
    )
    reports: list[cleanup.CleanupReport] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            reports.append(cleanup.run_cleanup(demo_models, small))
        except BaseException as error:  # noqa: BLE001 - reported by the assert
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert sum(report.requests for report in reports) == 20_000
    assert count(demo_models, "SELECT count(*) FROM work_request") == 0


def test_interrupted_run_resumes(demo_models):
    with demo_models.begin() as connection:
        load_expired(connection, 3_000, "demo-molweight")
    interrupted = cleanup.CleanupSettings(
        retention_days=7,
        batch_size=1000,
        lock_timeout_ms=2000,
        statement_timeout_ms=30000,
        login_window_seconds=900,
        max_batches=1,
    )

    first = cleanup.run_cleanup(demo_models, interrupted)
    second = cleanup.run_cleanup(demo_models, SETTINGS)

    assert first.requests == 1000
    assert second.requests == 2000
    assert count(demo_models, "SELECT count(*) FROM work_request") == 0


def test_retention_boundary(demo_models):
    young = new_request(demo_models)
    old = new_request(demo_models)
    age(demo_models, young, days=6, seconds=23 * 3600, status="COMPLETED")
    age(demo_models, old, days=7, seconds=60, status="FAILED")

    report = cleanup.run_cleanup(demo_models, SETTINGS)

    assert report.requests == 1
    with demo_models.connect() as connection:
        left = (
            connection.execute(sa.text("SELECT id FROM work_request")).scalars().all()
        )
    assert [str(request_id) for request_id in left] == [young]


def test_expired_sessions_and_failures_deleted(demo_models):
    with demo_models.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO auth_session (id, kind, refresh_hashes, expires_at) "
                "VALUES (gen_random_uuid(), 'anonymous', '{}', now() - interval '1 s'),"
                " (gen_random_uuid(), 'anonymous', '{}', now() + interval '1 day')"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO login_failure (account, client_address, failed_at) VALUES "
                "('a', '1.1.1.1', now() - interval '1 hour'), ('b', '1.1.1.1', now())"
            )
        )

    report = cleanup.run_cleanup(demo_models, SETTINGS)

    assert report.sessions == 1
    assert report.login_failures == 1
    assert count(demo_models, "SELECT count(*) FROM auth_session") == 1
    assert count(demo_models, "SELECT count(*) FROM login_failure") == 1


# --- reconcile ----------------------------------------------------------------------


class PodRuntime:
    """Keeps Pod objects in memory, with a settable creation time and status."""

    def __init__(self) -> None:
        self.pods: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []

    def create_instance(self, spec: InstanceSpec) -> None:
        if spec.name in self.pods:
            return
        self.pods[spec.name] = {
            "kind": "Pod",
            "metadata": {
                "name": spec.name,
                "labels": spec.labels(),
                "annotations": spec.annotations(),
                "creationTimestamp": datetime.now(UTC).isoformat(),
            },
            "status": {"phase": "Running"},
        }

    def delete_instance(self, name: str) -> bool:
        self.deleted.append(name)
        return self.pods.pop(name, None) is not None

    def get_instance(self, name: str) -> dict[str, Any] | None:
        return self.pods.get(name)

    def list_instances(self, model_id: str | None = None) -> list[dict[str, Any]]:
        return list(self.pods.values())


@pytest.fixture
def runtime():
    return PodRuntime()


def claim(db, runtime, model_id="demo-molweight") -> None:
    from shared import scheduling

    scheduling.schedule_model(db, runtime, model_id, jobs_url="http://jobs")


def status_of(db, request_id):
    with db.connect() as connection:
        return workrequests.get_state(connection, request_id)


def test_lost_submit_event_is_scheduled(demo_models, runtime):
    request_id = new_request(demo_models)
    fresh = new_request(demo_models, "demo-descriptors")
    age(demo_models, request_id, seconds=300)

    report = reconcile.run_reconcile(demo_models, runtime, RECONCILE)

    assert report.scheduled_models == ["demo-molweight"]
    assert status_of(demo_models, request_id).status == Status.SCHEDULING
    assert f"wr-{request_id}-1" in runtime.pods
    assert status_of(demo_models, fresh).status == Status.REQUESTED


def test_running_request_with_gone_instance_is_requeued(demo_models, runtime):
    request_id = new_request(demo_models)
    claim(demo_models, runtime)
    runtime.pods.clear()
    age(demo_models, request_id, seconds=300)

    report = reconcile.run_reconcile(demo_models, runtime, RECONCILE)

    assert report.requeued == [request_id]
    current = status_of(demo_models, request_id)
    assert current.status == Status.SCHEDULING
    assert current.attempts == 2
    assert f"wr-{request_id}-2" in runtime.pods


def test_failed_instance_requeued_and_deleted(demo_models, runtime):
    request_id = new_request(demo_models)
    claim(demo_models, runtime)
    name = f"wr-{request_id}-1"
    runtime.pods[name]["status"] = {"phase": "Failed", "reason": "Evicted"}
    age(demo_models, request_id, seconds=300, status="PROCESSING")

    report = reconcile.run_reconcile(demo_models, runtime, RECONCILE)

    assert report.requeued == [request_id]
    assert name in runtime.deleted


def test_gives_up_after_max_attempts(demo_models, runtime):
    request_id = new_request(demo_models)
    claim(demo_models, runtime)
    runtime.pods.clear()
    age(demo_models, request_id, seconds=300, attempts=3)

    report = reconcile.run_reconcile(demo_models, runtime, RECONCILE)

    assert report.failed == [request_id]
    current = status_of(demo_models, request_id)
    assert current.status == Status.FAILED
    with demo_models.connect() as connection:
        reason = connection.execute(
            sa.text("SELECT status_reason FROM work_request WHERE id = :id"),
            {"id": request_id},
        ).scalar()
    assert "gave up after 3 attempts" in reason


def test_instance_past_time_limit_fails_timed_out(demo_models, runtime):
    request_id = new_request(demo_models)
    claim(demo_models, runtime)
    name = f"wr-{request_id}-1"
    long_ago = datetime.now(UTC) - timedelta(seconds=3600 + 600)
    runtime.pods[name]["metadata"]["creationTimestamp"] = long_ago.isoformat()

    report = reconcile.run_reconcile(demo_models, runtime, RECONCILE)

    assert report.timed_out == [name]
    assert name in runtime.deleted
    with demo_models.connect() as connection:
        row = connection.execute(
            sa.text("SELECT status, status_reason FROM work_request WHERE id = :id"),
            {"id": request_id},
        ).one()
    assert row.status == "FAILED"
    assert row.status_reason.startswith("timed out")


@pytest.mark.parametrize("request_state", ["COMPLETED", "missing", "other attempt"])
def test_orphan_instances_stopped(demo_models, runtime, request_state):
    request_id = new_request(demo_models)
    claim(demo_models, runtime)
    name = f"wr-{request_id}-1"
    runtime.pods[name]["metadata"]["creationTimestamp"] = (
        datetime.now(UTC) - timedelta(seconds=300)
    ).isoformat()
    if request_state == "COMPLETED":
        age(demo_models, request_id, status="COMPLETED")
    elif request_state == "missing":
        with demo_models.begin() as connection:
            connection.execute(sa.text("DELETE FROM work_request"))
    else:
        age(demo_models, request_id, attempts=2)

    report = reconcile.run_reconcile(demo_models, runtime, RECONCILE)

    assert report.orphans_stopped == [name]


def test_new_orphan_left_alone(demo_models, runtime):
    request_id = new_request(demo_models)
    claim(demo_models, runtime)
    age(demo_models, request_id, status="COMPLETED")

    report = reconcile.run_reconcile(demo_models, runtime, RECONCILE)

    assert report.orphans_stopped == []


def test_unfinished_past_retention_failed(demo_models, runtime):
    request_id = new_request(demo_models)
    age(demo_models, request_id, days=8)

    report = reconcile.run_reconcile(demo_models, runtime, RECONCILE)

    assert report.expired == [request_id]
    assert status_of(demo_models, request_id).status == Status.FAILED


def test_second_pass_changes_nothing(demo_models, runtime):
    gone = new_request(demo_models)
    claim(demo_models, runtime)
    runtime.pods.clear()
    age(demo_models, gone, seconds=300)
    waiting = new_request(demo_models, "demo-descriptors")
    age(demo_models, waiting, seconds=300)

    reconcile.run_reconcile(demo_models, runtime, RECONCILE)
    second = reconcile.run_reconcile(demo_models, runtime, RECONCILE)

    assert second.requeued == []
    assert second.failed == []
    assert second.started == 0
    assert second.orphans_stopped == []


def test_finished_request_never_moved_back(demo_models, runtime):
    request_id = new_request(demo_models)
    claim(demo_models, runtime)
    runtime.pods.clear()
    age(demo_models, request_id, seconds=300, status="COMPLETED")

    reconcile.run_reconcile(demo_models, runtime, RECONCILE)

    assert status_of(demo_models, request_id).status == Status.COMPLETED


def test_replayed_event_after_requeue_changes_nothing(demo_models, runtime):
    from shared import instances

    request_id = new_request(demo_models)
    claim(demo_models, runtime)
    old_pod = dict(runtime.pods[f"wr-{request_id}-1"])
    runtime.pods.clear()
    age(demo_models, request_id, seconds=300)
    reconcile.run_reconcile(demo_models, runtime, RECONCILE)

    crashed = {**old_pod, "status": {"phase": "Failed", "reason": "Evicted"}}
    instances.handle_pod_event(demo_models, runtime, "update", crashed)

    current = status_of(demo_models, request_id)
    assert current.status == Status.SCHEDULING
    assert current.attempts == 2


# --- the functions --------------------------------------------------------------------


def admin_headers(permissions=("ADMIN",)):
    token, _ = tokens.issue_access_token(
        subject=str(uuid.uuid4()),
        session_id=str(uuid.uuid4()),
        kind="user",
        permissions=list(permissions),
    )
    return {"Authorization": f"Bearer {token}"}


def test_cleanup_function_admin_only(demo_models):
    client = load_function("cleanup", "cleanup").test_client()

    denied = client.post("/", headers=admin_headers(permissions=()))
    allowed = client.post("/", headers=admin_headers())

    assert denied.status_code == 403
    assert allowed.status_code == 200
    assert allowed.get_json()["requests"] == 0
