"""The instance runtime interface, and the names both runtimes share.

A model instance is one pod (or, locally, one pair of processes) that runs
one work request: the model server plus the job agent. Both runtimes name,
label and annotate it the same way and describe it as a Kubernetes Pod
object, so `instance_watch` handles both alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

NAMESPACE = "models"
COMPONENT_LABEL = "app.kubernetes.io/component"
COMPONENT_VALUE = "model-instance"
MODEL_LABEL = "modelhub.io/model"
REQUEST_LABEL = "modelhub.io/request"
REQUEST_ANNOTATION = "modelhub.io/request-id"
ATTEMPT_ANNOTATION = "modelhub.io/attempt"

MODEL_CONTAINER = "model"
AGENT_CONTAINER = "agent"


def instance_name(request_id: str, attempt: int) -> str:
    """Return the instance (pod) name for one attempt at a work request.

    The name is a pure function of its arguments, so a retried create finds
    the instance an earlier try made instead of starting a second one.
    """
    return f"wr-{request_id}-{attempt}"


@dataclass(frozen=True)
class InstanceSpec:
    """Everything a runtime needs to start one model instance."""

    name: str
    model_id: str
    request_id: str
    attempt: int
    image: str
    execution_mode: str
    timeout_seconds: int
    jobs_url: str
    job_token: str
    cpu_request_millicores: int = 100
    cpu_limit_millicores: int = 1000
    memory_request_mib: int = 512
    memory_limit_mib: int = 2048
    extra_env: dict[str, str] = field(default_factory=dict)

    def labels(self) -> dict[str, str]:
        return {
            COMPONENT_LABEL: COMPONENT_VALUE,
            MODEL_LABEL: self.model_id,
            REQUEST_LABEL: self.request_id,
        }

    def annotations(self) -> dict[str, str]:
        return {
            REQUEST_ANNOTATION: self.request_id,
            ATTEMPT_ANNOTATION: str(self.attempt),
        }

    def agent_env(self, model_url: str) -> dict[str, str]:
        """Return the job agent's environment (its whole configuration)."""
        return {
            "MODEL_URL": model_url,
            "JOBS_URL": self.jobs_url,
            "JOB_TOKEN": self.job_token,
            "EXECUTION_MODE": self.execution_mode,
            "MODEL_TIMEOUT_SECONDS": str(self.timeout_seconds),
            **self.extra_env,
        }


class RuntimeUnavailable(RuntimeError):
    """The runtime could not be reached or failed; retrying may succeed."""


class Runtime(Protocol):
    """Start, stop and inspect model instances."""

    def create_instance(self, spec: InstanceSpec) -> None:
        """Start the instance. An instance of that name already existing
        counts as success (a retried create is a no-op)."""

    def delete_instance(self, name: str) -> bool:
        """Stop and remove the instance; return False if it was already gone."""

    def get_instance(self, name: str) -> dict[str, Any] | None:
        """Return the instance as a Pod object, or None when it does not exist."""

    def list_instances(self, model_id: str | None = None) -> list[dict[str, Any]]:
        """Return the live instances (of one model) as Pod objects."""
