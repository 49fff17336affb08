"""Accounts and sessions.

- `POST /signup` `{username, email, password}` creates an account (201).
- `POST /login` `{username, password}` starts a user session.
- `POST /anonymous` `{session_id?}` starts an anonymous session.
- `POST /refresh` `{refresh_token}` rotates the refresh token and returns a
  new pair; `POST /logout` ends the session of the bearer token.
- `GET /me` returns the caller's account and permissions.
- `PUT /users/<username>/permissions` `{permissions: [...]}` (ADMIN).
"""

import flask
import functions_framework

from shared import accounts, login, sessions, throttle
from shared.auth import ANONYMOUS, require_admin, require_claims, require_user
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
logger = get_logger("functions.auth")

POST_ROUTES = ("signup", "login", "anonymous", "refresh", "logout")


@functions_framework.http
@json_api
def auth(request: flask.Request):
    parts = route_parts(request)
    if len(parts) == 1 and parts[0] in POST_ROUTES:
        if request.method != "POST":
            raise method_not_allowed(request, "POST")
        return post_route(request, parts[0])
    if parts == ["me"]:
        if request.method != "GET":
            raise method_not_allowed(request, "GET")
        return me(request)
    if len(parts) == 3 and parts[0] == "users" and parts[2] == "permissions":
        if request.method != "PUT":
            raise method_not_allowed(request, "PUT")
        return put_permissions(request, parts[1])
    raise not_found(
        request,
        "POST /signup, /login, /anonymous, /refresh, /logout, GET /me and "
        "PUT /users/<username>/permissions",
    )


def post_route(request: flask.Request, route: str):
    if route == "logout":
        return logout(request)
    body = json_body(request) if request.get_data() else {}

    if route == "signup":
        return flask.jsonify(user=login.signup(body).to_json()), 201
    if route == "login":
        issued = login.login(body, throttle.client_address(request))
        return flask.jsonify(issued.to_json())
    if route == "refresh":
        return flask.jsonify(login.refresh(body).to_json())
    return anonymous(body)


def anonymous(body):
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "send a JSON object or no body")
    requested = body.get("session_id")
    session_id = None
    if requested is not None:
        session_id = sessions.parse_session_id(requested)
    with transaction() as connection:
        issued = sessions.start_session(connection, ANONYMOUS, session_id=session_id)
    log_event(logger, "auth.anonymous_started", session_id=issued.session_id)
    return flask.jsonify(issued.to_json()), 201


def logout(request: flask.Request):
    claims = require_claims(request)
    with transaction() as connection:
        ended = sessions.end_session(connection, claims.session_id)
    log_event(logger, "auth.logged_out", session_id=claims.session_id, ended=ended)
    return flask.jsonify(session_id=claims.session_id, ended=True)


def me(request: flask.Request):
    claims = require_user(request)
    with transaction() as connection:
        user = accounts.get_user(connection, claims.subject)
        if user is None:
            raise ApiError(
                401, "invalid_token", "the account no longer exists; log in again"
            )
        permissions = accounts.permissions_of(connection, user.id)
    return flask.jsonify(user=user.to_json(), permissions=permissions)


def put_permissions(request: flask.Request, username: str):
    claims = require_admin(request)
    body = json_body(request)
    permissions = accounts.check_permissions(
        body.get("permissions") if isinstance(body, dict) else None
    )
    if not accounts.USERNAME.fullmatch(username):
        raise ApiError(404, "user_not_found", f"user {username[:40]!r} does not exist")
    with transaction() as connection:
        row = accounts.find_for_login(connection, username)
        if row is None:
            raise ApiError(404, "user_not_found", f"user {username!r} does not exist")
        accounts.set_permissions(connection, str(row.id), permissions)
    log_event(
        logger,
        "auth.permissions_set",
        admin_id=claims.subject,
        user_id=str(row.id),
        permissions=permissions,
    )
    return flask.jsonify(username=row.username, permissions=sorted(set(permissions)))
