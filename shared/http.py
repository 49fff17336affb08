"""JSON errors for the HTTP functions.

Every HTTP function rejects a bad request with a 4xx and a JSON body
`{"error": <code>, "detail": <what was wrong and what to do>}`. Handlers
raise `ApiError`, and `json_api` turns it into that response. Any other
exception becomes a logged 500 that names an error id, never a trace.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Any

import flask
from werkzeug.exceptions import HTTPException

from shared.logs import get_logger, log_event

logger = get_logger(__name__)


class ApiError(Exception):
    """An error the client can fix, returned as `{error, detail}`."""

    def __init__(
        self,
        http_status: int,
        error: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = http_status
        self.error = error
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def error_response(error: ApiError) -> flask.Response:
    """Render an ApiError as a JSON response."""
    body = {"error": error.error, "detail": error.detail, **error.extra}
    response = flask.jsonify(body)
    response.status_code = error.status
    response.headers.update(error.headers)
    return response


def json_api(handler: Callable[[flask.Request], Any]) -> Callable[[flask.Request], Any]:
    """Wrap an HTTP handler so errors become JSON `{error, detail}` bodies."""

    @functools.wraps(handler)
    def wrapper(request: flask.Request) -> Any:
        try:
            return handler(request)
        except ApiError as error:
            return error_response(error)
        except HTTPException as error:
            return error_response(
                ApiError(
                    error.code or 500,
                    (error.name or "error").lower().replace(" ", "_"),
                    error.description or error.name or "request failed",
                )
            )
        except Exception:
            error_id = str(uuid.uuid4())
            log_event(
                logger,
                "http.unhandled_error",
                level=40,
                exc_info=True,
                error_id=error_id,
                path=request.path,
                method=request.method,
            )
            return error_response(
                ApiError(
                    500,
                    "internal_error",
                    f"the server failed while handling this request; retry later "
                    f"or report error id {error_id}",
                )
            )

    return wrapper


def route_parts(request: flask.Request) -> list[str]:
    """Split the request path into its non-empty segments."""
    return [part for part in request.path.split("/") if part]


def method_not_allowed(request: flask.Request, allowed: str) -> ApiError:
    return ApiError(
        405,
        "method_not_allowed",
        f"{request.method} is not supported on {request.path}; use {allowed}",
        headers={"Allow": allowed},
    )


def require_root(request: flask.Request, method: str) -> None:
    """Reject any path but `/` (404) and any method but `method` (405)."""
    if route_parts(request):
        raise not_found(request, f"{method} /")
    if request.method != method:
        raise method_not_allowed(request, method)


def not_found(request: flask.Request, routes: str = "") -> ApiError:
    detail = f"no route matches {request.method} {request.path}"
    if routes:
        detail += f"; this function serves {routes}"
    return ApiError(404, "not_found", detail)


def _unstorable_text(value: Any, depth: int = 0) -> bool:
    """True when a string anywhere in `value` has NUL or a lone surrogate."""
    if isinstance(value, str):
        if "\x00" in value:
            return True
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if depth > 64:
        return False
    if isinstance(value, dict):
        items = list(value.keys()) + list(value.values())
        return any(_unstorable_text(item, depth + 1) for item in items)
    if isinstance(value, list):
        return any(_unstorable_text(item, depth + 1) for item in value)
    return False


def json_body(request: flask.Request, *, strict_text: bool = True) -> Any:
    """Parse the body as JSON or raise a 400 that names the problem.

    With `strict_text`, text with NUL characters or lone surrogates (which
    PostgreSQL and the password hasher cannot take) is rejected too.
    """
    raw = request.get_data(cache=True)
    if not raw:
        raise ApiError(400, "missing_body", "the request body is empty; send JSON")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ApiError(
            400,
            "invalid_encoding",
            f"the body is not valid UTF-8 (byte {error.start}); send UTF-8 text",
        ) from error
    try:
        body = flask.json.loads(text)
    except ValueError as error:
        raise ApiError(
            400, "invalid_json", f"the body is not valid JSON: {error}"
        ) from error
    except RecursionError as error:
        raise ApiError(
            400,
            "invalid_json",
            "the JSON body nests too deeply to read; send a flat object",
        ) from error
    if strict_text and _unstorable_text(body):
        raise ApiError(
            400,
            "invalid_text",
            "the JSON body contains a NUL character or an unpaired UTF-16 "
            "surrogate (\\u0000, \\ud800-\\udfff); remove it",
        )
    return body
