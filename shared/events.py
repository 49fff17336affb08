"""CloudEvent types of the hub, and how functions send them.

Functions send events to the sink in K_SINK (the Broker, set by a
SinkBinding on Knative or by the local stack). Trigger filters in
`knative/triggers.yaml` route each type to its function; the local stack
routes by the same file.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import requests
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from shared.logs import get_logger, log_event
from shared.settings import get_settings

WORK_REQUEST_SUBMITTED = "io.modelhub.workrequest.submitted"
INSTANCE_RELEASED = "io.modelhub.instance.released"

# Types ApiServerSource sends in Resource mode for watched objects.
APISERVER_ADD = "dev.knative.apiserver.resource.add"
APISERVER_UPDATE = "dev.knative.apiserver.resource.update"
APISERVER_DELETE = "dev.knative.apiserver.resource.delete"
APISERVER_TYPES = (APISERVER_ADD, APISERVER_UPDATE, APISERVER_DELETE)

EMIT_TIMEOUT_SECONDS = 10
EMIT_ATTEMPTS = 3
EMIT_PAUSE_SECONDS = 0.2

logger = get_logger(__name__)


class EventDeliveryError(RuntimeError):
    """The sink did not accept an event; the caller may retry."""


def build_event(
    event_type: str,
    data: dict[str, Any],
    *,
    subject: str | None = None,
    event_id: str | None = None,
    source: str | None = None,
) -> CloudEvent:
    """Build a CloudEvent with JSON data."""
    attributes = {
        "type": event_type,
        "source": source or get_settings().event_source,
        "id": event_id or str(uuid.uuid4()),
        "datacontenttype": "application/json",
    }
    if subject:
        attributes["subject"] = subject
    return CloudEvent(attributes, data)


def send_event(sink: str, event: CloudEvent) -> None:
    """POST `event` to `sink` in binary mode.

    Raises EventDeliveryError when the sink is unreachable or returns a
    status other than 2xx.
    """
    headers, body = to_binary(event, data_marshaller=json.dumps)
    try:
        response = requests.post(
            sink, headers=headers, data=body, timeout=EMIT_TIMEOUT_SECONDS
        )
    except requests.RequestException as error:
        raise EventDeliveryError(
            f"event sink {sink} is unreachable: {error}"
        ) from error
    if not 200 <= response.status_code < 300:
        raise EventDeliveryError(
            f"event sink {sink} returned {response.status_code} for {event['type']}"
        )


def emit(
    event_type: str,
    data: dict[str, Any],
    *,
    subject: str | None = None,
    event_id: str | None = None,
) -> bool:
    """Send an event to K_SINK; return False when no sink is configured.

    Tries EMIT_ATTEMPTS times with a short pause, then raises
    EventDeliveryError. Callers that already committed their state change
    log that error; the reconciler later finds what the event would have
    started.
    """
    sink = get_settings().event_sink
    event = build_event(event_type, data, subject=subject, event_id=event_id)
    if sink is None:
        log_event(logger, "event.no_sink", type=event_type, id=event["id"])
        return False

    for attempt in range(1, EMIT_ATTEMPTS + 1):
        try:
            send_event(sink, event)
            break
        except EventDeliveryError as error:
            if attempt == EMIT_ATTEMPTS:
                raise
            log_event(
                logger,
                "event.retry",
                level=30,
                type=event_type,
                id=event["id"],
                attempt=attempt,
                error=str(error),
            )
            time.sleep(EMIT_PAUSE_SECONDS * attempt)
    log_event(logger, "event.sent", type=event_type, id=event["id"], subject=subject)
    return True


def event_data(event: CloudEvent) -> dict[str, Any] | None:
    """Return the event's data as a JSON object, or None without one.

    Senders differ: binary mode gives parsed JSON, while some structured
    senders put the JSON text in `data` as a string or bytes.
    """
    data = event.get_data()
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except ValueError:
            return None
    return data if isinstance(data, dict) else None
