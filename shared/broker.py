"""A local stand-in for the Knative Broker, routing by the Trigger manifests.

On Knative the Broker accepts CloudEvents from K_SINK senders and delivers
each one to the subscribers whose Trigger filter it passes, retrying with
backoff and finally sending it to a dead-letter sink. The local stack runs
this class in its place so the functions run unchanged on a laptop.

Like Knative, it acknowledges with 202 before delivery and delivers at
least once and in no fixed order. Each subscriber has its own bounded pool
of delivery threads, so one slow function does not hold up the others.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import requests
from cloudevents.conversion import to_binary
from cloudevents.exceptions import GenericException
from cloudevents.http import CloudEvent, from_http

from shared.logs import get_logger, log_event
from shared.loopback import JsonHandler, LoopbackServer
from shared.routing import Route, default_routes, subscribers_for

DEFAULT_WORKERS_PER_SUBSCRIBER = 4
DEFAULT_DELIVERY_TIMEOUT_SECONDS = 30.0

# NOTE: Knative's channel-based Broker retries every non-2xx response. This
# broker retries only connection errors, 429 and 5xx, and sends any other
# 4xx to the dead letters at once. The functions return 2xx for permanent
# conditions, so a 4xx means a bug that a retry does not fix.
RETRYABLE_STATUS = frozenset({429}) | frozenset(range(500, 600))

logger = get_logger(__name__)


@dataclass(frozen=True)
class DeadLetter:
    """An event that could not be delivered to one subscriber.

    The error fields carry what Knative puts in the knativeerrordest,
    knativeerrorcode and knativeerrordata extensions of a dead-lettered event.
    """

    event: CloudEvent
    trigger: str
    subscriber: str
    dead_letter_sink: str | None
    attempts: int
    status_code: int | None
    error: str
    time: str


@dataclass(frozen=True)
class BrokerStats:
    """Counts since the broker started. `retried` counts retry attempts."""

    accepted: int = 0
    unrouted: int = 0
    delivered: int = 0
    retried: int = 0
    dead_lettered: int = 0
    abandoned: int = 0


@dataclass
class _Delivery:
    event: CloudEvent
    route: Route
    url: str | None
    attempts: int = 0


@dataclass(order=True)
class _ScheduledRetry:
    due: float
    sequence: int
    delivery: _Delivery = field(compare=False)


class _BrokerHandler(JsonHandler):
    def do_POST(self) -> None:  # noqa: N802 - name fixed by http.server
        broker: LocalBroker = self.server.broker  # type: ignore[attr-defined]
        try:
            body = self.read_body()
            event = from_http(dict(self.headers.items()), body)
        except (GenericException, ValueError) as error:
            self.send_error_json(
                400,
                f"request is not a CloudEvent in binary or structured mode: {error}",
            )
            return

        broker.publish(event)
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()


class LocalBroker:
    """Accept CloudEvents over HTTP and deliver them by Trigger routes.

    `subscribers` maps a Knative Service name (a Trigger's subscriber) to
    the URL of the local function. `routes` defaults to knative/*.yaml.
    """

    def __init__(
        self,
        subscribers: Mapping[str, str],
        routes: Sequence[Route] | None = None,
        *,
        workers_per_subscriber: int = DEFAULT_WORKERS_PER_SUBSCRIBER,
        delivery_timeout: float = DEFAULT_DELIVERY_TIMEOUT_SECONDS,
        port: int = 0,
    ):
        self.subscribers = dict(subscribers)
        self.routes = tuple(default_routes() if routes is None else routes)
        self.delivery_timeout = delivery_timeout
        self._workers_per_subscriber = workers_per_subscriber

        self._lock = threading.Condition()
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._retries: list[_ScheduledRetry] = []
        self._sequence = itertools.count()
        self._pending = 0
        self._stopping = False
        self._counts: dict[str, int] = dict.fromkeys(BrokerStats.__annotations__, 0)
        self._dead_letters: list[DeadLetter] = []

        self._server = LoopbackServer(_BrokerHandler, port)
        self._server.httpd.broker = self  # type: ignore[attr-defined]
        self._retry_thread = threading.Thread(
            target=self._run_retry_timer, name="broker-retries", daemon=True
        )

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> LocalBroker:
        self._server.start("broker-ingress")
        self._retry_thread.start()
        log_event(logger, "broker.started", url=self.url, routes=len(self.routes))
        return self

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stats(self) -> BrokerStats:
        with self._lock:
            return BrokerStats(**self._counts)

    @property
    def dead_letters(self) -> list[DeadLetter]:
        """Return a copy of the dead-lettered events, oldest first."""
        with self._lock:
            return list(self._dead_letters)

    def publish(self, event: CloudEvent) -> None:
        """Queue `event` for every subscriber whose Trigger filter it passes."""
        event["knativearrivaltime"] = _now()
        routes = subscribers_for(event.get_attributes(), self.routes)
        with self._lock:
            if self._stopping:
                log_event(
                    logger,
                    "broker.rejected_after_stop",
                    level=logging.WARNING,
                    type=event["type"],
                    id=event["id"],
                )
                return
            self._counts["accepted"] += 1
            if not routes:
                self._counts["unrouted"] += 1
            self._pending += len(routes)

        if not routes:
            log_event(
                logger,
                "broker.unrouted",
                level=logging.DEBUG,
                type=event["type"],
                id=event["id"],
            )
        for route in routes:
            url = self.subscribers.get(route.subscriber)
            self._submit(_Delivery(event=event, route=route, url=url))

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no delivery is queued, running or waiting to retry."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(remaining)
        return True

    def stop(self, timeout: float = 5.0) -> int:
        """Stop accepting events and drain deliveries for up to `timeout` s.

        Deliveries still queued, running or waiting to retry after that are
        abandoned (logged and counted). Returns how many were abandoned.
        """
        self._server.stop()
        drained = self.wait_idle(timeout)

        with self._lock:
            self._stopping = True
            abandoned = self._pending
            self._counts["abandoned"] += abandoned
            self._pending = 0
            self._retries.clear()
            pools = list(self._pools.values())
            self._lock.notify_all()

        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
        self._retry_thread.join(timeout=1.0)
        if not drained:
            log_event(
                logger, "broker.abandoned", level=logging.WARNING, deliveries=abandoned
            )
        log_event(logger, "broker.stopped", url=self.url, counts=dict(self._counts))
        return abandoned

    def _submit(self, delivery: _Delivery) -> None:
        with self._lock:
            if self._stopping:
                return
            pool = self._pools.get(delivery.route.subscriber)
            if pool is None:
                pool = ThreadPoolExecutor(
                    max_workers=self._workers_per_subscriber,
                    thread_name_prefix=f"broker-{delivery.route.subscriber}",
                )
                self._pools[delivery.route.subscriber] = pool
            pool.submit(self._attempt, delivery)

    def _attempt(self, delivery: _Delivery) -> None:
        if delivery.url is None:
            self._dead_letter(
                delivery,
                None,
                f"no local URL for subscriber Service {delivery.route.subscriber!r}",
            )
            return

        delivery.attempts += 1
        status, error = self._post(delivery)
        if status is not None and 200 <= status < 300:
            self._finish(delivery, "delivered")
            log_event(
                logger,
                "broker.delivered",
                type=delivery.event["type"],
                id=delivery.event["id"],
                subscriber=delivery.route.subscriber,
                attempts=delivery.attempts,
                status=status,
            )
            return

        retryable = status is None or status in RETRYABLE_STATUS
        retries_done = delivery.attempts - 1
        if not retryable or retries_done >= delivery.route.retry:
            self._dead_letter(delivery, status, error)
            return
        self._schedule_retry(delivery, retries_done, status, error)

    def _post(self, delivery: _Delivery) -> tuple[int | None, str]:
        # NOTE: Knative publishes a CloudEvent that a subscriber returns in
        # its response back to the Broker. This broker ignores response bodies.
        headers, body = to_binary(delivery.event)
        if "content-type" not in headers and not isinstance(
            delivery.event.data, (bytes, str, type(None))
        ):
            # A structured-mode event with JSON data and no datacontenttype
            # has application/json data by the CloudEvents JSON format.
            headers["content-type"] = "application/json"
        try:
            response = requests.post(
                delivery.url,  # type: ignore[arg-type]
                headers=headers,
                data=body,
                timeout=self.delivery_timeout,
            )
        except requests.RequestException as error:
            return None, f"{type(error).__name__}: {error}"
        return response.status_code, response.text[:500]

    def _schedule_retry(
        self, delivery: _Delivery, retry_number: int, status: int | None, error: str
    ) -> None:
        delay = delivery.route.backoff_seconds(retry_number)
        log_event(
            logger,
            "broker.retry",
            level=logging.WARNING,
            type=delivery.event["type"],
            id=delivery.event["id"],
            subscriber=delivery.route.subscriber,
            attempts=delivery.attempts,
            status=status,
            error=error,
            delay_seconds=delay,
        )
        with self._lock:
            self._counts["retried"] += 1
            due = time.monotonic() + delay
            heapq.heappush(
                self._retries, _ScheduledRetry(due, next(self._sequence), delivery)
            )
            self._lock.notify_all()

    def _run_retry_timer(self) -> None:
        # Hands each retry to its subscriber's pool when its backoff ends, so
        # no delivery thread sleeps through a backoff.
        with self._lock:
            while not self._stopping:
                if not self._retries:
                    self._lock.wait(1.0)
                    continue
                wait = self._retries[0].due - time.monotonic()
                if wait > 0:
                    self._lock.wait(min(wait, 1.0))
                    continue
                delivery = heapq.heappop(self._retries).delivery
                self._lock.release()
                try:
                    self._submit(delivery)
                finally:
                    self._lock.acquire()

    def _dead_letter(self, delivery: _Delivery, status: int | None, error: str) -> None:
        record = DeadLetter(
            event=delivery.event,
            trigger=delivery.route.trigger,
            subscriber=delivery.route.subscriber,
            dead_letter_sink=delivery.route.dead_letter_sink,
            attempts=delivery.attempts,
            status_code=status,
            error=error,
            time=_now(),
        )
        with self._lock:
            self._dead_letters.append(record)
        self._finish(delivery, "dead_lettered")
        log_event(
            logger,
            "broker.dead_lettered",
            level=logging.ERROR,
            type=delivery.event["type"],
            id=delivery.event["id"],
            trigger=record.trigger,
            subscriber=record.subscriber,
            dead_letter_sink=record.dead_letter_sink,
            attempts=record.attempts,
            status=status,
            error=error,
        )

    def _finish(self, delivery: _Delivery, outcome: str) -> None:
        with self._lock:
            if self._stopping:
                return
            self._counts[outcome] += 1
            self._pending -= 1
            self._lock.notify_all()


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
