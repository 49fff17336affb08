"""Login throttling, kept in PostgreSQL because functions are stateless.

Failed logins are recorded per account name (as typed, lower-cased, so
unknown names are throttled the same way as real ones) and per client
address. Past a limit within the window, logins for that account or from
that address get 429 with Retry-After until the oldest failure leaves the
window. A successful login clears the account's failures.
"""

from __future__ import annotations

import math
from datetime import timedelta

import flask
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shared.http import ApiError
from shared.settings import get_settings
from shared.tables import login_failure


def client_address(request: flask.Request) -> str:
    """Return the caller's address, trusting TRUSTED_PROXY_HOPS proxies.

    Each trusted proxy appends the address it saw to X-Forwarded-For, so the
    client is the entry that many places from the end. Entries before it
    were written by the client and cannot be trusted.
    """
    hops = get_settings().trusted_proxy_hops
    if hops > 0:
        forwarded = [
            part.strip()
            for part in request.headers.get("X-Forwarded-For", "").split(",")
            if part.strip()
        ]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return request.remote_addr or "unknown"


def _retry_after(connection: Connection, column, value: str, limit: int, window):
    row = connection.execute(
        sa.select(
            sa.func.count(),
            sa.func.min(login_failure.c.failed_at),
            sa.func.now(),
        ).where(column == value, login_failure.c.failed_at > sa.func.now() - window)
    ).one()
    count, oldest, now = row
    if count < limit:
        return None
    return max(1, math.ceil((oldest + window - now).total_seconds()))


def check_allowed(connection: Connection, account: str, address: str) -> None:
    """Raise 429 when the account or the address is throttled."""
    settings = get_settings()
    window = timedelta(seconds=settings.login_failure_window_seconds)
    waits = [
        _retry_after(
            connection,
            login_failure.c.account,
            account.lower(),
            settings.login_max_failures_per_account,
            window,
        ),
        _retry_after(
            connection,
            login_failure.c.client_address,
            address,
            settings.login_max_failures_per_address,
            window,
        ),
    ]
    wait = max((w for w in waits if w is not None), default=None)
    if wait is not None:
        raise ApiError(
            429,
            "too_many_attempts",
            f"too many failed logins; try again in {wait} s",
            headers={"Retry-After": str(wait)},
            retry_after=wait,
        )


def record_failure(connection: Connection, account: str, address: str) -> None:
    connection.execute(
        login_failure.insert().values(account=account.lower(), client_address=address)
    )


def clear_account(connection: Connection, account: str) -> None:
    connection.execute(
        login_failure.delete().where(login_failure.c.account == account.lower())
    )
