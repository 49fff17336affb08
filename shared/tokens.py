"""Signed tokens: access tokens of sessions, and instance-scoped job tokens.

Both are JWTs signed with HUB_SECRET_KEY using HS256. Decoding pins the
algorithm, requires `exp`, `iat`, `sub` and the type claim `typ`, and allows
5 s of clock leeway. The type check means a job token never works as an
access token or the other way round.
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
ACCESS_TYPE = "access"
JOB_TYPE = "job"
SESSION_KINDS = ("user", "anonymous")


class TokenExpired(Exception):
    """The token was valid but its `exp` has passed."""


class TokenInvalid(Exception):
    """The token is malformed, forged, of the wrong type or lacks claims."""


@dataclass(frozen=True)
class AccessClaims:
    """The caller an access token stands for: a user or anonymous session."""

    subject: str
    session_id: str
    kind: str
    permissions: tuple[str, ...]
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


def _decode(token: str, token_type: str, required: list[str]) -> dict[str, Any]:
    try:
        claims = jwt.decode(
            token,
            get_settings().secret_key,
            algorithms=[ALGORITHM],
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "sub", "typ", *required]},
        )
    except jwt.ExpiredSignatureError as error:
        raise TokenExpired(str(error)) from error
    except jwt.PyJWTError as error:
        raise TokenInvalid(str(error)) from error
    if claims.get("typ") != token_type:
        raise TokenInvalid(
            f"token type is {claims.get('typ')!r}, expected {token_type!r}"
        )
    return claims


def _uuid_text(value: Any, name: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError as error:
        raise TokenInvalid(f"{name} is not a UUID") from error


def issue_access_token(
    *, subject: str, session_id: str, kind: str, permissions: list[str]
) -> tuple[str, int]:
    """Sign an access token; return it with its expiry (Unix seconds)."""
    return _encode(
        {
            "sub": subject,
            "sid": session_id,
            "kind": kind,
            "perms": sorted(permissions),
            "typ": ACCESS_TYPE,
        },
        get_settings().access_token_ttl_seconds,
    )


def verify_access_token(token: str) -> AccessClaims:
    """Return the claims of an access token; raise TokenExpired/TokenInvalid."""
    claims = _decode(token, ACCESS_TYPE, ["sid", "kind"])
    kind = claims["kind"]
    if kind not in SESSION_KINDS:
        raise TokenInvalid(f"session kind {kind!r} is unknown")
    permissions = claims.get("perms", [])
    if not isinstance(permissions, list) or not all(
        isinstance(p, str) for p in permissions
    ):
        raise TokenInvalid("perms claim is not a list of names")
    return AccessClaims(
        subject=_uuid_text(claims["sub"], "sub"),
        session_id=_uuid_text(claims["sid"], "sid"),
        kind=kind,
        permissions=tuple(permissions),
        expires_at=int(claims["exp"]),
    )


def issue_job_token(grant: JobGrant) -> str:
    """Sign a token that lets one instance fetch and report one request."""
    token, _ = _encode(
        {
            "sub": grant.request_id,
            "typ": JOB_TYPE,
            "instance": grant.instance_name,
            "attempt": grant.attempt,
            "model": grant.model_id,
        },
        get_settings().job_token_ttl_seconds,
    )
    return token


def verify_job_token(token: str) -> JobGrant:
    """Return the grant of a job token; raise TokenExpired/TokenInvalid."""
    claims = _decode(token, JOB_TYPE, ["instance", "attempt", "model"])
    try:
        return JobGrant(
            request_id=_uuid_text(claims["sub"], "sub"),
            instance_name=str(claims["instance"]),
            attempt=int(claims["attempt"]),
            model_id=str(claims["model"]),
        )
    except (TypeError, ValueError) as error:
        raise TokenInvalid(f"job token claims are invalid: {error}") from error
