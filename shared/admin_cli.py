"""Grant or revoke the ADMIN permission from the command line.

`python -m shared.admin_cli grant USERNAME` makes the first administrator
(`task admin:grant -- USERNAME`); `revoke USERNAME` takes it away. The
change reaches the user's tokens at their next refresh.
"""

from __future__ import annotations

import sys

from shared import accounts
from shared.auth import ADMIN
from shared.db import transaction

USAGE = "usage: python -m shared.admin_cli grant|revoke USERNAME"


def change(action: str, username: str) -> str:
    """Apply the action; return the message to print. Raises LookupError."""
    with transaction() as connection:
        row = accounts.find_for_login(connection, username)
        if row is None:
            raise LookupError(
                f"user {username!r} does not exist; sign up first with POST "
                "/signup on the auth function"
            )
        current = set(accounts.permissions_of(connection, str(row.id)))
        updated = current | {ADMIN} if action == "grant" else current - {ADMIN}
        accounts.set_permissions(connection, str(row.id), sorted(updated))
    verb = "now has" if action == "grant" else "no longer has"
    return f"{row.username} {verb} the ADMIN permission (effective at next refresh)"


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("grant", "revoke"):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        print(change(argv[0], argv[1]))
    except LookupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
