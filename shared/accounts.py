"""User accounts: signup checks, lookup, permissions.

Usernames and emails are unique whatever their case (unique indexes on
`lower(...)`), and every signup rejection names the field and the rule.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from shared import passwords
from shared.http import ApiError
from shared.tables import app_user, user_permission

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{2,31}$")
USERNAME_RULE = (
    "3 to 32 characters: letters, digits, '.', '_' or '-', starting with a "
    "letter or digit"
)
# A practical ASCII subset of RFC 5321 addresses: the usual local-part
# characters and a dotted domain of letter-digit-hyphen labels. Keeping to
# ASCII rules out look-alike addresses (Cyrillic or full-width letters).
EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)
EMAIL_MAX_LENGTH = 254
PERMISSIONS = ("ADMIN",)


@dataclass(frozen=True)
class User:
    """A registered user, without the password hash."""

    id: str
    username: str
    email: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "email": self.email,
            "created_at": self.created_at.isoformat(),
        }


def _field_error(field: str, detail: str) -> ApiError:
    return ApiError(422, "invalid_field", f"{field}: {detail}", field=field)


def check_signup(body: Any) -> tuple[str, str, str]:
    """Check a signup body; return username, email and password."""
    if not isinstance(body, dict):
        raise ApiError(
            400,
            "invalid_body",
            'send a JSON object: {"username", "email", "password"}',
        )
    username = body.get("username")
    email = body.get("email")
    password = body.get("password")

    if username is None or username == "":
        raise _field_error("username", "is missing")
    if not isinstance(username, str):
        raise _field_error("username", f"must be a string, {USERNAME_RULE}")
    if not USERNAME.fullmatch(username):
        raise _field_error("username", f"must be {USERNAME_RULE}")
    if email is None or (isinstance(email, str) and not email.strip()):
        raise _field_error("email", "is missing: an email address is required")
    if not isinstance(email, str):
        raise _field_error("email", "must be a string like name@example.org")
    email = email.strip()
    if len(email) > EMAIL_MAX_LENGTH or not EMAIL.fullmatch(email):
        raise _field_error(
            "email", f"{email[:80]!r} is not a valid address like name@example.org"
        )
    if password is None or password == "":
        raise _field_error("password", "is missing")
    problem = passwords.policy_problem(password, username, email)
    if problem is not None:
        raise _field_error("password", problem)
    return username, email, password


def create_user(
    connection: Connection, username: str, email: str, password_hash: str
) -> User:
    """Store a new user; raise 409 naming the field that is taken.

    Names are compared with PostgreSQL's lower(), the function the unique
    indexes use, so the check and the indexes agree on every character.
    """
    same_username = sa.func.lower(app_user.c.username) == sa.func.lower(username)
    same_email = sa.func.lower(app_user.c.email) == sa.func.lower(email)
    taken = connection.execute(
        sa.select(
            sa.func.bool_or(same_username),
            sa.func.bool_or(same_email),
        ).where(sa.or_(same_username, same_email))
    ).one()
    if taken[0]:
        raise ApiError(
            409, "username_taken", "username: is already taken", field="username"
        )
    if taken[1]:
        raise ApiError(
            409,
            "email_taken",
            "email: an account with this address exists; log in instead",
            field="email",
        )

    try:
        row = connection.execute(
            app_user.insert()
            .values(
                id=str(uuid.uuid4()),
                username=username,
                email=email,
                password_hash=password_hash,
            )
            .returning(
                app_user.c.id,
                app_user.c.username,
                app_user.c.email,
                app_user.c.created_at,
            )
        ).one()
    except IntegrityError as error:
        # A concurrent signup took the name between the check and the insert.
        field = "email" if "app_user_email" in str(error.orig) else "username"
        raise ApiError(
            409, f"{field}_taken", f"{field}: is already taken", field=field
        ) from error
    return User(str(row.id), row.username, row.email, row.created_at)


def find_for_login(connection: Connection, username: str) -> sa.Row | None:
    """Return id, username, email, created_at and password_hash, or None."""
    return connection.execute(
        sa.select(app_user).where(
            sa.func.lower(app_user.c.username) == username.lower()
        )
    ).first()


def get_user(connection: Connection, user_id: str) -> User | None:
    row = connection.execute(
        sa.select(app_user).where(app_user.c.id == user_id)
    ).first()
    if row is None:
        return None
    return User(str(row.id), row.username, row.email, row.created_at)


def update_password_hash(connection: Connection, user_id: str, new_hash: str) -> None:
    connection.execute(
        app_user.update()
        .where(app_user.c.id == user_id)
        .values(password_hash=new_hash, last_updated=sa.func.now())
    )


def permissions_of(connection: Connection, user_id: str) -> list[str]:
    rows = connection.execute(
        sa.select(user_permission.c.permission)
        .where(user_permission.c.user_id == user_id)
        .order_by(user_permission.c.permission)
    )
    return [row.permission for row in rows]


def set_permissions(
    connection: Connection, user_id: str, permissions: list[str]
) -> None:
    """Replace the user's permissions with `permissions`."""
    connection.execute(
        user_permission.delete().where(user_permission.c.user_id == user_id)
    )
    for permission in sorted(set(permissions)):
        connection.execute(
            user_permission.insert().values(user_id=user_id, permission=permission)
        )


def check_permissions(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise _field_error("permissions", "must be a list of permission names")
    unknown = sorted(set(value) - set(PERMISSIONS))
    if unknown:
        raise _field_error(
            "permissions",
            f"unknown permission(s) {', '.join(unknown)}; "
            f"known: {', '.join(PERMISSIONS)}",
        )
    return list(value)
