"""The job agent's side of the hub, scoped by the instance's job token.

`GET /job` returns the inputs (the request becomes PROCESSING),
`POST /job/result` takes `{"results": [...]}` (COMPLETED), and
`POST /job/failure` takes `{"reason": "..."}` (FAILED).
"""

import flask
import functions_framework

from shared import jobs as job_store
from shared.auth import require_job_grant
from shared.db import transaction
from shared.http import (
    ApiError,
    json_api,
    json_body,
    method_not_allowed,
    not_found,
    route_parts,
)
from shared.logs import get_logger, log_event
from shared.settings import get_settings

get_settings()
logger = get_logger("functions.jobs")


@functions_framework.http
@json_api
def jobs(request: flask.Request):
    parts = route_parts(request)
    if parts == ["job"]:
        if request.method != "GET":
            raise method_not_allowed(request, "GET")
        return fetch(request)
    if parts == ["job", "result"] or parts == ["job", "failure"]:
        if request.method != "POST":
            raise method_not_allowed(request, "POST")
        return report(request, parts[1])
    raise not_found(request, "GET /job, POST /job/result and POST /job/failure")


def fetch(request: flask.Request):
    grant = require_job_grant(request)
    with transaction() as connection:
        job = job_store.fetch_job(connection, grant)
    log_event(
        logger,
        "jobs.fetched",
        request_id=grant.request_id,
        instance=grant.instance_name,
        inputs=len(job.inputs),
    )
    return flask.jsonify(job.__dict__)


def report(request: flask.Request, kind: str):
    grant = require_job_grant(request)
    # Model output may hold such text; the results module cleans it.
    body = json_body(request, strict_text=False)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")

    with transaction() as connection:
        if kind == "result":
            report = job_store.record_result(connection, grant, body.get("results"))
        else:
            report = job_store.record_failure(connection, grant, body.get("reason"))
    log_event(
        logger,
        "jobs.reported",
        request_id=grant.request_id,
        instance=grant.instance_name,
        status=report.status,
        problem=report.problem,
    )

    if report.problem is not None:
        raise ApiError(
            422,
            "invalid_result",
            f"{report.problem}; the work request is now FAILED",
            status=report.status,
        )
    return flask.jsonify(request_id=grant.request_id, status=report.status)
