"""Follow instance pods from ApiServerSource events (Resource mode).

Each add, update or delete of an instance pod goes to
`shared.instances.handle_pod_event`. When an instance frees a slot, an
`instance.released` event lets the scheduler start the model's next request.
"""

import flask
import functions_framework
from cloudevents.http import CloudEvent

from shared import instances
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
    pod = event_data(event)
    if event["type"] not in APISERVER_TYPES or not isinstance(pod, dict):
        log_event(
            logger, "instance_watch.event_ignored", type=event["type"], id=event["id"]
        )
        return
    if pod.get("kind") not in (None, "Pod"):
        log_event(logger, "instance_watch.not_a_pod", kind=pod.get("kind"))
        return

    change = event["type"].rsplit(".", 1)[-1]
    try:
        outcome = instances.handle_pod_event(get_engine(), get_runtime(), change, pod)
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
