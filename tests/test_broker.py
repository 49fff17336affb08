"""Tests of the local Broker with real HTTP subscribers on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent

from shared.broker import LocalBroker
from shared.events import WORK_REQUEST_SUBMITTED, build_event, send_event
from shared.routing import Route
from tests.capture import CaptureServer

FAST_BACKOFF = 0.02


def route(name: str, event_type: str, subscriber: str, retry: int = 2) -> Route:
    return Route(
        trigger=name,
        filter_attributes={"type": event_type},
        subscriber=subscriber,
        retry=retry,
        backoff_policy="exponential",
        backoff_delay_seconds=FAST_BACKOFF,
        dead_letter_sink="dead-letters",
    )


ROUTES = (route("to-a", "test.a", "a"), route("to-b", "test.b", "b"))


def event(event_type: str, data: dict | None = None) -> CloudEvent:
    built = build_event(event_type, data or {"n": 1}, source="/tests", subject="s1")
    built["kind"] = "Pod"
    return built


def test_binary_event_goes_to_matching_subscriber_only():
    with (
        CaptureServer() as a,
        CaptureServer() as b,
        LocalBroker({"a": a.url, "b": b.url}, ROUTES) as broker,
    ):
        sent = event("test.a", {"pod": {"name": "x"}})
        send_event(broker.url, sent)

        assert broker.wait_idle(5.0)
        stats = broker.stats()

    (received,) = a.events()
    assert b.requests == []
    assert received["id"] == sent["id"]
    assert received["type"] == "test.a"
    assert received["subject"] == "s1"
    assert received["kind"] == "Pod"
    assert "knativearrivaltime" in received.get_attributes()
    assert received.get_data() == {"pod": {"name": "x"}}
    assert stats.accepted == 1
    assert stats.delivered == 1


def test_delivery_is_binary_mode():
    with (
        CaptureServer() as a,
        LocalBroker({"a": a.url}, ROUTES) as broker,
    ):
        send_event(broker.url, event("test.a"))
        assert broker.wait_idle(5.0)

    ((headers, body),) = a.requests
    lowered = {key.lower(): value for key, value in headers.items()}
    assert lowered["ce-type"] == "test.a"
    assert lowered["content-type"] == "application/json"
    assert json.loads(body) == {"n": 1}


def test_structured_event_is_accepted():
    with (
        CaptureServer() as a,
        LocalBroker({"a": a.url}, ROUTES) as broker,
    ):
        headers, body = to_structured(event("test.a", {"k": "v"}))
        response = requests.post(broker.url, headers=headers, data=body, timeout=5)
        assert broker.wait_idle(5.0)

    assert response.status_code == 202
    (received,) = a.events()
    assert received.get_data() == {"k": "v"}
    ((delivered_headers, _),) = a.requests
    assert "ce-id" in {key.lower() for key in delivered_headers}


def test_unrouted_event_is_accepted_and_dropped():
    with (
        CaptureServer() as a,
        LocalBroker({"a": a.url}, ROUTES) as broker,
    ):
        send_event(broker.url, event("test.unknown"))
        assert broker.wait_idle(5.0)
        stats = broker.stats()

    assert a.requests == []
    assert stats.accepted == 1
    assert stats.unrouted == 1


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"not a cloud event", {"Content-Type": "text/plain"}),
        (b'{"specversion": "1.0"}', {"Content-Type": "application/cloudevents+json"}),
        (b"{}", {"Content-Type": "application/json", "ce-specversion": "1.0"}),
    ],
)
def test_garbage_gets_400(body, headers):
    with LocalBroker({}, ROUTES) as broker:
        response = requests.post(broker.url, data=body, headers=headers, timeout=5)

    assert response.status_code == 400
    assert "not a CloudEvent" in response.json()["error"]


def test_retry_on_503_then_success():
    with (
        CaptureServer(statuses=[503, 503]) as a,
        LocalBroker({"a": a.url}, ROUTES) as broker,
    ):
        sent = event("test.a")
        send_event(broker.url, sent)
        assert broker.wait_idle(5.0)
        stats = broker.stats()

    assert [e["id"] for e in a.events()] == [sent["id"]] * 3
    assert stats.retried == 2
    assert stats.delivered == 1
    assert stats.dead_lettered == 0


def test_retry_on_429():
    with (
        CaptureServer(statuses=[429]) as a,
        LocalBroker({"a": a.url}, ROUTES) as broker,
    ):
        send_event(broker.url, event("test.a"))
        assert broker.wait_idle(5.0)
        stats = broker.stats()

    assert len(a.requests) == 2
    assert stats.delivered == 1


def test_dead_letter_after_retries():
    with (
        CaptureServer(default_status=500) as a,
        LocalBroker({"a": a.url}, ROUTES) as broker,
    ):
        sent = event("test.a")
        send_event(broker.url, sent)
        assert broker.wait_idle(5.0)
        stats = broker.stats()
        (dead,) = broker.dead_letters

    assert len(a.requests) == 3
    assert stats.retried == 2
    assert stats.dead_lettered == 1
    assert stats.delivered == 0
    assert dead.event["id"] == sent["id"]
    assert dead.attempts == 3
    assert dead.status_code == 500
    assert dead.trigger == "to-a"
    assert dead.dead_letter_sink == "dead-letters"


def test_client_error_is_not_retried():
    with (
        CaptureServer(default_status=400) as a,
        LocalBroker({"a": a.url}, ROUTES) as broker,
    ):
        send_event(broker.url, event("test.a"))
        assert broker.wait_idle(5.0)
        (dead,) = broker.dead_letters

    assert len(a.requests) == 1
    assert dead.status_code == 400
    assert dead.attempts == 1


def test_connection_error_is_retried():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"http://127.0.0.1:{port}"

    with LocalBroker({"a": url}, ROUTES) as broker:
        send_event(broker.url, event("test.a"))
        assert broker.wait_idle(5.0)
        (dead,) = broker.dead_letters

    assert dead.attempts == 3
    assert dead.status_code is None
    assert "ConnectionError" in dead.error


def test_subscriber_without_url_is_dead_lettered():
    with LocalBroker({}, ROUTES) as broker:
        send_event(broker.url, event("test.b"))
        assert broker.wait_idle(5.0)
        (dead,) = broker.dead_letters

    assert dead.subscriber == "b"
    assert "no local URL" in dead.error


def test_slow_subscriber_does_not_block_others():
    # A listening socket that never accepts: requests to it hang until the
    # delivery timeout.
    with socket.socket() as stuck, CaptureServer() as b:
        stuck.bind(("127.0.0.1", 0))
        stuck.listen(8)
        stuck_url = f"http://127.0.0.1:{stuck.getsockname()[1]}"
        routes = (route("to-a", "test.a", "a", retry=0), ROUTES[1])
        broker = LocalBroker(
            {"a": stuck_url, "b": b.url},
            routes,
            workers_per_subscriber=1,
            delivery_timeout=3.0,
        ).start()
        try:
            for _ in range(3):
                send_event(broker.url, event("test.a"))
            started = time.monotonic()
            send_event(broker.url, event("test.b"))

            received = b.wait_for(1, timeout=2.0)
            elapsed = time.monotonic() - started
        finally:
            broker.stop(timeout=0.1)

    assert len(received) == 1
    assert elapsed < 1.0


def test_stop_abandons_pending_retries_within_bound():
    slow_retry = Route("slow", {"type": "test.a"}, "a", 3, "exponential", 30.0, None)
    with CaptureServer(default_status=503) as a:
        broker = LocalBroker({"a": a.url}, (slow_retry,)).start()
        send_event(broker.url, event("test.a"))
        a.wait_for(1)

        started = time.monotonic()
        abandoned = broker.stop(timeout=0.3)
        elapsed = time.monotonic() - started

    assert abandoned == 1
    assert broker.stats().abandoned == 1
    assert elapsed < 2.0


def test_default_routes_from_manifests():
    with (
        CaptureServer() as scheduler,
        LocalBroker({"scheduler": scheduler.url}) as broker,
    ):
        send_event(broker.url, event(WORK_REQUEST_SUBMITTED, {"model_id": "m"}))
        assert broker.wait_idle(5.0)

    (received,) = scheduler.events()
    assert received["type"] == WORK_REQUEST_SUBMITTED
    assert received.get_data() == {"model_id": "m"}
