"""Log each event that the Broker could not deliver, then acknowledge it.

The Broker and every Trigger send an event here after its last retry fails
(`delivery.deadLetterSink` in knative/broker.yaml and knative/triggers.yaml).
The log line names the event (type, id, source, subject) and, where the
channel adds them, the failed destination and its status code. It never
contains the event's data: ApiServerSource events carry whole pod objects,
including the job token in the agent's environment.
"""

import logging

import functions_framework
from cloudevents.http import CloudEvent

from shared.logs import get_logger, log_event
from shared.settings import get_settings

get_settings()
logger = get_logger("functions.dead_letters")


@functions_framework.cloud_event
def dead_letters(event: CloudEvent) -> None:
    log_event(
        logger,
        "dead_letter.received",
        level=logging.WARNING,
        type=event["type"],
        id=event["id"],
        source=event["source"],
        subject=event.get("subject"),
        failed_destination=event.get("knativeerrordest"),
        failed_status=event.get("knativeerrorcode"),
    )
