"""DB_SCHEMA holds on every pooled connection, whatever happens to it."""

from __future__ import annotations

import os
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from shared.db import create_engine_for
from shared.settings import SettingsError, load_settings

URL = os.environ["DATABASE_URL"].replace("postgresql://", "postgresql+pg8000://", 1)


@pytest.fixture(scope="module")
def schema():
    """A non-public schema with a table named like one in public."""
    name = f"schema_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(URL)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{name}"'))
        connection.execute(sa.text(f'CREATE TABLE "{name}".marker (tag text)'))
        connection.execute(sa.text(f"INSERT INTO \"{name}\".marker VALUES ('{name}')"))
    yield name
    with admin.begin() as connection:
        connection.execute(sa.text(f'DROP SCHEMA "{name}" CASCADE'))
    admin.dispose()


def current_schema(connection) -> str:
    return connection.execute(sa.text("SELECT current_schema()")).scalar()


def marker(connection) -> str:
    return connection.execute(sa.text("SELECT tag FROM marker")).scalar()


def test_new_connection_uses_schema(schema):
    engine = create_engine_for(URL, schema, pool_size=1)

    with engine.connect() as connection:
        assert current_schema(connection) == schema
        assert marker(connection) == schema
    engine.dispose()


def test_schema_survives_rollback(schema):
    engine = create_engine_for(URL, schema, pool_size=1)

    with engine.connect() as connection:
        connection.execute(sa.text("SET search_path TO public"))
        connection.rollback()
        assert current_schema(connection) == schema
        with pytest.raises(sa.exc.ProgrammingError):
            connection.execute(sa.text("SELECT * FROM no_such_table"))
        connection.rollback()
        assert marker(connection) == schema
    engine.dispose()


def test_schema_survives_reset_all(schema):
    engine = create_engine_for(URL, schema, pool_size=1)

    with engine.connect() as connection:
        connection.execute(sa.text("SET search_path TO public"))
        connection.commit()
        connection.execute(sa.text("RESET ALL"))
        assert current_schema(connection) == schema
        connection.commit()
    with engine.connect() as connection:
        assert current_schema(connection) == schema
    engine.dispose()


def test_schema_after_pool_recycle(schema):
    engine = create_engine_for(URL, schema, pool_size=1, pool_recycle=0)

    for _ in range(3):
        with engine.connect() as connection:
            assert current_schema(connection) == schema
    engine.dispose()


def test_schema_after_invalidate(schema):
    engine = create_engine_for(URL, schema, pool_size=1)

    with engine.connect() as connection:
        first_pid = connection.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        connection.invalidate()
    with engine.connect() as connection:
        second_pid = connection.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        assert second_pid != first_pid
        assert current_schema(connection) == schema
    engine.dispose()


def test_schema_after_server_side_kill(schema):
    engine = create_engine_for(URL, schema, pool_size=1)
    with engine.connect() as connection:
        pid = connection.execute(sa.text("SELECT pg_backend_pid()")).scalar()

    admin = sa.create_engine(URL)
    with admin.begin() as connection:
        connection.execute(sa.text(f"SELECT pg_terminate_backend({pid})"))
    admin.dispose()

    with engine.connect() as connection:
        assert current_schema(connection) == schema
        assert marker(connection) == schema
    engine.dispose()


def test_schema_on_concurrent_connections(schema):
    engine = create_engine_for(URL, schema, pool_size=4)
    seen: list[str] = []
    barrier = threading.Barrier(8)

    def work() -> None:
        with engine.connect() as connection:
            barrier.wait(timeout=30)
            seen.append(marker(connection))
            connection.execute(sa.text("SELECT pg_sleep(0.05)"))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert seen == [schema] * 8
    assert engine.pool.checkedout() == 0
    engine.dispose()


def test_times_are_utc_whatever_the_session_zone(db):
    with db.connect() as connection:
        connection.execute(sa.text("SET TIME ZONE 'Pacific/Auckland'"))
        value = connection.execute(sa.text("SELECT now()")).scalar()
        connection.rollback()
    assert value.utcoffset() is not None


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({}, "DATABASE_URL is missing"),
        ({"DATABASE_URL": "mysql://x/y"}, "scheme 'mysql'"),
        ({"DB_SCHEMA": "Bad-Schema"}, "DB_SCHEMA='Bad-Schema' is invalid"),
        ({"DB_SCHEMA": "1abc"}, "DB_SCHEMA='1abc' is invalid"),
        ({"HUB_SECRET_KEY": "short"}, "HUB_SECRET_KEY is missing or shorter"),
        ({"MAX_INPUTS": "0"}, "MAX_INPUTS='0' is invalid"),
        ({"MAX_INPUTS": "ten"}, "MAX_INPUTS='ten' is invalid"),
        ({"K_SINK": "broker"}, "K_SINK='broker' is invalid"),
        ({"RUNTIME": "docker"}, "RUNTIME='docker' is invalid"),
    ],
)
def test_invalid_settings_fail_clearly(env, fragment):
    base = {
        "DATABASE_URL": "postgresql://u@127.0.0.1/db",
        "HUB_SECRET_KEY": "k" * 40,
    }
    if env == {}:
        base.pop("DATABASE_URL")
    base.update(env)

    with pytest.raises(SettingsError) as raised:
        load_settings(base)

    assert fragment in str(raised.value)


def test_valid_settings_convert_url():
    settings = load_settings(
        {"DATABASE_URL": "postgresql://u@127.0.0.1/db", "HUB_SECRET_KEY": "k" * 40}
    )

    assert settings.database_url == "postgresql+pg8000://u@127.0.0.1/db"
    assert settings.db_schema == "modelhub"
    assert settings.max_inputs == 1000


@pytest.mark.parametrize(
    "bad_value",
    [
        "text with a lone surrogate \ud800",
        datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-12))),
    ],
    ids=["lone surrogate", "date past year 9999"],
)
def test_client_side_failure_discards_connection(schema, bad_value):
    engine = create_engine_for(URL, schema, pool_size=1)

    with (
        pytest.raises((sa.exc.StatementError, UnicodeError, OverflowError)),
        engine.connect() as connection,
    ):
        connection.execute(sa.text("SELECT :value"), {"value": bad_value})
    with engine.connect() as connection:
        first = connection.execute(sa.text("SELECT 'alpha'")).scalar()
        second = connection.execute(sa.text("SELECT 'bravo'")).scalar()

    assert first == "alpha"
    assert second == "bravo"
    engine.dispose()
