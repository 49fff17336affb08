"""Failure reasons of instance pods, one fixture per way a pod can fail."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from shared import podstatus

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
LIMITS = podstatus.Limits(
    image_pull_grace_seconds=120, unschedulable_timeout_seconds=900
)


def stamp(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


def base_pod(age: float = 30) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "wr-x-1", "creationTimestamp": stamp(age)},
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True", "lastTransitionTime": stamp(10)},
            ],
            "containerStatuses": [
                {
                    "name": "model",
                    "ready": True,
                    "state": {"running": {"startedAt": stamp(20)}},
                },
                {
                    "name": "agent",
                    "ready": True,
                    "state": {"running": {"startedAt": stamp(20)}},
                },
            ],
        },
    }


def with_model_state(
    state: dict, phase: str = "Running", key: str = "state", age: float = 30
):
    pod = base_pod(age)
    pod["status"]["phase"] = phase
    pod["status"]["containerStatuses"][0][key] = state
    return pod


def pending_unschedulable(seconds_ago: float) -> dict:
    return {
        "kind": "Pod",
        "metadata": {"name": "wr-x-1", "creationTimestamp": stamp(seconds_ago)},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient memory.",
                    "lastTransitionTime": stamp(seconds_ago),
                }
            ],
        },
    }


FAILURES = [
    (
        "oom in state",
        with_model_state(
            {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}, "Failed"
        ),
        "OOMKilled",
    ),
    (
        "oom in last state while running",
        with_model_state(
            {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}, key="lastState"
        ),
        "OOMKilled",
    ),
    (
        "oom although phase succeeded",
        with_model_state(
            {"terminated": {"exitCode": 0, "reason": "OOMKilled"}}, "Succeeded"
        ),
        "OOMKilled",
    ),
    (
        "evicted",
        {
            "kind": "Pod",
            "status": {
                "phase": "Failed",
                "reason": "Evicted",
                "message": "The node was low on resource: memory.",
            },
        },
        "evicted: The node was low on resource: memory.",
    ),
    (
        "image pull past grace",
        with_model_state(
            {
                "waiting": {
                    "reason": "ImagePullBackOff",
                    "message": "Back-off pulling image",
                }
            },
            "Pending",
            age=300,
        ),
        "could not be pulled for 300 s",
    ),
    (
        "invalid image name at once",
        with_model_state({"waiting": {"reason": "InvalidImageName"}}, "Pending", age=1),
        "InvalidImageName",
    ),
    (
        "unschedulable past timeout",
        pending_unschedulable(1000),
        "could not be scheduled for 1000 s: 0/3 nodes",
    ),
    (
        "deadline exceeded",
        {
            "kind": "Pod",
            "status": {
                "phase": "Failed",
                "reason": "DeadlineExceeded",
                "message": "Pod was active on the node longer than the specified deadline",
            },
        },
        "time limit",
    ),
    (
        "node lost",
        {"kind": "Pod", "status": {"phase": "Unknown", "reason": "NodeLost"}},
        "node running the pod was lost (NodeLost)",
    ),
    (
        "phase unknown without details",
        {"kind": "Pod", "status": {"phase": "Unknown"}},
        "phase Unknown",
    ),
    (
        "exit code 1",
        with_model_state({"terminated": {"exitCode": 1, "reason": "Error"}}, "Failed"),
        "exited with code 1 (Error)",
    ),
    (
        "killed by sigterm",
        with_model_state(
            {"terminated": {"exitCode": 143, "reason": "Error"}}, "Failed"
        ),
        "killed by SIGTERM",
    ),
    (
        "config error",
        with_model_state(
            {
                "waiting": {
                    "reason": "CreateContainerConfigError",
                    "message": 'secret "x" not found',
                }
            },
            "Pending",
        ),
        "CreateContainerConfigError",
    ),
    (
        "failed phase only",
        {"kind": "Pod", "status": {"phase": "Failed"}},
        "the pod failed",
    ),
]


@pytest.mark.parametrize(
    ("pod", "fragment"),
    [case[1:] for case in FAILURES],
    ids=[case[0] for case in FAILURES],
)
def test_failure_reason(pod, fragment):
    reason = podstatus.failure_reason(copy.deepcopy(pod), now=NOW, limits=LIMITS)

    assert reason is not None
    assert fragment in reason


HEALTHY = [
    ("running and ready", base_pod()),
    (
        "pending without container statuses",
        {
            "kind": "Pod",
            "metadata": {"creationTimestamp": stamp(5)},
            "status": {"phase": "Pending"},
        },
    ),
    ("pending with no status at all", {"kind": "Pod", "metadata": {}}),
    (
        "image pull within grace",
        with_model_state({"waiting": {"reason": "ErrImagePull"}}, "Pending", age=60),
    ),
    (
        "container creating",
        with_model_state(
            {"waiting": {"reason": "ContainerCreating"}}, "Pending", age=600
        ),
    ),
    ("unschedulable within timeout", pending_unschedulable(300)),
    (
        "agent finished cleanly",
        {
            **base_pod(),
            "status": {
                **base_pod()["status"],
                "containerStatuses": [
                    {"name": "model", "state": {"running": {}}},
                    {
                        "name": "agent",
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                    },
                ],
            },
        },
    ),
    (
        "succeeded",
        with_model_state(
            {"terminated": {"exitCode": 0, "reason": "Completed"}}, "Succeeded"
        ),
    ),
]


@pytest.mark.parametrize(
    "pod", [case[1] for case in HEALTHY], ids=[case[0] for case in HEALTHY]
)
def test_not_a_failure(pod):
    assert podstatus.failure_reason(copy.deepcopy(pod), now=NOW, limits=LIMITS) is None


def test_grace_uses_pod_creation_time():
    pod = with_model_state({"waiting": {"reason": "ErrImagePull"}}, "Pending", age=119)

    assert podstatus.failure_reason(pod, now=NOW, limits=LIMITS) is None
    assert podstatus.failure_reason(pod, now=NOW + timedelta(seconds=2), limits=LIMITS)
