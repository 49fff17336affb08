"""Login throttling, kept in PostgreSQL because functions are stateless.

Every login attempt is recorded as a failure before the password is checked
(under a per-account advisory lock), so parallel guesses count as much as
serial ones. A successful login then deletes the failures of that account
from that address. Three limits apply within LOGIN_FAILURE_WINDOW_SECONDS:

- per account and address (LOGIN_MAX_FAILURES_PER_ACCOUNT_ADDRESS, 5): the
  limit a guesser meets;
- per account from any address (LOGIN_MAX_FAILURES_PER_ACCOUNT, 50): high
  enough that a stranger's 5 wrong guesses do not lock the owner out;
- per address across accounts (LOGIN_MAX_FAILURES_PER_ADDRESS, 30).

Account names are counted as typed, lower-cased, so unknown names are
throttled exactly like real ones. Past a limit the login gets 429 with
Retry-After until the oldest counted failure leaves the window.
"""

from __future__ import annotations

import ipaddress
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
    were written by the client and cannot be trusted, and an entry that is
    not an IP address is ignored.
    """
    hops = get_settings().trusted_proxy_hops
    if hops > 0:
        forwarded = [
            part.strip()
            for part in request.headers.get("X-Forwarded-For", "").split(",")
            if part.strip()
        ]
        if len(forwarded) >= hops:
            try:
                return str(ipaddress.ip_address(forwarded[-hops]))
            except ValueError:
                pass
    return request.remote_addr or "unknown"


def _wait_seconds(
    connection: Connection, conditions: list, limit: int, window: timedelta
) -> int | None:
    count, oldest, now = connection.execute(
        sa.select(
            sa.func.count(),
            sa.func.min(login_failure.c.failed_at),
            sa.func.now(),
        ).where(*conditions, login_failure.c.failed_at > sa.func.now() - window)
    ).one()
    if count < limit:
        return None
    return max(1, math.ceil((oldest + window - now).total_seconds()))


def begin_attempt(connection: Connection, account: str, address: str) -> None:
    """Raise 429 when throttled; otherwise count this attempt as a failure.

    Holds an advisory lock on the account until the transaction ends, so
    concurrent attempts on one account are counted one after the other.
    """
    settings = get_settings()
    account = account.lower()
    window = timedelta(seconds=settings.login_failure_window_seconds)
    connection.execute(
        sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext("login:" + account)))
    )

    by_account = login_failure.c.account == account
    by_address = login_failure.c.client_address == address
    waits = [
        _wait_seconds(
            connection,
            [by_account, by_address],
            settings.login_max_failures_per_account_address,
            window,
        ),
        _wait_seconds(
            connection, [by_account], settings.login_max_failures_per_account, window
        ),
        _wait_seconds(
            connection, [by_address], settings.login_max_failures_per_address, window
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

    connection.execute(
        login_failure.insert().values(account=account, client_address=address)
    )


def clear_failures(connection: Connection, account: str, address: str) -> None:
    """Forget the failures of `account` from `address` after a good login."""
    connection.execute(
        login_failure.delete().where(
            login_failure.c.account == account.lower(),
            login_failure.c.client_address == address,
        )
    )
