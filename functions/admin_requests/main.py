"""Every user's and session's work requests, for administrators (ADMIN).

- `GET /` lists them without inputs or results (filters `user_id`,
  `session_id`, `model_id`, `status`, `date_from`, `date_to`; paging with
  `limit` and `after`).
- `POST /<id>/status` `{status: REQUESTED|FAILED, reason}` re-queues or
  fails a request.
- `GET /<id>/sensitive` returns inputs and results, after writing an audit
  record; `GET /audit` lists those records.
"""

import flask
import functions_framework

from shared import admin_requests
from shared.auth import require_admin
from shared.db import transaction
from shared.events import WORK_REQUEST_SUBMITTED, EventDeliveryError, emit
from shared.http import json_api, json_body, method_not_allowed, not_found, route_parts
from shared.logs import get_logger, log_event
from shared.runtime import get_runtime
from shared.settings import get_settings
from shared.throttle import client_address
from shared.workrequests import Status

get_settings()
logger = get_logger("functions.admin_requests")
ROUTES = "GET /, GET /audit, GET /<id>/sensitive and POST /<id>/status"


@functions_framework.http
@json_api
def admin_requests_api(request: flask.Request):
    claims = require_admin(request)
    parts = route_parts(request)
    if len(parts) == 2 and parts[1] == "status":
        if request.method != "POST":
            raise method_not_allowed(request, "POST")
        return set_status(request, parts[0], claims.subject)
    if request.method != "GET":
        raise method_not_allowed(request, "GET")
    if not parts:
        with transaction() as connection:
            return flask.jsonify(admin_requests.list_requests(connection, request.args))
    if parts == ["audit"]:
        with transaction() as connection:
            return flask.jsonify(admin_requests.list_audit(connection, request.args))
    if len(parts) == 2 and parts[1] == "sensitive":
        return sensitive(request, parts[0], claims.subject)
    raise not_found(request, ROUTES)


def sensitive(request: flask.Request, raw_id: str, admin_id: str):
    request_id = admin_requests.parse_id(raw_id)
    viewer = admin_requests.Viewer(
        admin_id, client_address(request), request.headers.get("User-Agent")
    )
    with transaction() as connection:
        body = admin_requests.view_sensitive(connection, request_id, viewer)
    log_event(
        logger, "admin.sensitive_viewed", admin_id=admin_id, request_id=request_id
    )
    return flask.jsonify(body)


def set_status(request: flask.Request, raw_id: str, admin_id: str):
    request_id = admin_requests.parse_id(raw_id)
    target, reason = admin_requests.check_action(json_body(request))

    with transaction() as connection:
        row, stopped = admin_requests.set_status(
            connection, get_runtime(), request_id, target, reason, admin_id
        )
    if target == Status.REQUESTED:
        notify_scheduler(request_id, row.model_id)

    log_event(
        logger,
        "admin.status_set",
        admin_id=admin_id,
        request_id=request_id,
        previous=row.status,
        status=str(target),
        instance_stopped=stopped,
    )
    return flask.jsonify(
        request_id=request_id,
        previous_status=row.status,
        status=str(target),
        instance_stopped=stopped,
    )


def notify_scheduler(request_id: str, model_id: str) -> None:
    try:
        emit(
            WORK_REQUEST_SUBMITTED,
            {"request_id": request_id, "model_id": model_id},
            subject=request_id,
        )
    except EventDeliveryError as error:
        log_event(
            logger,
            "admin.requeue_event_lost",
            level=40,
            request_id=request_id,
            error=str(error),
        )
