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

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, ExceptionContext

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
        pool_pre_ping=True,
        connect_args={
            "startup_params": {"search_path": schema, "TimeZone": "UTC"},
            "application_name": "modelhub",
        },
        **kwargs,
    )
    event.listen(engine, "handle_error", _socket_errors_are_disconnects)
    return engine


def _socket_errors_are_disconnects(context: ExceptionContext) -> None:
    """Treat a raw socket error from pg8000 as a lost connection.

    pg8000 1.31 lets ConnectionResetError escape from a read on a socket the
    server closed (after a restart or pg_terminate_backend). Marking it as a
    disconnect makes the pool drop that connection and the pre-ping retry
    with a new one, instead of failing the caller.
    """
    if isinstance(context.original_exception, OSError):
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
