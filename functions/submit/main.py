"""Submit a work request: molecules for one model.

`POST /` takes JSON `{"model_id", "inputs": [...]}`, a CSV or text body with
`?model_id=`, or a multipart upload (`file`, `model_id`), and returns 201
with the new request. `GET /models` lists the models that accept requests.
"""

import flask
import functions_framework

from shared import submissions
from shared.auth import require_owner
from shared.http import json_api, method_not_allowed, not_found, route_parts
from shared.settings import get_settings

settings = get_settings()


@functions_framework.http
@json_api
def submit(request: flask.Request):
    parts = route_parts(request)
    if parts == ["models"]:
        if request.method != "GET":
            raise method_not_allowed(request, "GET")
        return flask.jsonify(models=submissions.enabled_models())
    if parts:
        raise not_found(request, "POST / and GET /models")
    if request.method != "POST":
        raise method_not_allowed(request, "POST")

    owner = require_owner(request)
    created = submissions.submit(request, owner, settings)
    response = flask.jsonify(created.to_json())
    response.status_code = 201
    response.headers["Location"] = f"/{created.id}"
    return response
