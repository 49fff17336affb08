"""Tests of the deployment: every manifest under knative/, the Dockerfiles,
and the references between them and the code.

Core Kubernetes kinds are validated with kubernetes-validate in strict mode
(an unknown field fails) against KUBERNETES_VERSION. Knative kinds are
validated against the CRD schemas in tests/schemas/knative/ with the
structural check of test_routing.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from shared.events import APISERVER_TYPES, INSTANCE_RELEASED, WORK_REQUEST_SUBMITTED
from shared.localstack import FUNCTIONS
from shared.runtime.base import COMPONENT_LABEL, COMPONENT_VALUE
from shared.settings import load_settings
from tests.test_routing import crd_schema, manifest_errors

ROOT = Path(__file__).resolve().parents[1]
KNATIVE_DIR = ROOT / "knative"
FUNCTIONS_DIR = ROOT / "functions"

# The oldest Kubernetes that Knative 1.21 supports (docs/deploy.md).
KUBERNETES_VERSION = "1.33"

CORE_KINDS = {
    ("v1", "Namespace"),
    ("v1", "ServiceAccount"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
}
KNATIVE_SCHEMAS = {
    ("serving.knative.dev/v1", "Service"): "serving-service.yaml",
    ("eventing.knative.dev/v1", "Broker"): "eventing-broker.yaml",
    ("eventing.knative.dev/v1", "Trigger"): "eventing-trigger.yaml",
    ("sources.knative.dev/v1", "ApiServerSource"): "eventing-apiserversource.yaml",
    ("sources.knative.dev/v1", "SinkBinding"): "eventing-sinkbindings.yaml",
}
SERVICE_REF = ("serving.knative.dev/v1", "Service")
BROKER_REF = ("eventing.knative.dev/v1", "Broker")

# Event types that the functions emit (shared/events.py).
EMITTED_TYPES = (WORK_REQUEST_SUBMITTED, INSTANCE_RELEASED)
# Type prefixes of ApiServerSource events, by spec.mode.
APISERVER_TYPE_PREFIXES = {
    "Resource": "dev.knative.apiserver.resource.",
    "Reference": "dev.knative.apiserver.ref.",
}

DEAD_LETTERS_SERVICE = "dead-letters"
# Services whose function never opens a database connection.
SERVICES_WITHOUT_DATABASE = {DEAD_LETTERS_SERVICE}
POSTGRES_MAX_CONNECTIONS = 100
POSTGRES_RESERVED_CONNECTIONS = 3
# Connections kept free for the migration Job and an admin shell.
SPARE_CONNECTIONS = 2
# config-defaults max-revision-timeout-seconds in Knative Serving.
MAX_REVISION_TIMEOUT_SECONDS = 600

SECRET_NAME = "modelhub-secrets"
SECRET_KEYS = ("DATABASE_URL", "HUB_SECRET_KEY")
CONFIG_NAME = "modelhub-config"
# Settings that must not be in the ConfigMap: secrets, the SinkBinding's
# K_SINK and the local runtime's URL.
NOT_IN_CONFIG = (*SECRET_KEYS, "K_SINK", "LOCAL_RUNTIME_URL")

# Accounts bound to a Role, and the verbs each may use on each resource.
ALLOWED_RBAC = {
    "scheduler": {"pods": {"create", "get"}},
    "instance-watch": {"pods": {"get", "list", "delete"}, "events": {"get", "list"}},
    "admin-requests": {"pods": {"delete"}},
    "reconcile": {"pods": {"create", "get", "list", "delete"}},
    "admin-instances": {
        "pods": {"get", "list", "delete"},
        "events": {"get", "list"},
    },
    "model-pod-source": {
        "pods": {"get", "list", "watch"},
        "events": {"get", "list", "watch"},
    },
}

FUNCTION_DECORATORS = {"http", "cloud_event"}
RUN_SCRIPT = "/usr/local/bin/run-function"
KUBECTL = shutil.which("kubectl")
SHELL = shutil.which("sh")


# --- loading -----------------------------------------------------------------


def manifest_paths() -> list[Path]:
    return sorted(
        p for p in KNATIVE_DIR.glob("*.yaml") if p.name != "kustomization.yaml"
    )


def load_manifests() -> list[tuple[Path, dict[str, Any]]]:
    loaded = []
    for path in manifest_paths():
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                loaded.append((path, doc))
    return loaded


MANIFESTS = load_manifests()


def documents(kind: str, api_version: str | None = None) -> list[dict[str, Any]]:
    return [
        doc
        for _, doc in MANIFESTS
        if doc.get("kind") == kind
        and (api_version is None or doc.get("apiVersion") == api_version)
    ]


def doc_id(path: Path, doc: dict[str, Any]) -> str:
    return f"{path.name}:{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def knative_services() -> dict[str, dict[str, Any]]:
    return {
        doc["metadata"]["name"]: doc
        for doc in documents("Service", "serving.knative.dev/v1")
    }


def container_of(service: dict[str, Any]) -> dict[str, Any]:
    (container,) = service["spec"]["template"]["spec"]["containers"]
    return container


def plain_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def config_data() -> dict[str, str]:
    (config,) = [
        doc for doc in documents("ConfigMap") if doc["metadata"]["name"] == CONFIG_NAME
    ]
    return config["data"]


def function_targets() -> dict[str, str]:
    """Return {folder: target} from the decorated function in each main.py."""
    targets = {}
    for source in sorted(FUNCTIONS_DIR.glob("*/main.py")):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        decorated = [
            node.name
            for node in tree.body
            if isinstance(node, ast.FunctionDef)
            and any(
                isinstance(d, ast.Attribute)
                and isinstance(d.value, ast.Name)
                and d.value.id == "functions_framework"
                and d.attr in FUNCTION_DECORATORS
                for d in node.decorator_list
            )
        ]
        assert len(decorated) == 1, f"{source} must define exactly one function"
        targets[source.parent.name] = decorated[0]
    return targets


def function_folders() -> set[str]:
    return {path.parent.name for path in FUNCTIONS_DIR.glob("*/main.py")}


def rbac_rules() -> dict[str, dict[str, set[str]]]:
    """Return {service account: {resource: verbs}} from the RoleBindings."""
    roles = {
        (doc["metadata"]["namespace"], doc["metadata"]["name"]): doc
        for doc in documents("Role")
    }
    granted: dict[str, dict[str, set[str]]] = {}
    for binding in documents("RoleBinding"):
        namespace = binding["metadata"]["namespace"]
        role = roles[(namespace, binding["roleRef"]["name"])]
        for subject in binding["subjects"]:
            account = granted.setdefault(subject["name"], {})
            for rule in role["rules"]:
                for resource in rule["resources"]:
                    account.setdefault(resource, set()).update(rule["verbs"])
    return granted


# --- schemas -----------------------------------------------------------------


def test_manifest_kinds_are_known():
    for path, doc in MANIFESTS:
        key = (doc.get("apiVersion"), doc.get("kind"))
        assert key in CORE_KINDS or key in KNATIVE_SCHEMAS, doc_id(path, doc)


@pytest.mark.parametrize(
    "path, doc",
    [
        pytest.param(path, doc, id=doc_id(path, doc))
        for path, doc in MANIFESTS
        if (doc.get("apiVersion"), doc.get("kind")) in CORE_KINDS
    ],
)
def test_core_manifest_matches_kubernetes_schema(path, doc):
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        where = ".".join(str(part) for part in error.path)
        pytest.fail(f"{doc_id(path, doc)}: {where}: {error.message}")


@pytest.mark.parametrize(
    "path, doc",
    [
        pytest.param(path, doc, id=doc_id(path, doc))
        for path, doc in MANIFESTS
        if (doc.get("apiVersion"), doc.get("kind")) in KNATIVE_SCHEMAS
    ],
)
def test_knative_manifest_matches_crd_schema(path, doc):
    schema = crd_schema(KNATIVE_SCHEMAS[(doc["apiVersion"], doc["kind"])])

    assert manifest_errors(doc, schema) == []


def feature_flag_fields(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """Return the fields in `value` that the CRD marks as behind a feature flag."""
    found = []
    if isinstance(value, dict):
        for name, item in value.items():
            child = schema.get("properties", {}).get(name)
            if child is None:
                child = schema.get("additionalProperties")
            if not isinstance(child, dict):
                continue
            if "feature flag" in child.get("description", ""):
                found.append(f"{path}.{name}")
            found += feature_flag_fields(item, child, f"{path}.{name}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            found += feature_flag_fields(item, schema["items"], f"{path}[{index}]")
    return found


def test_no_feature_flag_fields_used():
    for path, doc in MANIFESTS:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key not in KNATIVE_SCHEMAS:
            continue
        schema = crd_schema(KNATIVE_SCHEMAS[key])

        assert (
            feature_flag_fields(doc.get("spec"), schema["properties"]["spec"], "spec")
            == []
        ), doc_id(path, doc)


def test_apiserversource_spec_fields_are_known():
    # The CRD preserves unknown fields in spec, so the structural check
    # cannot catch a misspelled field there.
    schema = crd_schema(KNATIVE_SCHEMAS[("sources.knative.dev/v1", "ApiServerSource")])
    known = set(schema["properties"]["spec"]["properties"])

    for source in documents("ApiServerSource"):
        assert set(source["spec"]) <= known


def test_feature_flag_check_finds_field():
    schema = crd_schema(KNATIVE_SCHEMAS[SERVICE_REF])
    spec = {
        "template": {
            "spec": {"securityContext": {"runAsNonRoot": True}, "containers": []}
        }
    }

    found = feature_flag_fields(spec, schema["properties"]["spec"], "spec")

    assert found == ["spec.template.spec.securityContext"]


# --- kustomize ---------------------------------------------------------------


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((KNATIVE_DIR / "kustomization.yaml").read_text())

    listed = kustomization["resources"]

    assert len(listed) == len(set(listed))
    assert set(listed) == {path.name for path in manifest_paths()}


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_kustomize_build_has_every_manifest():
    built = subprocess.run(
        [str(KUBECTL), "kustomize", str(KNATIVE_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert built.returncode == 0, built.stderr

    def identity(doc: dict[str, Any]) -> tuple[str, str, str | None, str]:
        metadata = doc["metadata"]
        return (
            doc["apiVersion"],
            doc["kind"],
            metadata.get("namespace"),
            metadata["name"],
        )

    output = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    assert sorted(map(identity, output)) == sorted(
        identity(doc) for _, doc in MANIFESTS
    )


# --- functions and their Services --------------------------------------------


def test_every_function_folder_has_a_service():
    folders = {
        plain_env(container_of(service)).get("FUNCTION")
        for service in knative_services().values()
    }

    assert function_folders() <= folders
    assert folders <= function_folders()


def test_local_stack_functions_have_services():
    services = knative_services()

    for spec in FUNCTIONS:
        assert spec.service in services, spec.service
        container = container_of(services[spec.service])
        assert plain_env(container)["FUNCTION"] == spec.folder


def test_dead_letter_sink_has_a_service():
    container = container_of(knative_services()[DEAD_LETTERS_SERVICE])

    assert plain_env(container)["FUNCTION"] == "dead_letters"


def test_service_targets_match_local_stack():
    targets = function_targets()

    for spec in FUNCTIONS:
        assert targets[spec.folder] == spec.target, spec.service


@pytest.mark.parametrize("name", sorted(knative_services()))
def test_service_runs_the_function_image(name):
    service = knative_services()[name]
    spec = service["spec"]["template"]["spec"]
    container = container_of(service)

    assert service["metadata"]["namespace"] == "modelhub"
    assert container["image"] == "modelhub/functions:latest"
    assert container["ports"] == [{"containerPort": 8080}]
    assert spec["serviceAccountName"] == name
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("name", sorted(knative_services()))
def test_service_scale_and_timeouts(name):
    template = knative_services()[name]["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    spec = template["spec"]
    threads = int(plain_env(container_of(knative_services()[name]))["THREADS"])

    min_scale = int(annotations["autoscaling.knative.dev/min-scale"])
    max_scale = int(annotations["autoscaling.knative.dev/max-scale"])

    assert min_scale == 0
    assert max_scale >= 1
    assert spec["containerConcurrency"] == threads
    assert 0 < spec["timeoutSeconds"] <= MAX_REVISION_TIMEOUT_SECONDS


@pytest.mark.parametrize("name", sorted(knative_services()))
def test_service_probes_the_serving_port(name):
    container = container_of(knative_services()[name])
    port = container["ports"][0]["containerPort"]

    assert container["readinessProbe"] == {"tcpSocket": {"port": port}}
    assert container["livenessProbe"]["tcpSocket"] == {"port": port}


@pytest.mark.parametrize("name", sorted(knative_services()))
def test_service_resources_are_bounded(name):
    resources = container_of(knative_services()[name])["resources"]

    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}


def database_connections() -> int:
    """Return the most PostgreSQL connections the Services can hold at once."""
    connections = 0
    for name, service in knative_services().items():
        if name in SERVICES_WITHOUT_DATABASE:
            continue
        annotations = service["spec"]["template"]["metadata"]["annotations"]
        max_scale = int(annotations["autoscaling.knative.dev/max-scale"])
        connections += max_scale * int(plain_env(container_of(service))["THREADS"])
    return connections


def test_database_connections_fit_postgres():
    available = POSTGRES_MAX_CONNECTIONS - POSTGRES_RESERVED_CONNECTIONS

    assert database_connections() <= available - SPARE_CONNECTIONS


def test_connection_total_comment_is_current():
    text = (KNATIVE_DIR / "services.yaml").read_text(encoding="utf-8")
    stated = re.search(r"adds up to (\d+) connections", text)

    assert stated is not None
    assert int(stated.group(1)) == database_connections()


def test_client_address_services_pin_activator():
    # TRUSTED_PROXY_HOPS counts the activator's X-Forwarded-For entry, so
    # every function that reads the client address must keep it in its path.
    folders = {
        path.parent.name
        for path in FUNCTIONS_DIR.glob("*/main.py")
        if "client_address" in path.read_text(encoding="utf-8")
    }
    assert folders, "no function reads the client address: recheck this test"

    for service in knative_services().values():
        folder = plain_env(container_of(service))["FUNCTION"]
        annotations = service["spec"]["template"]["metadata"]["annotations"]
        burst = annotations.get("autoscaling.knative.dev/target-burst-capacity")
        if folder in folders:
            assert burst == "-1", service["metadata"]["name"]


def test_broker_only_services_are_cluster_local():
    services = knative_services()
    subscribers = {
        trigger["spec"]["subscriber"]["ref"]["name"] for trigger in documents("Trigger")
    }
    jobs_host = config_data()["JOBS_URL"].split("//", 1)[1].split(".", 1)[0]

    for name in subscribers | {DEAD_LETTERS_SERVICE, jobs_host}:
        labels = services[name]["metadata"]["labels"]
        assert labels.get("networking.knative.dev/visibility") == "cluster-local", name


# --- settings ----------------------------------------------------------------


def settings_variables() -> set[str]:
    """Return the environment variables that shared/settings.py reads."""
    source = (ROOT / "shared" / "settings.py").read_text(encoding="utf-8")
    pattern = re.compile(r'env(?:\.get\(|,)\s*"([A-Z][A-Z0-9_]*)"')
    return set(pattern.findall(source))


def test_config_keys_are_settings():
    assert set(config_data()) <= settings_variables()


def test_config_lists_every_setting():
    expected = settings_variables() - set(NOT_IN_CONFIG)

    assert set(config_data()) == expected
    for key in NOT_IN_CONFIG:
        assert key not in config_data(), key


def test_settings_variables_are_found():
    found = settings_variables()

    assert {"DATABASE_URL", "HUB_SECRET_KEY", "DB_SCHEMA", "MAX_INPUTS"} <= found


@pytest.mark.parametrize("name", sorted(knative_services()))
def test_service_environment_passes_settings(name):
    container = container_of(knative_services()[name])
    assert container["envFrom"] == [{"configMapRef": {"name": CONFIG_NAME}}]
    secret_refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "valueFrom" in e
    }
    assert secret_refs == {
        key: {"name": SECRET_NAME, "key": key} for key in SECRET_KEYS
    }
    assert "K_SINK" not in {e["name"] for e in container["env"]}

    environment = {
        **config_data(),
        **plain_env(container),
        "DATABASE_URL": "postgresql://hub@postgres.example:5432/modelhub",
        "HUB_SECRET_KEY": "k" * 48,
        "K_SINK": "http://broker-ingress.knative-eventing.svc.cluster.local/modelhub/default",
    }
    settings = load_settings(environment)

    assert settings.runtime == "kubernetes"
    assert settings.log_format == "json"
    assert settings.k8s_namespace == "models"


def test_jobs_url_is_the_jobs_service():
    (jobs,) = [
        service
        for service in knative_services().values()
        if plain_env(container_of(service))["FUNCTION"] == "jobs"
    ]
    metadata = jobs["metadata"]

    expected = f"http://{metadata['name']}.{metadata['namespace']}.svc.cluster.local"
    assert config_data()["JOBS_URL"] == expected


def test_kubernetes_runtime_namespace_exists():
    namespaces = {doc["metadata"]["name"] for doc in documents("Namespace")}

    assert config_data()["K8S_NAMESPACE"] in namespaces


def test_no_secret_with_values_is_committed():
    for path, doc in MANIFESTS:
        if doc.get("kind") == "Secret":
            assert not doc.get("data"), doc_id(path, doc)
            assert not doc.get("stringData"), doc_id(path, doc)
        text = path.read_text(encoding="utf-8")
        assert "postgresql://" not in text, path.name


# --- events ------------------------------------------------------------------


def trigger_types() -> set[str]:
    return {
        trigger["spec"]["filter"]["attributes"]["type"]
        for trigger in documents("Trigger")
    }


def test_emitted_event_types_have_triggers():
    for event_type in EMITTED_TYPES:
        assert event_type in trigger_types()


def test_apiserversource_types_have_triggers():
    for source in documents("ApiServerSource"):
        prefix = APISERVER_TYPE_PREFIXES[source["spec"]["mode"]]
        types = {prefix + change for change in ("add", "update", "delete")}

        assert types == set(APISERVER_TYPES)
        assert types <= trigger_types()


def test_event_destinations_are_services_here():
    services = knative_services()
    references = []
    for doc in documents("Trigger") + documents("Broker"):
        spec = doc["spec"]
        if "subscriber" in spec:
            references.append(spec["subscriber"]["ref"])
        dead_letter = spec.get("delivery", {}).get("deadLetterSink")
        if dead_letter:
            references.append(dead_letter["ref"])
    assert references

    for ref in references:
        assert (ref["apiVersion"], ref["kind"]) == SERVICE_REF, ref
        assert ref["name"] in services, ref


def test_sinks_are_the_broker():
    (broker,) = documents("Broker")
    sources = documents("ApiServerSource") + documents("SinkBinding")
    assert len(sources) == 2

    for source in sources:
        ref = source["spec"]["sink"]["ref"]
        assert (ref["apiVersion"], ref["kind"]) == BROKER_REF
        assert ref["name"] == broker["metadata"]["name"]
        assert source["metadata"]["namespace"] == broker["metadata"]["namespace"]


def test_sinkbinding_selects_every_function():
    (binding,) = documents("SinkBinding")
    subject = binding["spec"]["subject"]
    selector = subject["selector"]["matchLabels"]

    assert (subject["apiVersion"], subject["kind"]) == SERVICE_REF
    for name, service in knative_services().items():
        labels = service["metadata"]["labels"]
        assert selector.items() <= labels.items(), name


def test_apiserversource_watches_model_pods():
    (source,) = documents("ApiServerSource")
    spec = source["spec"]
    by_kind = {resource["kind"]: resource for resource in spec["resources"]}

    assert spec["mode"] == "Resource"
    assert spec["namespaceSelector"] == {
        "matchLabels": {"kubernetes.io/metadata.name": "models"}
    }
    assert set(by_kind) == {"Pod", "Event"}
    assert by_kind["Pod"]["apiVersion"] == "v1"
    assert by_kind["Pod"]["selector"] == {
        "matchLabels": {COMPONENT_LABEL: COMPONENT_VALUE}
    }
    assert by_kind["Event"]["apiVersion"] == "v1"


# --- accounts and RBAC -------------------------------------------------------


def service_accounts() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (doc["metadata"]["namespace"], doc["metadata"]["name"]): doc
        for doc in documents("ServiceAccount")
    }


def test_every_service_account_name_exists():
    accounts = service_accounts()
    used = []
    for service in knative_services().values():
        used.append(
            (
                service["metadata"]["namespace"],
                service["spec"]["template"]["spec"]["serviceAccountName"],
            )
        )
    for job in documents("Job"):
        used.append(
            (
                job["metadata"]["namespace"],
                job["spec"]["template"]["spec"]["serviceAccountName"],
            )
        )
    for source in documents("ApiServerSource"):
        used.append(
            (source["metadata"]["namespace"], source["spec"]["serviceAccountName"])
        )
    for binding in documents("RoleBinding"):
        used += [(s["namespace"], s["name"]) for s in binding["subjects"]]

    for key in used:
        assert key in accounts, key


def test_each_service_has_its_own_account():
    names = [
        service["spec"]["template"]["spec"]["serviceAccountName"]
        for service in knative_services().values()
    ]

    assert len(names) == len(set(names))


def test_rbac_grants_only_the_expected_verbs():
    assert documents("ClusterRole") == []
    assert documents("ClusterRoleBinding") == []
    for role in documents("Role"):
        assert role["metadata"]["namespace"] == "models", role["metadata"]["name"]
        for rule in role["rules"]:
            assert rule["apiGroups"] == [""]

    assert rbac_rules() == ALLOWED_RBAC


def test_rbac_allows_required_verbs():
    granted = rbac_rules()

    assert "create" in granted["scheduler"]["pods"]
    assert "delete" in granted["instance-watch"]["pods"]
    assert "delete" in granted["admin-instances"]["pods"]
    assert "delete" in granted["admin-requests"]["pods"]


def test_accounts_without_a_role_mount_no_token():
    bound = set(rbac_rules())

    for (_, name), account in service_accounts().items():
        if name not in bound:
            assert account.get("automountServiceAccountToken") is False, name


# --- migration Job -----------------------------------------------------------


def test_migrate_job_runs_the_migrations():
    (job,) = documents("Job")
    spec = job["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]

    assert container["command"] == ["python", "-m", "shared.migrate"]
    assert container["image"] == "modelhub/functions:latest"
    assert spec["backoffLimit"] >= 1
    assert spec["ttlSecondsAfterFinished"] > 0
    assert pod["restartPolicy"] == "Never"
    assert container["envFrom"] == [{"configMapRef": {"name": CONFIG_NAME}}]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]}
    assert refs == dict.fromkeys(SECRET_KEYS, SECRET_NAME)


# --- container builds --------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str, str | None]]:
    """Return (instruction, arguments, heredoc body) for each instruction."""
    lines = path.read_text(encoding="utf-8").splitlines()
    instructions = []
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\") and index < len(lines):
            line = line[:-1] + " " + lines[index].strip()
            index += 1
        keyword, _, arguments = line.strip().partition(" ")
        body = None
        heredoc = re.search(r'<<-?"?(\w+)"?', arguments)
        if heredoc:
            end = lines.index(heredoc.group(1), index)
            body = "\n".join(lines[index:end]) + "\n"
            index = end + 1
        instructions.append((keyword.upper(), arguments, body))
    return instructions


def run_function_script() -> str:
    for keyword, arguments, body in dockerfile_instructions(ROOT / "Dockerfile"):
        if keyword == "COPY" and body is not None and arguments.endswith(RUN_SCRIPT):
            return body
    pytest.fail(f"the Dockerfile writes no {RUN_SCRIPT}")


def dockerfile_target_map() -> dict[str, str]:
    pattern = re.compile(r"^\s*(\w+)\)\s*target=(\w+)\s*;;\s*$", re.MULTILINE)
    return dict(pattern.findall(run_function_script()))


def test_dockerfile_maps_every_function():
    assert dockerfile_target_map() == function_targets()


def test_dockerfile_entrypoint_runs_the_script():
    instructions = dockerfile_instructions(ROOT / "Dockerfile")
    entrypoints = [args for keyword, args, _ in instructions if keyword == "ENTRYPOINT"]

    assert entrypoints == [f'["{RUN_SCRIPT}"]']


@pytest.fixture
def fake_framework(tmp_path):
    """Put a functions-framework on PATH that prints its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "functions-framework"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    script = tmp_path / "run-function"
    script.write_text(run_function_script())
    script.chmod(0o755)
    return script, bin_dir


def run_script(script: Path, bin_dir: Path, function: str | None):
    env = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin"}
    if function is not None:
        env["FUNCTION"] = function
    return subprocess.run(
        [str(SHELL), str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


@pytest.mark.skipif(SHELL is None, reason="no POSIX shell")
def test_run_function_starts_each_target(fake_framework):
    script, bin_dir = fake_framework

    for folder, target in function_targets().items():
        result = run_script(script, bin_dir, folder)

        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [
            "--target",
            target,
            "--source",
            f"functions/{folder}/main.py",
            "--port",
            "8080",
        ]


@pytest.mark.skipif(SHELL is None, reason="no POSIX shell")
@pytest.mark.parametrize("function", [None, "", "nope", "../auth"])
def test_run_function_rejects_unknown_folder(fake_framework, function):
    script, bin_dir = fake_framework

    result = run_script(script, bin_dir, function)

    assert result.returncode == 64
    assert "is not a function folder" in result.stderr
    assert result.stdout == ""


def test_dockerfile_installs_project_dependencies():
    (command,) = [
        args
        for keyword, args, _ in dockerfile_instructions(ROOT / "Dockerfile")
        if keyword == "RUN" and "tomllib" in args
    ]
    code = re.fullmatch(r"python -c '(.+)' > requirements\.txt", command).group(1)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

    printed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.splitlines()

    assert printed == pyproject["project"]["dependencies"]


def shared_imports(module_path: Path) -> tuple[set[str], set[str]]:
    """Return (shared modules, other top-level modules) that a module imports."""
    tree = ast.parse(module_path.read_text(encoding="utf-8"))
    shared, others = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            (shared if top == "shared" else others).add(
                name if top == "shared" else top
            )
    return shared, others


def test_agent_image_has_agent_imports():
    (copy,) = [
        args
        for keyword, args, _ in dockerfile_instructions(ROOT / "Dockerfile.agent")
        if keyword == "COPY"
    ]
    *sources, _ = copy.split()
    copied = {f"shared.{Path(s).stem}" for s in sources if Path(s).stem != "__init__"}
    assert "shared/__init__.py" in sources

    needed, third_party = set(), set()
    pending = ["shared.agent"]
    while pending:
        module = pending.pop()
        needed.add(module)
        path = ROOT / (module.replace(".", "/") + ".py")
        shared, others = shared_imports(path)
        third_party |= others
        pending += [m for m in shared if m not in needed]

    assert needed == copied
    assert third_party - set(sys.stdlib_module_names) - {"__future__"} == {"requests"}


def test_agent_image_pins_the_project_requests():
    installs = [
        args
        for keyword, args, _ in dockerfile_instructions(ROOT / "Dockerfile.agent")
        if keyword == "RUN" and "pip install" in args
    ]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (pin,) = [
        d for d in pyproject["project"]["dependencies"] if d.startswith("requests==")
    ]

    assert installs == [f"pip install --no-cache-dir {pin}"]


def test_dockerignore_keeps_copied_paths():
    patterns = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert "*" in patterns

    for dockerfile in ("Dockerfile", "Dockerfile.agent"):
        for keyword, arguments, body in dockerfile_instructions(ROOT / dockerfile):
            if keyword != "COPY" or body is not None or "--from=" in arguments:
                continue
            *sources, _ = arguments.split()
            for source in sources:
                top = source.split("/")[0]
                assert top in included, f"{dockerfile}: {source}"


def test_config_names_agent_image():
    assert config_data()["AGENT_IMAGE"] == "modelhub/agent:latest"
