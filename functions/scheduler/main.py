"""Start instances for queued work requests.

Triggered by `workrequest.submitted` and `instance.released` events. Each
event runs one scheduling pass for its model. A runtime failure returns 503,
so the broker delivers the event again. Anything permanent is logged and
acknowledged with 200.
"""

import flask
import functions_framework
from cloudevents.http import CloudEvent

from shared import scheduling
from shared.db import get_engine
from shared.events import INSTANCE_RELEASED, WORK_REQUEST_SUBMITTED, event_data
from shared.inputs import MODEL_ID
from shared.logs import get_logger, log_event
from shared.runtime import get_runtime
from shared.runtime.base import RuntimeUnavailable
from shared.settings import get_settings

settings = get_settings()
logger = get_logger("functions.scheduler")


@functions_framework.cloud_event
def scheduler(event: CloudEvent) -> None:
    data = event_data(event) or {}
    model_id = data.get("model_id")
    if event["type"] not in (WORK_REQUEST_SUBMITTED, INSTANCE_RELEASED) or not (
        isinstance(model_id, str) and MODEL_ID.fullmatch(model_id)
    ):
        log_event(logger, "scheduler.event_ignored", type=event["type"], id=event["id"])
        return

    try:
        started = scheduling.schedule_model(
            get_engine(), get_runtime(), model_id, jobs_url=settings.jobs_url or ""
        )
    except RuntimeUnavailable as error:
        # Transient: the claim went back to REQUESTED, and 503 makes the
        # broker deliver the event again.
        log_event(logger, "scheduler.runtime_unavailable", level=40, error=str(error))
        flask.abort(503)
    log_event(
        logger,
        "scheduler.pass_done",
        model_id=model_id,
        started=started,
        event_id=event["id"],
    )
