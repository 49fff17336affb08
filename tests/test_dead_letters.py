"""The dead_letters function, fed CloudEvents through functions-framework.

It needs no database. The conftest environment is only there because the
function validates the settings at import.
"""

from __future__ import annotations

import json
import logging

import pytest
from cloudevents.conversion import to_binary, to_structured
from cloudevents.http import CloudEvent

from shared.events import APISERVER_UPDATE, WORK_REQUEST_SUBMITTED
from tests.conftest import load_function

SECRET_IN_DATA = "job-token-that-must-not-be-logged"


@pytest.fixture
def client():
    return load_function("dead_letters", "dead_letters").test_client()


def post_event(client, event: CloudEvent, mode: str):
    if mode == "binary":
        headers, body = to_binary(event, data_marshaller=json.dumps)
    else:
        headers, body = to_structured(event)
    return client.post("/", headers=headers, data=body)


def dead_letter_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "dead_letter.received"]


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_dead_letter_is_logged_and_acknowledged(client, caplog, mode):
    event = CloudEvent(
        {
            "type": WORK_REQUEST_SUBMITTED,
            "source": "/modelhub",
            "id": f"event-{mode}",
            "subject": "request-1",
        },
        {"model_id": "demo-qed", "token": SECRET_IN_DATA},
    )

    with caplog.at_level(logging.INFO):
        response = post_event(client, event, mode)

    assert response.status_code == 200
    (record,) = dead_letter_records(caplog)
    assert record.levelno == logging.WARNING
    assert record.fields["type"] == WORK_REQUEST_SUBMITTED
    assert record.fields["id"] == f"event-{mode}"
    assert record.fields["source"] == "/modelhub"
    assert record.fields["subject"] == "request-1"


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_dead_letter_data_is_never_logged(client, caplog, mode):
    pod = {
        "kind": "Pod",
        "spec": {
            "containers": [{"env": [{"name": "JOB_TOKEN", "value": SECRET_IN_DATA}]}]
        },
    }
    event = CloudEvent(
        {"type": APISERVER_UPDATE, "source": "https://10.0.0.1:443", "id": "e1"},
        pod,
    )

    with caplog.at_level(logging.DEBUG):
        response = post_event(client, event, mode)

    assert response.status_code == 200
    assert SECRET_IN_DATA not in caplog.text
    for record in caplog.records:
        assert SECRET_IN_DATA not in repr(getattr(record, "fields", {}))


def test_dead_letter_logs_delivery_failure(client, caplog):
    event = CloudEvent(
        {
            "type": APISERVER_UPDATE,
            "source": "https://10.0.0.1:443",
            "id": "e2",
            "knativeerrordest": "http://instance-watch.modelhub.svc.cluster.local",
            "knativeerrorcode": "503",
        },
        {"kind": "Pod"},
    )

    with caplog.at_level(logging.INFO):
        response = post_event(client, event, "binary")

    assert response.status_code == 200
    (record,) = dead_letter_records(caplog)
    assert record.fields["subject"] is None
    assert record.fields["failed_destination"] == (
        "http://instance-watch.modelhub.svc.cluster.local"
    )
    assert record.fields["failed_status"] == "503"


def test_non_cloudevent_is_rejected(client):
    response = client.post("/", json={"not": "an event"})

    assert response.status_code == 400
