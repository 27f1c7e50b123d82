"""deploy/kubernetes offline: the manifests validate against Kubernetes' schemas, and say what the
node needs.

- `kubernetes-validate --strict` (installed with the dev dependencies; no cluster, no network)
  checks every manifest against the API schemas, unknown fields included. It does not know the
  Kustomization kind (it warns and passes), so kustomization.yaml is checked here instead.
- The node's environment is built the way the kubelet builds it (downward API, Secret keys,
  `$(VAR)` expansion) and parsed by the node's own `Config.from_args`, so a renamed option, a bad
  address or a seed outside the StatefulSet fails here, not in a cluster.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.config import OPTIONS, Config, env_var

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = DEPLOY / "kustomization.yaml"
MANIFESTS = sorted(p for p in DEPLOY.glob("*.yaml") if p != KUSTOMIZATION)
VALIDATOR = Path(sys.executable).parent / "kubernetes-validate"
# The oldest Kubernetes still widely run, and the newest the installed schemas know.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
POD_IP = "10.1.2.3"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


@pytest.fixture(scope="module")
def resources() -> dict[tuple[str, str], dict[str, Any]]:
    """Every resource of the kustomization, by (kind, name)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in yaml.safe_load(KUSTOMIZATION.read_text())["resources"]:
        for doc in documents(DEPLOY / entry):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in out, f"{key} defined twice"
            out[key] = doc
    return out


def one(resources: dict[tuple[str, str], dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for (k, _), doc in resources.items() if k == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    doc: dict[str, Any] = found[0]
    return doc


@pytest.fixture(scope="module")
def statefulset(resources: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return one(resources, "StatefulSet")


@pytest.fixture(scope="module")
def container(statefulset: dict[str, Any]) -> dict[str, Any]:
    containers = statefulset["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    node: dict[str, Any] = containers[0]
    return node


@pytest.fixture(scope="module")
def secret_values(resources: dict[tuple[str, str], dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Each Secret's keys and values, by name."""
    return {
        name: {**doc.get("data", {}), **doc.get("stringData", {})}
        for (kind, name), doc in resources.items()
        if kind == "Secret"
    }


def pod_env(
    container: dict[str, Any], pod_name: str, secrets: dict[str, dict[str, str]]
) -> dict[str, str]:
    """The container's environment as the kubelet makes it: downward API, Secret keys, and
    `$(VAR)` replaced by a variable defined earlier in the list (else left as it is)."""
    fields = {"metadata.name": pod_name, "status.podIP": POD_IP}
    env: dict[str, str] = {}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), var["value"]
            )
        elif "fieldRef" in var["valueFrom"]:
            env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets[ref["name"]][ref["key"]]
    return env


def labels_select(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_strictly(version: str) -> None:
    assert VALIDATOR.exists(), f"{VALIDATOR} missing: the dev dependencies (make install)"
    assert MANIFESTS
    run = subprocess.run(
        [str(VALIDATOR), "--strict", "-k", version, *map(str, MANIFESTS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    # An unknown kind only warns (and exits 0): every resource must have been checked.
    passed = output.count(" passed for resource ")
    assert passed == sum(len(documents(p)) for p in MANIFESTS), output


def test_the_validator_rejects_an_unknown_field(tmp_path: Path) -> None:
    """So that the test above cannot pass by validating nothing."""
    doc = documents(DEPLOY / "statefulset.yaml")[0]
    doc["spec"]["template"]["spec"]["containers"][0]["bogus"] = 1
    broken = tmp_path / "statefulset.yaml"
    broken.write_text(yaml.safe_dump(doc))
    run = subprocess.run(
        [str(VALIDATOR), "--strict", "-k", KUBERNETES_VERSIONS[0], str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    assert "bogus" in run.stdout + run.stderr


def test_the_kustomization_lists_every_manifest_and_names_the_image(
    container: dict[str, Any],
) -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    assert sorted(DEPLOY / entry for entry in listed) == MANIFESTS
    names = [image["name"] for image in kustomization["images"]]
    assert container["image"].split(":")[0] in names
    for entry in kustomization.get("labels", []):
        assert entry.get("includeSelectors") is False  # selectors are immutable once applied


# --- the node's configuration ----------------------------------------------------------------


def test_every_kv_variable_is_an_option(container: dict[str, Any]) -> None:
    options = {env_var(f.name) for f in OPTIONS}
    used = [var["name"] for var in container["env"] if var["name"].startswith("KV_")]
    assert len(used) == len(set(used))
    assert set(used) <= options, set(used) - options


def test_the_secret_keys_the_pods_read_exist(
    container: dict[str, Any], secret_values: dict[str, dict[str, str]]
) -> None:
    refs = [
        var["valueFrom"]["secretKeyRef"]
        for var in container["env"]
        if "secretKeyRef" in var.get("valueFrom", {})
    ]
    assert {(r["name"], r["key"]) for r in refs} == {
        ("kvmesh-secrets", "cluster-key"),
        ("kvmesh-secrets", "admin-token"),
    }
    for ref in refs:
        assert not ref.get("optional"), ref
        assert secret_values[ref["name"]][ref["key"]], ref


def node_config(
    statefulset: dict[str, Any],
    container: dict[str, Any],
    secrets: dict[str, dict[str, str]],
    ordinal: int,
) -> Config:
    """The Config node.py builds in pod `ordinal` (the image runs it with no arguments)."""
    name = f"{statefulset['metadata']['name']}-{ordinal}"
    return Config.from_args(container.get("args", []), env=pod_env(container, name, secrets))


def test_each_pod_gets_a_valid_node_config(
    statefulset: dict[str, Any],
    container: dict[str, Any],
    secret_values: dict[str, dict[str, str]],
) -> None:
    for ordinal in range(statefulset["spec"]["replicas"]):
        config = node_config(statefulset, container, secret_values, ordinal)
        assert config.name == f"kvmesh-{ordinal}"
        assert config.host == "0.0.0.0"
        assert config.advertise == f"{POD_IP}:{config.port}"
        assert config.cluster_key
        assert config.admin_token


def test_the_seeds_are_pods_of_the_statefulset_through_the_headless_service(
    resources: dict[tuple[str, str], dict[str, Any]],
    statefulset: dict[str, Any],
    container: dict[str, Any],
    secret_values: dict[str, dict[str, str]],
) -> None:
    spec = statefulset["spec"]
    headless = resources[("Service", spec["serviceName"])]["spec"]
    config = node_config(statefulset, container, secret_values, 0)
    pattern = re.compile(
        rf"{re.escape(statefulset['metadata']['name'])}-(\d+)"
        rf"\.{re.escape(statefulset['spec']['serviceName'])}:(\d+)"
    )
    ordinals = set()
    for seed in config.join:
        match = pattern.fullmatch(seed)
        assert match, f"{seed} does not name a pod through {spec['serviceName']}"
        assert int(match[2]) == config.port
        assert int(match[1]) < spec["replicas"]
        ordinals.add(int(match[1]))
    # kvmesh-0 skips itself: it needs another seed to rejoin through after a restart.
    assert {0, 1} <= ordinals
    assert (config.port, "TCP") in {(p["port"], p["protocol"]) for p in headless["ports"]}


# --- Services, ports, probes ------------------------------------------------------------------


def test_the_headless_service_publishes_joining_pods_with_http_and_gossip(
    resources: dict[tuple[str, str], dict[str, Any]], statefulset: dict[str, Any]
) -> None:
    spec = resources[("Service", statefulset["spec"]["serviceName"])]["spec"]
    assert spec["clusterIP"] == "None"
    assert spec["publishNotReadyAddresses"] is True
    assert {(p["port"], p["protocol"]) for p in spec["ports"]} >= {(8080, "TCP"), (8080, "UDP")}
    assert labels_select(spec["selector"], statefulset["spec"]["template"]["metadata"]["labels"])


def test_the_container_declares_the_ports_the_node_listens_on(
    statefulset: dict[str, Any],
    container: dict[str, Any],
    secret_values: dict[str, dict[str, str]],
) -> None:
    config = node_config(statefulset, container, secret_values, 0)
    declared = {(p["containerPort"], p["protocol"]): p["name"] for p in container["ports"]}
    assert set(declared) == {
        (config.port, "TCP"),
        (config.port, "UDP"),  # gossip
        (config.tcp_port, "TCP"),
        (config.resp_port, "TCP"),
    }
    assert declared[(config.port, "TCP")] == "http"


def test_every_service_and_probe_port_names_a_container_port(
    resources: dict[tuple[str, str], dict[str, Any]],
    statefulset: dict[str, Any],
    container: dict[str, Any],
) -> None:
    ports = {p["name"]: p for p in container["ports"]}
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    services = [doc for (kind, _), doc in resources.items() if kind == "Service"]
    for service in services:
        assert labels_select(service["spec"]["selector"], labels)
        for port in service["spec"]["ports"]:
            target = ports[port["targetPort"]]
            assert (target["containerPort"], target["protocol"]) == (port["port"], port["protocol"])
    client = resources[("Service", "kvmesh")]["spec"]
    assert {p["name"] for p in client["ports"]} == {"http", "line", "resp"}
    assert "publishNotReadyAddresses" not in client  # clients reach ready nodes only
    pdb = one(resources, "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1
    assert labels_select(pdb["selector"]["matchLabels"], labels)
    assert labels_select(statefulset["spec"]["selector"]["matchLabels"], labels)


def test_readiness_is_health_and_liveness_does_not_restart_a_syncing_node(
    container: dict[str, Any],
) -> None:
    ready = container["readinessProbe"]["httpGet"]
    assert (ready["path"], ready["port"]) == ("/health", "http")
    # /health answers 503 during a snapshot stream: liveness must not be that check.
    live = container["livenessProbe"]
    assert "httpGet" not in live
    assert live["tcpSocket"]["port"] == "http"


def test_the_pre_stop_hook_posts_a_leave_with_the_admin_token(
    monkeypatch: pytest.MonkeyPatch, container: dict[str, Any]
) -> None:
    """Run the hook's Python here, with urlopen and sleep replaced."""
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["python", "-c"]
    sent: list[urllib.request.Request] = []

    def urlopen(request: urllib.request.Request, timeout: float) -> None:
        sent.append(request)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    for token, header in (("s3cret", "Bearer s3cret"), (None, None)):
        sent.clear()
        if token is None:
            monkeypatch.delenv("KV_ADMIN_TOKEN", raising=False)
        else:
            monkeypatch.setenv("KV_ADMIN_TOKEN", token)
        exec(compile(command[2], "preStop", "exec"), {})
        assert len(sent) == 1
        request = sent[0]
        assert request.get_method() == "POST"
        assert request.full_url == "http://127.0.0.1:8080/cluster/leave"
        assert request.get_header("Authorization") == header


def test_the_container_runs_the_image_command_as_a_non_root_user(
    statefulset: dict[str, Any], container: dict[str, Any]
) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (.+)$", dockerfile, re.MULTILINE)
    assert cmd is not None
    assert json.loads(cmd[1]) == ["python", "node.py"]
    assert "command" not in container
    assert "args" not in container
    user = re.search(r"^USER (\S+)$", dockerfile, re.MULTILINE)
    assert user is not None
    assert user[1] not in ("root", "0")
    pod_security = statefulset["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] != 0


def test_no_variable_is_used_before_it_is_defined(container: dict[str, Any]) -> None:
    """The kubelet expands `$(VAR)` only for variables listed earlier."""
    seen: set[str] = set()
    for var in container["env"]:
        for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", var.get("value", "")):
            assert ref in seen, f"{var['name']} uses $({ref}) before it is defined"
        seen.add(var["name"])
