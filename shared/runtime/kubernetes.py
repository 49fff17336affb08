"""Run model instances as Kubernetes pods through the official client.

Each work request gets one pod named after the request and attempt, built
by `shared.runtime.k8s_pod`. This module finds the client configuration
and creates, reads, lists and deletes those pods in one namespace.

Pods come back as the plain JSON the API server sends (camelCase keys), the
same form ApiServerSource delivers and `shared.podstatus` reads.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException
from urllib3.util.retry import Retry

from shared.logs import get_logger, log_event
from shared.runtime.base import (
    COMPONENT_LABEL,
    COMPONENT_VALUE,
    MODEL_LABEL,
    InstanceSpec,
)
from shared.runtime.k8s_errors import (
    KubeConflict,
    KubeNotFound,
    KubeServerError,
    KubeTooManyRequests,
    mapped_errors,
)
from shared.runtime.k8s_pod import DELETE_GRACE_SECONDS, build_pod
from shared.settings import get_settings

# (connect, read) timeout of each API call, in seconds.
REQUEST_TIMEOUT = (5.0, 30.0)
MAX_THROTTLED_ATTEMPTS = 3
MAX_RETRY_AFTER_SECONDS = 10.0
DEFAULT_KUBECONFIG = "~/.kube/config"

logger = get_logger(__name__)


class KubeConfigError(RuntimeError):
    """No usable Kubernetes client configuration was found."""


def load_configuration() -> client.Configuration:
    """Return the client configuration: in-cluster first, then a kubeconfig.

    The kubeconfig is the KUBECONFIG file (a list of paths is allowed), or
    ~/.kube/config when KUBECONFIG is unset. Raises KubeConfigError when
    neither is usable.
    """
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
        return configuration
    except ConfigException as error:
        in_cluster_error = error

    path = os.environ.get("KUBECONFIG") or os.path.expanduser(DEFAULT_KUBECONFIG)
    if not any(os.path.isfile(part) for part in path.split(os.pathsep) if part):
        raise KubeConfigError(
            f"no Kubernetes configuration found: not running in a cluster "
            f"({in_cluster_error}) and no kubeconfig file at {path!r}. Run the "
            "hub in a pod with a service account, or set KUBECONFIG to a "
            "kubeconfig file"
        )
    try:
        config.load_kube_config(
            config_file=path, client_configuration=configuration, persist_config=False
        )
    except (ConfigException, OSError, yaml.YAMLError) as error:
        raise KubeConfigError(
            f"kubeconfig {path!r} is invalid: {error}; fix the file or set "
            "KUBECONFIG to a valid kubeconfig"
        ) from error
    return configuration


def new_api_client(configuration: client.Configuration) -> client.ApiClient:
    """Return an ApiClient whose HTTP layer retries only a failed connect.

    Left at its default, urllib3 retries a 429 or 503 to GET and DELETE
    itself and sleeps for the whole Retry-After time, without a cap. The
    runtime retries throttled calls itself with a capped wait instead.
    """
    configuration.retries = Retry(
        total=1,
        connect=1,
        read=0,
        status=0,
        other=0,
        redirect=0,
        respect_retry_after_header=False,
    )
    return client.ApiClient(configuration)


def _json_object(data: bytes, action: str) -> dict[str, Any]:
    """Return the JSON object in a response body."""
    try:
        body = json.loads(data)
    except (TypeError, ValueError) as error:
        raise KubeServerError(
            f"{action} returned a body that is not JSON: {error}; check that the "
            "configured address is a Kubernetes API server"
        ) from error
    if not isinstance(body, dict):
        raise KubeServerError(f"{action} returned JSON that is not an object")
    return body


class KubernetesRuntime:
    """The Runtime that runs each instance as a pod in one namespace.

    A call throttled with 429 is tried up to MAX_THROTTLED_ATTEMPTS times.
    Before each retry it waits the Retry-After time, capped at
    MAX_RETRY_AFTER_SECONDS. Other failures raise the errors of
    `shared.runtime.k8s_errors`.
    """

    def __init__(
        self,
        api_client: client.ApiClient | None = None,
        *,
        namespace: str | None = None,
        agent_image: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if namespace is None or agent_image is None:
            settings = get_settings()
            namespace = namespace or settings.k8s_namespace
            agent_image = agent_image or settings.agent_image
        if api_client is None:
            api_client = new_api_client(load_configuration())

        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.agent_image = agent_image
        self._sleep = sleep

    def create_instance(self, spec: InstanceSpec) -> None:
        pod = build_pod(spec, self.namespace, self.agent_image)
        action = f"create pod {spec.name!r} in namespace {self.namespace!r}"
        try:
            self._call(
                action,
                lambda: self.core.create_namespaced_pod(
                    self.namespace,
                    pod,
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                ),
            )
        except KubeConflict:
            # The name comes from the request and attempt, so this is a
            # retried create of the same instance.
            log_event(
                logger,
                "kube.pod_exists",
                instance=spec.name,
                request_id=spec.request_id,
            )
            return

    def delete_instance(self, name: str) -> bool:
        action = f"delete pod {name!r} in namespace {self.namespace!r}"
        try:
            self._call(
                action,
                lambda: self.core.delete_namespaced_pod(
                    name,
                    self.namespace,
                    grace_period_seconds=DELETE_GRACE_SECONDS,
                    propagation_policy="Background",
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                ),
            )
        except KubeNotFound:
            return False
        return True

    def get_instance(self, name: str) -> dict[str, Any] | None:
        action = f"get pod {name!r} in namespace {self.namespace!r}"
        try:
            data = self._call(
                action,
                lambda: self.core.read_namespaced_pod(
                    name,
                    self.namespace,
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                ),
            )
        except KubeNotFound:
            return None
        return _json_object(data, action)

    def list_instances(self, model_id: str | None = None) -> list[dict[str, Any]]:
        selector = f"{COMPONENT_LABEL}={COMPONENT_VALUE}"
        if model_id is not None:
            selector += f",{MODEL_LABEL}={model_id}"
        action = f"list pods with {selector!r} in namespace {self.namespace!r}"
        data = self._call(
            action,
            lambda: self.core.list_namespaced_pod(
                self.namespace,
                label_selector=selector,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            ),
        )
        items = _json_object(data, action).get("items") or []
        return [item for item in items if isinstance(item, dict)]

    def list_pod_events(self, name: str) -> list[dict[str, Any]]:
        """Return the core/v1 Events about one pod as JSON objects."""
        selector = f"involvedObject.name={name},involvedObject.kind=Pod"
        action = f"list events of pod {name!r} in namespace {self.namespace!r}"
        events = self._call(
            action,
            lambda: self.core.list_namespaced_event(
                self.namespace,
                field_selector=selector,
                _request_timeout=REQUEST_TIMEOUT,
            ),
        )
        return [self.api_client.sanitize_for_serialization(e) for e in events.items]

    def _call(self, action: str, request: Callable[[], Any]) -> Any:
        """Run one API request, retrying it while the API server throttles.

        Returns the body as bytes when `request` returns a raw response
        (`_preload_content=False`), read here so that a connection lost while
        reading raises KubeServerError too. Otherwise returns the model object.
        """
        host = self.api_client.configuration.host
        throttled: KubeTooManyRequests | None = None
        for attempt in range(1, MAX_THROTTLED_ATTEMPTS + 1):
            if throttled is not None:
                wait = min(throttled.retry_after, MAX_RETRY_AFTER_SECONDS)
                log_event(
                    logger,
                    "kube.throttled",
                    level=logging.WARNING,
                    action=action,
                    attempt=attempt - 1,
                    retry_after=wait,
                )
                self._sleep(wait)
            try:
                with mapped_errors(action, host):
                    response = request()
                    if isinstance(response, urllib3.HTTPResponse):
                        return response.data
                    return response
            except KubeTooManyRequests as error:
                throttled = error

        assert throttled is not None
        raise KubeTooManyRequests(
            f"{throttled} (gave up after {MAX_THROTTLED_ATTEMPTS} attempts)",
            retry_after=throttled.retry_after,
            reason=throttled.reason,
        ) from throttled


@lru_cache(maxsize=1)
def default_runtime() -> KubernetesRuntime:
    """Return the process's runtime, built once so API connections are reused.

    In a cluster, the client (kubernetes 37) rereads the service account
    token file once a minute, so a rotated token is picked up.
    """
    return KubernetesRuntime()
