"""Turn Kubernetes client failures into a few errors the hub acts on.

The official client raises `ApiException` for every HTTP error and lets
urllib3 errors through when the API server cannot be reached. Callers need
to know one thing: retry later or give up. The transient errors subclass
`RuntimeUnavailable`, so the scheduler puts its claim back and the event is
delivered again. `KubeRejected` subclasses `ValueError`, which the
scheduler treats as permanent and fails the request.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from email.utils import parsedate_to_datetime

import urllib3
from kubernetes.client.exceptions import ApiException

from shared.runtime.base import RuntimeUnavailable

# Used when a 429 carries no readable Retry-After header.
DEFAULT_RETRY_AFTER_SECONDS = 1.0
MAX_MESSAGE_CHARS = 500


class KubeError(Exception):
    """A Kubernetes API call failed with an HTTP status (0 without a response)."""

    def __init__(self, message: str, *, status: int = 0, reason: str = ""):
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubeNotFound(KubeError, RuntimeUnavailable):
    """The object or its namespace does not exist (404).

    The runtime turns a 404 of get and delete into None and False, so this
    escapes only from a create into a missing namespace. A deploy that
    creates the namespace fixes that, so callers retry it.
    """


class KubeConflict(KubeError):
    """An object of that name already exists, or changed meanwhile (409)."""


class KubeTooManyRequests(KubeError, RuntimeUnavailable):
    """The API server is throttling requests (429).

    `retry_after` is the wait in seconds that its Retry-After header requests.
    """

    def __init__(self, message: str, *, retry_after: float, reason: str = ""):
        super().__init__(message, status=429, reason=reason)
        self.retry_after = retry_after


class KubeServerError(KubeError, RuntimeUnavailable):
    """The API server failed (5xx) or could not be reached (status 0)."""


class KubeUnauthorized(KubeError, RuntimeUnavailable):
    """The hub's credentials were rejected (401) or lack permission (403).

    The pod spec is not at fault, and fixing the service account or its
    RBAC makes the same request succeed, so callers retry it.
    """


class KubeRejected(KubeError, ValueError):
    """The API server rejected the request itself (other 4xx, e.g. 422)."""


def status_message(error: ApiException) -> tuple[str, str]:
    """Return (reason, message) from the Status body of an API error.

    Falls back to the HTTP reason phrase when the body is not a Status.
    """
    reason = str(error.reason or "")
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        return reason, reason

    if not isinstance(body, dict):
        return reason, reason
    status_reason = body.get("reason")
    message = body.get("message")
    return (
        status_reason if isinstance(status_reason, str) else reason,
        message[:MAX_MESSAGE_CHARS] if isinstance(message, str) else reason,
    )


def retry_after_seconds(headers: Mapping[str, str] | None) -> float:
    """Return the wait in seconds that a Retry-After header requests.

    The header contains either whole seconds or an HTTP date. A missing,
    unreadable or past value gives DEFAULT_RETRY_AFTER_SECONDS.
    """
    raw = (headers or {}).get("Retry-After")
    if not raw:
        return DEFAULT_RETRY_AFTER_SECONDS
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)

    try:
        moment = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_SECONDS
    wait = moment.timestamp() - time.time()
    return wait if wait > 0 else DEFAULT_RETRY_AFTER_SECONDS


def from_api_exception(error: ApiException, action: str) -> KubeError:
    """Return the named error for an ApiException raised while doing `action`."""
    status = int(error.status or 0)
    reason, message = status_message(error)
    failed = f"{action} failed with {status} {reason}: {message}"

    if status == 404:
        return KubeNotFound(
            f"{failed}; check that the namespace exists (apply the knative/ "
            "manifests) and that the API server address is right",
            status=status,
            reason=reason,
        )
    if status == 409:
        return KubeConflict(failed, status=status, reason=reason)
    if status == 429:
        wait = retry_after_seconds(error.headers)
        return KubeTooManyRequests(
            f"{failed}; the API server is throttling requests, retry after {wait:g} s",
            retry_after=wait,
            reason=reason,
        )
    if status in (401, 403):
        return KubeUnauthorized(
            f"{failed}; check the service account's RBAC (create, get, list and "
            "delete pods, list events) or the kubeconfig credentials",
            status=status,
            reason=reason,
        )
    if status == 0 or status >= 500:
        return KubeServerError(
            f"{failed}; the API server is failing or unreachable, retry later",
            status=status,
            reason=reason,
        )
    return KubeRejected(
        f"{failed}; the request is invalid and retrying cannot help",
        status=status,
        reason=reason,
    )


@contextmanager
def mapped_errors(action: str, host: str = "") -> Iterator[None]:
    """Raise the named error for a client failure while doing `action`.

    `host` is the API server URL, named in connection errors.
    """
    try:
        yield
    except ApiException as error:
        raise from_api_exception(error, action) from error
    except urllib3.exceptions.HTTPError as error:
        raise KubeServerError(
            f"{action} failed: the connection to the Kubernetes API server "
            f"{host or '(unknown address)'} failed: {error}; check that it is "
            "running and that the configured address is right",
        ) from error
