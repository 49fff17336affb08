"""Tests of the Broker and Trigger manifests and of routing by them.

The manifests are checked against the OpenAPI v3 schemas of the Knative
CRDs the way the Kubernetes API server applies a structural schema. The
check covers types, required fields, and fields the schema does not know.
The API server drops such fields without an error unless the schema sets
x-kubernetes-preserve-unknown-fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.events import (
    APISERVER_ADD,
    APISERVER_DELETE,
    APISERVER_UPDATE,
    INSTANCE_RELEASED,
    WORK_REQUEST_SUBMITTED,
)
from shared.routing import (
    Route,
    RoutingError,
    filter_matches,
    load_routes,
    parse_duration,
    subscribers_for,
)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = ROOT / "tests" / "schemas" / "knative"
MANIFESTS = (ROOT / "knative" / "broker.yaml", ROOT / "knative" / "triggers.yaml")

EXPECTED_ROUTES = {
    (WORK_REQUEST_SUBMITTED, "scheduler"),
    (INSTANCE_RELEASED, "scheduler"),
    (APISERVER_ADD, "instance-watch"),
    (APISERVER_UPDATE, "instance-watch"),
    (APISERVER_DELETE, "instance-watch"),
}

JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def structural_errors(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """Return where `value` breaks a Kubernetes structural schema."""
    expected = schema.get("type")
    if expected:
        is_bool = isinstance(value, bool)
        if not isinstance(value, JSON_TYPES[expected]) or (
            is_bool and expected != "boolean"
        ):
            return [f"{path}: expected {expected}, found {type(value).__name__}"]

    errors = []
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{path}.{name}: required but missing")
        for name, item in value.items():
            if name in properties:
                errors += structural_errors(item, properties[name], f"{path}.{name}")
            elif "additionalProperties" in schema:
                errors += structural_errors(
                    item, schema["additionalProperties"], f"{path}.{name}"
                )
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{path}.{name}: unknown field, would be pruned")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors += structural_errors(item, schema["items"], f"{path}[{index}]")
    return errors


def crd_schema(file_name: str) -> dict[str, Any]:
    path = SCHEMA_DIR / file_name
    if not path.is_file():
        pytest.fail(f"CRD schema {path} is missing: put the Knative CRDs there")
    crd = yaml.safe_load(path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def manifest_errors(doc: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    # apiVersion, kind and metadata are checked by the API server itself,
    # not by the CRD schema.
    errors = []
    if not isinstance(doc.get("metadata", {}).get("name"), str):
        errors.append("metadata.name: required string")
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
    return errors + structural_errors(body, schema, doc["kind"])


def documents(kind: str) -> list[dict[str, Any]]:
    docs = []
    for path in MANIFESTS:
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return [d for d in docs if d["kind"] == kind]


def test_schema_check_finds_errors():
    schema = crd_schema("eventing-trigger.yaml")
    doc = {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": "bad"},
        "spec": {"broker": 3, "subscriber": {"reff": {}}},
    }

    errors = manifest_errors(doc, schema)

    assert "Trigger.spec.broker: expected string, found int" in errors
    assert "Trigger.spec.subscriber.reff: unknown field, would be pruned" in errors


def test_triggers_match_crd_schema():
    schema = crd_schema("eventing-trigger.yaml")
    triggers = documents("Trigger")

    assert len(triggers) == len(EXPECTED_ROUTES)
    for trigger in triggers:
        assert trigger["apiVersion"] == "eventing.knative.dev/v1"
        assert manifest_errors(trigger, schema) == []


def test_broker_matches_crd_schema():
    schema = crd_schema("eventing-broker.yaml")
    (broker,) = documents("Broker")

    assert broker["apiVersion"] == "eventing.knative.dev/v1"
    assert broker["metadata"] == {
        "name": "default",
        "namespace": "modelhub",
        "annotations": {"eventing.knative.dev/broker.class": "MTChannelBasedBroker"},
    }
    assert manifest_errors(broker, schema) == []


def test_triggers_have_delivery_settings():
    for trigger in documents("Trigger"):
        spec = trigger["spec"]
        name = trigger["metadata"]["name"]

        assert trigger["metadata"]["namespace"] == "modelhub", name
        assert spec["broker"] == "default", name
        assert spec["subscriber"]["ref"]["apiVersion"] == "serving.knative.dev/v1"
        assert spec["subscriber"]["ref"]["kind"] == "Service"
        assert spec["delivery"]["retry"] == 5, name
        assert spec["delivery"]["backoffPolicy"] == "exponential", name
        assert parse_duration(spec["delivery"]["backoffDelay"]) == 0.5, name
        assert spec["delivery"]["deadLetterSink"]["ref"] == {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "name": "dead-letters",
        }


def test_routing_table_matches_expected_pairs():
    routes = load_routes()

    pairs = {(route.filter_attributes["type"], route.subscriber) for route in routes}

    assert pairs == EXPECTED_ROUTES
    assert len(routes) == len(EXPECTED_ROUTES)
    assert all(route.filter_attributes.keys() == {"type"} for route in routes)


def test_routes_carry_delivery_settings():
    for route in load_routes():
        assert route.retry == 5
        assert route.backoff_policy == "exponential"
        assert route.backoff_delay_seconds == 0.5
        assert route.dead_letter_sink == "dead-letters"


@pytest.mark.parametrize(("event_type", "service"), sorted(EXPECTED_ROUTES))
def test_subscribers_for_each_event_type(event_type, service):
    matched = subscribers_for({"type": event_type, "source": "/test", "id": "1"})

    assert [route.subscriber for route in matched] == [service]


def test_subscribers_for_unknown_type_is_empty():
    assert subscribers_for({"type": "io.modelhub.other", "source": "/t"}) == []


def test_filter_requires_every_attribute():
    attributes = {"type": "a", "source": "/s", "kind": "Pod"}

    assert filter_matches({"type": "a", "kind": "Pod"}, attributes)
    assert not filter_matches({"type": "a", "kind": "Event"}, attributes)
    assert not filter_matches({"type": "a", "missing": "x"}, attributes)


def test_filter_is_exact_and_case_sensitive():
    assert not filter_matches({"type": "A"}, {"type": "a"})
    assert not filter_matches({"type": "a"}, {"type": "ab"})


def test_empty_filter_matches_everything():
    assert filter_matches({}, {"type": "anything"})


def test_empty_filter_value_needs_a_value():
    assert filter_matches({"subject": ""}, {"type": "a", "subject": "x"})
    assert not filter_matches({"subject": ""}, {"type": "a"})
    assert not filter_matches({"subject": ""}, {"type": "a", "subject": ""})


def test_parse_duration():
    assert parse_duration("PT0.5S") == 0.5
    assert parse_duration("PT2S") == 2
    assert parse_duration("PT1M30S") == 90
    assert parse_duration("P1DT1H") == 90000


@pytest.mark.parametrize("text", ["", "P", "PT", "0.5S", "P1W", "P1Y", "PT-1S"])
def test_parse_duration_rejects(text):
    with pytest.raises(RoutingError, match="ISO-8601"):
        parse_duration(text)


def test_backoff_seconds():
    exponential = Route("t", {}, "s", 3, "exponential", 0.5, None)
    linear = Route("t", {}, "s", 3, "linear", 0.5, None)

    assert [exponential.backoff_seconds(n) for n in range(3)] == [0.5, 1.0, 2.0]
    assert [linear.backoff_seconds(n) for n in range(3)] == [0.5, 1.0, 1.5]


BROKER_DOC = """
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default, namespace: ns}
spec:
  delivery:
    retry: 2
    backoffPolicy: linear
    backoffDelay: PT1S
    deadLetterSink: {ref: {kind: Service, name: broker-dls}}
"""

TRIGGER_DOC = """
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: %(name)s, namespace: ns}
spec:
  broker: default
  filter: {attributes: {type: t}}
  subscriber: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: fn}}
%(delivery)s
"""


def write_manifests(tmp_path: Path, *docs: str) -> Path:
    path = tmp_path / "manifests.yaml"
    path.write_text("---\n".join(docs))
    return path


def test_trigger_without_delivery_uses_broker(tmp_path):
    trigger = TRIGGER_DOC % {"name": "plain", "delivery": ""}
    path = write_manifests(tmp_path, BROKER_DOC, trigger, "kind: ConfigMap\n")

    (route,) = load_routes([path])

    assert route.retry == 2
    assert route.backoff_policy == "linear"
    assert route.backoff_delay_seconds == 1.0
    assert route.dead_letter_sink == "broker-dls"


def test_trigger_delivery_overrides_broker(tmp_path):
    delivery = "  delivery: {retry: 7}"
    trigger = TRIGGER_DOC % {"name": "own", "delivery": delivery}
    path = write_manifests(tmp_path, BROKER_DOC, trigger)

    (route,) = load_routes([path])

    assert route.retry == 7
    assert route.backoff_policy == "exponential"
    assert route.backoff_delay_seconds == 0.0
    assert route.dead_letter_sink == "broker-dls"


def test_invalid_backoff_policy_is_rejected(tmp_path):
    delivery = "  delivery: {backoffPolicy: random}"
    path = write_manifests(tmp_path, TRIGGER_DOC % {"name": "x", "delivery": delivery})

    with pytest.raises(RoutingError, match="backoffPolicy='random'"):
        load_routes([path])


def test_trigger_without_service_ref_is_rejected(tmp_path):
    doc = TRIGGER_DOC % {"name": "uri", "delivery": ""}
    doc = doc.replace(
        "subscriber: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, "
        "name: fn}}",
        "subscriber: {uri: 'http://example.invalid/'}",
    )
    path = write_manifests(tmp_path, doc)

    with pytest.raises(RoutingError, match="no spec.subscriber.ref to a Service"):
        load_routes([path])
