"""Stats and filters functions: every figure against Python on the same rows."""

from __future__ import annotations

import csv
import io
import math
import random
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from werkzeug.datastructures import MultiDict

from shared import catalog, stats, tokens
from tests.conftest import load_function

MODELS = ("alpha", "beta", "gamma")
USERS = [str(uuid.UUID(int=index + 1)) for index in range(2)]
SESSIONS = [str(uuid.UUID(int=index + 100)) for index in range(3)]
FIRST_DAY = date(2026, 11, 20)
DAYS = 10
TOLERANCE = 1e-6


def admin_headers(permissions=("ADMIN",), kind="user"):
    token, _ = tokens.issue_access_token(
        subject=str(uuid.uuid4()),
        session_id=str(uuid.uuid4()),
        kind=kind,
        permissions=list(permissions),
    )
    return {"Authorization": f"Bearer {token}"}


def make_rows(seed=7, count=400):
    """Build requests with varied owners, statuses, days and missing times."""
    rng = random.Random(seed)
    rows = []
    start = datetime.combine(FIRST_DAY, datetime.min.time(), UTC)
    for _ in range(count):
        anonymous = rng.random() < 0.6
        status = rng.choices(
            ["COMPLETED", "FAILED", "REQUESTED", "SCHEDULING", "PROCESSING"],
            [70, 15, 5, 5, 5],
        )[0]
        requested = start + timedelta(seconds=rng.uniform(0, DAYS * 86400))
        ready = job = done = None
        if status != "REQUESTED":
            ready = requested + timedelta(seconds=rng.uniform(0.5, 90))
        if status in ("COMPLETED", "PROCESSING") or (
            status == "FAILED" and rng.random() < 0.6
        ):
            job = (ready or requested) + timedelta(seconds=rng.uniform(0.1, 5))
        if status in ("COMPLETED", "FAILED"):
            done = (job or ready or requested) + timedelta(
                seconds=rng.uniform(0.01, 600)
            )
        rows.append(
            {
                "id": str(uuid.uuid4()),
                "model_id": rng.choice(MODELS),
                "status": status,
                "auth_type": "anonymous" if anonymous else "user",
                "user_id": None if anonymous else rng.choice(USERS),
                "session_id": rng.choice(SESSIONS) if anonymous else None,
                "input_size": 1,
                "attempts": 1,
                "request_timestamp": requested,
                "pod_ready_timestamp": ready,
                "job_submitted_timestamp": job,
                "processed_timestamp": done,
                "last_updated": requested,
            }
        )
    return rows


def boundary_rows():
    """Rows at the very edges of 2026-11-22 and 2026-11-24 (UTC)."""
    edges = [
        datetime(2026, 11, 22, 0, 0, 0, tzinfo=UTC),
        datetime(2026, 11, 21, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 11, 24, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 11, 25, 0, 0, 0, tzinfo=UTC),
    ]
    return [
        {
            "id": str(uuid.uuid4()),
            "model_id": "alpha",
            "status": "COMPLETED",
            "auth_type": "user",
            "user_id": USERS[0],
            "session_id": None,
            "input_size": 1,
            "attempts": 1,
            "request_timestamp": moment,
            "pod_ready_timestamp": moment + timedelta(seconds=1),
            "job_submitted_timestamp": moment + timedelta(seconds=2),
            "processed_timestamp": moment + timedelta(seconds=5),
            "last_updated": moment,
        }
        for moment in edges
    ]


@pytest.fixture
def dataset(db):
    rows = make_rows() + boundary_rows()
    with db.begin() as connection:
        for model_id in MODELS:
            catalog.upsert_model(connection, model_id, execution_mode="sync")
        catalog.upsert_model(connection, "unused", execution_mode="sync", enabled=False)
        connection.execute(
            sa.text(
                "INSERT INTO work_request (id, model_id, status, auth_type, user_id, "
                "session_id, input_size, attempts, request_timestamp, "
                "pod_ready_timestamp, job_submitted_timestamp, processed_timestamp, "
                "last_updated) VALUES (:id, :model_id, :status, :auth_type, "
                ":user_id, :session_id, :input_size, :attempts, :request_timestamp, "
                ":pod_ready_timestamp, :job_submitted_timestamp, "
                ":processed_timestamp, :last_updated)"
            ),
            rows,
        )
    return rows


@pytest.fixture
def stats_client(db):
    return load_function("stats", "stats_api").test_client()


@pytest.fixture
def filters_client(db):
    return load_function("filters", "filters_api").test_client()


# --- the reference computation ------------------------------------------------


def seconds(end, start):
    if end is None or start is None:
        return None
    return (end - start).total_seconds()


def percentile(values, fraction):
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def figures(values):
    values = [value for value in values if value is not None]
    if not values:
        return dict.fromkeys(stats.FIGURES)
    return {
        "total": sum(values),
        "max": max(values),
        "min": min(values),
        "avg": sum(values) / len(values),
        "p50": percentile(values, 0.5),
        "p95": percentile(values, 0.95),
    }


def group_key(row, groups):
    key = []
    for group in groups:
        if group == "model":
            key.append(row["model_id"])
        elif group == "owner":
            key += [row["auth_type"], row["user_id"] or row["session_id"]]
        elif group == "auth_type":
            key.append(row["auth_type"])
        elif group == "day":
            key.append(row["request_timestamp"].astimezone(UTC).date().isoformat())
    return tuple(key)


def expected_records(rows, groups):
    grouped: dict[tuple, list] = {}
    for row in rows:
        grouped.setdefault(group_key(row, groups), []).append(row)

    records = {}
    for key, members in grouped.items():
        record = {
            "total_count": len(members),
            "success_count": sum(r["status"] == "COMPLETED" for r in members),
            "failure_count": sum(r["status"] == "FAILED" for r in members),
        }
        model = [
            seconds(r["processed_timestamp"], r["job_submitted_timestamp"])
            for r in members
        ]
        processing = [
            seconds(r["processed_timestamp"], r["request_timestamp"]) for r in members
        ]
        queue = [
            seconds(r["pod_ready_timestamp"], r["request_timestamp"]) for r in members
        ]
        done = [r["status"] == "COMPLETED" for r in members]
        for prefix, values in (("model_time", model), ("processing_time", processing)):
            for name, value in figures(values).items():
                record[f"{prefix}_{name}"] = value
            success = [v for v, ok in zip(values, done, strict=True) if ok]
            for name, value in figures(success).items():
                record[f"{prefix}_success_{name}"] = value
        for name, value in figures(queue).items():
            record[f"queue_wait_{name}"] = value
        records[key] = record
    return records


def key_of(record, groups):
    key = []
    for group in groups:
        for column in stats.GROUPS[group]:
            key.append(record[column])
    return tuple(key)


def assert_matches(response_rows, rows, groups):
    expected = expected_records(rows, groups)
    actual = {key_of(record, groups): record for record in response_rows}
    assert set(actual) == set(expected)
    for key, record in expected.items():
        for name, value in record.items():
            got = actual[key][name]
            if value is None:
                assert got is None, (key, name)
            else:
                assert got == pytest.approx(value, rel=TOLERANCE, abs=TOLERANCE), (
                    key,
                    name,
                )


def in_days(row, first, last):
    day = row["request_timestamp"].astimezone(UTC).date()
    return first <= day <= last


# --- figures, filters and grouping --------------------------------------------

FILTER_CASES = [
    ("none", {}, lambda r: True),
    ("one model", {"model_id": "beta"}, lambda r: r["model_id"] == "beta"),
    (
        "two models",
        {"model_id": "alpha,gamma"},
        lambda r: r["model_id"] in ("alpha", "gamma"),
    ),
    ("user", {"user_id": USERS[0]}, lambda r: r["user_id"] == USERS[0]),
    ("session", {"session_id": SESSIONS[1]}, lambda r: r["session_id"] == SESSIONS[1]),
    (
        "user or session",
        {"user_id": USERS[1], "session_id": SESSIONS[0]},
        lambda r: r["user_id"] == USERS[1] or r["session_id"] == SESSIONS[0],
    ),
    ("auth type", {"auth_type": "anonymous"}, lambda r: r["auth_type"] == "anonymous"),
    ("status", {"status": "FAILED"}, lambda r: r["status"] == "FAILED"),
    (
        "dates",
        {"date_from": "2026-11-22", "date_to": "2026-11-24"},
        lambda r: in_days(r, date(2026, 11, 22), date(2026, 11, 24)),
    ),
    (
        "from only",
        {"date_from": "2026-11-27"},
        lambda r: in_days(r, date(2026, 11, 27), date(2100, 1, 1)),
    ),
    (
        "to only",
        {"date_to": "2026-11-21"},
        lambda r: in_days(r, date(2000, 1, 1), date(2026, 11, 21)),
    ),
    (
        "everything",
        {
            "model_id": "alpha",
            "auth_type": "user",
            "status": "COMPLETED,FAILED",
            "date_from": "2026-11-21",
            "date_to": "2026-11-28",
        },
        lambda r: (
            r["model_id"] == "alpha"
            and r["auth_type"] == "user"
            and r["status"] in ("COMPLETED", "FAILED")
            and in_days(r, date(2026, 11, 21), date(2026, 11, 28))
        ),
    ),
]


@pytest.mark.parametrize(
    ("params", "keep"),
    [case[1:] for case in FILTER_CASES],
    ids=[case[0] for case in FILTER_CASES],
)
def test_filters_match_python(stats_client, dataset, params, keep):
    response = stats_client.get("/", query_string=params, headers=admin_headers())

    assert response.status_code == 200, response.get_json()
    assert_matches(
        response.get_json()["rows"], [r for r in dataset if keep(r)], ["model"]
    )


GROUPINGS = [
    ["model"],
    ["owner"],
    ["auth_type"],
    ["day"],
    ["model", "day"],
    ["auth_type", "owner"],
    ["day", "model", "auth_type"],
]


@pytest.mark.parametrize("groups", GROUPINGS, ids=["+".join(g) for g in GROUPINGS])
def test_groupings_match_python(stats_client, dataset, groups):
    response = stats_client.get(
        "/", query_string={"group_by": ",".join(groups)}, headers=admin_headers()
    )

    assert response.status_code == 200, response.get_json()
    assert_matches(response.get_json()["rows"], dataset, groups)


def test_group_aliases(stats_client, dataset):
    by_user = stats_client.get("/?group_by=user", headers=admin_headers()).get_json()
    by_owner = stats_client.get("/?group_by=owner", headers=admin_headers()).get_json()

    assert by_user["rows"] == by_owner["rows"]


def test_empty_population_is_null(stats_client, dataset):
    response = stats_client.get("/?status=REQUESTED", headers=admin_headers())

    rows = response.get_json()["rows"]
    assert rows
    for row in rows:
        assert row["success_count"] == 0
        assert row["model_time_total"] is None
        assert row["model_time_success_p50"] is None
        assert row["queue_wait_avg"] is None


def test_no_rows_gives_no_groups(stats_client, dataset):
    response = stats_client.get("/?model_id=unused", headers=admin_headers())

    assert response.status_code == 200
    assert response.get_json()["rows"] == []


def test_date_boundaries_in_other_session_zones(dataset, db):
    query = stats.parse_query(
        MultiDict(
            {
                "date_from": "2026-11-22",
                "date_to": "2026-11-24",
                "model_id": "alpha",
                "group_by": "day",
            }
        )
    )
    results = []
    for zone in ("UTC", "Pacific/Kiritimati", "America/Adak"):
        with db.connect() as connection:
            connection.execute(sa.text(f"SET TIME ZONE '{zone}'"))
            results.append(stats.run(connection, query)[1])
            connection.rollback()

    assert results[0] == results[1] == results[2]
    days = [record["day"] for record in results[0]]
    assert days[0] == "2026-11-22"
    assert days[-1] == "2026-11-24"
    kept = [
        r
        for r in dataset
        if r["model_id"] == "alpha"
        and in_days(r, date(2026, 11, 22), date(2026, 11, 24))
    ]
    assert sum(record["total_count"] for record in results[0]) == len(kept)


# --- CSV ------------------------------------------------------------------------


def test_csv_matches_json(stats_client, dataset):
    as_json = stats_client.get("/?group_by=model,owner", headers=admin_headers())
    as_csv = stats_client.get(
        "/?group_by=model,owner&format=csv", headers=admin_headers()
    )

    assert as_csv.mimetype == "text/csv"
    assert "attachment" in as_csv.headers["Content-Disposition"]
    assert as_csv.headers["Content-Disposition"].endswith('.csv"')
    parsed = list(csv.reader(io.StringIO(as_csv.get_data(as_text=True))))
    body = as_json.get_json()
    assert parsed[0] == body["columns"]
    assert len(parsed) == len(body["rows"]) + 1
    for cells, record in zip(parsed[1:], body["rows"], strict=True):
        for column, cell in zip(body["columns"], cells, strict=True):
            value = record[column]
            if value is None:
                assert cell == ""
            elif isinstance(value, bool | str):
                assert cell == value
            elif isinstance(value, int):
                assert int(cell) == value
            else:
                assert float(cell) == value


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ('=HYPERLINK("x")', '"\'=HYPERLINK(""x"")"'),
        ("+1", "'+1"),
        ("-cmd", "'-cmd"),
        ("@sum", "'@sum"),
        ("a,b", '"a,b"'),
        ('say "hi"', '"say ""hi"""'),
        ("two\nlines", '"two\nlines"'),
        (None, ""),
        (1.5, "1.5"),
        (-2.25, "-2.25"),
        (3, "3"),
    ],
)
def test_csv_cells_escaped(value, cell):
    lines = list(stats.csv_lines(["v"], [{"v": value}]))

    assert lines[1] == cell + "\r\n"


# --- parameters and permissions ---------------------------------------------------

BAD_PARAMETERS = [
    ({"date_from": "2026-13-01"}, "date_from"),
    ({"date_from": "yesterday"}, "date_from"),
    ({"date_to": "2026-02-30"}, "date_to"),
    ({"date_from": "2026-11-25", "date_to": "2026-11-24"}, "date_from"),
    ({"group_by": "model,planet"}, "group_by"),
    ({"user_id": "not-a-uuid"}, "user_id"),
    ({"session_id": "123"}, "session_id"),
    ({"status": "DONE"}, "status"),
    ({"auth_type": "robot"}, "auth_type"),
    ({"model_id": "Bad Model"}, "model_id"),
    ({"format": "xlsx"}, "format"),
    ({"date_form": "2026-11-24"}, "date_form"),
]


@pytest.mark.parametrize(("params", "parameter"), BAD_PARAMETERS)
def test_bad_parameter_named(stats_client, db, params, parameter):
    response = stats_client.get("/", query_string=params, headers=admin_headers())

    assert response.status_code == 400
    assert response.get_json()["parameter"] == parameter
    assert response.get_json()["detail"].startswith(parameter)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        (admin_headers(permissions=()), 403),
        (admin_headers(kind="anonymous"), 403),
    ],
    ids=["no token", "plain user", "anonymous"],
)
def test_stats_and_filters_admin_only(
    stats_client, filters_client, db, headers, status
):
    assert stats_client.get("/", headers=headers).status_code == status
    assert filters_client.get("/", headers=headers).status_code == status


def test_filters_lists_everything_split(filters_client, dataset):
    response = filters_client.get("/", headers=admin_headers())

    body = response.get_json()
    assert response.status_code == 200
    assert [m["id"] for m in body["models"]] == ["alpha", "beta", "gamma", "unused"]
    assert body["auth_types"] == ["anonymous", "user"]
    assert body["owners"]["user"]["ids"] == sorted(USERS)
    assert body["owners"]["anonymous"]["ids"] == sorted(SESSIONS)
    assert body["owners"]["user"]["next_after"] is None
    assert "model" in body["group_by"]


def test_filters_pages_owner_lists(filters_client, dataset):
    first = filters_client.get("/?limit=2", headers=admin_headers()).get_json()
    cursor = first["owners"]["anonymous"]["next_after"]
    second = filters_client.get(
        f"/?limit=2&session_after={cursor}", headers=admin_headers()
    ).get_json()

    assert first["owners"]["anonymous"]["ids"] == sorted(SESSIONS)[:2]
    assert cursor == sorted(SESSIONS)[1]
    assert second["owners"]["anonymous"]["ids"] == sorted(SESSIONS)[2:]
    assert second["owners"]["anonymous"]["next_after"] is None


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("user_after=zz", "user_after"),
        ("page=2", "page"),
    ],
)
def test_filters_bad_parameter(filters_client, db, query, parameter):
    response = filters_client.get(f"/?{query}", headers=admin_headers())

    assert response.status_code == 400
    assert response.get_json()["parameter"] == parameter


@pytest.mark.parametrize(
    ("query", "code"),
    [("date_to=9999-12-31", 200), ("format=csv&format=json", 400), ("limit=1", 400)],
)
def test_stats_edge_values(stats_client, dataset, query, code):
    assert stats_client.get(f"/?{query}", headers=admin_headers()).status_code == code
