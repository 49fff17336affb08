"""The pg8000 + SQLAlchemy engine every function shares.

The schema named by DB_SCHEMA is sent as the `search_path` startup parameter
of every new connection. PostgreSQL then treats it as the session default, so
it survives a rollback, a `RESET ALL` or `DISCARD ALL`, and every connection
the pool recycles or replaces starts with it again. (pg8000 rejects the
libpq-style `options` argument; `startup_params` is its equivalent.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import pg8000.dbapi
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, ExceptionContext
from sqlalchemy.exc import DisconnectionError

from shared.settings import Settings, get_settings


def create_engine_for(
    database_url: str, schema: str, *, pool_size: int = 5, **kwargs
) -> Engine:
    """Create an engine whose connections all use `schema` and UTC.

    Extra keyword arguments go to `sqlalchemy.create_engine` (tests use
    `pool_recycle`).
    """
    engine = sa.create_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_args={
            "startup_params": {"search_path": schema, "TimeZone": "UTC"},
            "application_name": "modelhub",
        },
        **kwargs,
    )
    event.listen(engine, "checkout", _ping_on_checkout)
    event.listen(engine, "handle_error", _client_errors_are_disconnects)
    return engine


def _ping_on_checkout(dbapi_connection, connection_record, connection_proxy) -> None:
    """Check a pooled connection before handing it out.

    This replaces SQLAlchemy's `pool_pre_ping`, which only catches DB-API
    errors: pg8000 1.31 can let a raw ConnectionResetError escape from a
    socket the server closed (after a restart or pg_terminate_backend).
    DisconnectionError makes the pool discard the connection and retry
    with a new one.
    """
    try:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
        # pg8000 opened a transaction for the ping; end it, so the caller
        # starts clean (AUTOCOMMIT work such as VACUUM needs that).
        dbapi_connection.rollback()
    except (OSError, pg8000.dbapi.Error) as error:
        raise DisconnectionError(f"pooled connection is dead: {error}") from error


def _client_errors_are_disconnects(context: ExceptionContext) -> None:
    """Drop a connection whose protocol state pg8000 may have broken.

    Only errors the server reported (pg8000.dbapi.Error other than the
    driver's own InterfaceError) leave the connection usable. A socket error
    leaves it out of step with the server, and so does a parameter that
    pg8000 fails to convert halfway through sending a query (a lone
    surrogate in text, a date past year 9999). The next statement on such a
    connection would fail or read the previous statement's rows, so these
    errors are marked as disconnects and the pool discards the connection.
    """
    error = context.original_exception
    server_reported = isinstance(error, pg8000.dbapi.Error) and not isinstance(
        error, pg8000.dbapi.InterfaceError
    )
    if not server_reported:
        context.is_disconnect = True


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    """Return the process-wide engine built from the settings."""
    settings: Settings = get_settings()
    return create_engine_for(settings.database_url, settings.db_schema)


@contextmanager
def transaction(engine: Engine | None = None) -> Iterator[Connection]:
    """Yield a connection inside one transaction, committed on success."""
    with (engine or get_engine()).begin() as connection:
        yield connection
