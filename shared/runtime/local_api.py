"""The HTTP interface of the local pod server: routes and request checks.

The local pod server serves a small subset of the Kubernetes pod API on
127.0.0.1, at /pods instead of /api/v1/namespaces/models/pods:

    POST   /pods               InstanceSpec fields as JSON -> 201 Pod, 409, 400
    GET    /pods?model=<id>    -> 200 PodList (items filtered by model label)
    GET    /pods/<name>        -> 200 Pod, 404
    DELETE /pods/<name>        -> 200 Pod (now terminating), 404

Errors are JSON objects with an "error" message.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from shared.loopback import JsonHandler
from shared.runtime.base import NAMESPACE, InstanceSpec

if TYPE_CHECKING:
    from shared.runtime.local_server import LocalPodServer

# Kubernetes object names: a DNS-1123 label.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class InvalidSpec(ValueError):
    """A create request does not describe a valid InstanceSpec."""


def spec_from_dict(body: Any) -> InstanceSpec:
    """Build an InstanceSpec from a JSON object; raise InvalidSpec if invalid."""
    if not isinstance(body, dict):
        raise InvalidSpec("request body must be a JSON object of InstanceSpec fields")

    fields = dataclasses.fields(InstanceSpec)
    unknown = sorted(set(body) - {f.name for f in fields})
    if unknown:
        raise InvalidSpec(f"unknown InstanceSpec fields {unknown}: remove them")
    try:
        spec = InstanceSpec(**body)
    except TypeError as error:
        raise InvalidSpec(f"invalid InstanceSpec: {error}") from error

    # base.py uses postponed annotations, so each field type is a string.
    for f in fields:
        value = getattr(spec, f.name)
        if f.type == "int" and (not isinstance(value, int) or isinstance(value, bool)):
            raise InvalidSpec(f"{f.name}={value!r} is invalid: set a whole number")
        if f.type == "str" and not isinstance(value, str):
            raise InvalidSpec(f"{f.name}={value!r} is invalid: set a string")

    if not _NAME.match(spec.name):
        raise InvalidSpec(
            f"name {spec.name!r} is invalid: use at most 63 lower-case letters, "
            "digits and '-', starting and ending with a letter or digit"
        )
    if spec.timeout_seconds < 1:
        raise InvalidSpec(
            f"timeout_seconds={spec.timeout_seconds} is invalid: set 1 or more"
        )
    if not isinstance(spec.extra_env, dict) or not all(
        isinstance(key, str) and isinstance(value, str)
        for key, value in spec.extra_env.items()
    ):
        raise InvalidSpec("extra_env is invalid: set an object of string values")
    return spec


class PodHandler(JsonHandler):
    """Serve the routes above for the LocalPodServer set on the server."""

    def _pods(self) -> LocalPodServer:
        return self.server.pod_server  # type: ignore[attr-defined]

    def _route(self) -> tuple[str | None, dict[str, list[str]]]:
        # Returns the pod name (None for the collection) and the query.
        # Raises LookupError for a path outside /pods.
        parts = urlsplit(self.path)
        segments = [s for s in parts.path.split("/") if s]
        if not segments or segments[0] != "pods" or len(segments) > 2:
            raise LookupError(parts.path)
        name = segments[1] if len(segments) == 2 else None
        return name, parse_qs(parts.query)

    def do_POST(self) -> None:  # noqa: N802 - name fixed by http.server
        try:
            name, _ = self._route()
        except LookupError:
            self.send_error_json(404, f"no such path {self.path}: POST to /pods")
            return
        if name is not None:
            self.send_error_json(405, "POST a new pod to /pods, not to /pods/<name>")
            return

        try:
            body = json.loads(self.read_body() or b"null")
        except ValueError as error:
            self.send_error_json(400, f"request body is not valid JSON: {error}")
            return
        try:
            spec = spec_from_dict(body)
        except InvalidSpec as error:
            self.send_error_json(400, str(error))
            return

        created, pod = self._pods().create(spec)
        if not created:
            self.send_error_json(
                409, f"pod {spec.name!r} already exists in namespace {NAMESPACE}"
            )
            return
        self.send_json(201, pod)

    def do_GET(self) -> None:  # noqa: N802 - name fixed by http.server
        try:
            name, query = self._route()
        except LookupError:
            self.send_error_json(404, f"no such path {self.path}: use /pods")
            return

        if name is None:
            model_ids = query.get("model")
            items = self._pods().list(model_ids[0] if model_ids else None)
            self.send_json(200, {"apiVersion": "v1", "kind": "PodList", "items": items})
            return

        pod = self._pods().get(name)
        if pod is None:
            self.send_error_json(
                404, f"pod {name!r} not found in namespace {NAMESPACE}"
            )
            return
        self.send_json(200, pod)

    def do_DELETE(self) -> None:  # noqa: N802 - name fixed by http.server
        try:
            name, _ = self._route()
        except LookupError:
            name = None
        if name is None:
            self.send_error_json(404, f"no such path {self.path}: use /pods/<name>")
            return

        pod = self._pods().delete(name)
        if pod is None:
            self.send_error_json(
                404, f"pod {name!r} not found in namespace {NAMESPACE}"
            )
            return
        self.send_json(200, pod)
