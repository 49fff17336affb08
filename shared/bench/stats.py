"""Benchmark: the stats query against the previous system's query shape.

Loads ROWS realistic work requests (100 models, 30 days, 85 % completed,
10 % failed, the rest in flight) into a scratch schema, then times, in one
process and alternating, the 7-day all-models view grouped by model:

- this hub's query (`shared.stats.run`): one pass over the covering index,
  with p50 and p95 on top of total, max, min and mean;
- the previous shape: one filtering CTE over the previous table with the
  model ids as literals, three aggregate CTEs (all, COMPLETED, FAILED) with
  total, max, min and mean, and two LEFT JOINs.

Prints the median of each and, in the last line, the ratio. `--explain`
also prints both plans. Run: `task bench:stats` (DATABASE_URL, default the
local test database; the scratch schema is dropped unless `--keep`).
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

DURATION_COLUMNS = (
    ("request_start_time", "jobsubmissiontimestamp - requestdate"),
    ("request_time", "processedtimestamp - requestdate"),
    ("job_execution_time", "processedtimestamp - jobsubmissiontimestamp"),
)


def previous_query(model_ids: list[str]) -> str:
    """Return the previous system's stats SQL for a 7-day window."""
    literals = ", ".join(
        "'" + model_id.replace("'", "''") + "'" for model_id in model_ids
    )
    durations = ",\n".join(
        f"extract(epoch FROM ({expression})) AS {name}"
        for name, expression in DURATION_COLUMNS
    )

    def aggregate(name: str, count_name: str, condition: str) -> str:
        figures = ", ".join(
            f"sum({column}) AS total_{column}, max({column}) AS max_{column}, "
            f"min({column}) AS min_{column}, avg({column}) AS avg_{column}"
            for column, _ in DURATION_COLUMNS
        )
        return (
            f"{name} AS (SELECT modelid, count(*) AS {count_name}, {figures} "
            f"FROM filtered {condition} GROUP BY modelid)"
        )

    return (
        "WITH filtered AS (SELECT modelid, coalesce(inputsize, 0) AS inputsize, "
        f"requeststatus, {durations} FROM workrequest "
        f"WHERE modelid IN ({literals}) "
        "AND requestdate BETWEEN :date_from AND :date_to), "
        + aggregate("totals", "total_count", "")
        + ", "
        + aggregate("success", "success_count", "WHERE requeststatus = 'COMPLETED'")
        + ", "
        + aggregate("failed", "failed_count", "WHERE requeststatus = 'FAILED'")
        + " SELECT * FROM totals t LEFT JOIN success s ON s.modelid = t.modelid "
        "LEFT JOIN failed f ON f.modelid = t.modelid"
    )


def prepare(rows: int) -> None:
    from shared import migrate
    from shared.bench import stats_data
    from shared.db import get_engine

    migrate.upgrade()
    engine = get_engine()
    started = time.monotonic()
    with engine.begin() as connection:
        stats_data.load(connection, rows)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as auto:
        auto.execute(sa.text("VACUUM ANALYZE work_request"))
        auto.execute(sa.text("VACUUM ANALYZE workrequest"))
    print(f"loaded {rows} rows in {time.monotonic() - started:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each")
    parser.add_argument("--explain", action="store_true", help="print both plans")
    parser.add_argument("--keep", action="store_true", help="keep the schema")
    args = parser.parse_args(argv)

    schema = f"bench_stats_{uuid.uuid4().hex[:8]}"
    os.environ.setdefault("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    os.environ["DB_SCHEMA"] = schema
    os.environ.setdefault("HUB_SECRET_KEY", secrets.token_urlsafe(48))
    os.environ.setdefault("LOG_LEVEL", "WARNING")

    from werkzeug.datastructures import MultiDict

    from shared import stats
    from shared.db import get_engine

    try:
        prepare(args.rows)
        today = datetime.now(UTC).date()
        first_day = today - timedelta(days=6)
        query = stats.parse_query(
            MultiDict(
                {"date_from": first_day.isoformat(), "date_to": today.isoformat()}
            )
        )
        with get_engine().connect() as connection:
            model_ids = list(
                connection.execute(
                    sa.text("SELECT id FROM model ORDER BY id")
                ).scalars()
            )
            previous = sa.text(previous_query(model_ids))
            window = {
                "date_from": datetime.combine(first_day, datetime.min.time()),
                "date_to": datetime.combine(today, datetime.max.time()),
            }
            if args.explain:
                explain(connection, query, previous, window)

            ours, theirs = [], []
            for _ in range(args.runs + 1):
                started = time.perf_counter()
                _, records = stats.run(connection, query)
                ours.append(time.perf_counter() - started)
                started = time.perf_counter()
                old_rows = connection.execute(previous, window).all()
                theirs.append(time.perf_counter() - started)
            connection.rollback()
        # The first run of each warms the caches and is not counted.
        ours_ms = statistics.median(ours[1:]) * 1000
        theirs_ms = statistics.median(theirs[1:]) * 1000
        print(f"groups: {len(records)} (this query), {len(old_rows)} (previous)")
        print(f"this hub (one pass, with p50/p95):  {ours_ms:7.1f} ms median")
        print(f"previous shape (CTEs + 2 joins):     {theirs_ms:7.1f} ms median")
        print(
            f"ratio: this query is {theirs_ms / ours_ms:.2f}x faster than the "
            f"previous shape at {args.rows} rows"
        )
    finally:
        if not args.keep:
            with get_engine().begin() as connection:
                connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    return 0


def explain(connection, query, previous, window) -> None:
    from shared import stats

    model_ids = list(
        connection.execute(sa.text("SELECT id FROM model ORDER BY id")).scalars()
    )
    statement, params = stats.build_sql(query, model_ids)
    for title, text, values in (
        ("this hub", statement.text, params),
        ("previous shape", previous.text, window),
    ):
        plan = connection.execute(
            sa.text("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + text), values
        ).scalars()
        print(f"--- plan: {title}")
        for line in plan:
            print(line)


if __name__ == "__main__":
    raise SystemExit(main())
