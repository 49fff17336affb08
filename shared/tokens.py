"""Signed tokens: anonymous session tokens and instance-scoped job tokens.

Both are JWTs signed with HUB_SECRET_KEY using HS256. Decoding pins the
algorithm, requires `exp`, `iat` and `sub`, and checks the `kind` claim, so a
job token never works as a session token or the other way round.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from shared.settings import get_settings

ALGORITHM = "HS256"
LEEWAY_SECONDS = 5
SESSION_KIND = "anonymous"
JOB_KIND = "job"


class TokenExpired(Exception):
    """The token was valid but its `exp` has passed."""


class TokenInvalid(Exception):
    """The token is malformed, forged, of the wrong kind or lacks claims."""


@dataclass(frozen=True)
class Session:
    """An anonymous session: the owner of the requests made with its token."""

    session_id: str
    expires_at: int


@dataclass(frozen=True)
class JobGrant:
    """The scope of a job token: one attempt at one work request."""

    request_id: str
    instance_name: str
    attempt: int
    model_id: str


def _encode(claims: dict[str, Any], ttl_seconds: int) -> tuple[str, int]:
    now = int(time.time())
    expires_at = now + ttl_seconds
    payload = {**claims, "iat": now, "exp": expires_at}
    token = jwt.encode(payload, get_settings().secret_key, algorithm=ALGORITHM)
    return token, expires_at


def _decode(token: str, kind: str) -> dict[str, Any]:
    try:
        claims = jwt.decode(
            token,
            get_settings().secret_key,
            algorithms=[ALGORITHM],
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "sub", "kind"]},
        )
    except jwt.ExpiredSignatureError as error:
        raise TokenExpired(str(error)) from error
    except jwt.PyJWTError as error:
        raise TokenInvalid(str(error)) from error
    if claims.get("kind") != kind:
        raise TokenInvalid(f"token kind is {claims.get('kind')!r}, expected {kind!r}")
    return claims


def issue_session() -> tuple[Session, str]:
    """Create a new anonymous session and its token."""
    session_id = str(uuid.uuid4())
    token, expires_at = _encode(
        {"sub": session_id, "kind": SESSION_KIND},
        get_settings().session_ttl_seconds,
    )
    return Session(session_id, expires_at), token


def verify_session(token: str) -> Session:
    """Return the session a token stands for; raise TokenExpired/TokenInvalid."""
    claims = _decode(token, SESSION_KIND)
    try:
        session_id = str(uuid.UUID(str(claims["sub"])))
    except ValueError as error:
        raise TokenInvalid("session id is not a UUID") from error
    return Session(session_id, int(claims["exp"]))


def issue_job_token(grant: JobGrant) -> str:
    """Sign a token that lets one instance fetch and report one request."""
    token, _ = _encode(
        {
            "sub": grant.request_id,
            "kind": JOB_KIND,
            "instance": grant.instance_name,
            "attempt": grant.attempt,
            "model": grant.model_id,
        },
        get_settings().job_token_ttl_seconds,
    )
    return token


def verify_job_token(token: str) -> JobGrant:
    """Return the grant of a job token; raise TokenExpired/TokenInvalid."""
    claims = _decode(token, JOB_KIND)
    try:
        return JobGrant(
            request_id=str(uuid.UUID(str(claims["sub"]))),
            instance_name=str(claims["instance"]),
            attempt=int(claims["attempt"]),
            model_id=str(claims["model"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise TokenInvalid(f"job token claims are incomplete: {error}") from error
