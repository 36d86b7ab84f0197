"""deploy/kubernetes renders with `kubectl kustomize` (base and every overlay), and every object
it renders validates against a recent Kubernetes release's schemas (kubernetes-validate,
strict). Nothing is applied: no cluster is reachable from the test machines."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from trainyard.config.facility import parse_facility
from trainyard.config.server import parse_server_config

DEPLOY = Path(__file__).parents[2] / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.37"


def _render(folder: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with kustomize) is needed; `make test-deps` installs it"
    result = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: _render(name) for name in ("base", "overlays/ingress", "overlays/single")}


def _one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


@pytest.mark.parametrize("folder", ["base", "overlays/ingress", "overlays/single"])
def test_every_rendered_object_validates(rendered: dict, folder: str) -> None:
    for obj in rendered[folder]:
        assert kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True), obj["kind"]


def test_the_base_is_the_facility_server_and_what_its_trials_need(
    rendered: dict, tmp_path: Path
) -> None:
    base = rendered["base"]
    kinds = sorted(o["kind"] for o in base)
    assert kinds == sorted(
        ["Namespace", "PersistentVolumeClaim", "ServiceAccount", "ServiceAccount", "Role",
         "RoleBinding", "Deployment", "Service", "NetworkPolicy", "NetworkPolicy", "ConfigMap",
         "Secret"]
    )  # fmt: skip
    deployment = _one(base, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    assert server["command"] == ["trainyard", "server", "--config", "/etc/trainyard/server.yaml"]
    secrets = {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"]
        for e in server["env"]
        if "valueFrom" in e
    }
    generated = {o["metadata"]["name"] for o in base if o["kind"] == "Secret"}
    assert set(secrets.values()) == generated  # the generator's hashed names are wired in
    assert secrets == {"PGPASSWORD": "trainyard-database-" + secrets["PGPASSWORD"][19:]}
    config = _one(base, "ConfigMap")
    # The server file parses as `trainyard server` parses it in the mounted folder (both
    # files of the ConfigMap side by side), and the Deployment fits it.
    for name, text in config["data"].items():
        (tmp_path / name).write_text(text)
    server_file = parse_server_config(
        yaml.safe_load(config["data"]["server.yaml"]), base_dir=tmp_path
    )
    assert server_file.database_url.password is None  # PGPASSWORD, from the Secret
    assert server_file.facility == tmp_path / "facility.yaml"
    assert server["ports"][0]["containerPort"] == server_file.port
    for probe in ("readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"]["path"] == "/healthz"  # the Master's health route
    facility = parse_facility(yaml.safe_load(config["data"]["facility.yaml"]))
    assert (
        facility.pool("h100").kubernetes.volumes.data.claim
        == _one(base, "PersistentVolumeClaim")["metadata"]["name"]
    )
    binding = _one(base, "RoleBinding")
    assert (
        binding["subjects"][0]["name"]
        == deployment["spec"]["template"]["spec"]["serviceAccountName"]
    )


def test_overlays_add_an_ingress_or_run_one_replica(rendered: dict) -> None:
    ingress = _one(rendered["overlays/ingress"], "Ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == _one(rendered["base"], "Service")["metadata"]["name"]
    assert _one(rendered["overlays/single"], "Deployment")["spec"]["replicas"] == 1
