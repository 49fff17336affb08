"""Sign up, log in, refresh and log out: the steps behind the auth function.

Password hashing runs outside database transactions, because it takes a
quarter of a second by design. A login for an unknown username spends the
same hashing time and gets the same response as a wrong password.
"""

from __future__ import annotations

from typing import Any

from shared import accounts, passwords, sessions, throttle
from shared.auth import USER
from shared.db import transaction
from shared.http import ApiError
from shared.logs import get_logger, log_event

logger = get_logger(__name__)

INVALID_CREDENTIALS = "invalid username or password"


def signup(body: Any) -> accounts.User:
    username, email, password = accounts.check_signup(body)
    password_hash = passwords.hash_password(password)
    with transaction() as connection:
        user = accounts.create_user(connection, username, email, password_hash)
    log_event(logger, "auth.signed_up", user_id=user.id)
    return user


def _credentials(body: Any) -> tuple[str, str]:
    if not isinstance(body, dict):
        raise ApiError(
            400, "invalid_body", 'send a JSON object: {"username", "password"}'
        )
    username = body.get("username")
    password = body.get("password")
    for name, value in (("username", username), ("password", password)):
        if value is None or value == "":
            raise ApiError(400, "missing_field", f"{name}: is missing", field=name)
        if not isinstance(value, str):
            raise ApiError(
                400, "invalid_field", f"{name}: must be a string", field=name
            )
    assert isinstance(username, str) and isinstance(password, str)
    if len(username) > 64 or len(password) > passwords.MAX_LENGTH:
        raise ApiError(401, "invalid_credentials", INVALID_CREDENTIALS)
    return username, password


def login(body: Any, address: str) -> sessions.Issued:
    """Check the credentials and start a user session."""
    username, password = _credentials(body)
    with transaction() as connection:
        throttle.begin_attempt(connection, username, address)
        row = accounts.find_for_login(connection, username)

    if row is None:
        passwords.burn_verification_time(password)
    if row is None or not passwords.verify_password(row.password_hash, password):
        log_event(logger, "auth.login_failed", address=address)
        raise ApiError(401, "invalid_credentials", INVALID_CREDENTIALS)

    new_hash = None
    if passwords.needs_rehash(row.password_hash):
        new_hash = passwords.hash_password(password)
    with transaction() as connection:
        throttle.clear_failures(connection, username, address)
        if new_hash is not None:
            accounts.update_password_hash(connection, str(row.id), new_hash)
        issued = sessions.start_session(connection, USER, user_id=str(row.id))
    log_event(
        logger,
        "auth.logged_in",
        user_id=str(row.id),
        session_id=issued.session_id,
        rehashed=new_hash is not None,
    )
    return issued


def refresh(body: Any) -> sessions.Issued:
    token = body.get("refresh_token") if isinstance(body, dict) else None
    with transaction() as connection:
        issued, error = sessions.refresh(connection, token)
    if error is not None:
        log_event(logger, "auth.refresh_rejected", detail=error.detail)
        raise error
    assert issued is not None
    return issued
