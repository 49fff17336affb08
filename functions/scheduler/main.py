"""Start instances for queued work requests.

Triggered by `workrequest.submitted` and `instance.released` events. Each
event runs one scheduling pass for its model. A runtime failure answers 500
so the broker redelivers; anything permanent is logged and acknowledged.
"""

import functions_framework
from cloudevents.http import CloudEvent

from shared import scheduling
from shared.db import get_engine
from shared.events import INSTANCE_RELEASED, WORK_REQUEST_SUBMITTED
from shared.logs import get_logger, log_event
from shared.runtime import get_runtime
from shared.settings import get_settings

settings = get_settings()
logger = get_logger("functions.scheduler")


@functions_framework.cloud_event
def scheduler(event: CloudEvent) -> None:
    data = event.get_data() if isinstance(event.get_data(), dict) else {}
    model_id = data.get("model_id")
    if event["type"] not in (WORK_REQUEST_SUBMITTED, INSTANCE_RELEASED) or not (
        isinstance(model_id, str) and model_id
    ):
        log_event(logger, "scheduler.event_ignored", type=event["type"], id=event["id"])
        return

    started = scheduling.schedule_model(
        get_engine(), get_runtime(), model_id, jobs_url=settings.jobs_url or ""
    )
    log_event(
        logger,
        "scheduler.pass_done",
        model_id=model_id,
        started=started,
        event_id=event["id"],
    )
