"""The local pod server: model instances as Pods, with ApiServerSource events.

`LocalPodServer` plays the part of the Kubernetes API server for model
instances on a developer machine. It starts each instance as two processes
(see `local_pod`) and serves them as Pod objects over HTTP (see `local_api`).
It sends every change to the event sink the way Knative's ApiServerSource
does in Resource mode, so `instance_watch` receives the same events as in a
cluster: add on create, update on each change, and delete once the
processes are gone after a DELETE.
"""

from __future__ import annotations

import copy
import logging
import queue
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests
from cloudevents.http import CloudEvent

from shared.events import (
    APISERVER_ADD,
    APISERVER_DELETE,
    APISERVER_UPDATE,
    EventDeliveryError,
    build_event,
    send_event,
)
from shared.logs import get_logger, log_event
from shared.loopback import LoopbackServer, free_port
from shared.runtime.base import MODEL_LABEL, NAMESPACE, InstanceSpec
from shared.runtime.local_api import PodHandler
from shared.runtime.local_container import (
    CommandFactory,
    ContainerCommands,
    demo_commands,
)
from shared.runtime.local_pod import PodInstance

DEFAULT_GRACE_SECONDS = 5.0
POLL_INTERVAL_SECONDS = 0.2
PROBE_TIMEOUT_SECONDS = 0.5
SINK_ATTEMPTS = 3

logger = get_logger(__name__)


def pod_subject(name: str) -> str:
    """Return the CloudEvent subject ApiServerSource sets for a pod.

    knative/eventing builds it as /apis/<apiVersion>/namespaces/<ns>/<resource>
    /<name>, which gives /apis/v1/... for core objects such as Pods.
    """
    return f"/apis/v1/namespaces/{NAMESPACE}/pods/{name}"


class _SinkSender:
    """Send CloudEvents to the sink from one thread, in the order queued."""

    def __init__(self, sink_url: str | None):
        self.sink_url = sink_url
        self._queue: queue.Queue[CloudEvent | None] = queue.Queue()
        self._thread = threading.Thread(
            target=self._run, name="pod-events", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def put(self, event: CloudEvent) -> None:
        self._queue.put(event)

    def stop(self, timeout: float) -> None:
        """Send what is queued for up to `timeout` seconds, then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            self._send(event)

    def _send(self, event: CloudEvent) -> None:
        if self.sink_url is None:
            return
        for attempt in range(1, SINK_ATTEMPTS + 1):
            try:
                send_event(self.sink_url, event)
                return
            except EventDeliveryError as error:
                level = logging.ERROR if attempt == SINK_ATTEMPTS else logging.WARNING
                log_event(
                    logger,
                    "pod_server.sink_failed",
                    level=level,
                    type=event["type"],
                    pod=event["name"],
                    attempt=attempt,
                    error=str(error),
                )
                time.sleep(0.2 * attempt)


class LocalPodServer:
    """Serve model instances as Pods over HTTP on 127.0.0.1.

    Every change of a Pod goes to `sink_url` as an ApiServerSource event
    (add, update, delete). `command_factory` chooses the commands of an
    instance; tests pass their own. Process output goes to files in
    `log_dir` (default: a new temporary folder).
    """

    def __init__(
        self,
        sink_url: str | None,
        *,
        command_factory: CommandFactory = demo_commands,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        log_dir: Path | None = None,
        port: int = 0,
    ):
        self.command_factory = command_factory
        self.grace_seconds = grace_seconds
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="modelhub-pods-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)

        self._lock = threading.RLock()
        self._instances: dict[str, PodInstance] = {}
        self._wakeups: dict[str, threading.Event] = {}
        self._reserved_ports: set[int] = set()
        self._supervisors: list[threading.Thread] = []
        self._resource_version = 0
        self._stopping = threading.Event()

        self._sink = _SinkSender(sink_url)
        self._server = LoopbackServer(PodHandler, port)
        self._server.httpd.pod_server = self  # type: ignore[attr-defined]

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> LocalPodServer:
        self._sink.start()
        self._server.start("pod-server")
        log_event(logger, "pod_server.started", url=self.url, log_dir=str(self.log_dir))
        return self

    def __enter__(self) -> LocalPodServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def create(self, spec: InstanceSpec) -> tuple[bool, dict[str, Any]]:
        """Create the pod; return (False, existing pod) if the name is taken."""
        existing = self.get(spec.name)
        if existing is not None:
            return False, existing

        # The factory may be slow (the demo one imports RDKit), so it runs
        # outside the lock and `_register` checks the name again.
        model_port = self._reserve_port()
        try:
            commands = self.command_factory(spec, model_port)
            created, pod = self._register(spec, commands, model_port)
        finally:
            with self._lock:
                self._reserved_ports.discard(model_port)

        if created:
            log_event(
                logger,
                "pod_server.created",
                pod=spec.name,
                model_id=spec.model_id,
                request_id=spec.request_id,
                image_pull_failed=commands is None,
            )
        return created, pod

    def _reserve_port(self) -> int:
        # Live pods and creates in progress keep their ports out of reach,
        # because their model servers may not have bound them yet.
        with self._lock:
            live_ports = {i.model_port for i in self._instances.values()}
            port = free_port(exclude=live_ports | self._reserved_ports)
            self._reserved_ports.add(port)
            return port

    def _register(
        self, spec: InstanceSpec, commands: ContainerCommands | None, model_port: int
    ) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            existing = self.get(spec.name)
            if existing is not None:
                return False, existing

            instance = PodInstance.create(
                spec,
                commands,
                model_port=model_port,
                grace_seconds=self.grace_seconds,
                log_dir=self.log_dir,
                now=time.time(),
            )
            self._instances[spec.name] = instance
            self._wakeups[spec.name] = threading.Event()
            self._publish(instance, APISERVER_ADD)

            supervisor = threading.Thread(
                target=self._supervise,
                args=(instance,),
                name=f"pod-{spec.name}",
                daemon=True,
            )
            self._supervisors.append(supervisor)
            supervisor.start()
            return True, instance.pod

    def get(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            instance = self._instances.get(name)
            return instance.pod if instance else None

    def list(self, model_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                instance.pod
                for instance in self._instances.values()
                if model_id is None
                or instance.pod["metadata"]["labels"].get(MODEL_LABEL) == model_id
            ]

    def delete(self, name: str) -> dict[str, Any] | None:
        """Start terminating the pod; return it, or None if it does not exist."""
        with self._lock:
            instance = self._instances.get(name)
            if instance is None:
                return None
            now = time.time()
            instance.request_deletion(now)
            self._publish_if_changed(instance, now)
            wakeup = self._wakeups.get(name)
            if not instance.supervised:
                # No supervisor will finish the deletion: nothing runs.
                self._remove(instance)
            pod = instance.pod

        if wakeup is not None:
            wakeup.set()
        log_event(logger, "pod_server.deleting", pod=name)
        return pod

    def stop(self, timeout: float = 5.0) -> None:
        """Kill every process this server started and stop serving."""
        self._stopping.set()
        self._server.stop()
        with self._lock:
            instances = list(self._instances.values())
            for wakeup in self._wakeups.values():
                wakeup.set()
        for instance in instances:
            instance.kill_now()
        for supervisor in self._supervisors:
            supervisor.join(timeout=1.0)
        self._sink.stop(timeout)
        log_event(logger, "pod_server.stopped", url=self.url, pods=len(instances))

    def _supervise(self, instance: PodInstance) -> None:
        # One loop per pod, like a kubelet syncing it. It ends when nothing
        # runs any more. The tick bound is a safety net: the deadline and
        # the kill grace end every pod well before it.
        with self._lock:
            wakeup = self._wakeups[instance.name]
            instance.start_containers(time.time())
        max_ticks = int(
            (instance.spec.timeout_seconds + 4 * self.grace_seconds + 60)
            / POLL_INTERVAL_SECONDS
        )

        for _ in range(max_ticks):
            if self._stopping.is_set():
                return
            if self._tick(instance):
                return
            wakeup.wait(POLL_INTERVAL_SECONDS)
            wakeup.clear()

        log_event(
            logger,
            "pod_server.supervisor_gave_up",
            level=logging.ERROR,
            pod=instance.name,
            ticks=max_ticks,
        )
        instance.kill_now()

    def _tick(self, instance: PodInstance) -> bool:
        # Returns True when the pod is settled and its supervisor can end.
        with self._lock:
            instance.poll(time.time())
            probe = instance.model.running and not instance.deadline_exceeded

        healthy = probe and _healthz_ok(instance.model_url)

        with self._lock:
            now = time.time()
            instance.poll(now)
            instance.model.ready = healthy and instance.model.running
            self._publish_if_changed(instance, now)
            if not instance.settled:
                return False
            instance.supervised = False
            if instance.deletion_requested_at is not None:
                self._remove(instance)
            return True

    def _publish_if_changed(self, instance: PodInstance, now: float) -> None:
        rendered = instance.render(now)
        previous = {
            **instance.pod,
            "metadata": {
                key: value
                for key, value in instance.pod.get("metadata", {}).items()
                if key != "resourceVersion"
            },
        }
        if rendered != previous:
            self._publish(instance, APISERVER_UPDATE, rendered)

    def _publish(
        self,
        instance: PodInstance,
        event_type: str,
        rendered: dict[str, Any] | None = None,
    ) -> None:
        # Caller holds the lock, so events reach the queue in
        # resourceVersion order. A delete carries the last state of the pod
        # with a new resourceVersion, as a Kubernetes watch does.
        if event_type == APISERVER_DELETE:
            pod = copy.deepcopy(instance.pod)
        elif rendered is not None:
            pod = rendered
        else:
            pod = instance.render(time.time())
        self._resource_version += 1
        pod["metadata"]["resourceVersion"] = str(self._resource_version)
        instance.pod = pod

        event = build_event(
            event_type,
            instance.pod,
            subject=pod_subject(instance.name),
            source=self.url,
        )
        # The extensions ApiServerSource copies from the object so that
        # Triggers can filter on them.
        event["kind"] = "Pod"
        event["name"] = instance.name
        event["namespace"] = NAMESPACE
        self._sink.put(event)

    def _remove(self, instance: PodInstance) -> None:
        self._instances.pop(instance.name, None)
        self._wakeups.pop(instance.name, None)
        self._publish(instance, APISERVER_DELETE)
        log_event(logger, "pod_server.deleted", pod=instance.name)


def _healthz_ok(model_url: str) -> bool:
    try:
        response = requests.get(f"{model_url}/healthz", timeout=PROBE_TIMEOUT_SECONDS)
    except requests.RequestException:
        return False
    return response.status_code == 200
