"""Per-model statistics of work requests, with filters and grouping.

One query, one pass over the covering index `work_request_stats`: counts,
then for each duration the total, max, min, mean, p50 and p95 (linear
interpolation, as PostgreSQL's percentile_cont). Durations are in seconds:

- model time: job submitted to processed (rows that have both),
- processing time: requested to completed or failed,
- queue wait: requested to pod ready.

Model and processing time also come for COMPLETED requests alone. An empty
population gives null, never 0. Every value reaches SQL as a bound
parameter; only whitelisted column expressions are spliced in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from werkzeug.datastructures import MultiDict

from shared import params
from shared.results import csv_cell
from shared.workrequests import Status

GROUPS = {
    "model": ("model_id",),
    "owner": ("auth_type", "owner_id"),
    "auth_type": ("auth_type",),
    "day": ("day",),
}
GROUP_ALIASES = {"user": "owner", "session": "owner", "model_id": "model"}
GROUP_EXPRESSIONS = {
    "model_id": "model_id",
    "auth_type": "auth_type",
    "owner_id": "coalesce(user_id, session_id)::text",
    "day": "(request_timestamp AT TIME ZONE 'UTC')::date",
}
AUTH_TYPES = ("anonymous", "user")
PARAMETERS = {
    "model_id",
    "user_id",
    "session_id",
    "auth_type",
    "status",
    "date_from",
    "date_to",
    "group_by",
    "format",
}
# (output prefix, stored column, success-only variant?)
DURATIONS = (
    ("model_time", "model_seconds", True),
    ("processing_time", "processing_seconds", True),
    ("queue_wait", "queue_seconds", False),
)
FIGURES = ("total", "max", "min", "avg", "p50", "p95")
SUCCESS = f"status = '{Status.COMPLETED}'"
# Parts of a model-grouped query run side by side; two matches two cores.
PARALLEL_PARTS = 2


@dataclass(frozen=True)
class StatsQuery:
    """Checked filters and grouping of one stats request."""

    model_ids: tuple[str, ...] = ()
    user_ids: tuple[str, ...] = ()
    session_ids: tuple[str, ...] = ()
    auth_types: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    date_from: date | None = None
    date_to: date | None = None
    group_by: tuple[str, ...] = ("model",)
    output: str = "json"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "model_id": list(self.model_ids),
            "user_id": list(self.user_ids),
            "session_id": list(self.session_ids),
            "auth_type": list(self.auth_types),
            "status": list(self.statuses),
            "date_from": self.date_from.isoformat() if self.date_from else None,
            "date_to": self.date_to.isoformat() if self.date_to else None,
            "group_by": list(self.group_by),
        }


def _group_by(args: MultiDict) -> tuple[str, ...]:
    names = params.values(args, "group_by") or ["model"]
    groups = []
    for name in names:
        group = GROUP_ALIASES.get(name, name)
        if group not in GROUPS:
            raise params.invalid(
                "group_by",
                f"{name[:40]!r} is unknown; use model, owner (user or session), "
                "auth_type or day, comma-separated for several",
            )
        groups.append(group)
    return tuple(dict.fromkeys(groups))


def parse_query(args: MultiDict) -> StatsQuery:
    """Check every stats parameter; raise 400 naming the one at fault."""
    params.reject_unknown(args, PARAMETERS)

    model_ids = params.model_ids(args)
    date_from, date_to = params.day_pair(args)
    output = (params.single(args, "format") or "json").lower()
    if output not in ("json", "csv"):
        raise params.invalid("format", f"{output[:20]!r} is invalid; use json or csv")

    return StatsQuery(
        model_ids=model_ids,
        user_ids=params.uuids(args, "user_id"),
        session_ids=params.uuids(args, "session_id"),
        auth_types=params.choices(args, "auth_type", AUTH_TYPES),
        statuses=params.choices(args, "status", tuple(Status)),
        date_from=date_from,
        date_to=date_to,
        group_by=_group_by(args),
        output=output,
    )


def group_columns(query: StatsQuery) -> list[str]:
    columns: list[str] = []
    for group in query.group_by:
        for column in GROUPS[group]:
            if column not in columns:
                columns.append(column)
    return columns


def figure_columns() -> list[str]:
    columns = ["total_count", "success_count", "failure_count"]
    for prefix, _, has_success in DURATIONS:
        columns += [f"{prefix}_{figure}" for figure in FIGURES]
        if has_success:
            columns += [f"{prefix}_success_{figure}" for figure in FIGURES]
    return columns


def _aggregates(column: str, condition: str | None) -> list[str]:
    where = f" FILTER (WHERE {condition})" if condition else ""
    return [
        f"sum({column}){where}",
        f"max({column}){where}",
        f"min({column}){where}",
        f"avg({column}){where}",
        f"percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY {column}){where}",
    ]


def _where(query: StatsQuery, model_ids: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Return the WHERE conditions and their bound values."""
    conditions = ["model_id = ANY(:model_ids)"]
    bound: dict[str, Any] = {"model_ids": model_ids}
    start, end = params.whole_days(query.date_from, query.date_to)
    if start is not None:
        conditions.append("request_timestamp >= :start")
        bound["start"] = start
    if end is not None:
        conditions.append("request_timestamp < :end")
        bound["end"] = end

    owners = []
    if query.user_ids:
        owners.append(
            "(auth_type = 'user' AND user_id = ANY(CAST(:user_ids AS uuid[])))"
        )
        bound["user_ids"] = list(query.user_ids)
    if query.session_ids:
        owners.append(
            "(auth_type = 'anonymous' "
            "AND session_id = ANY(CAST(:session_ids AS uuid[])))"
        )
        bound["session_ids"] = list(query.session_ids)
    if owners:
        conditions.append("(" + " OR ".join(owners) + ")")

    if query.auth_types:
        conditions.append("auth_type = ANY(:auth_types)")
        bound["auth_types"] = list(query.auth_types)
    if query.statuses:
        conditions.append("status = ANY(:statuses)")
        bound["statuses"] = list(query.statuses)
    return conditions, bound


def build_sql(query: StatsQuery, model_ids: list[str]) -> tuple[sa.TextClause, dict]:
    """Build the stats statement and its bound parameters.

    Ordered-set aggregates (the percentiles) cannot be split across
    PostgreSQL's parallel workers. When the grouping includes the model, the
    models are split into PARALLEL_PARTS halves joined by UNION ALL instead,
    which PostgreSQL runs as a Parallel Append, one part per worker.
    """
    groups = group_columns(query)
    selects = [f"{GROUP_EXPRESSIONS[name]} AS {name}" for name in groups]
    selects += [
        "count(*)",
        f"count(*) FILTER (WHERE {SUCCESS})",
        f"count(*) FILTER (WHERE status = '{Status.FAILED}')",
    ]
    for _, column, has_success in DURATIONS:
        selects += _aggregates(column, None)
        if has_success:
            selects += _aggregates(column, SUCCESS)

    conditions, params = _where(query, model_ids)
    positions = ", ".join(str(index + 1) for index in range(len(groups)))
    # Only whitelisted expressions are spliced in; values are bound.
    select_list = ", ".join(selects)
    where = " AND ".join(conditions)
    part = (
        f"SELECT {select_list} FROM work_request "  # noqa: S608
        f"WHERE {where} GROUP BY {positions}"
    )

    parts = [model_ids]
    if "model_id" in groups and len(model_ids) >= PARALLEL_PARTS:
        size = -(-len(model_ids) // PARALLEL_PARTS)
        parts = [model_ids[i : i + size] for i in range(0, len(model_ids), size)]
    if len(parts) == 1:
        return sa.text(f"{part} ORDER BY {positions}"), params

    params.pop("model_ids")
    selects_by_part = []
    for index, models in enumerate(parts):
        params[f"model_ids_{index}"] = models
        selects_by_part.append(
            "(" + part.replace(":model_ids", f":model_ids_{index}") + ")"
        )
    union = " UNION ALL ".join(selects_by_part)
    return sa.text(f"{union} ORDER BY {positions}"), params


def _unpack(row: sa.Row, groups: list[str]) -> dict[str, Any]:
    values = list(row)
    record: dict[str, Any] = {}
    for name in groups:
        value = values.pop(0)
        record[name] = value.isoformat() if isinstance(value, date) else value
    for name in ("total_count", "success_count", "failure_count"):
        record[name] = values.pop(0)

    for prefix, _, has_success in DURATIONS:
        populations = [prefix, f"{prefix}_success"] if has_success else [prefix]
        for population in populations:
            total, maximum, minimum, mean, percentiles = values[:5]
            del values[:5]
            p50, p95 = percentiles if percentiles else (None, None)
            for figure, value in zip(
                FIGURES, (total, maximum, minimum, mean, p50, p95), strict=True
            ):
                record[f"{population}_{figure}"] = (
                    None if value is None else float(value)
                )
    return record


def run(connection: Connection, query: StatsQuery) -> tuple[list[str], list[dict]]:
    """Run the stats query; return the column names and one record per group."""
    model_ids = list(query.model_ids)
    if not model_ids:
        model_ids = list(
            connection.execute(sa.text("SELECT id FROM model ORDER BY id")).scalars()
        )
    statement, params = build_sql(query, sorted(model_ids))
    groups = group_columns(query)
    records = [_unpack(row, groups) for row in connection.execute(statement, params)]
    return groups + figure_columns(), records


def csv_lines(columns: list[str], records: list[dict]) -> Iterator[str]:
    """Yield the stats as CSV lines, header first; null is an empty cell."""
    yield ",".join(columns) + "\r\n"
    for record in records:
        cells = [_csv_value(record[column]) for column in columns]
        yield ",".join(cells) + "\r\n"


def _csv_value(value: Any) -> str:
    text = csv_cell(value)
    if any(character in text for character in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text
