"""The Kubernetes runtime through the official client against a fake API server.

`tests.fake_kube` serves pods, events and watches on 127.0.0.1 with a real
API server's status codes, Status bodies and selector rules. The runtime
talks to it through kubernetes.client exactly as it talks to a cluster.
The scheduler tests also use the real PostgreSQL of conftest.

The runtime builds no watch of its own, because ApiServerSource delivers
pod changes. The watch tests check the fake's 410 Gone behaviour with the
client's `watch.Watch`, for code that watches pods directly.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config import incluster_config

from shared import scheduling, workrequests
from shared.auth import Owner
from shared.loopback import free_port
from shared.runtime.base import (
    COMPONENT_LABEL,
    COMPONENT_VALUE,
    MODEL_LABEL,
    InstanceSpec,
    RuntimeUnavailable,
)
from shared.runtime.k8s_errors import (
    KubeNotFound,
    KubeRejected,
    KubeServerError,
    KubeTooManyRequests,
    KubeUnauthorized,
    from_api_exception,
    retry_after_seconds,
)
from shared.runtime.k8s_pod import MEMORY_CLASS_KEY, memory_class
from shared.runtime.kubernetes import (
    MAX_RETRY_AFTER_SECONDS,
    MAX_THROTTLED_ATTEMPTS,
    KubeConfigError,
    KubernetesRuntime,
    load_configuration,
    new_api_client,
)
from shared.settings import SettingsError, get_settings
from shared.tokens import verify_job_token
from shared.workrequests import Status
from tests.fake_kube import FakeKube

NAMESPACE = "models"
AGENT_IMAGE = "registry.test/modelhub-agent:7"
KUBECONFIG_TOKEN = "kubeconfig-token"


def make_spec(
    model_id: str = "eos4e40", memory_limit_mib: int = 2048, **overrides: Any
) -> InstanceSpec:
    request_id = str(uuid.uuid4())
    values: dict[str, Any] = {
        "name": f"wr-{request_id}-1",
        "model_id": model_id,
        "request_id": request_id,
        "attempt": 1,
        "image": f"ersiliaos/{model_id}:v2.1",
        "execution_mode": "sync",
        "timeout_seconds": 900,
        "jobs_url": "http://jobs.modelhub.svc",
        "job_token": "job-token-abc",
        "cpu_request_millicores": 250,
        "cpu_limit_millicores": 2000,
        "memory_request_mib": 1024,
        "memory_limit_mib": memory_limit_mib,
        "extra_env": {"EXTRA": "1"},
    }
    values.update(overrides)
    return InstanceSpec(**values)


class SleepRecorder:
    """Stands in for time.sleep and records each wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def fake():
    server = FakeKube().start()
    yield server
    server.stop()


@pytest.fixture
def sleeps():
    return SleepRecorder()


def runtime_for(url: str, sleep=None, namespace: str = NAMESPACE) -> KubernetesRuntime:
    api_client = new_api_client(client.Configuration(host=url))
    return KubernetesRuntime(
        api_client,
        namespace=namespace,
        agent_image=AGENT_IMAGE,
        sleep=sleep or SleepRecorder(),
    )


@pytest.fixture
def runtime(fake, sleeps):
    return runtime_for(fake.url, sleeps)


def post_pod(fake: FakeKube, name: str, labels: dict[str, str]) -> None:
    """Create a pod that the hub did not make, through the client."""
    api = client.CoreV1Api(new_api_client(client.Configuration(host=fake.url)))
    api.create_namespaced_pod(
        NAMESPACE,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name=name, labels=labels),
            spec=client.V1PodSpec(
                containers=[client.V1Container(name="main", image="busybox:1")]
            ),
        ),
    )


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if c["name"] == name)


# Pod spec


def test_pod_spec_has_model_and_agent(fake, runtime):
    spec = make_spec()

    runtime.create_instance(spec)

    pod = runtime.get_instance(spec.name)
    assert pod is not None
    assert pod["metadata"]["name"] == spec.name
    assert pod["metadata"]["namespace"] == NAMESPACE
    assert pod["metadata"]["uid"]
    assert pod["metadata"]["creationTimestamp"].endswith("Z")
    assert pod["metadata"]["labels"] == spec.labels()
    assert pod["metadata"]["annotations"] == spec.annotations()

    model = container(pod, "model")
    assert model["image"] == "ersiliaos/eos4e40:v2.1"
    assert model["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert model["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 80}
    assert model["resources"] == {
        "requests": {"cpu": "250m", "memory": "1024Mi"},
        "limits": {"cpu": "2000m", "memory": "2048Mi"},
    }

    agent = container(pod, "agent")
    assert agent["image"] == AGENT_IMAGE
    env = {item["name"]: item["value"] for item in agent["env"]}
    assert env == spec.agent_env("http://127.0.0.1:80")
    assert env["JOB_TOKEN"] == "job-token-abc"
    assert env["MODEL_URL"] == "http://127.0.0.1:80"
    assert env["EXTRA"] == "1"
    assert set(agent["resources"]) == {"requests", "limits"}


def test_pod_spec_runs_once_within_deadline(fake, runtime):
    spec = make_spec()

    runtime.create_instance(spec)

    pod_spec = fake.pods[(NAMESPACE, spec.name)]["spec"]
    assert pod_spec["restartPolicy"] == "Never"
    assert pod_spec["activeDeadlineSeconds"] == 900
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["enableServiceLinks"] is False
    assert pod_spec["terminationGracePeriodSeconds"] == 10


def test_pod_spec_prefers_packing(fake, runtime):
    spec = make_spec()

    runtime.create_instance(spec)

    affinity = fake.pods[(NAMESPACE, spec.name)]["spec"]["affinity"]
    assert set(affinity) == {"podAffinity"}
    assert set(affinity["podAffinity"]) == {
        "preferredDuringSchedulingIgnoredDuringExecution"
    }
    assert affinity["podAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ] == [
        {
            "weight": 100,
            "podAffinityTerm": {
                "labelSelector": {"matchLabels": {COMPONENT_LABEL: COMPONENT_VALUE}},
                "topologyKey": "kubernetes.io/hostname",
            },
        }
    ]


@pytest.mark.parametrize(
    ("memory_limit_mib", "expected"),
    [
        (256, "small"),
        (2048, "small"),
        (2049, "medium"),
        (8192, "medium"),
        (8193, "large"),
        (65536, "large"),
    ],
)
def test_pod_spec_memory_class(fake, runtime, memory_limit_mib, expected):
    spec = make_spec(memory_limit_mib=memory_limit_mib)

    runtime.create_instance(spec)

    pod_spec = fake.pods[(NAMESPACE, spec.name)]["spec"]
    assert memory_class(memory_limit_mib) == expected
    assert pod_spec["nodeSelector"] == {MEMORY_CLASS_KEY: expected}
    assert {
        "key": MEMORY_CLASS_KEY,
        "operator": "Equal",
        "value": expected,
        "effect": "NoSchedule",
    } in pod_spec["tolerations"]


# Create, get, list, delete


def test_create_twice_is_not_an_error(fake, runtime):
    spec = make_spec()

    runtime.create_instance(spec)
    runtime.create_instance(spec)

    assert fake.statuses("POST") == [201, 409]
    assert list(fake.pods) == [(NAMESPACE, spec.name)]


def test_get_missing_pod_is_none(fake, runtime):
    assert runtime.get_instance("wr-missing-1") is None
    assert fake.statuses("GET") == [404]


def test_list_selects_hub_pods_of_model(fake, runtime):
    first = make_spec(model_id="eos4e40")
    second = make_spec(model_id="eos4e40")
    other_model = make_spec(model_id="eos3b5e")
    for spec in (first, second, other_model):
        runtime.create_instance(spec)
    post_pod(fake, "not-the-hub", {"app": "other"})
    post_pod(fake, "model-label-only", {MODEL_LABEL: "eos4e40"})

    everything = runtime.list_instances()
    of_model = runtime.list_instances("eos4e40")

    assert {p["metadata"]["name"] for p in everything} == {
        first.name,
        second.name,
        other_model.name,
    }
    assert {p["metadata"]["name"] for p in of_model} == {first.name, second.name}
    sent = [r.query.get("labelSelector") for r in fake.requests if r.method == "GET"]
    assert sent == [
        f"{COMPONENT_LABEL}={COMPONENT_VALUE}",
        f"{COMPONENT_LABEL}={COMPONENT_VALUE},{MODEL_LABEL}=eos4e40",
    ]


def test_list_without_pods_is_empty(fake, runtime):
    assert runtime.list_instances("eos4e40") == []


def test_delete_then_missing(fake, runtime):
    spec = make_spec()
    runtime.create_instance(spec)

    assert runtime.delete_instance(spec.name) is True
    assert runtime.delete_instance(spec.name) is False

    assert fake.statuses("DELETE") == [200, 404]
    first_delete = next(r for r in fake.requests if r.method == "DELETE")
    assert first_delete.query["gracePeriodSeconds"] == "10"
    assert first_delete.query["propagationPolicy"] == "Background"
    assert runtime.get_instance(spec.name) is None


# Events


def test_events_of_one_pod(fake, runtime):
    spec = make_spec()
    runtime.create_instance(spec)
    fake.add_event(NAMESPACE, spec.name, "Scheduled", "Successfully assigned")
    fake.add_event(
        NAMESPACE, spec.name, "FailedScheduling", "0/3 nodes", type="Warning"
    )
    fake.add_event(NAMESPACE, "wr-other-1", "Scheduled", "another pod")
    fake.add_event(NAMESPACE, spec.name, "NodeNotReady", "a node", involved_kind="Node")

    events = runtime.list_pod_events(spec.name)

    assert [e["reason"] for e in events] == ["Scheduled", "FailedScheduling"]
    assert all(e["involvedObject"]["name"] == spec.name for e in events)
    assert all(e["involvedObject"]["kind"] == "Pod" for e in events)
    assert all(e.get("eventTime") is None for e in events)
    assert all(e["lastTimestamp"] for e in events)
    assert events[1]["type"] == "Warning"
    json.dumps(events)
    selector = next(r for r in fake.requests if r.path.endswith("/events"))
    assert selector.query["fieldSelector"] == (
        f"involvedObject.name={spec.name},involvedObject.kind=Pod"
    )


def test_events_of_pod_without_events(fake, runtime):
    assert runtime.list_pod_events("wr-quiet-1") == []


# Errors


@pytest.mark.parametrize(
    ("status", "error_class", "transient"),
    [
        (400, KubeRejected, False),
        (401, KubeUnauthorized, True),
        (403, KubeUnauthorized, True),
        (422, KubeRejected, False),
        (500, KubeServerError, True),
        (503, KubeServerError, True),
    ],
)
def test_create_error_mapping(fake, runtime, status, error_class, transient):
    fake.fail_next(status)

    with pytest.raises(error_class) as raised:
        runtime.create_instance(make_spec())

    assert raised.value.status == status
    assert isinstance(raised.value, RuntimeUnavailable) is transient
    assert isinstance(raised.value, ValueError) is not transient
    assert "create pod" in str(raised.value)


def test_create_invalid_name_is_rejected(fake, runtime):
    with pytest.raises(KubeRejected) as raised:
        runtime.create_instance(make_spec(name="Bad_Name"))

    assert raised.value.status == 422
    assert raised.value.reason == "Invalid"
    assert "metadata.name" in str(raised.value)
    assert fake.pods == {}


def test_create_in_missing_namespace_is_transient(fake, sleeps):
    runtime = runtime_for(fake.url, sleeps, namespace="absent")

    with pytest.raises(KubeNotFound) as raised:
        runtime.create_instance(make_spec())

    assert isinstance(raised.value, RuntimeUnavailable)
    assert 'namespaces "absent" not found' in str(raised.value)


def test_get_and_delete_server_error(fake, runtime):
    fake.fail_next(500, times=2)

    with pytest.raises(KubeServerError):
        runtime.get_instance("wr-x-1")
    with pytest.raises(KubeServerError):
        runtime.delete_instance("wr-x-1")


def test_connection_refused_is_transient():
    url = f"http://127.0.0.1:{free_port()}"
    runtime = runtime_for(url)

    with pytest.raises(KubeServerError) as raised:
        runtime.create_instance(make_spec())

    assert isinstance(raised.value, RuntimeUnavailable)
    assert url in str(raised.value)
    assert "connection to the Kubernetes API server" in str(raised.value)


def test_dropped_connection_is_transient(fake, runtime):
    fake.drop_next(method="POST")
    fake.drop_next(method="GET")

    with pytest.raises(KubeServerError) as on_create:
        runtime.create_instance(make_spec())
    with pytest.raises(KubeServerError) as on_get:
        runtime.get_instance("wr-x-1")

    assert "connection to the Kubernetes API server" in str(on_create.value)
    assert "connection to the Kubernetes API server" in str(on_get.value)


def test_body_cut_short_is_transient(fake, runtime):
    fake.drop_next(method="GET", mid_body=True)

    with pytest.raises(KubeServerError) as raised:
        runtime.get_instance("wr-x-1")

    assert isinstance(raised.value, RuntimeUnavailable)
    assert "get pod 'wr-x-1'" in str(raised.value)


def test_conflict_maps_outside_create():
    error = ApiException(status=409, reason="Conflict")

    mapped = from_api_exception(error, "patch pod 'x'")

    assert type(mapped).__name__ == "KubeConflict"
    assert "patch pod 'x' failed with 409 Conflict" in str(mapped)


# Throttling


def test_throttled_create_waits_retry_after(fake, runtime, sleeps):
    fake.fail_next(429, times=2, retry_after="3")
    spec = make_spec()

    runtime.create_instance(spec)

    assert sleeps.waits == [3.0, 3.0]
    assert fake.statuses("POST") == [429, 429, 201]
    assert (NAMESPACE, spec.name) in fake.pods


def test_throttled_get_is_not_retried_by_urllib3(fake, runtime, sleeps):
    fake.fail_next(429, retry_after="2", method="GET")

    assert runtime.get_instance("wr-missing-1") is None

    assert sleeps.waits == [2.0]
    assert fake.statuses("GET") == [429, 404]


def test_throttled_gives_up_after_attempts(fake, runtime, sleeps):
    fake.fail_next(429, times=MAX_THROTTLED_ATTEMPTS, retry_after="60")

    with pytest.raises(KubeTooManyRequests) as raised:
        runtime.list_instances()

    assert sleeps.waits == [MAX_RETRY_AFTER_SECONDS] * (MAX_THROTTLED_ATTEMPTS - 1)
    assert len(fake.statuses("GET")) == MAX_THROTTLED_ATTEMPTS
    assert raised.value.retry_after == 60.0
    assert isinstance(raised.value, RuntimeUnavailable)
    assert f"gave up after {MAX_THROTTLED_ATTEMPTS} attempts" in str(raised.value)


def test_throttled_call_really_sleeps(fake):
    runtime = runtime_for(fake.url, sleep=time.sleep)
    fake.fail_next(429, retry_after="1")

    started = time.monotonic()
    runtime.list_instances()
    elapsed = time.monotonic() - started

    assert 1.0 <= elapsed < 5.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": " 2 "}, 2.0),
        ({}, 1.0),
        (None, 1.0),
        ({"Retry-After": "soon"}, 1.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 1.0),
    ],
)
def test_retry_after_parsing(headers, expected):
    assert retry_after_seconds(headers) == expected


def test_retry_after_http_date_in_future():
    moment = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))

    wait = retry_after_seconds({"Retry-After": moment})

    assert 25.0 < wait <= 30.0


# Configuration


@pytest.fixture
def no_cluster(monkeypatch, tmp_path):
    """Leave neither an in-cluster service account nor a kubeconfig."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def write_kubeconfig(path, server: str) -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {"token": KUBECONFIG_TOKEN}}],
        "contexts": [
            {"name": "fake", "context": {"cluster": "fake", "user": "tester"}}
        ],
        "current-context": "fake",
    }
    path.write_text(json.dumps(config))
    return str(path)


def test_config_missing_names_both_options(no_cluster):
    with pytest.raises(KubeConfigError) as raised:
        KubernetesRuntime(namespace=NAMESPACE, agent_image=AGENT_IMAGE)

    message = str(raised.value)
    assert "not running in a cluster" in message
    assert "service account" in message
    assert "KUBECONFIG" in message
    assert str(no_cluster / ".kube" / "config") in message


def test_config_invalid_kubeconfig(no_cluster, monkeypatch):
    path = no_cluster / "broken.yaml"
    path.write_text("clusters: [unclosed")
    monkeypatch.setenv("KUBECONFIG", str(path))

    with pytest.raises(KubeConfigError, match="is invalid"):
        load_configuration()


def test_config_from_kubeconfig_reaches_server(fake, no_cluster, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", write_kubeconfig(no_cluster / "kc", fake.url))
    runtime = KubernetesRuntime(namespace=NAMESPACE, agent_image=AGENT_IMAGE)

    runtime.create_instance(make_spec())

    post = next(r for r in fake.requests if r.method == "POST")
    assert post.headers["authorization"] == f"Bearer {KUBECONFIG_TOKEN}"
    assert runtime.api_client.configuration.host == fake.url


def test_config_default_kubeconfig_in_home(fake, no_cluster):
    (no_cluster / ".kube").mkdir()
    write_kubeconfig(no_cluster / ".kube" / "config", fake.url)

    configuration = load_configuration()

    assert configuration.host == fake.url


def test_config_prefers_in_cluster(fake, no_cluster, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", write_kubeconfig(no_cluster / "kc", fake.url))
    token = no_cluster / "token"
    token.write_text("service-account-token")
    certificate = no_cluster / "ca.crt"
    certificate.write_text("not checked before the first request")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(certificate))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")

    configuration = load_configuration()

    assert configuration.host == "https://10.96.0.1:443"
    assert (
        configuration.api_key["BearerToken"].lower() == "bearer service-account-token"
    )


@pytest.fixture
def fresh_runtime_settings():
    from shared.runtime.kubernetes import default_runtime

    get_settings.cache_clear()
    default_runtime.cache_clear()
    yield
    get_settings.cache_clear()
    default_runtime.cache_clear()


def test_get_runtime_kubernetes(fake, no_cluster, monkeypatch, fresh_runtime_settings):
    from shared.runtime import get_runtime

    monkeypatch.setenv("RUNTIME", "kubernetes")
    monkeypatch.setenv("K8S_NAMESPACE", "hub-models")
    monkeypatch.setenv("AGENT_IMAGE", AGENT_IMAGE)
    monkeypatch.setenv("KUBECONFIG", write_kubeconfig(no_cluster / "kc", fake.url))

    runtime = get_runtime()

    assert isinstance(runtime, KubernetesRuntime)
    assert runtime.namespace == "hub-models"
    assert runtime.agent_image == AGENT_IMAGE
    assert get_runtime() is runtime


def test_get_runtime_kubernetes_without_config(
    no_cluster, monkeypatch, fresh_runtime_settings
):
    from shared.runtime import get_runtime

    monkeypatch.setenv("RUNTIME", "kubernetes")

    with pytest.raises(KubeConfigError, match="KUBECONFIG"):
        get_runtime()


def test_settings_defaults(monkeypatch, fresh_runtime_settings):
    monkeypatch.delenv("K8S_NAMESPACE", raising=False)
    monkeypatch.delenv("AGENT_IMAGE", raising=False)

    settings = get_settings()

    assert settings.k8s_namespace == "models"
    assert settings.agent_image == "modelhub/agent:latest"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("K8S_NAMESPACE", "Models"),
        ("K8S_NAMESPACE", "models_1"),
        ("K8S_NAMESPACE", "-models"),
        ("K8S_NAMESPACE", "m" * 64),
        ("AGENT_IMAGE", "modelhub/agent latest"),
    ],
)
def test_settings_reject_invalid(monkeypatch, fresh_runtime_settings, name, value):
    monkeypatch.setenv(name, value)

    with pytest.raises(SettingsError) as raised:
        get_settings()

    assert f"{name}={value!r} is invalid" in str(raised.value)


# The fake's own rules, which the tests above rely on


@pytest.fixture
def labelled_pods(fake):
    post_pod(fake, "pod-a", {"app": "a", "tier": "web"})
    post_pod(fake, "pod-b", {"app": "b"})
    post_pod(fake, "pod-c", {"tier": "db"})
    return fake


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", {"pod-a", "pod-b", "pod-c"}),
        ("app=a", {"pod-a"}),
        ("app==b", {"pod-b"}),
        ("app!=a", {"pod-b", "pod-c"}),
        ("app in (a, b)", {"pod-a", "pod-b"}),
        ("app notin (a)", {"pod-b", "pod-c"}),
        ("tier", {"pod-a", "pod-c"}),
        ("!tier", {"pod-b"}),
        ("app=a,tier=web", {"pod-a"}),
        ("app in (a,b),!tier", {"pod-b"}),
    ],
)
def test_fake_label_selector(labelled_pods, selector, expected):
    api = pods_api(labelled_pods)

    pods = api.list_namespaced_pod(NAMESPACE, label_selector=selector)

    assert {pod.metadata.name for pod in pods.items if pod.metadata} == expected


@pytest.mark.parametrize("selector", ["app in (a", "app=a b", "bad key=a", "=a"])
def test_fake_rejects_invalid_selector(labelled_pods, selector):
    api = pods_api(labelled_pods)

    with pytest.raises(ApiException) as raised:
        api.list_namespaced_pod(NAMESPACE, label_selector=selector)

    assert raised.value.status == 400


def test_fake_rejects_unsupported_field(fake):
    api = pods_api(fake)

    with pytest.raises(ApiException) as raised:
        api.list_namespaced_event(NAMESPACE, field_selector="message=x")

    assert raised.value.status == 400
    assert "field label not supported" in str(raised.value.body)


def test_fake_create_statuses(fake):
    api = pods_api(fake)
    unnamed = client.V1Pod(
        metadata=client.V1ObjectMeta(labels={"app": "a"}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="m", image="i")]),
    )
    post_pod(fake, "taken", {})

    with pytest.raises(ApiException) as missing_name:
        api.create_namespaced_pod(NAMESPACE, unnamed)
    with pytest.raises(ApiException) as duplicate:
        post_pod(fake, "taken", {})

    assert missing_name.value.status == 422
    assert json.loads(missing_name.value.body or "")["reason"] == "Invalid"
    assert duplicate.value.status == 409
    assert json.loads(duplicate.value.body or "")["reason"] == "AlreadyExists"


def test_fake_resource_version_rises(fake, runtime):
    spec = make_spec()
    versions = [fake.resource_version]

    runtime.create_instance(spec)
    versions.append(fake.resource_version)
    fake.add_event(NAMESPACE, spec.name, "Scheduled", "assigned")
    versions.append(fake.resource_version)
    runtime.delete_instance(spec.name)
    versions.append(fake.resource_version)

    assert versions == sorted(set(versions))


# Watch


def pods_api(fake: FakeKube) -> client.CoreV1Api:
    return client.CoreV1Api(new_api_client(client.Configuration(host=fake.url)))


def list_version(api: client.CoreV1Api) -> str:
    """Return the resourceVersion of a pod list, where a watch can start."""
    metadata = api.list_namespaced_pod(NAMESPACE).metadata
    assert metadata is not None
    assert metadata.resource_version is not None
    return metadata.resource_version


def test_watch_streams_new_pods(fake, runtime):
    api = pods_api(fake)
    start = list_version(api)
    spec = make_spec()
    runtime.create_instance(spec)
    post_pod(fake, "not-the-hub", {"app": "other"})
    runtime.delete_instance(spec.name)

    events = list(
        watch.Watch().stream(
            api.list_namespaced_pod,
            NAMESPACE,
            label_selector=f"{COMPONENT_LABEL}={COMPONENT_VALUE}",
            resource_version=start,
            timeout_seconds=1,
        )
    )

    assert [(e["type"], e["object"].metadata.name) for e in events] == [
        ("ADDED", spec.name),
        ("DELETED", spec.name),
    ]


def test_watch_sees_change_while_open(fake, runtime):
    api = pods_api(fake)
    start = list_version(api)
    spec = make_spec()
    creator = threading.Timer(0.3, runtime.create_instance, args=(spec,))
    creator.start()

    stream = watch.Watch().stream(
        api.list_namespaced_pod, NAMESPACE, resource_version=start, timeout_seconds=3
    )
    first = next(stream)
    stream.close()
    creator.join(5)

    assert first["type"] == "ADDED"
    assert first["raw_object"]["metadata"]["name"] == spec.name


def test_watch_too_old_version_is_gone(fake, runtime):
    api = pods_api(fake)
    runtime.create_instance(make_spec())
    old = str(fake.resource_version - 1)
    fake.compact()

    with pytest.raises(ApiException) as raised:
        list(
            watch.Watch().stream(
                api.list_namespaced_pod,
                NAMESPACE,
                resource_version=old,
                timeout_seconds=2,
            )
        )

    assert raised.value.status == 410
    assert "too old resource version" in str(raised.value.reason)


def test_watch_client_retries_gone_once(fake, runtime):
    api = pods_api(fake)
    runtime.create_instance(make_spec())
    old = str(fake.resource_version - 1)
    fake.compact()

    with pytest.raises(ApiException) as raised:
        list(
            watch.Watch().stream(
                api.list_namespaced_pod, NAMESPACE, resource_version=old
            )
        )

    assert raised.value.status == 410
    watches = [r for r in fake.requests if r.query.get("watch") == "true"]
    assert len(watches) == 2


def test_watch_http_gone_maps_to_rejected(fake):
    api = pods_api(fake)
    fake.fail_next(410, method="GET")

    with pytest.raises(ApiException) as raised:
        list(
            watch.Watch().stream(api.list_namespaced_pod, NAMESPACE, timeout_seconds=1)
        )

    assert raised.value.status == 410
    assert isinstance(from_api_exception(raised.value, "watch pods"), KubeRejected)


# Scheduler


OWNER = Owner(auth_type="anonymous", session_id=str(uuid.uuid4()))


def queue_request(db, model_id: str = "demo-molweight") -> str:
    with db.begin() as connection:
        return workrequests.create(connection, OWNER, model_id, ["CCO"]).id


def request_state(db, request_id: str):
    with db.connect() as connection:
        return workrequests.get_state(connection, request_id)


def test_scheduler_creates_one_pod(demo_models, fake, runtime):
    request_id = queue_request(demo_models)

    started = scheduling.schedule_model(
        demo_models, runtime, "demo-molweight", jobs_url="http://jobs"
    )

    assert started == 1
    name = f"wr-{request_id}-1"
    assert list(fake.pods) == [(NAMESPACE, name)]
    pod = fake.pods[(NAMESPACE, name)]
    assert container(pod, "model")["image"] == "ersiliaos/demo-molweight:latest"
    env = {e["name"]: e["value"] for e in container(pod, "agent")["env"]}
    grant = verify_job_token(env["JOB_TOKEN"])
    assert grant.request_id == request_id
    assert grant.instance_name == name
    state = request_state(demo_models, request_id)
    assert state.status == Status.SCHEDULING
    assert state.instance_name == name


def test_scheduler_requeues_on_server_error(demo_models, fake, runtime):
    request_id = queue_request(demo_models)
    fake.fail_next(500, method="POST")

    with pytest.raises(RuntimeUnavailable):
        scheduling.schedule_model(
            demo_models, runtime, "demo-molweight", jobs_url="http://jobs"
        )

    state = request_state(demo_models, request_id)
    assert state.status == Status.REQUESTED
    assert state.instance_name is None
    assert fake.pods == {}

    started = scheduling.schedule_model(
        demo_models, runtime, "demo-molweight", jobs_url="http://jobs"
    )

    assert started == 1
    assert list(fake.pods) == [(NAMESPACE, f"wr-{request_id}-2")]


def test_scheduler_fails_rejected_spec(demo_models, fake, runtime):
    request_id = queue_request(demo_models)
    fake.fail_next(422, method="POST")

    started = scheduling.schedule_model(
        demo_models, runtime, "demo-molweight", jobs_url="http://jobs"
    )

    assert started == 0
    state = request_state(demo_models, request_id)
    assert state.status == Status.FAILED
