"""Shared fixtures: a real PostgreSQL schema per test run, and the functions.

TEST_DATABASE_URL picks the server (default: the local one on 127.0.0.1).
Each run migrates its own schema, so runs never see each other's rows, and
drops it at the end. Tables are emptied between tests.
"""

from __future__ import annotations

import os
import secrets
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
TEST_SCHEMA = f"test_{uuid.uuid4().hex[:12]}"

os.environ["DATABASE_URL"] = os.environ.get(
    "TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
os.environ["DB_SCHEMA"] = TEST_SCHEMA
os.environ["HUB_SECRET_KEY"] = secrets.token_urlsafe(48)
os.environ["LOG_FORMAT"] = "text"
# Cheap password hashing keeps the suite fast; production uses 64 MiB.
os.environ["PASSWORD_TIME_COST"] = "1"
os.environ["PASSWORD_MEMORY_KIB"] = "8192"
os.environ.pop("K_SINK", None)
os.environ.pop("LOCAL_RUNTIME_URL", None)

from shared import migrate  # noqa: E402
from shared.db import get_engine  # noqa: E402

TABLES = (
    "audit_log",
    "login_failure",
    "model_instance_log",
    "work_request_data",
    "work_request",
    "model",
    "auth_session",
    "user_permission",
    "app_user",
)


@pytest.fixture(scope="session")
def engine():
    migrate.upgrade()
    engine = get_engine()
    yield engine
    with engine.begin() as connection:
        connection.execute(sa.text(f'DROP SCHEMA "{TEST_SCHEMA}" CASCADE'))
    engine.dispose()


@pytest.fixture
def db(engine):
    """Empty tables before each test; yield the engine."""
    with engine.begin() as connection:
        connection.execute(sa.text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))
    return engine


@pytest.fixture
def demo_models(db):
    """Register one sync and one async model."""
    from shared import catalog

    with db.begin() as connection:
        catalog.upsert_model(connection, "demo-molweight", execution_mode="sync")
        catalog.upsert_model(connection, "demo-descriptors", execution_mode="async")
        catalog.upsert_model(
            connection, "demo-off", execution_mode="sync", enabled=False
        )
    return db


def load_function(folder: str, target: str):
    """Create the functions-framework app of one function."""
    from functions_framework import create_app

    source = ROOT / "functions" / folder / "main.py"
    return create_app(target, str(source))


@pytest.fixture
def submit_client(demo_models):
    return load_function("submit", "submit").test_client()


@pytest.fixture
def requests_client(db):
    return load_function("requests", "requests_api").test_client()


@pytest.fixture
def auth_client(db):
    return load_function("auth", "auth").test_client()


@pytest.fixture
def jobs_client(db):
    return load_function("jobs", "jobs").test_client()


@pytest.fixture
def session_token(auth_client):
    response = auth_client.post("/anonymous")
    assert response.status_code == 201
    return response.get_json()["access_token"]


@pytest.fixture
def auth(session_token):
    return {"Authorization": f"Bearer {session_token}"}


@pytest.fixture
def sink():
    """A capturing HTTP server that records the CloudEvents sent to it."""
    from tests.capture import CaptureServer

    with CaptureServer() as server:
        yield server


@pytest.fixture
def pods(tmp_path):
    """A real local pod server that starts no processes: pods stay Pending."""
    from shared.runtime.local_server import LocalPodServer

    server = LocalPodServer(
        None, command_factory=lambda spec, port: None, log_dir=tmp_path
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def runtime_env(monkeypatch, pods, sink):
    """Point functions at the pod server and the capturing sink."""
    from shared.settings import get_settings

    monkeypatch.setenv("LOCAL_RUNTIME_URL", pods.url)
    monkeypatch.setenv("K_SINK", sink.url)
    monkeypatch.setenv("JOBS_URL", "http://127.0.0.1:9/jobs")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
