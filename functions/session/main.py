"""Open an anonymous session: `POST /` returns a signed session token.

The token owns the work requests made with it until it expires. Full
accounts come with the auth function.
"""

import flask
import functions_framework

from shared.http import json_api, method_not_allowed, route_parts
from shared.logs import get_logger, log_event
from shared.settings import get_settings
from shared.tokens import issue_session

get_settings()
logger = get_logger("functions.session")


@functions_framework.http
@json_api
def session(request: flask.Request):
    if route_parts(request):
        return flask.jsonify(error="not_found", detail="POST to / only"), 404
    if request.method != "POST":
        raise method_not_allowed(request, "POST")

    created, token = issue_session()
    log_event(logger, "session.opened", session_id=created.session_id)

    body = {
        "session_id": created.session_id,
        "auth_type": "anonymous",
        "token": token,
        "expires_at": created.expires_at,
    }
    return flask.jsonify(body), 201
