"""Kubernetes Events about instance pods, and Reference-mode pod events.

An ApiServerSource that watches core/v1 Events in the models namespace
sends each Event object as data. Events carry no labels, so the pod they
are about is found by its name, which the hub derives from the request id
and attempt (`wr-<request id>-<attempt>`). Each Event is stored raw in the
instance log, so admins can read why a pod is stuck.

An ApiServerSource in Reference mode sends only `{kind, name, namespace,
apiVersion}`. For a pod, the hub fetches the pod and handles it as a
Resource-mode event; a reference to anything else is logged and dropped.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.engine import Engine

from shared import instances
from shared.logs import get_logger, log_event
from shared.results import UnstorableValue, clean_json, clean_text
from shared.runtime.base import (
    ATTEMPT_ANNOTATION,
    COMPONENT_LABEL,
    COMPONENT_VALUE,
    MODEL_LABEL,
    REQUEST_ANNOTATION,
    REQUEST_LABEL,
    Runtime,
    instance_name,
)
from shared.tables import model_instance_log
from shared.workrequests import get_state

logger = get_logger(__name__)

INSTANCE_NAME = re.compile(
    r"wr-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})-([0-9]{1,9})"
)
DETAIL_LIMIT = 1000


def parse_instance_name(name: Any) -> tuple[str, int] | None:
    """Return (request id, attempt) from an instance name, or None."""
    if not isinstance(name, str):
        return None
    match = INSTANCE_NAME.fullmatch(name)
    if match is None:
        return None
    request_id, attempt = match.group(1), int(match.group(2))
    # Only the exact name the hub derives counts: "-01" is not attempt 1.
    if instance_name(request_id, attempt) != name:
        return None
    return request_id, attempt


def _describe(event: dict[str, Any]) -> str:
    parts = [
        str(event.get("type") or ""),
        str(event.get("reason") or ""),
    ]
    message = event.get("message")
    text = " ".join(part for part in parts if part)
    if isinstance(message, str) and message:
        text += f": {message}"
    return clean_text(text)[:DETAIL_LIMIT]


def handle_kube_event(engine: Engine, event: dict[str, Any]) -> instances.WatchOutcome:
    """Store a core/v1 Event about an instance pod in the instance log."""
    involved = event.get("involvedObject")
    involved = involved if isinstance(involved, dict) else {}
    parsed = parse_instance_name(involved.get("name"))
    if involved.get("kind") != "Pod" or parsed is None:
        log_event(logger, "instance_events.foreign_event", kind=involved.get("kind"))
        return instances.WatchOutcome("ignored")

    request_id, attempt = parsed
    try:
        raw = clean_json(event)
    except UnstorableValue as error:
        raw = {"unstorable": str(error)}

    with engine.begin() as connection:
        state = get_state(connection, request_id)
        if state is None:
            log_event(logger, "instance_events.unknown_request", request_id=request_id)
            return instances.WatchOutcome("ignored", request_id)
        connection.execute(
            model_instance_log.insert().values(
                model_id=state.model_id,
                instance_name=involved["name"],
                request_id=request_id,
                event="k8s.event",
                detail=_describe(event),
                k8s_event=raw,
            )
        )

    log_event(
        logger,
        "instance_events.stored",
        request_id=request_id,
        attempt=attempt,
        reason=str(event.get("reason"))[:100],
    )
    return instances.WatchOutcome("event_stored", request_id, state.model_id)


def _placeholder_pod(
    name: str, request_id: str, attempt: int, model_id: str
) -> dict[str, Any]:
    """Build the identity of a pod that is gone, for its delete event."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {
                COMPONENT_LABEL: COMPONENT_VALUE,
                MODEL_LABEL: model_id,
                REQUEST_LABEL: request_id,
            },
            "annotations": {
                REQUEST_ANNOTATION: request_id,
                ATTEMPT_ANNOTATION: str(attempt),
            },
        },
    }


def handle_reference(
    engine: Engine, runtime: Runtime, change: str, reference: dict[str, Any]
) -> instances.WatchOutcome:
    """Handle a Reference-mode event: fetch the pod, then treat it as usual."""
    name = reference.get("name")
    parsed = parse_instance_name(name)
    if reference.get("kind") != "Pod" or parsed is None:
        log_event(
            logger,
            "instance_events.reference_dropped",
            kind=str(reference.get("kind"))[:50],
            name=str(name)[:100],
        )
        return instances.WatchOutcome("ignored")

    pod = runtime.get_instance(str(name))
    if pod is not None and change != instances.DELETED:
        return instances.handle_pod_event(engine, runtime, change, pod)

    request_id, attempt = parsed
    with engine.connect() as connection:
        state = get_state(connection, request_id)
    if state is None:
        return instances.WatchOutcome("ignored", request_id)
    placeholder = _placeholder_pod(str(name), request_id, attempt, state.model_id)
    return instances.handle_pod_event(engine, runtime, instances.DELETED, placeholder)
