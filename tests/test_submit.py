"""The submit function, through functions-framework, on real PostgreSQL."""

from __future__ import annotations

import io

import pytest
import sqlalchemy as sa

from shared.settings import get_settings


def count_rows(db, table: str) -> int:
    with db.connect() as connection:
        return connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()


def stored_inputs(db, request_id: str) -> list[str]:
    with db.connect() as connection:
        return connection.execute(
            sa.text("SELECT input FROM work_request_data WHERE id = :id"),
            {"id": request_id},
        ).scalar()


def test_json_submission_is_stored(submit_client, demo_models, auth):
    body = {"model_id": "demo-molweight", "inputs": ["CCO", " c1ccccc1 ", "CCO"]}

    response = submit_client.post("/", json=body, headers=auth)

    assert response.status_code == 201
    created = response.get_json()
    assert created["status"] == "REQUESTED"
    assert created["input_size"] == 3
    assert created["model_id"] == "demo-molweight"
    assert response.headers["Location"] == f"/{created['id']}"
    assert stored_inputs(demo_models, created["id"]) == ["CCO", "c1ccccc1", "CCO"]


def test_request_records_owner_session(submit_client, demo_models, auth):
    body = {"model_id": "demo-molweight", "inputs": ["CCO"]}

    created = submit_client.post("/", json=body, headers=auth).get_json()

    with demo_models.connect() as connection:
        row = connection.execute(
            sa.text(
                "SELECT auth_type, session_id, user_id, request_timestamp "
                "FROM work_request WHERE id = :id"
            ),
            {"id": created["id"]},
        ).one()
    assert row.auth_type == "anonymous"
    assert row.session_id is not None
    assert row.user_id is None
    assert row.request_timestamp.utcoffset().total_seconds() == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("smiles\nCCO\nCCN\n", ["CCO", "CCN"]),
        ("\ufeffSMILES\r\nCCO\r\n\r\nCCN\r\n", ["CCO", "CCN"]),
        ("CCO\nCCN", ["CCO", "CCN"]),
        ("name,smiles\nethanol,CCO\nethylamine,CCN\n", ["CCO", "CCN"]),
        ("\n\nCCO\n   \nCCN\n\n", ["CCO", "CCN"]),
        ('"C(=O)O"\n', ["C(=O)O"]),
    ],
)
def test_csv_body_variants(submit_client, demo_models, auth, text, expected):
    response = submit_client.post(
        "/?model_id=demo-molweight",
        data=text.encode("utf-8"),
        content_type="text/csv",
        headers=auth,
    )

    assert response.status_code == 201, response.get_json()
    assert stored_inputs(demo_models, response.get_json()["id"]) == expected


def test_csv_header_option_false_keeps_first_row(submit_client, demo_models, auth):
    response = submit_client.post(
        "/?model_id=demo-molweight&header=false",
        data=b"CCO\nCCN\n",
        content_type="text/csv",
        headers=auth,
    )

    assert response.status_code == 201
    assert stored_inputs(demo_models, response.get_json()["id"]) == ["CCO", "CCN"]


def test_multipart_upload(submit_client, demo_models, auth):
    data = {
        "model_id": "demo-descriptors",
        "file": (io.BytesIO(b"smiles\r\nCCO\r\nc1ccccc1O\r\n"), "mols.csv"),
    }

    response = submit_client.post(
        "/", data=data, content_type="multipart/form-data", headers=auth
    )

    assert response.status_code == 201, response.get_json()
    assert stored_inputs(demo_models, response.get_json()["id"]) == [
        "CCO",
        "c1ccccc1O",
    ]


def test_models_listing_shows_enabled_only(submit_client, demo_models):
    response = submit_client.get("/models")

    assert response.status_code == 200
    ids = [model["id"] for model in response.get_json()["models"]]
    assert ids == ["demo-descriptors", "demo-molweight"]


def post_json(client, auth, body):
    return client.post("/", json=body, headers=auth)


REJECTIONS = [
    # (name, request kwargs, status, error code)
    ("no body", {"data": b"", "content_type": "application/json"}, 400, "missing_body"),
    (
        "bad json",
        {"data": b"{nope", "content_type": "application/json"},
        400,
        "invalid_json",
    ),
    ("json list", {"json": ["CCO"]}, 400, "invalid_body"),
    ("no model", {"json": {"inputs": ["CCO"]}}, 400, "missing_model_id"),
    (
        "bad model id",
        {"json": {"model_id": "Bad Id!", "inputs": ["CCO"]}},
        400,
        "invalid_model_id",
    ),
    (
        "unknown model",
        {"json": {"model_id": "nope", "inputs": ["CCO"]}},
        404,
        "model_not_found",
    ),
    (
        "disabled model",
        {"json": {"model_id": "demo-off", "inputs": ["CCO"]}},
        409,
        "model_disabled",
    ),
    ("no inputs key", {"json": {"model_id": "demo-molweight"}}, 400, "missing_inputs"),
    (
        "inputs not list",
        {"json": {"model_id": "demo-molweight", "inputs": "CCO"}},
        422,
        "invalid_inputs",
    ),
    (
        "number input",
        {"json": {"model_id": "demo-molweight", "inputs": ["CCO", 5]}},
        422,
        "invalid_inputs",
    ),
    (
        "empty list",
        {"json": {"model_id": "demo-molweight", "inputs": []}},
        422,
        "no_inputs",
    ),
    (
        "blank input",
        {"json": {"model_id": "demo-molweight", "inputs": ["CCO", "  "]}},
        422,
        "empty_input",
    ),
    (
        "space inside",
        {"json": {"model_id": "demo-molweight", "inputs": ["CC O"]}},
        422,
        "invalid_smiles",
    ),
    (
        "comma inside",
        {"json": {"model_id": "demo-molweight", "inputs": ["CCO,CCN"]}},
        422,
        "invalid_smiles",
    ),
    (
        "too long",
        {"json": {"model_id": "demo-molweight", "inputs": ["C" * 2001]}},
        422,
        "input_too_long",
    ),
    (
        "wrong type",
        {"data": b"CCO", "content_type": "application/xml"},
        415,
        "unsupported_media_type",
    ),
    (
        "latin-1 csv",
        {
            "data": "smiles\nC\xe9\n".encode("latin-1"),
            "content_type": "text/csv",
            "query_string": {"model_id": "demo-molweight"},
        },
        400,
        "invalid_encoding",
    ),
    (
        "csv without model",
        {"data": b"CCO\n", "content_type": "text/csv"},
        400,
        "missing_model_id",
    ),
    (
        "bad header option",
        {
            "data": b"CCO\n",
            "content_type": "text/csv",
            "query_string": {"model_id": "demo-molweight", "header": "maybe"},
        },
        400,
        "invalid_header_option",
    ),
    (
        "header only csv",
        {
            "data": b"smiles\n",
            "content_type": "text/csv",
            "query_string": {"model_id": "demo-molweight"},
        },
        422,
        "no_inputs",
    ),
    (
        "upload without file",
        {"data": {"model_id": "demo-molweight"}, "content_type": "multipart/form-data"},
        400,
        "missing_file",
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [case[1:] for case in REJECTIONS],
    ids=[case[0] for case in REJECTIONS],
)
def test_rejected_submission(submit_client, demo_models, auth, kwargs, status, error):
    response = submit_client.post("/", headers=auth, **kwargs)

    assert response.status_code == status
    body = response.get_json()
    assert body["error"] == error
    assert isinstance(body["detail"], str)
    assert len(body["detail"]) > 10
    assert count_rows(demo_models, "work_request") == 0
    assert count_rows(demo_models, "work_request_data") == 0


def test_too_many_inputs_names_limit(submit_client, demo_models, auth):
    limit = get_settings().max_inputs
    body = {"model_id": "demo-molweight", "inputs": ["CCO"] * (limit + 1)}

    response = post_json(submit_client, auth, body)

    assert response.status_code == 413
    assert response.get_json()["error"] == "too_many_inputs"
    assert response.get_json()["limit"] == limit
    assert str(limit) in response.get_json()["detail"]
    assert count_rows(demo_models, "work_request") == 0


def test_exactly_the_limit_is_accepted(submit_client, demo_models, auth):
    limit = get_settings().max_inputs
    body = {"model_id": "demo-molweight", "inputs": ["CCO"] * limit}

    response = post_json(submit_client, auth, body)

    assert response.status_code == 201
    assert response.get_json()["input_size"] == limit


def test_oversized_body_is_rejected_early(submit_client, demo_models, auth):
    huge = b"C" * (get_settings().max_inputs * 2100 + 100_000)

    response = submit_client.post(
        "/?model_id=demo-molweight", data=huge, content_type="text/csv", headers=auth
    )

    assert response.status_code == 413
    assert count_rows(demo_models, "work_request") == 0


def test_invalid_smiles_names_row_and_value(submit_client, demo_models, auth):
    response = submit_client.post(
        "/?model_id=demo-molweight",
        data=b"smiles\nCCO\nCC O\n",
        content_type="text/csv",
        headers=auth,
    )

    body = response.get_json()
    assert response.status_code == 422
    assert body["row"] == 3
    assert "'CC O'" in body["detail"]


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, "missing_token"),
        ({"Authorization": "Basic abc"}, "missing_token"),
        ({"Authorization": "Bearer not-a-jwt"}, "invalid_token"),
    ],
)
def test_submit_requires_session(submit_client, demo_models, headers, error):
    body = {"model_id": "demo-molweight", "inputs": ["CCO"]}

    response = submit_client.post("/", json=body, headers=headers)

    assert response.status_code == 401
    assert response.get_json()["error"] == error
    assert count_rows(demo_models, "work_request") == 0


def test_wrong_method_and_path(submit_client, demo_models, auth):
    assert submit_client.get("/", headers=auth).status_code == 405
    assert submit_client.post("/nowhere", headers=auth).status_code == 404


MORE_REJECTIONS = [
    (
        "unknown json field",
        {"json": {"model_id": "demo-molweight", "inputs": ["CCO"], "input": ["x"]}},
        400,
        "unknown_field",
    ),
    (
        "model in query and json",
        {
            "json": {"model_id": "demo-molweight", "inputs": ["CCO"]},
            "query_string": {"model_id": "demo-qed"},
        },
        400,
        "duplicate_parameter",
    ),
    (
        "model twice in query",
        {
            "data": b"CCO\n",
            "content_type": "text/csv",
            "query_string": [("model_id", "demo-molweight"), ("model_id", "demo-qed")],
        },
        400,
        "duplicate_parameter",
    ),
    (
        "two file parts",
        {
            "data": {
                "model_id": "demo-molweight",
                "file": [
                    (io.BytesIO(b"CCO\n"), "a.csv"),
                    (io.BytesIO(b"CCN\n"), "b.csv"),
                ],
            },
            "content_type": "multipart/form-data",
        },
        400,
        "duplicate_parameter",
    ),
    (
        "model in form and query",
        {
            "data": {
                "model_id": "demo-molweight",
                "file": (io.BytesIO(b"CCO\n"), "a.csv"),
            },
            "content_type": "multipart/form-data",
            "query_string": {"model_id": "demo-molweight"},
        },
        400,
        "duplicate_parameter",
    ),
    (
        "multipart without boundary",
        {"data": b"--x\r\n", "headers": {"Content-Type": "multipart/form-data"}},
        400,
        "invalid_multipart",
    ),
    (
        "model id with newline",
        {"json": {"model_id": "demo-molweight\n", "inputs": ["CCO"]}},
        400,
        "invalid_model_id",
    ),
    (
        "unterminated quote",
        {
            "data": b'smiles\n"CCO\n',
            "content_type": "text/csv",
            "query_string": {"model_id": "demo-molweight"},
        },
        400,
        "invalid_csv",
    ),
    (
        "deeply nested json",
        {"data": b"[" * 5000 + b"]" * 5000, "content_type": "application/json"},
        400,
        "invalid_json",
    ),
    (
        "smiles with trailing newline",
        {"json": {"model_id": "demo-molweight", "inputs": ["CC\nO"]}},
        422,
        "invalid_smiles",
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [case[1:] for case in MORE_REJECTIONS],
    ids=[case[0] for case in MORE_REJECTIONS],
)
def test_ambiguous_submission_rejected(
    submit_client, demo_models, auth, kwargs, status, error
):
    headers = {**auth, **kwargs.pop("headers", {})}

    response = submit_client.post("/", headers=headers, **kwargs)

    assert response.status_code == status
    assert response.get_json()["error"] == error
    assert count_rows(demo_models, "work_request") == 0


def test_csv_error_names_file_line(submit_client, demo_models, auth):
    response = submit_client.post(
        "/?model_id=demo-molweight",
        data=b"smiles\n\nCCO\n\n\nCCN\nC C\n",
        content_type="text/csv",
        headers=auth,
    )

    body = response.get_json()
    assert response.status_code == 422
    assert body["row"] == 7
    assert body["detail"].startswith("line 7")


def test_csv_without_model_names_query(submit_client, demo_models, auth):
    response = submit_client.post(
        "/", data=b"CCO\n", content_type="text/csv", headers=auth
    )

    assert response.status_code == 400
    assert "?model_id=" in response.get_json()["detail"]
