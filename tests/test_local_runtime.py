"""Tests of the local pod server and its client with real processes.

The command factory swaps the demo model server and the job agent for
small Python programs: a model server that serves /healthz and may crash,
ignore SIGTERM or exit, and an agent that sleeps and exits with a given
code. Pod events go to a real capturing HTTP sink.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from shared.events import APISERVER_ADD, APISERVER_DELETE, APISERVER_UPDATE
from shared.runtime.base import (
    MODEL_LABEL,
    REQUEST_ANNOTATION,
    InstanceSpec,
    RuntimeUnavailable,
)
from shared.runtime.local import ContainerCommands, LocalPodServer, LocalRuntime
from tests.capture import CaptureServer

# argv: port, then optional "exit:<seconds>:<code>" or "ignore-term".
MODEL_SERVER = """
import http.server, signal, sys, time
port = int(sys.argv[1])
mode = sys.argv[2] if len(sys.argv) > 2 else ""
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
    def log_message(self, *args):
        pass
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
server = http.server.HTTPServer(("127.0.0.1", port), Handler)
server.timeout = 0.05
end = float(mode.split(":")[1]) if mode.startswith("exit:") else 3600.0
started = time.monotonic()
while time.monotonic() - started < end:
    server.handle_request()
sys.exit(int(mode.split(":")[2]) if mode.startswith("exit:") else 0)
"""

# argv: seconds to sleep, exit code, optional file for the environment.
AGENT = """
import json, os, sys, time
if len(sys.argv) > 3:
    names = ("MODEL_URL", "JOBS_URL", "JOB_TOKEN", "EXECUTION_MODE", "EXTRA")
    with open(sys.argv[3], "w") as out:
        json.dump({name: os.environ.get(name) for name in names}, out)
time.sleep(float(sys.argv[1]))
sys.exit(int(sys.argv[2]))
"""

GRACE_SECONDS = 1.0
WAIT_SECONDS = 15.0


def commands(
    model_mode: str = "",
    agent_seconds: float = 60.0,
    agent_exit: int = 0,
    env_file: str | None = None,
) -> Callable[[InstanceSpec, int], ContainerCommands | None]:
    def factory(spec: InstanceSpec, port: int) -> ContainerCommands | None:
        if spec.model_id == "unknown-model":
            return None
        model = [sys.executable, "-c", MODEL_SERVER, str(port)]
        if model_mode:
            model.append(model_mode)
        agent = [sys.executable, "-c", AGENT, str(agent_seconds), str(agent_exit)]
        if env_file:
            agent.append(env_file)
        return ContainerCommands(model=model, agent=agent)

    return factory


def make_spec(name: str = "wr-r1-1", **overrides: Any) -> InstanceSpec:
    fields: dict[str, Any] = {
        "name": name,
        "model_id": "m1",
        "request_id": "r1",
        "attempt": 1,
        "image": "ersiliaos/m1:test",
        "execution_mode": "sync",
        "timeout_seconds": 60,
        "jobs_url": "http://127.0.0.1:9/jobs",
        "job_token": "secret-job-token",
    }
    fields.update(overrides)
    return InstanceSpec(**fields)


def wait_for_pod(
    server: LocalPodServer,
    name: str,
    predicate: Callable[[Any], Any],
    timeout: float = WAIT_SECONDS,
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pod = server.get(name)
        if predicate(pod):
            return pod
        time.sleep(0.05)
    raise AssertionError(f"pod {name} did not reach the state. Last: {pod}")


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (status,) = [c for c in pod["status"]["containerStatuses"] if c["name"] == name]
    return status


def condition(pod: dict[str, Any], kind: str) -> str:
    (found,) = [c for c in pod["status"]["conditions"] if c["type"] == kind]
    return found["status"]


def is_ready(pod: Any) -> bool:
    return pod is not None and condition(pod, "Ready") == "True"


def is_phase(*phases: str) -> Callable[[Any], bool]:
    return lambda pod: pod is not None and pod["status"]["phase"] in phases


def pid_of(pod: dict[str, Any], name: str) -> int:
    return int(container(pod, name)["containerID"].removeprefix("local://"))


@pytest.fixture
def sink():
    with CaptureServer() as capture:
        yield capture


@pytest.fixture
def make_server(sink, tmp_path):
    started: list[LocalPodServer] = []

    def make(factory=None, **kwargs: Any) -> LocalPodServer:
        server = LocalPodServer(
            sink.url,
            command_factory=factory or commands(),
            grace_seconds=GRACE_SECONDS,
            log_dir=tmp_path,
            **kwargs,
        ).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def test_events_in_order_with_rising_versions(make_server, sink):
    server = make_server(commands(agent_seconds=0.3))
    server.create(make_spec())
    wait_for_pod(
        server, "wr-r1-1", lambda p: container(p, "agent")["state"].get("terminated")
    )

    server.delete("wr-r1-1")
    wait_for_pod(server, "wr-r1-1", lambda pod: pod is None)
    server.stop()
    events = sink.events()

    types = [event["type"] for event in events]
    versions = [
        int(event.get_data()["metadata"]["resourceVersion"]) for event in events
    ]
    assert types[0] == APISERVER_ADD
    assert types[-1] == APISERVER_DELETE
    assert set(types[1:-1]) == {APISERVER_UPDATE}
    assert len(types) >= 5
    assert versions == sorted(set(versions))
    assert events[0].get_data()["status"]["phase"] == "Pending"
    assert events[-1].get_data()["metadata"]["deletionTimestamp"]


def test_event_attributes_match_apiserversource(make_server, sink):
    server = make_server()
    server.create(make_spec())

    (event,) = sink.wait_for(1)

    assert event["type"] == APISERVER_ADD
    assert event["source"] == server.url
    assert event["subject"] == "/apis/v1/namespaces/models/pods/wr-r1-1"
    assert event["kind"] == "Pod"
    assert event["name"] == "wr-r1-1"
    assert event["namespace"] == "models"
    assert event["datacontenttype"] == "application/json"
    assert event.get_data()["metadata"]["name"] == "wr-r1-1"


def test_pod_object_shape(make_server):
    server = make_server()
    spec = make_spec(timeout_seconds=42)
    created, pod = server.create(spec)

    assert created
    assert pod["apiVersion"] == "v1"
    assert pod["kind"] == "Pod"
    assert pod["metadata"]["namespace"] == "models"
    assert pod["metadata"]["labels"] == spec.labels()
    assert pod["metadata"]["annotations"] == spec.annotations()
    assert pod["metadata"]["uid"]
    assert pod["metadata"]["creationTimestamp"].endswith("Z")
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["activeDeadlineSeconds"] == 42
    assert [c["name"] for c in pod["spec"]["containers"]] == ["model", "agent"]
    assert pod["spec"]["containers"][0]["image"] == "ersiliaos/m1:test"
    assert "secret-job-token" not in json.dumps(pod)


def test_ready_after_healthz(make_server):
    server = make_server()
    server.create(make_spec())

    pod = wait_for_pod(server, "wr-r1-1", is_ready)

    assert pod["status"]["phase"] == "Running"
    assert condition(pod, "ContainersReady") == "True"
    assert condition(pod, "PodScheduled") == "True"
    assert container(pod, "model")["ready"] is True
    assert "running" in container(pod, "model")["state"]
    assert container(pod, "agent")["ready"] is True


def test_agent_gets_its_environment(make_server, tmp_path):
    env_file = tmp_path / "agent-env.json"
    server = make_server(commands(agent_seconds=0, env_file=str(env_file)))
    server.create(make_spec(extra_env={"EXTRA": "x"}))

    pod = wait_for_pod(
        server, "wr-r1-1", lambda p: container(p, "agent")["state"].get("terminated")
    )
    env = json.loads(env_file.read_text())
    model_port = pod["spec"]["containers"][0]["ports"][0]["containerPort"]

    assert env["MODEL_URL"] == f"http://127.0.0.1:{model_port}"
    assert env["JOBS_URL"] == "http://127.0.0.1:9/jobs"
    assert env["JOB_TOKEN"] == "secret-job-token"
    assert env["EXECUTION_MODE"] == "sync"
    assert env["EXTRA"] == "x"


def test_agent_exit_zero_leaves_pod_running(make_server):
    server = make_server(commands(agent_seconds=0.2))
    server.create(make_spec())

    pod = wait_for_pod(
        server, "wr-r1-1", lambda p: container(p, "agent")["state"].get("terminated")
    )
    time.sleep(0.5)
    later = server.get("wr-r1-1")

    terminated = container(pod, "agent")["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert terminated["reason"] == "Completed"
    assert terminated["finishedAt"]
    assert later["status"]["phase"] == "Running"
    assert "running" in container(later, "model")["state"]
    assert condition(later, "Ready") == "False"


def test_model_crash_fails_pod(make_server):
    server = make_server(
        commands(model_mode="exit:0.3:7", agent_seconds=0.8, agent_exit=3)
    )
    server.create(make_spec())

    pod = wait_for_pod(server, "wr-r1-1", is_phase("Succeeded", "Failed"))

    model = container(pod, "model")["state"]["terminated"]
    agent = container(pod, "agent")["state"]["terminated"]
    assert pod["status"]["phase"] == "Failed"
    assert model["exitCode"] == 7
    assert model["reason"] == "Error"
    assert agent["exitCode"] == 3
    assert condition(pod, "Ready") == "False"


def test_all_exit_zero_succeeds(make_server):
    server = make_server(commands(model_mode="exit:0.3:0", agent_seconds=0.1))
    server.create(make_spec())

    pod = wait_for_pod(server, "wr-r1-1", is_phase("Succeeded", "Failed"))

    assert pod["status"]["phase"] == "Succeeded"
    assert container(pod, "model")["state"]["terminated"]["reason"] == "Completed"


def test_deadline_fails_pod(make_server):
    server = make_server()
    server.create(make_spec(timeout_seconds=1))

    pod = wait_for_pod(server, "wr-r1-1", is_phase("Failed"))
    settled = wait_for_pod(
        server,
        "wr-r1-1",
        lambda p: all(
            "terminated" in c["state"] for c in p["status"]["containerStatuses"]
        ),
    )

    assert pod["status"]["reason"] == "DeadlineExceeded"
    assert "deadline" in pod["status"]["message"]
    assert settled["status"]["phase"] == "Failed"
    assert container(settled, "model")["state"]["terminated"]["exitCode"] == 143


def test_unknown_model_looks_like_image_pull_failure(make_server):
    server = make_server()
    server.create(make_spec(model_id="unknown-model", image="ersiliaos/nope:1"))

    # A few supervisor ticks, which must not start anything.
    time.sleep(0.3)
    pod = wait_for_pod(server, "wr-r1-1", lambda p: p is not None)

    waiting = container(pod, "model")["state"]["waiting"]
    assert pod["status"]["phase"] == "Pending"
    assert waiting["reason"] == "ErrImageNeverPull"
    assert "ersiliaos/nope:1" in waiting["message"]
    assert condition(pod, "Ready") == "False"


def test_unknown_model_pod_is_deleted_without_grace(make_server, sink):
    server = make_server()
    server.create(make_spec(model_id="unknown-model"))

    started = time.monotonic()
    server.delete("wr-r1-1")
    wait_for_pod(server, "wr-r1-1", lambda pod: pod is None, timeout=2.0)
    elapsed = time.monotonic() - started

    assert elapsed < GRACE_SECONDS
    events = sink.wait_for(3)
    assert events[-1]["type"] == APISERVER_DELETE


def test_delete_kills_after_grace(make_server):
    server = make_server(commands(model_mode="ignore-term"))
    server.create(make_spec())
    wait_for_pod(server, "wr-r1-1", is_ready)

    started = time.monotonic()
    server.delete("wr-r1-1")
    terminating = server.get("wr-r1-1")
    wait_for_pod(server, "wr-r1-1", lambda pod: pod is None)
    elapsed = time.monotonic() - started

    assert terminating["metadata"]["deletionTimestamp"]
    assert terminating["metadata"]["deletionGracePeriodSeconds"] == 1
    assert GRACE_SECONDS <= elapsed < GRACE_SECONDS + 2


def test_stop_kills_processes(make_server):
    server = make_server()
    server.create(make_spec())
    pod = wait_for_pod(server, "wr-r1-1", is_ready)
    pids = [pid_of(pod, "model"), pid_of(pod, "agent")]

    server.stop()

    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_http_create_conflict_and_errors(make_server):
    server = make_server()
    body = {
        "name": "wr-r2-1",
        "model_id": "m1",
        "request_id": "r2",
        "attempt": 1,
        "image": "img",
        "execution_mode": "sync",
        "timeout_seconds": 30,
        "jobs_url": "http://127.0.0.1:9",
        "job_token": "t",
    }

    first = requests.post(f"{server.url}/pods", json=body, timeout=5)
    second = requests.post(f"{server.url}/pods", json=body, timeout=5)
    bad_name = requests.post(
        f"{server.url}/pods", json={**body, "name": "Bad_Name"}, timeout=5
    )
    unknown = requests.post(f"{server.url}/pods", json={**body, "x": 1}, timeout=5)
    not_json = requests.post(f"{server.url}/pods", data=b"{", timeout=5)
    missing = requests.get(f"{server.url}/pods/nope", timeout=5)

    assert first.status_code == 201
    assert first.json()["metadata"]["name"] == "wr-r2-1"
    assert second.status_code == 409
    assert "already exists" in second.json()["error"]
    assert bad_name.status_code == 400
    assert "Bad_Name" in bad_name.json()["error"]
    assert unknown.status_code == 400
    assert "['x']" in unknown.json()["error"]
    assert not_json.status_code == 400
    assert missing.status_code == 404


def test_client_create_get_list_delete(make_server):
    server = make_server()
    runtime = LocalRuntime(server.url, timeout=5)
    spec = make_spec()

    runtime.create_instance(spec)
    runtime.create_instance(spec)
    runtime.create_instance(make_spec(name="wr-r3-1", model_id="m2", request_id="r3"))

    found = runtime.get_instance("wr-r1-1")
    assert found is not None
    assert found["metadata"]["annotations"][REQUEST_ANNOTATION] == "r1"
    assert runtime.get_instance("missing") is None
    assert {p["metadata"]["name"] for p in runtime.list_instances()} == {
        "wr-r1-1",
        "wr-r3-1",
    }
    (only,) = runtime.list_instances("m2")
    assert only["metadata"]["labels"][MODEL_LABEL] == "m2"
    assert runtime.delete_instance("wr-r1-1") is True
    wait_for_pod(server, "wr-r1-1", lambda pod: pod is None)
    assert runtime.get_instance("wr-r1-1") is None
    assert runtime.delete_instance("wr-r1-1") is False


def test_client_unreachable_raises_runtime_unavailable(make_server):
    server = make_server()
    url = server.url
    server.stop()
    runtime = LocalRuntime(url, timeout=1)

    with pytest.raises(RuntimeUnavailable, match="unreachable"):
        runtime.get_instance("wr-r1-1")
    with pytest.raises(RuntimeUnavailable):
        runtime.create_instance(make_spec())


def test_client_needs_a_url():
    with pytest.raises(ValueError, match="LOCAL_RUNTIME_URL"):
        LocalRuntime("")


@pytest.fixture
def fresh_settings():
    from shared.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_get_runtime_local(monkeypatch, fresh_settings):
    from shared.runtime import get_runtime

    monkeypatch.setenv("RUNTIME", "local")
    monkeypatch.setenv("LOCAL_RUNTIME_URL", "http://127.0.0.1:9/")

    runtime = get_runtime()

    assert isinstance(runtime, LocalRuntime)
    assert runtime.base_url == "http://127.0.0.1:9"
