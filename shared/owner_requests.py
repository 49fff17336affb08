"""The owner's view (user or anonymous session) of their work requests.

Another owner's request returns 404, exactly like one that does not exist,
so request ids cannot be probed.
"""

from __future__ import annotations

from typing import Any

import flask
from werkzeug.datastructures import MultiDict

from shared import results, workrequests
from shared.auth import Owner
from shared.db import transaction
from shared.http import ApiError
from shared.inputs import check_model_id
from shared.workrequests import Status

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
FORMATS = ("json", "csv")


def _limit(args: MultiDict) -> int:
    raw = args.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise ApiError(
            400, "invalid_limit", f"limit={raw!r} is invalid: use 1 to {MAX_LIMIT}"
        )
    return value


def _status(args: MultiDict) -> str | None:
    raw = args.get("status")
    if raw is None:
        return None
    if raw.upper() not in Status.__members__:
        raise ApiError(
            400,
            "invalid_status",
            f"status={raw!r} is invalid: use one of {', '.join(Status)}",
        )
    return raw.upper()


def list_requests(owner: Owner, args: MultiDict) -> dict[str, Any]:
    limit = _limit(args)
    status = _status(args)
    model_id = args.get("model_id")
    if model_id is not None:
        model_id = check_model_id(model_id)
    with transaction() as connection:
        items = workrequests.list_owned(
            connection,
            owner,
            limit=limit,
            status=status,
            model_id=model_id,
        )
    return {"items": [item.to_json() for item in items]}


def _owned_or_404(connection, owner: Owner, raw_id: str) -> workrequests.WorkRequest:
    request_id = workrequests.parse_request_id(raw_id)
    found = None
    if request_id is not None:
        found = workrequests.get_owned(connection, owner, request_id)
    if found is None:
        raise ApiError(
            404,
            "request_not_found",
            f"work request {raw_id!r} does not exist or belongs to another session",
        )
    return found


def get_request(owner: Owner, raw_id: str) -> dict[str, Any]:
    with transaction() as connection:
        return _owned_or_404(connection, owner, raw_id).to_json()


def results_response(owner: Owner, raw_id: str, args: MultiDict) -> flask.Response:
    """Return the results as JSON or as a streamed CSV attachment."""
    output = (args.get("format") or "json").lower()
    if output not in FORMATS:
        raise ApiError(
            400, "invalid_format", f"format={output!r} is invalid: use json or csv"
        )

    with transaction() as connection:
        found = _owned_or_404(connection, owner, raw_id)
        if found.status != Status.COMPLETED:
            raise ApiError(
                409,
                "results_not_ready",
                f"work request {found.id} is {found.status}; results exist only "
                "once it is COMPLETED. Poll GET /<id> until its status is "
                "COMPLETED or FAILED",
                status=found.status,
                status_reason=found.status_reason,
            )
        inputs, stored = workrequests.load_data(connection, found.id)

    if output == "json":
        return flask.jsonify(
            request_id=found.id,
            model_id=found.model_id,
            columns=["input", *stored["columns"]],
            rows=results.json_rows(inputs, stored),
        )

    response = flask.Response(results.csv_lines(inputs, stored), mimetype="text/csv")
    filename = f"{found.model_id}-{found.id}.csv"
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
