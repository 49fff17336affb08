"""The processes of a local model instance, as Kubernetes containers.

Each local instance runs two processes, the model server and the job agent,
in place of the two containers of a pod. This module starts and signals
them and reports each one's state as a Kubernetes containerStatus entry:
waiting, running, or terminated with its exit code and reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.logs import get_logger, log_event
from shared.runtime.base import InstanceSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
# kubelet's exit code and reason for a container whose command cannot start.
START_ERROR_EXIT_CODE = 128

logger = get_logger(__name__)


@dataclass(frozen=True)
class ContainerCommands:
    """The argument lists that start the model server and the job agent."""

    model: Sequence[str]
    agent: Sequence[str]


# Given the spec and the model server's port, return the commands, or None
# when this machine has no model server for the spec's model.
CommandFactory = Callable[[InstanceSpec, int], ContainerCommands | None]


def demo_commands(spec: InstanceSpec, model_port: int) -> ContainerCommands | None:
    """Return the demo model server and the job agent commands for `spec`.

    Returns None for a model id that is not a demo model, which the pod
    reports as an image pull failure.
    """
    if not _is_demo_model(spec.model_id):
        return None

    model = [
        sys.executable,
        "-m",
        "shared.demo.model_server",
        "--model",
        spec.model_id,
        "--port",
        str(model_port),
        "--host",
        LOOPBACK,
    ]
    return ContainerCommands(model=model, agent=[sys.executable, "-m", "shared.agent"])


def _is_demo_model(model_id: str) -> bool:
    # Imported here because the demo models need RDKit, which only the
    # process that starts demo instances should load.
    try:
        from shared.demo.models import DEMO_MODELS
    except ImportError as error:
        log_event(
            logger,
            "local_pod.demo_models_unavailable",
            level=logging.WARNING,
            error=str(error),
        )
        return False
    return model_id in DEMO_MODELS


def timestamp(seconds: float) -> str:
    """Format a Unix time as Kubernetes does: RFC 3339, UTC, whole seconds."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _exit_code(returncode: int) -> int:
    # Popen reports death by signal N as -N, and container runtimes as 128 + N.
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class Container:
    """One container of the pod: its process and its Kubernetes state."""

    name: str
    image: str
    argv: Sequence[str] | None
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    terminated_reason: str | None = None
    terminated_message: str | None = None
    waiting_reason: str = "ContainerCreating"
    waiting_message: str | None = None
    ready: bool = False

    @property
    def running(self) -> bool:
        return self.started_at is not None and self.finished_at is None

    @property
    def terminated(self) -> bool:
        return self.finished_at is not None

    def start(self, now: float) -> None:
        """Start the process, or record a StartError as kubelet does."""
        if self.argv is None:
            return
        try:
            with self.log_path.open("ab") as log_file:
                self.process = subprocess.Popen(
                    list(self.argv),
                    cwd=REPO_ROOT,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as error:
            self.started_at = self.finished_at = now
            self.exit_code = START_ERROR_EXIT_CODE
            self.terminated_reason = "StartError"
            self.terminated_message = f"cannot start {self.argv[0]!r}: {error}"
            return
        self.started_at = now

    def poll(self, now: float) -> None:
        """Record the exit of the process if it has exited."""
        if not self.running or self.process is None:
            return
        returncode = self.process.poll()
        if returncode is None:
            return
        self.finished_at = now
        self.exit_code = _exit_code(returncode)
        self.terminated_reason = "Completed" if self.exit_code == 0 else "Error"
        self.ready = False

    def send_signal(self, signum: int) -> None:
        """Signal the process group of a running container."""
        if not self.running or self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def status(self) -> dict[str, Any]:
        """Render the container's entry of status.containerStatuses."""
        entry: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.ready,
            "started": self.running,
            "restartCount": 0,
            "lastState": {},
        }
        if self.process is not None:
            entry["containerID"] = f"local://{self.process.pid}"

        if self.terminated:
            terminated = {
                "exitCode": self.exit_code,
                "reason": self.terminated_reason,
                "startedAt": timestamp(self.started_at or 0),
                "finishedAt": timestamp(self.finished_at or 0),
            }
            if self.terminated_message:
                terminated["message"] = self.terminated_message
            entry["state"] = {"terminated": terminated}
        elif self.running:
            entry["state"] = {"running": {"startedAt": timestamp(self.started_at or 0)}}
        else:
            waiting = {"reason": self.waiting_reason}
            if self.waiting_message:
                waiting["message"] = self.waiting_message
            entry["state"] = {"waiting": waiting}
        return entry


def base_env() -> dict[str, str]:
    """Return os.environ with this repository first on PYTHONPATH.

    The default commands run modules of this repository (python -m ...).
    """
    env = dict(os.environ)
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = (
        f"{REPO_ROOT}{os.pathsep}{existing}" if existing else str(REPO_ROOT)
    )
    return env
