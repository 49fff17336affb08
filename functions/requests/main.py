"""The caller's own work requests and their results.

- `GET /` lists them, newest first (`?status=`, `?model_id=`, `?limit=`).
- `GET /<id>` returns one with its status and stage timestamps.
- `GET /<id>/results?format=csv|json` returns the results, one row per
  input in input order.

Requests of other owners return 404.
"""

import flask
import functions_framework

from shared import owner_requests
from shared.auth import require_owner
from shared.http import json_api, method_not_allowed, not_found, route_parts
from shared.settings import get_settings

get_settings()


@functions_framework.http
@json_api
def requests_api(request: flask.Request):
    if request.method != "GET":
        raise method_not_allowed(request, "GET")
    owner = require_owner(request)
    parts = route_parts(request)

    if not parts:
        return flask.jsonify(owner_requests.list_requests(owner, request.args))
    if len(parts) == 1:
        return flask.jsonify(owner_requests.get_request(owner, parts[0]))
    if len(parts) == 2 and parts[1] == "results":
        return owner_requests.results_response(owner, parts[0], request.args)
    raise not_found(request, "GET /, GET /<id> and GET /<id>/results")
