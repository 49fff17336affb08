"""Structured logging: one JSON object per line, with ids as fields.

Call `log_event(logger, "event.name", request_id=..., model_id=...)`. Event
names are static strings; the ids and numbers go in fields, never in the
message, so logs can be searched by field. Inputs, results and secrets are
never logged.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

_configured = False


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON line with its structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        payload.update(getattr(record, "fields", {}))
        if record.exc_info:
            payload["error"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    """Format a record as `event key=value ...` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        text = " ".join(f"{key}={value}" for key, value in fields.items())
        line = f"{record.levelname.lower():7} {record.name}: {record.getMessage()}"
        if text:
            line += " " + text
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging() -> None:
    """Send logs to stderr, as JSON unless LOG_FORMAT=text. Runs once."""
    global _configured
    if _configured:
        return
    _configured = True

    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("LOG_FORMAT", "json") == "text":
        handler.setFormatter(TextFormatter())
    else:
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())


def get_logger(name: str) -> logging.Logger:
    """Return a logger for `name`, configuring the root logger once."""
    configure_logging()
    return logging.getLogger(name)


def log_event(
    logger: logging.Logger,
    event: str,
    *,
    level: int = logging.INFO,
    exc_info: bool = False,
    **fields: Any,
) -> None:
    """Log a static event name with structured fields."""
    logger.log(level, event, extra={"fields": fields}, exc_info=exc_info)
