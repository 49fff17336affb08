"""Who is calling: the owner of work requests, from the bearer token.

Checking a token costs no database query: the signature and expiry are
enough. A 401 body contains `token_expired` (open a new session and retry) or
`invalid_token` (the token can never work).
"""

from __future__ import annotations

from dataclasses import dataclass

import flask

from shared import tokens
from shared.http import ApiError

ANONYMOUS = "anonymous"
USER = "user"


@dataclass(frozen=True)
class Owner:
    """The caller that owns work requests: a user or an anonymous session."""

    auth_type: str
    user_id: str | None = None
    session_id: str | None = None


def bearer_token(request: flask.Request) -> str:
    """Return the bearer token of the request or raise a 401."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "missing_token",
            "send the header 'Authorization: Bearer <token>'; open an anonymous "
            "session with POST to the session function to get a token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token.strip()


def _unauthorized(error: str, detail: str) -> ApiError:
    return ApiError(
        401,
        error,
        detail,
        headers={"WWW-Authenticate": f'Bearer error="{error}"'},
    )


def require_owner(request: flask.Request) -> Owner:
    """Authenticate the caller of a user-facing function."""
    token = bearer_token(request)
    try:
        session = tokens.verify_session(token)
    except tokens.TokenExpired as error:
        raise _unauthorized(
            "token_expired", "the session token has expired; open a new session"
        ) from error
    except tokens.TokenInvalid as error:
        raise _unauthorized(
            "invalid_token", "the session token is not valid; open a new session"
        ) from error
    return Owner(auth_type=ANONYMOUS, session_id=session.session_id)


def require_job_grant(request: flask.Request) -> tokens.JobGrant:
    """Authenticate a job agent by its instance-scoped token."""
    token = bearer_token(request)
    try:
        return tokens.verify_job_token(token)
    except tokens.TokenExpired as error:
        raise _unauthorized("token_expired", "the job token has expired") from error
    except tokens.TokenInvalid as error:
        raise _unauthorized("invalid_token", "the job token is not valid") from error
