"""The values the stats filters accept, for building a filter form.

Lists are not narrowed by other filters. Owner ids are paged by keyset
(`user_after`, `session_after`), so every page of a hub with millions of
sessions takes the same time.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from werkzeug.datastructures import MultiDict

from shared import params
from shared.stats import AUTH_TYPES, GROUPS
from shared.tables import model, work_request
from shared.workrequests import Status

DEFAULT_LIMIT = 500
MAX_LIMIT = 5000
PARAMETERS = {"limit", "user_after", "session_after"}


@dataclass(frozen=True)
class Paging:
    limit: int
    user_after: str | None
    session_after: str | None


def _cursor(args: MultiDict, name: str) -> str | None:
    raw = args.get(name)
    if raw is None:
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError as error:
        raise params.invalid(
            name, f"{raw[:40]!r} is not a UUID; pass next_after from the last page"
        ) from error


def parse_paging(args: MultiDict) -> Paging:
    params.reject_unknown(args, PARAMETERS)
    limit = params.limit(args, DEFAULT_LIMIT, MAX_LIMIT)
    return Paging(limit, _cursor(args, "user_after"), _cursor(args, "session_after"))


def _owner_page(
    connection: Connection, column, after: str | None, limit: int
) -> dict[str, Any]:
    query = (
        sa.select(column)
        .distinct()
        .where(column.is_not(None))
        .order_by(column)
        .limit(limit + 1)
    )
    if after is not None:
        query = query.where(column > after)
    ids = [str(value) for value in connection.execute(query).scalars()]
    more = len(ids) > limit
    ids = ids[:limit]
    return {"ids": ids, "next_after": ids[-1] if more else None}


def load(connection: Connection, paging: Paging) -> dict[str, Any]:
    models = [
        {"id": row.id, "enabled": row.enabled, "description": row.description}
        for row in connection.execute(
            sa.select(model.c.id, model.c.enabled, model.c.description).order_by(
                model.c.id
            )
        )
    ]
    return {
        "models": models,
        "auth_types": list(AUTH_TYPES),
        "statuses": [str(status) for status in Status],
        "group_by": list(GROUPS),
        "owners": {
            "user": _owner_page(
                connection, work_request.c.user_id, paging.user_after, paging.limit
            ),
            "anonymous": _owner_page(
                connection,
                work_request.c.session_id,
                paging.session_after,
                paging.limit,
            ),
        },
    }
