"""Benchmark: authorising one request, this design against the previous one.

This design checks a signed access token in the function (no database
query). The previous system looked the session up in PostgreSQL on every
call (token equal and start time plus max age in the future). Both run in
one process, in alternating batches, against the same PostgreSQL, so the
machine's noise hits both alike. The last line prints the ratio.

The session table has the previous system's primary key (user id, session
id), so a lookup by session id alone scans it, as it did there. A third
line shows the same query with an index on session id.

Run: `task bench:auth` (uses DATABASE_URL, default the local test database).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import time
import uuid

import sqlalchemy as sa

SCHEMA = f"bench_auth_{uuid.uuid4().hex[:8]}"
SESSIONS = 10_000


def setup_environment() -> None:
    os.environ.setdefault("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    os.environ["DB_SCHEMA"] = SCHEMA
    os.environ.setdefault("HUB_SECRET_KEY", secrets.token_urlsafe(48))


def create_previous_design(engine) -> list[tuple[str, str]]:
    """Create the previous session table with SESSIONS rows; return keys."""
    keys = [(str(uuid.uuid4()), secrets.token_hex(16)) for _ in range(SESSIONS)]
    with engine.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{SCHEMA}"'))
        connection.execute(
            sa.text(
                f'CREATE TABLE "{SCHEMA}".user_session (user_id text, session_id text, '
                "session_token text, auth_type text, session_max_age_seconds int, "
                "session_start_time timestamp, PRIMARY KEY (user_id, session_id))"
            )
        )
        connection.execute(
            sa.text(
                f'INSERT INTO "{SCHEMA}".user_session VALUES '
                "(:u, :s, :t, 'ErsiliaUser', 300, now() AT TIME ZONE 'UTC')"
            ),
            [{"u": str(uuid.uuid4()), "s": s, "t": t} for s, t in keys],
        )
        connection.execute(sa.text(f'ANALYZE "{SCHEMA}".user_session'))
    return keys


def time_batch(function, count: int) -> float:
    """Return the mean seconds per call over `count` calls."""
    started = time.perf_counter()
    for index in range(count):
        function(index)
    return (time.perf_counter() - started) / count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=7, help="alternating batches")
    parser.add_argument("--calls", type=int, default=1000, help="calls per batch")
    args = parser.parse_args(argv)
    setup_environment()

    from shared import tokens
    from shared.db import create_engine_for
    from shared.settings import get_settings

    settings = get_settings()
    # A plain pooled engine, without this project's checkout ping, so the
    # previous design pays for its query and nothing more.
    engine = sa.create_engine(
        settings.database_url,
        pool_size=1,
        connect_args={"startup_params": {"search_path": SCHEMA}},
    )
    admin = create_engine_for(settings.database_url, "public", pool_size=1)
    keys = create_previous_design(admin)

    access = [
        tokens.issue_access_token(
            subject=str(uuid.uuid4()),
            session_id=session_id,
            kind="user",
            permissions=[],
        )[0]
        for session_id, _ in keys[:100]
    ]
    lookup = sa.text(
        "SELECT 1 FROM user_session WHERE session_id = :s AND session_token = :t "
        "AND session_start_time + make_interval(secs => session_max_age_seconds) "
        "> now() AT TIME ZONE 'UTC'"
    )

    def verify_token(index: int) -> None:
        tokens.verify_access_token(access[index % len(access)])

    def query_session(index: int) -> None:
        session_id, token = keys[index % len(keys)]
        with engine.connect() as connection:
            assert connection.execute(lookup, {"s": session_id, "t": token}).first()

    def add_session_index() -> None:
        with admin.begin() as connection:
            connection.execute(
                sa.text(f'CREATE INDEX ON "{SCHEMA}".user_session (session_id)')
            )

    ours: list[float] = []
    previous: list[float] = []
    indexed: list[float] = []
    try:
        time_batch(verify_token, 100)
        time_batch(query_session, 100)
        for _ in range(args.batches):
            ours.append(time_batch(verify_token, args.calls))
            previous.append(time_batch(query_session, args.calls))
        add_session_index()
        time_batch(query_session, 100)
        for _ in range(args.batches):
            indexed.append(time_batch(query_session, args.calls))
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{SCHEMA}" CASCADE'))
        engine.dispose()
        admin.dispose()

    ours_us = statistics.median(ours) * 1e6
    previous_us = statistics.median(previous) * 1e6
    print(f"batches: {args.batches} x {args.calls} calls, median of batch means")
    print(f"this design (JWT check, no query):   {ours_us:8.1f} us per request")
    indexed_us = statistics.median(indexed) * 1e6
    print(f"previous design (session query):    {previous_us:8.1f} us per request")
    print(f"  same query with a session_id index: {indexed_us:8.1f} us per request")
    print(
        f"ratio: this design authorises a request {previous_us / ours_us:.1f}x "
        "faster than the previous one"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
