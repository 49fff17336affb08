"""Live model instances, for administrators (ADMIN).

- `GET /` lists them with model, start time, pod status, request id and the
  Kubernetes events (filters `model_id`, `status`, `started_from`,
  `started_to`).
- `POST /<name>/stop` stops one; its request fails "stopped by admin".
- `GET /<name>/history` and `GET /history?request_id=<id>` return the
  instance log, oldest first.
"""

import flask
import functions_framework

from shared import admin_instances, workrequests
from shared.auth import require_admin
from shared.db import get_engine, transaction
from shared.http import ApiError, json_api, method_not_allowed, not_found, route_parts
from shared.instance_events import parse_instance_name
from shared.logs import get_logger, log_event
from shared.runtime import get_runtime
from shared.runtime.base import RuntimeUnavailable
from shared.settings import get_settings

get_settings()
logger = get_logger("functions.admin_instances")
ROUTES = "GET /, POST /<name>/stop, GET /<name>/history and GET /history"


@functions_framework.http
@json_api
def admin_instances_api(request: flask.Request):
    claims = require_admin(request)
    try:
        return route(request, claims.subject)
    except RuntimeUnavailable as error:
        raise ApiError(503, "runtime_unavailable", f"{error}; retry later") from error


def route(request: flask.Request, admin_id: str):
    parts = route_parts(request)
    if len(parts) == 2 and parts[1] == "stop":
        if request.method != "POST":
            raise method_not_allowed(request, "POST")
        result = admin_instances.stop_instance(
            get_engine(), get_runtime(), parts[0], admin_id
        )
        log_event(logger, "admin.instance_stopped", admin_id=admin_id, **result)
        return flask.jsonify(result)
    if request.method != "GET":
        raise method_not_allowed(request, "GET")
    if not parts:
        return flask.jsonify(
            admin_instances.list_instances(get_engine(), get_runtime(), request.args)
        )
    if parts == ["history"]:
        return history_of_request(request)
    if len(parts) == 2 and parts[1] == "history":
        if parse_instance_name(parts[0]) is None:
            raise ApiError(
                404, "instance_not_found", f"instance {parts[0][:80]!r} does not exist"
            )
        with transaction() as connection:
            return flask.jsonify(
                admin_instances.history(connection, name=parts[0], request_id=None)
            )
    raise not_found(request, ROUTES)


def history_of_request(request: flask.Request):
    raw = request.args.get("request_id", "")
    request_id = workrequests.parse_request_id(raw)
    if request_id is None:
        raise ApiError(
            400,
            "invalid_parameter",
            f"request_id: {raw[:40]!r} is not a UUID; give the work request id",
            parameter="request_id",
        )
    with transaction() as connection:
        return flask.jsonify(
            admin_instances.history(connection, name=None, request_id=request_id)
        )
