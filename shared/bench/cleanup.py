"""Benchmark: cleanup speed, and what concurrent submissions feel.

Loads ROWS expired requests (with data and an instance-log row each) into
a scratch schema, then runs the cleanup while another thread keeps
inserting new requests. Prints rows deleted per second and, in the last
line, the longest wait any insert saw. Run: `task bench:cleanup`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import threading
import time
import uuid

import sqlalchemy as sa


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000, help="rows per batch")
    args = parser.parse_args(argv)

    schema = f"bench_cleanup_{uuid.uuid4().hex[:8]}"
    os.environ.setdefault("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    os.environ["DB_SCHEMA"] = schema
    os.environ.setdefault("HUB_SECRET_KEY", secrets.token_urlsafe(48))
    os.environ.setdefault("LOG_LEVEL", "WARNING")

    from shared import catalog, cleanup, migrate, workrequests
    from shared.auth import Owner
    from shared.bench.cleanup_data import load_expired
    from shared.db import get_engine

    migrate.upgrade()
    engine = get_engine()
    try:
        with engine.begin() as connection:
            catalog.upsert_model(connection, "bench-model", execution_mode="sync")
            load_expired(connection, args.rows, "bench-model")
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as auto:
            auto.execute(sa.text("VACUUM ANALYZE"))

        waits: list[float] = []
        stop = threading.Event()

        def submit_forever() -> None:
            deadline = time.monotonic() + 600
            while not stop.is_set() and time.monotonic() < deadline:
                owner = Owner("anonymous", session_id=str(uuid.uuid4()))
                started = time.monotonic()
                with engine.begin() as connection:
                    workrequests.create(connection, owner, "bench-model", ["CCO"])
                waits.append(time.monotonic() - started)
                time.sleep(0.005)

        submitter = threading.Thread(target=submit_forever)
        submitter.start()
        settings = cleanup.CleanupSettings(
            retention_days=7,
            batch_size=args.batch,
            lock_timeout_ms=2000,
            statement_timeout_ms=30000,
            login_window_seconds=900,
        )
        started = time.monotonic()
        report = cleanup.run_cleanup(engine, settings)
        elapsed = time.monotonic() - started
        stop.set()
        submitter.join(timeout=60)
    finally:
        with engine.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()

    rate = report.requests / elapsed if elapsed else 0.0
    print(
        f"deleted {report.requests} requests, {report.data_rows} data rows, "
        f"{report.log_rows} log rows in {elapsed:.1f} s ({report.batches} batches "
        f"of {args.batch})"
    )
    print(f"rate: {rate:,.0f} requests per second")
    median_ms = statistics.median(waits) * 1000
    print(f"concurrent inserts: {len(waits)}, median {median_ms:.1f} ms")
    print(f"longest wait seen by a concurrent insert: {max(waits) * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
