"""Sessions: short-lived access tokens and rotating refresh tokens.

A session (table `auth_session`) belongs to a user or is anonymous. It has
an absolute expiry, and it ends early on logout or when a retired refresh
token is used again. Each login or refresh returns:

- an access token (a JWT, `ACCESS_TOKEN_TTL_SECONDS`, 300 s by default)
  that every function checks without a database query. So logout and
  permission changes take effect within that TTL plus 5 s of leeway.
- a refresh token `<session id>.<secret>`, stored only as a SHA-256 hash.
  Every refresh rotates it. A token retired by rotation and presented
  again means it was copied, so the whole session is revoked. Within
  `REFRESH_GRACE_SECONDS` of a rotation, the tokens it retired and every
  token issued since stay valid, so a client that retries a refresh whose
  response it lost, or two tabs refreshing at once, are not logged out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection

from shared import accounts, tokens
from shared.auth import ANONYMOUS, USER
from shared.http import ApiError
from shared.settings import get_settings
from shared.tables import auth_session

MAX_VALID_HASHES = 16
MAX_RETIRED_HASHES = 64


@dataclass(frozen=True)
class Issued:
    """The result of a login, an anonymous start or a refresh."""

    session_id: str
    kind: str
    session_expires_at: datetime
    access_token: str
    access_expires_at: int
    refresh_token: str
    user: accounts.User | None
    permissions: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "user": self.user.to_json() if self.user else None,
            "permissions": self.permissions,
            "session": {
                "id": self.session_id,
                "auth_type": self.kind,
                "expires_at": self.session_expires_at.isoformat(),
            },
            "access_token": self.access_token,
            "access_expires_at": self.access_expires_at,
            "refresh_token": self.refresh_token,
            "token_type": "Bearer",
        }


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _new_refresh(session_id: str) -> tuple[str, bytes]:
    secret = secrets.token_urlsafe(32)
    return f"{session_id}.{secret}", _digest(secret)


def _invalid(detail: str) -> ApiError:
    return ApiError(
        401,
        "invalid_token",
        f"{detail}; log in again",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def _issue(
    connection: Connection,
    session_id: str,
    kind: str,
    expires_at: datetime,
    refresh_token: str,
    user_id: str | None,
) -> Issued:
    user = None
    permissions: list[str] = []
    if user_id is not None:
        user = accounts.get_user(connection, user_id)
        if user is None:
            raise _invalid("the account of this session no longer exists")
        permissions = accounts.permissions_of(connection, user_id)

    subject = user_id or session_id
    access, access_expires = tokens.issue_access_token(
        subject=subject, session_id=session_id, kind=kind, permissions=permissions
    )
    return Issued(
        session_id,
        kind,
        expires_at,
        access,
        access_expires,
        refresh_token,
        user,
        permissions,
    )


def start_session(
    connection: Connection,
    kind: str,
    user_id: str | None = None,
    session_id: str | None = None,
) -> Issued:
    """Create a session and return its first token pair.

    An anonymous session may take a client-chosen id, but only once: an id
    that exists already is rejected, so a session cannot be revived by its id.
    """
    settings = get_settings()
    ttl = (
        settings.user_session_ttl_seconds
        if kind == USER
        else settings.anonymous_session_ttl_seconds
    )
    session_id = session_id or str(uuid.uuid4())
    refresh_token, digest = _new_refresh(session_id)

    inserted = connection.execute(
        insert(auth_session)
        .values(
            id=session_id,
            kind=kind,
            user_id=user_id,
            refresh_hashes=[digest],
            expires_at=sa.func.now() + timedelta(seconds=ttl),
        )
        .on_conflict_do_nothing(index_elements=[auth_session.c.id])
        .returning(auth_session.c.expires_at)
    ).first()
    if inserted is None:
        raise ApiError(
            409,
            "session_id_taken",
            f"session id {session_id} is already in use; omit session_id to get a "
            "new session",
        )
    return _issue(
        connection, session_id, kind, inserted.expires_at, refresh_token, user_id
    )


def parse_session_id(value: Any) -> str:
    """Check a client-chosen anonymous session id (a UUID)."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError as error:
        raise ApiError(
            422,
            "invalid_field",
            f"session_id: {str(value)[:40]!r} is not a UUID; omit it to get a "
            "server-made id",
            field="session_id",
        ) from error


def _parse_refresh(token: Any) -> tuple[str, str]:
    if not isinstance(token, str) or "." not in token:
        raise _invalid("the refresh token is missing or malformed")
    raw_id, _, secret = token.partition(".")
    try:
        session_id = str(uuid.UUID(raw_id))
    except ValueError as error:
        raise _invalid("the refresh token is malformed") from error
    if not secret:
        raise _invalid("the refresh token is malformed")
    return session_id, secret


def _contains(hashes: list[bytes], digest: bytes) -> bool:
    return any(hmac.compare_digest(bytes(known), digest) for known in hashes)


def _revoke(connection: Connection, session_id: str, reason: str) -> None:
    connection.execute(
        auth_session.update()
        .where(auth_session.c.id == session_id, auth_session.c.revoked_at.is_(None))
        .values(revoked_at=sa.func.now(), revoked_reason=reason)
    )


def refresh(
    connection: Connection, token: Any
) -> tuple[Issued | None, ApiError | None]:
    """Rotate a refresh token and issue a new pair.

    Returns (issued, None) or (None, error). The error is returned rather
    than raised, because revoking a session on reuse must be committed.
    """
    session_id, secret = _parse_refresh(token)
    digest = _digest(secret)
    row = connection.execute(
        sa.select(
            auth_session,
            sa.func.now().label("now"),
        )
        .where(auth_session.c.id == session_id)
        .with_for_update()
    ).first()

    if row is None:
        return None, _invalid("this session does not exist")
    if row.revoked_at is not None:
        return None, _invalid("this session has ended")
    if row.expires_at <= row.now:
        return None, _invalid("this session has expired")

    valid = [bytes(h) for h in row.refresh_hashes]
    previous = [bytes(h) for h in row.previous_hashes]
    retired = [bytes(h) for h in row.retired_hashes]
    grace = timedelta(seconds=get_settings().refresh_grace_seconds)
    in_grace = row.now - row.rotated_at <= grace

    accepted = _contains(valid, digest) or (in_grace and _contains(previous, digest))
    if not accepted:
        if _contains(previous, digest) or _contains(retired, digest):
            _revoke(connection, session_id, "refresh token reused after rotation")
            return None, _invalid(
                "this refresh token was already used, so the session was ended "
                "to protect it"
            )
        return None, _invalid("the refresh token is not valid")

    new_token, new_digest = _new_refresh(session_id)
    if in_grace:
        # A retry or a parallel refresh: every token of this window stays
        # valid. Past the cap, the oldest move to the previous generation,
        # where they still count as retries until the window closes.
        valid = valid + [new_digest]
        previous = previous + valid[:-MAX_VALID_HASHES]
        valid = valid[-MAX_VALID_HASHES:]
        values: dict[str, Any] = {"refresh_hashes": valid, "previous_hashes": previous}
    else:
        values = {
            "refresh_hashes": [new_digest],
            "previous_hashes": valid,
            "retired_hashes": (retired + previous)[-MAX_RETIRED_HASHES:],
            "rotated_at": sa.func.now(),
        }
    connection.execute(
        auth_session.update().where(auth_session.c.id == session_id).values(**values)
    )
    issued = _issue(
        connection,
        session_id,
        row.kind,
        row.expires_at,
        new_token,
        str(row.user_id) if row.user_id else None,
    )
    return issued, None


def end_session(connection: Connection, session_id: str) -> bool:
    """Revoke a session (logout); True when it was still active."""
    result = connection.execute(
        auth_session.update()
        .where(auth_session.c.id == session_id, auth_session.c.revoked_at.is_(None))
        .values(revoked_at=sa.func.now(), revoked_reason="logged out")
    )
    return result.rowcount == 1


__all__ = ["ANONYMOUS", "USER", "Issued", "end_session", "refresh", "start_session"]
