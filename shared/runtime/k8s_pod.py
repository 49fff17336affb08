"""The Pod that runs one model instance on Kubernetes.

The pod runs the model server in container `model` on port 80 and the job
agent in container `agent` beside it. It runs once (restartPolicy Never),
and the API server ends it after the model's timeout (activeDeadlineSeconds).

Pods are placed by memory class: a pod whose memory limit is at most
2048 MiB is "small", at most 8192 MiB "medium", otherwise "large". The
pod selects nodes labelled `modelhub.io/memory-class=<class>` and
tolerates the taint of the same key and value with effect NoSchedule, so
each node group must carry both. A preferred pod affinity packs model
pods onto fewer nodes, so idle nodes can be scaled down.
"""

from __future__ import annotations

from kubernetes import client

from shared.runtime.base import (
    AGENT_CONTAINER,
    COMPONENT_LABEL,
    COMPONENT_VALUE,
    MODEL_CONTAINER,
    InstanceSpec,
)

MEMORY_CLASS_KEY = "modelhub.io/memory-class"
# Pairs of (largest memory limit in MiB, class). A larger limit gets
# LARGEST_MEMORY_CLASS.
MEMORY_CLASSES = ((2048, "small"), (8192, "medium"))
LARGEST_MEMORY_CLASS = "large"

MODEL_PORT = 80
HEALTH_PATH = "/healthz"
# Kubernetes probes every 10 s by default. Every 2 s, the pod's Ready time,
# which the hub records as pod_ready_timestamp, lags the model by about 2 s
# at most.
READINESS_PERIOD_SECONDS = 2
PACKING_WEIGHT = 100
HOSTNAME_TOPOLOGY_KEY = "kubernetes.io/hostname"
DELETE_GRACE_SECONDS = 10
# The agent only moves inputs and results over HTTP.
AGENT_RESOURCES = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"cpu": "500m", "memory": "256Mi"},
}


def memory_class(memory_limit_mib: int) -> str:
    """Return the node memory class for a pod with this memory limit."""
    for largest_mib, name in MEMORY_CLASSES:
        if memory_limit_mib <= largest_mib:
            return name
    return LARGEST_MEMORY_CLASS


def _model_container(spec: InstanceSpec) -> client.V1Container:
    return client.V1Container(
        name=MODEL_CONTAINER,
        image=spec.image,
        ports=[client.V1ContainerPort(container_port=MODEL_PORT, protocol="TCP")],
        readiness_probe=client.V1Probe(
            http_get=client.V1HTTPGetAction(path=HEALTH_PATH, port=MODEL_PORT),
            period_seconds=READINESS_PERIOD_SECONDS,
        ),
        resources=client.V1ResourceRequirements(
            requests={
                "cpu": f"{spec.cpu_request_millicores}m",
                "memory": f"{spec.memory_request_mib}Mi",
            },
            limits={
                "cpu": f"{spec.cpu_limit_millicores}m",
                "memory": f"{spec.memory_limit_mib}Mi",
            },
        ),
    )


def _agent_container(spec: InstanceSpec, agent_image: str) -> client.V1Container:
    # NOTE: JOB_TOKEN is a plain env value, so anyone who can read pods in
    # the namespace can read it, and every Pod object that ApiServerSource
    # sends contains it. The token is valid for one attempt at one request.
    env = spec.agent_env(f"http://127.0.0.1:{MODEL_PORT}")
    return client.V1Container(
        name=AGENT_CONTAINER,
        image=agent_image,
        env=[client.V1EnvVar(name=key, value=value) for key, value in env.items()],
        resources=client.V1ResourceRequirements(
            requests=AGENT_RESOURCES["requests"], limits=AGENT_RESOURCES["limits"]
        ),
    )


def _packing_affinity() -> client.V1Affinity:
    term = client.V1PodAffinityTerm(
        label_selector=client.V1LabelSelector(
            match_labels={COMPONENT_LABEL: COMPONENT_VALUE}
        ),
        topology_key=HOSTNAME_TOPOLOGY_KEY,
    )
    return client.V1Affinity(
        pod_affinity=client.V1PodAffinity(
            preferred_during_scheduling_ignored_during_execution=[
                client.V1WeightedPodAffinityTerm(
                    weight=PACKING_WEIGHT, pod_affinity_term=term
                )
            ]
        )
    )


def build_pod(spec: InstanceSpec, namespace: str, agent_image: str) -> client.V1Pod:
    """Return the pod that runs one instance."""
    node_class = memory_class(spec.memory_limit_mib)
    return client.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=client.V1ObjectMeta(
            name=spec.name,
            namespace=namespace,
            labels=spec.labels(),
            annotations=spec.annotations(),
        ),
        spec=client.V1PodSpec(
            containers=[_model_container(spec), _agent_container(spec, agent_image)],
            restart_policy="Never",
            active_deadline_seconds=spec.timeout_seconds,
            termination_grace_period_seconds=DELETE_GRACE_SECONDS,
            automount_service_account_token=False,
            enable_service_links=False,
            affinity=_packing_affinity(),
            node_selector={MEMORY_CLASS_KEY: node_class},
            tolerations=[
                client.V1Toleration(
                    key=MEMORY_CLASS_KEY,
                    operator="Equal",
                    value=node_class,
                    effect="NoSchedule",
                )
            ],
        ),
    )
