"""Caller identity and permissions, read from the bearer access token.

Checking a token costs no database query: the signature, expiry and claims
are enough. A 401 body contains `token_expired` (refresh the token and
retry) or `invalid_token` (the token can never work).
"""

from __future__ import annotations

from dataclasses import dataclass

import flask

from shared import tokens
from shared.http import ApiError

ANONYMOUS = "anonymous"
USER = "user"
ADMIN = "ADMIN"


@dataclass(frozen=True)
class Owner:
    """The caller that owns work requests: a user or an anonymous session."""

    auth_type: str
    user_id: str | None = None
    session_id: str | None = None


def bearer_token(request: flask.Request) -> str:
    """Return the bearer token of the request or raise a 401."""
    header = request.headers.get("Authorization", "")
    parts = header.split(None, 1)
    scheme = parts[0] if parts else ""
    token = parts[1] if len(parts) == 2 else ""
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "missing_token",
            "send the header 'Authorization: Bearer <access token>'; get one "
            "with POST /login or POST /anonymous on the auth function",
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


def require_claims(request: flask.Request) -> tokens.AccessClaims:
    """Check the access token of any session, user or anonymous."""
    token = bearer_token(request)
    try:
        return tokens.verify_access_token(token)
    except tokens.TokenExpired as error:
        raise _unauthorized(
            "token_expired",
            "the access token has expired; refresh it with POST /refresh on the "
            "auth function and retry",
        ) from error
    except tokens.TokenInvalid as error:
        raise _unauthorized(
            "invalid_token", "the access token is not valid; log in again"
        ) from error


def owner_of(claims: tokens.AccessClaims) -> Owner:
    if claims.kind == USER:
        return Owner(auth_type=USER, user_id=claims.subject)
    return Owner(auth_type=ANONYMOUS, session_id=claims.session_id)


def require_owner(request: flask.Request) -> Owner:
    """Authenticate the caller of a user-facing function (no database query)."""
    return owner_of(require_claims(request))


def require_user(request: flask.Request) -> tokens.AccessClaims:
    """Authenticate a registered user; anonymous sessions get 403."""
    claims = require_claims(request)
    if claims.kind != USER:
        raise ApiError(
            403,
            "user_required",
            "this endpoint needs a registered user; anonymous sessions cannot "
            "use it. Log in with an account",
        )
    return claims


def require_admin(request: flask.Request) -> tokens.AccessClaims:
    """Authenticate a user holding the ADMIN permission; others get 403."""
    claims = require_user(request)
    if ADMIN not in claims.permissions:
        raise ApiError(
            403,
            "admin_required",
            "this endpoint needs the ADMIN permission; ask an administrator "
            "to grant it, then log in again or refresh your session",
        )
    return claims


def require_job_grant(request: flask.Request) -> tokens.JobGrant:
    """Authenticate a job agent by its instance-scoped token."""
    token = bearer_token(request)
    try:
        return tokens.verify_job_token(token)
    except tokens.TokenExpired as error:
        raise _unauthorized("token_expired", "the job token has expired") from error
    except tokens.TokenInvalid as error:
        raise _unauthorized("invalid_token", "the job token is not valid") from error
