"""Follow instance pods from ApiServerSource events.

Each add, update or delete of an instance pod goes to
`shared.instances.handle_pod_event`. Core/v1 Events about instance pods are
stored with the instance, and a Reference-mode event is resolved by
fetching the pod. When an instance frees a slot, an `instance.released`
event lets the scheduler start the model's next request.
"""

import flask
import functions_framework
from cloudevents.http import CloudEvent

from shared import instance_events, instances
from shared.db import get_engine
from shared.events import APISERVER_TYPES, INSTANCE_RELEASED, emit, event_data
from shared.logs import get_logger, log_event
from shared.runtime import get_runtime
from shared.runtime.base import RuntimeUnavailable
from shared.settings import get_settings

get_settings()
logger = get_logger("functions.instance_watch")


@functions_framework.cloud_event
def instance_watch(event: CloudEvent) -> None:
    data = event_data(event)
    if event["type"] not in APISERVER_TYPES or data is None:
        log_event(
            logger, "instance_watch.event_ignored", type=event["type"], id=event["id"]
        )
        return

    change = event["type"].rsplit(".", 1)[-1]
    try:
        outcome = dispatch(change, data)
    except RuntimeUnavailable as error:
        # Transient: 503 makes the broker deliver the event again.
        log_event(
            logger, "instance_watch.runtime_unavailable", level=40, error=str(error)
        )
        flask.abort(503)

    if outcome.release and outcome.model_id:
        emit(
            INSTANCE_RELEASED,
            {"model_id": outcome.model_id, "request_id": outcome.request_id},
            subject=outcome.request_id,
        )


def dispatch(change: str, data: dict) -> instances.WatchOutcome:
    """Route Pod objects, core/v1 Events and Reference-mode references."""
    kind = data.get("kind")
    if kind == "Event":
        return instance_events.handle_kube_event(get_engine(), data)
    if "metadata" not in data and "name" in data:
        return instance_events.handle_reference(
            get_engine(), get_runtime(), change, data
        )
    if kind not in (None, "Pod"):
        log_event(logger, "instance_watch.not_a_pod", kind=str(kind)[:50])
        return instances.WatchOutcome("ignored")
    return instances.handle_pod_event(get_engine(), get_runtime(), change, data)
