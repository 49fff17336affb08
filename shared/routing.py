"""Event routes read from the Knative Trigger manifests under `knative/`.

The local stack routes CloudEvents by the same Trigger files that Knative
applies in the cluster, so the routing table exists once. This module loads
the Triggers (and the Broker delivery defaults they fall back to) and applies
Knative's exact-match attribute filter to an event's attributes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFEST_DIR = REPO_ROOT / "knative"

BACKOFF_POLICIES = ("exponential", "linear")

# ISO-8601 durations made of days and time parts, with fractional seconds
# (PT0.5S, PT2S, P1DT1H). Years, months and weeks have no fixed length.
_DURATION = re.compile(
    r"^P(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


class RoutingError(ValueError):
    """A Trigger or Broker manifest is invalid for local routing."""


@dataclass(frozen=True)
class Route:
    """One Trigger: which events it matches and how the Broker delivers them."""

    trigger: str
    filter_attributes: dict[str, str] = field(hash=False)
    subscriber: str
    retry: int
    backoff_policy: str
    backoff_delay_seconds: float
    dead_letter_sink: str | None

    def matches(self, event_attributes: Mapping[str, Any]) -> bool:
        """Apply Knative's attribute filter to one event's attributes."""
        return filter_matches(self.filter_attributes, event_attributes)

    def backoff_seconds(self, retry_number: int) -> float:
        """Return the wait before retry `retry_number` (0 for the first retry)."""
        if self.backoff_policy == "linear":
            return self.backoff_delay_seconds * (retry_number + 1)
        return self.backoff_delay_seconds * 2**retry_number


def parse_duration(text: str) -> float:
    """Convert an ISO-8601 duration such as PT0.5S into seconds.

    Raises RoutingError for a malformed duration or for years, months and
    weeks, whose length in seconds is not fixed.
    """
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if match is None or text.strip() in ("P", "PT"):
        raise RoutingError(
            f"backoffDelay {text!r} is not an ISO-8601 duration of days, hours, "
            "minutes and seconds: write it like PT0.5S or PT2S"
        )

    parts = {key: float(value or 0) for key, value in match.groupdict().items()}
    return (
        parts["days"] * 86400
        + parts["hours"] * 3600
        + parts["minutes"] * 60
        + parts["seconds"]
    )


def filter_matches(
    filter_attributes: Mapping[str, str], event_attributes: Mapping[str, Any]
) -> bool:
    """Return whether an event passes a Trigger's `spec.filter.attributes`.

    The rules of knative/eventing's attributes filter (eventing.knative.dev/v1):
    every filter attribute must be present in the event and equal to the
    filter value. A filter value of "" matches any
    non-empty value. An empty filter matches every event.
    """
    for name, expected in filter_attributes.items():
        actual = event_attributes.get(name)
        if actual is None or actual == "":
            return False
        if expected != "" and str(actual) != expected:
            return False
    return True


def load_routes(paths: Iterable[Path] | None = None) -> list[Route]:
    """Read every Trigger in `paths` (default: knative/*.yaml) into routes.

    Documents of other kinds are skipped. A Trigger without its own
    `spec.delivery` takes the delivery of its Broker, as Knative does.
    """
    documents = list(_read_documents(paths))
    broker_delivery = {
        (_namespace(doc), doc["metadata"]["name"]): doc.get("spec", {}).get("delivery")
        for doc, _ in documents
        if doc.get("kind") == "Broker"
    }

    routes = []
    for doc, path in documents:
        if doc.get("kind") != "Trigger":
            continue
        broker = doc.get("spec", {}).get("broker", "default")
        fallback = broker_delivery.get((_namespace(doc), broker)) or {}
        routes.append(_route_from_trigger(doc, path, fallback))
    return routes


@lru_cache(maxsize=1)
def default_routes() -> tuple[Route, ...]:
    """Return the routes of knative/*.yaml, read once per process."""
    return tuple(load_routes())


def subscribers_for(
    event_attributes: Mapping[str, Any], routes: Iterable[Route] | None = None
) -> list[Route]:
    """Return the routes whose filter the event passes (default: knative/)."""
    candidates = default_routes() if routes is None else routes
    return [route for route in candidates if route.matches(event_attributes)]


def _read_documents(paths: Iterable[Path] | None) -> Iterable[tuple[dict, Path]]:
    files = sorted(MANIFEST_DIR.glob("*.yaml")) if paths is None else list(paths)
    for path in files:
        try:
            loaded = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except yaml.YAMLError as error:
            raise RoutingError(
                f"{path} is not valid YAML: {error}. Fix the file or move it "
                "out of the manifest folder"
            ) from error
        for doc in loaded:
            if isinstance(doc, dict):
                yield doc, path


def _namespace(doc: Mapping[str, Any]) -> str:
    return doc.get("metadata", {}).get("namespace") or "default"


def _route_from_trigger(
    doc: Mapping[str, Any], path: Path, broker_delivery: Mapping[str, Any]
) -> Route:
    name = doc.get("metadata", {}).get("name") or "<unnamed>"
    spec = doc.get("spec") or {}
    where = f"Trigger {name!r} in {path}"

    subscriber = (spec.get("subscriber") or {}).get("ref") or {}
    if subscriber.get("kind") != "Service" or not subscriber.get("name"):
        raise RoutingError(
            f"{where} has no spec.subscriber.ref to a Service: the local stack "
            "can only route to functions named by a Service ref"
        )

    filter_attributes = (spec.get("filter") or {}).get("attributes") or {}
    if not all(isinstance(value, str) for value in filter_attributes.values()):
        raise RoutingError(
            f"{where} has a non-string value in spec.filter.attributes "
            f"{filter_attributes!r}: Knative compares strings only, so quote it"
        )

    delivery = spec.get("delivery") or broker_delivery
    return Route(
        trigger=name,
        filter_attributes=dict(filter_attributes),
        subscriber=subscriber["name"],
        retry=_retry(delivery, where),
        backoff_policy=_backoff_policy(delivery, where),
        backoff_delay_seconds=_backoff_delay(delivery, where),
        dead_letter_sink=_dead_letter_sink(delivery, broker_delivery),
    )


def _retry(delivery: Mapping[str, Any], where: str) -> int:
    retry = delivery.get("retry", 0)
    if not isinstance(retry, int) or isinstance(retry, bool) or retry < 0:
        raise RoutingError(
            f"{where} has delivery.retry={retry!r}: set a whole number of 0 or more"
        )
    return retry


def _backoff_policy(delivery: Mapping[str, Any], where: str) -> str:
    policy = delivery.get("backoffPolicy", "exponential")
    if policy not in BACKOFF_POLICIES:
        raise RoutingError(
            f"{where} has delivery.backoffPolicy={policy!r}: use one of "
            f"{', '.join(BACKOFF_POLICIES)}"
        )
    return policy


def _backoff_delay(delivery: Mapping[str, Any], where: str) -> float:
    raw = delivery.get("backoffDelay")
    if raw is None:
        return 0.0
    try:
        return parse_duration(raw)
    except RoutingError as error:
        raise RoutingError(f"{where}: {error}") from error


def _dead_letter_sink(
    delivery: Mapping[str, Any], broker_delivery: Mapping[str, Any]
) -> str | None:
    # A Trigger without its own dead-letter sink uses the Broker's.
    sink = delivery.get("deadLetterSink") or broker_delivery.get("deadLetterSink")
    if not sink:
        return None
    ref = sink.get("ref") or {}
    return ref.get("name") or sink.get("uri")
