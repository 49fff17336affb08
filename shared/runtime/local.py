"""The local runtime client, and the names of the local runtime in one place.

`LocalRuntime` is the `Runtime` that functions use when RUNTIME=local: it
reaches a `LocalPodServer` (started by the local stack) over HTTP. The
server side lives in `local_server`, `local_api`, `local_pod` and
`local_container`; this module re-exports its public names.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import quote

import requests

from shared.runtime.base import InstanceSpec, RuntimeUnavailable
from shared.runtime.local_api import InvalidSpec, spec_from_dict
from shared.runtime.local_container import (
    CommandFactory,
    ContainerCommands,
    demo_commands,
)
from shared.runtime.local_server import LocalPodServer, pod_subject

CLIENT_TIMEOUT_SECONDS = 10.0

__all__ = [
    "CommandFactory",
    "ContainerCommands",
    "InvalidSpec",
    "LocalPodServer",
    "LocalRuntime",
    "demo_commands",
    "pod_subject",
    "spec_from_dict",
]


class LocalRuntime:
    """The Runtime that reaches a LocalPodServer over HTTP.

    Connection errors, timeouts and 5xx responses raise RuntimeUnavailable,
    so callers retry them like a Kubernetes API outage.
    """

    def __init__(
        self, base_url: str | None = None, *, timeout: float = CLIENT_TIMEOUT_SECONDS
    ):
        if base_url is None:
            from shared.settings import get_settings

            base_url = get_settings().local_runtime_url
        if not base_url:
            raise ValueError(
                "LOCAL_RUNTIME_URL is not set: start the hub with the local stack, "
                "which sets it, or set it to the URL of a running LocalPodServer"
            )
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def create_instance(self, spec: InstanceSpec) -> None:
        response = self._request("POST", "/pods", json=dataclasses.asdict(spec))
        if response.status_code in (201, 409):
            return
        raise ValueError(
            f"pod server rejected instance {spec.name!r} with "
            f"{response.status_code}: {_error_text(response)}"
        )

    def delete_instance(self, name: str) -> bool:
        response = self._request("DELETE", f"/pods/{quote(name, safe='')}")
        if response.status_code == 404:
            return False
        self._expect_ok(response, f"delete pod {name!r}")
        return True

    def get_instance(self, name: str) -> dict[str, Any] | None:
        response = self._request("GET", f"/pods/{quote(name, safe='')}")
        if response.status_code == 404:
            return None
        self._expect_ok(response, f"get pod {name!r}")
        return _json(response)

    def list_instances(self, model_id: str | None = None) -> list[dict[str, Any]]:
        params = {"model": model_id} if model_id is not None else None
        response = self._request("GET", "/pods", params=params)
        self._expect_ok(response, "list pods")
        return _json(response)["items"]

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = f"{self.base_url}{path}"
        try:
            response = requests.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as error:
            raise RuntimeUnavailable(
                f"local pod server at {self.base_url} is unreachable ({method} "
                f"{path}): {error}; check that the local stack is running"
            ) from error
        if response.status_code >= 500:
            raise RuntimeUnavailable(
                f"local pod server returned {response.status_code} to {method} "
                f"{path}: {_error_text(response)}"
            )
        return response

    @staticmethod
    def _expect_ok(response: requests.Response, action: str) -> None:
        if response.status_code != 200:
            raise ValueError(
                f"{action} failed with {response.status_code}: {_error_text(response)}"
            )


def _error_text(response: requests.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except ValueError:
        return response.text[:500]


def _json(response: requests.Response) -> Any:
    """Decode the pod server's response body, or raise RuntimeUnavailable."""
    try:
        return response.json()
    except ValueError as error:
        raise RuntimeUnavailable(
            f"local pod server sent a body that is not JSON: {error}"
        ) from error
