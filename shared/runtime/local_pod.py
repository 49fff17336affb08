"""One model instance as two local processes, described as a Kubernetes Pod.

The local runtime runs the model server and the job agent of an instance as
processes on this machine. `instance_watch` must handle them exactly like
pods in a cluster, so this module keeps the state of both processes and
renders it as the Pod object the Kubernetes API would return: phase,
conditions, container states, exit codes and the deadline.

Kubernetes rules followed here (restartPolicy Never, no init containers):
the pod is Running while any container runs, Succeeded when all exited 0,
and Failed when all exited and one failed, or when activeDeadlineSeconds
passed since startTime. A container that exits while the other runs leaves
the pod Running, as a sidecar does.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.logs import get_logger, log_event
from shared.runtime.base import (
    AGENT_CONTAINER,
    MODEL_CONTAINER,
    NAMESPACE,
    InstanceSpec,
)
from shared.runtime.local_container import (
    LOOPBACK,
    Container,
    ContainerCommands,
    base_env,
    timestamp,
)

AGENT_IMAGE = "modelhub/agent:local"

# Environment variables that the Pod object must not show: Pod objects end
# up in events and in the instance log.
SECRET_ENV = frozenset({"JOB_TOKEN"})

logger = get_logger(__name__)


@dataclass
class PodInstance:
    """The processes of one instance and the Pod object that describes them."""

    spec: InstanceSpec
    model_port: int
    grace_seconds: float
    created_at: float
    model: Container
    agent: Container
    image_pull_failed: bool
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    deletion_requested_at: float | None = None
    kill_after: float | None = None
    deadline_exceeded: bool = False
    resource_version: int = 0
    pod: dict[str, Any] = field(default_factory=dict)
    supervised: bool = True
    _condition_since: dict[str, tuple[str, float]] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        spec: InstanceSpec,
        commands: ContainerCommands | None,
        *,
        model_port: int,
        grace_seconds: float,
        log_dir: Path,
        now: float,
    ) -> PodInstance:
        """Build the instance; nothing runs until `start_containers`."""
        env = base_env()
        model_url = f"http://{LOOPBACK}:{model_port}"
        model = Container(
            name=MODEL_CONTAINER,
            image=spec.image,
            argv=commands.model if commands else None,
            env=env,
            log_path=log_dir / f"{spec.name}.{MODEL_CONTAINER}.log",
        )
        agent = Container(
            name=AGENT_CONTAINER,
            image=AGENT_IMAGE,
            argv=commands.agent if commands else None,
            env={**env, **spec.agent_env(model_url)},
            log_path=log_dir / f"{spec.name}.{AGENT_CONTAINER}.log",
        )

        if commands is None:
            model.waiting_reason = "ErrImageNeverPull"
            # The reason kubelet gives for an image it may not pull and does
            # not have: permanent, like a model with no local server.
            model.waiting_message = (
                f'Container image "{spec.image}" is not present: no local model '
                f"server for model {spec.model_id!r}"
            )
        return cls(
            spec=spec,
            model_port=model_port,
            grace_seconds=grace_seconds,
            created_at=now,
            model=model,
            agent=agent,
            image_pull_failed=commands is None,
        )

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def containers(self) -> tuple[Container, Container]:
        return (self.model, self.agent)

    @property
    def model_url(self) -> str:
        return f"http://{LOOPBACK}:{self.model_port}"

    @property
    def deadline(self) -> float:
        return self.created_at + self.spec.timeout_seconds

    def start_containers(self, now: float) -> None:
        """Start both processes unless the image failed or deletion began."""
        if self.image_pull_failed or self.deletion_requested_at is not None:
            return
        for container in self.containers:
            if container.started_at is None:
                container.start(now)

    def poll(self, now: float) -> None:
        """Record process exits, then enforce the deadline and kill grace."""
        for container in self.containers:
            container.poll(now)
        self.agent.ready = self.agent.running

        if self._deadline_passed(now):
            self.deadline_exceeded = True
            self.kill_after = now + self.grace_seconds
            self._signal_all(signal.SIGTERM)
            log_event(
                logger,
                "local_pod.deadline_exceeded",
                level=logging.WARNING,
                pod=self.name,
                timeout_seconds=self.spec.timeout_seconds,
            )

        if self.kill_after is not None and now >= self.kill_after:
            self._signal_all(signal.SIGKILL)

    def _deadline_passed(self, now: float) -> bool:
        if self.deadline_exceeded or now < self.deadline:
            return False
        return self.deletion_requested_at is None and not self.settled

    def request_deletion(self, now: float) -> None:
        """Mark the pod as terminating and send SIGTERM to its processes."""
        if self.deletion_requested_at is not None:
            return
        self.deletion_requested_at = now
        self.kill_after = now + self.grace_seconds
        self._signal_all(signal.SIGTERM)

    def kill_now(self) -> None:
        """SIGKILL every process at once (server shutdown)."""
        self._signal_all(signal.SIGKILL)
        for container in self.containers:
            if container.process is not None and container.running:
                try:
                    container.process.wait(timeout=2.0)
                except subprocess.TimeoutExpired:
                    log_event(
                        logger,
                        "local_pod.kill_timed_out",
                        level=logging.ERROR,
                        pod=self.name,
                        container=container.name,
                        pid=container.process.pid,
                    )

    @property
    def settled(self) -> bool:
        """Whether nothing runs and nothing will start any more."""
        if any(container.running for container in self.containers):
            return False
        if self.deletion_requested_at is not None or self.deadline_exceeded:
            return True
        return all(container.terminated for container in self.containers)

    def _signal_all(self, signum: int) -> None:
        for container in self.containers:
            container.send_signal(signum)

    def phase(self) -> str:
        if self.deadline_exceeded:
            return "Failed"
        if any(container.running for container in self.containers):
            return "Running"
        if not all(container.terminated for container in self.containers):
            return "Pending"
        if all(container.exit_code == 0 for container in self.containers):
            return "Succeeded"
        return "Failed"

    def render(self, now: float) -> dict[str, Any]:
        """Build the Pod object for the current state (without resourceVersion)."""
        phase = self.phase()
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": self._conditions(phase, now),
            "hostIP": LOOPBACK,
            "podIP": LOOPBACK,
            "podIPs": [{"ip": LOOPBACK}],
            "startTime": timestamp(self.created_at),
            "containerStatuses": [c.status() for c in self.containers],
            "qosClass": "Burstable",
        }
        if self.deadline_exceeded:
            status["reason"] = "DeadlineExceeded"
            status["message"] = (
                "Pod was active on the node longer than the specified deadline"
            )
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": self._metadata(),
            "spec": self._pod_spec(),
            "status": status,
        }

    def _metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": self.name,
            "namespace": NAMESPACE,
            "uid": self.uid,
            "labels": self.spec.labels(),
            "annotations": self.spec.annotations(),
            "creationTimestamp": timestamp(self.created_at),
        }
        if self.deletion_requested_at is not None:
            metadata["deletionTimestamp"] = timestamp(
                self.deletion_requested_at + self.grace_seconds
            )
            metadata["deletionGracePeriodSeconds"] = int(self.grace_seconds)
        return metadata

    def _pod_spec(self) -> dict[str, Any]:
        spec = self.spec
        model_container = {
            "name": MODEL_CONTAINER,
            "image": spec.image,
            "ports": [{"containerPort": self.model_port, "protocol": "TCP"}],
            "readinessProbe": {
                "httpGet": {"path": "/healthz", "port": self.model_port}
            },
            "resources": {
                "requests": {
                    "cpu": f"{spec.cpu_request_millicores}m",
                    "memory": f"{spec.memory_request_mib}Mi",
                },
                "limits": {
                    "cpu": f"{spec.cpu_limit_millicores}m",
                    "memory": f"{spec.memory_limit_mib}Mi",
                },
            },
        }
        agent_env = [
            {"name": key, "value": value}
            for key, value in spec.agent_env(self.model_url).items()
            if key not in SECRET_ENV
        ]
        agent_container = {
            "name": AGENT_CONTAINER,
            "image": AGENT_IMAGE,
            "env": agent_env,
        }
        return {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": spec.timeout_seconds,
            "terminationGracePeriodSeconds": int(self.grace_seconds),
            "nodeName": "localhost",
            "containers": [model_container, agent_container],
        }

    def _conditions(self, phase: str, now: float) -> list[dict[str, Any]]:
        unready = [c.name for c in self.containers if not c.ready]
        containers_ready = not unready
        if containers_ready:
            reason, message = None, None
        elif phase in ("Succeeded", "Failed"):
            reason, message = "PodCompleted", None
        else:
            reason = "ContainersNotReady"
            message = f"containers with unready status: [{' '.join(unready)}]"

        expected = [
            ("Initialized", True, None, None),
            ("Ready", containers_ready, reason, message),
            ("ContainersReady", containers_ready, reason, message),
            ("PodScheduled", True, None, None),
        ]
        conditions = []
        for kind, is_true, condition_reason, condition_message in expected:
            value = "True" if is_true else "False"
            since = self._condition_since.get(kind)
            if since is None or since[0] != value:
                since = (value, now if since is not None else self.created_at)
                self._condition_since[kind] = since
            condition = {
                "type": kind,
                "status": value,
                "lastProbeTime": None,
                "lastTransitionTime": timestamp(since[1]),
            }
            if condition_reason:
                condition["reason"] = condition_reason
            if condition_message:
                condition["message"] = condition_message
            conditions.append(condition)
        return conditions
