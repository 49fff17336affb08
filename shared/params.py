"""Query-string parameters of the admin functions, checked one way.

Every rejection is a 400 whose body names the parameter, so the caller can
tell which value to fix.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime, time, timedelta

from werkzeug.datastructures import MultiDict

from shared.http import ApiError
from shared.inputs import MODEL_ID

DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def invalid(parameter: str, detail: str) -> ApiError:
    return ApiError(
        400, "invalid_parameter", f"{parameter}: {detail}", parameter=parameter
    )


def reject_unknown(args: MultiDict, known: set[str]) -> None:
    unknown = sorted(set(args) - known)
    if unknown:
        raise invalid(
            unknown[0], f"is not a parameter here; use {', '.join(sorted(known))}"
        )


def single(args: MultiDict, name: str) -> str | None:
    """Return a parameter that may be given once, or None."""
    given = args.getlist(name)
    if len(given) > 1:
        raise invalid(name, "is given more than once; give it once")
    return given[0] if given else None


def values(args: MultiDict, name: str) -> list[str]:
    """Return the values of a parameter, repeated or comma-separated."""
    found: list[str] = []
    for raw in args.getlist(name):
        found.extend(part.strip() for part in raw.split(",") if part.strip())
    return found


def uuids(args: MultiDict, name: str) -> tuple[str, ...]:
    checked = []
    for value in values(args, name):
        try:
            checked.append(str(uuid.UUID(value)))
        except ValueError as error:
            raise invalid(name, f"{value[:40]!r} is not a UUID") from error
    return tuple(dict.fromkeys(checked))


def choices(args: MultiDict, name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    found = values(args, name)
    for value in found:
        if value not in allowed:
            raise invalid(name, f"{value[:40]!r} is not one of {', '.join(allowed)}")
    return tuple(dict.fromkeys(found))


def day(args: MultiDict, name: str) -> date | None:
    """Parse a date without time (YYYY-MM-DD)."""
    given = args.getlist(name)
    if not given:
        return None
    if len(given) > 1:
        raise invalid(name, "is given more than once; give one date")
    if not DATE.match(given[0]):
        raise invalid(name, f"{given[0][:40]!r} is not a date like 2026-12-31")
    try:
        return date.fromisoformat(given[0])
    except ValueError as error:
        raise invalid(name, f"{given[0]!r} is not a valid date: {error}") from error


def day_pair(
    args: MultiDict, first: str = "date_from", last: str = "date_to"
) -> tuple[date | None, date | None]:
    """Parse two inclusive dates; reject a first date after the last."""
    start_day = day(args, first)
    end_day = day(args, last)
    if start_day and end_day and start_day > end_day:
        raise invalid(
            first,
            f"{start_day} is after {last} {end_day}; swap them or widen the range",
        )
    return start_day, end_day


def whole_days(
    start_day: date | None, end_day: date | None
) -> tuple[datetime | None, datetime | None]:
    """Return [start, end) in UTC covering the whole days, None for open ends.

    The last possible date has no next day, so it leaves the end open.
    """
    start = datetime.combine(start_day, time(), UTC) if start_day else None
    end = None
    if end_day is not None and end_day < date.max:
        end = datetime.combine(end_day + timedelta(days=1), time(), UTC)
    return start, end


def day_range(
    args: MultiDict, first: str = "date_from", last: str = "date_to"
) -> tuple[datetime | None, datetime | None]:
    """Return [start, end) in UTC covering whole days `first` to `last`."""
    return whole_days(*day_pair(args, first, last))


def limit(args: MultiDict, default: int, maximum: int) -> int:
    raw = single(args, "limit")
    if raw is None:
        return default
    value = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 10 else 0
    if not 1 <= value <= maximum:
        raise invalid("limit", f"{raw[:20]!r} is invalid; use 1 to {maximum}")
    return value


def model_ids(args: MultiDict, name: str = "model_id") -> tuple[str, ...]:
    found = values(args, name)
    for model_id in found:
        if not MODEL_ID.fullmatch(model_id):
            raise invalid(name, f"{model_id[:40]!r} is not a valid model id")
    return tuple(dict.fromkeys(found))
