"""infra/kubernetes/postgres/: the scheduler on PostgreSQL, two replicas. Every manifest is valid
for the Kubernetes API (kubernetes-validate, strict, the oldest and newest supported releases, as
tests/deploy/test_kubernetes_manifests.py checks the SQLite variant's), and it fits the rest of
infra/kubernetes/ (the Service, the service account, the image), the app and the CLI.

`kubectl apply -f infra/kubernetes/` does not descend into the folder: the variant is applied
on purpose, in place of 40-data.yaml and 50-deployment.yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from core.cli import parser
from core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra" / "kubernetes"
VARIANT = INFRA / "postgres"
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def documents(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(folder.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def kind(name: str, folder: Path = VARIANT) -> dict[str, Any]:
    (doc,) = [d for _, d in documents(folder) if d["kind"] == name]
    return doc


def pod(folder: Path = VARIANT) -> dict[str, Any]:
    spec: dict[str, Any] = kind("Deployment", folder)["spec"]["template"]["spec"]
    return spec


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container["env"]}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("file", "doc"), documents(VARIANT), ids=lambda v: v if isinstance(v, str) else ""
)
def test_each_manifest_is_valid_kubernetes(file: str, doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_the_variant_holds_a_deployment_and_its_disruption_budget() -> None:
    kinds = sorted(doc["kind"] for _, doc in documents(VARIANT))
    assert kinds == ["Deployment", "PodDisruptionBudget"]
    namespace = kind("Namespace", INFRA)["metadata"]["name"]
    assert {doc["metadata"]["namespace"] for _, doc in documents(VARIANT)} == {namespace}


def test_two_replicas_rolled_one_at_a_time_with_no_volume_to_share() -> None:
    spec = kind("Deployment")["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    assert all("persistentVolumeClaim" not in volume for volume in pod()["volumes"])
    budget = kind("PodDisruptionBudget")["spec"]
    assert budget["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert 0 < budget["minAvailable"] < spec["replicas"]


def test_it_replaces_the_sqlite_deployment_under_the_service_and_the_role() -> None:
    """Same name, labels, service account and pod security as 50-deployment.yaml, so that the
    Service selects it and the RBAC applies; the same image and port."""
    ours, sqlite = kind("Deployment"), kind("Deployment", INFRA)
    assert ours["metadata"] == sqlite["metadata"]
    assert ours["spec"]["selector"] == sqlite["spec"]["selector"]
    assert ours["spec"]["template"]["metadata"] == sqlite["spec"]["template"]["metadata"]
    service = kind("Service", INFRA)["spec"]["selector"]
    assert service.items() <= ours["spec"]["template"]["metadata"]["labels"].items()
    assert pod()["serviceAccountName"] == kind("ServiceAccount", INFRA)["metadata"]["name"]
    sqlite_security = {k: v for k, v in pod(INFRA)["securityContext"].items() if k != "fsGroup"}
    assert pod()["securityContext"] == sqlite_security  # no volume to make writable
    (scheduler,) = pod()["containers"]
    (sqlite_scheduler,) = pod(INFRA)["containers"]
    for field in ("image", "args", "ports", "resources", "securityContext", "readinessProbe"):
        assert scheduler[field] == sqlite_scheduler[field], field


def test_the_database_url_comes_from_a_secret_and_the_app_accepts_the_env() -> None:
    (scheduler,) = pod()["containers"]
    env = env_of(scheduler)
    for name, secret in (("DATABASE_URL", "botsched-database"), ("SCHEDULER_API_KEYS", None)):
        reference = env[name]["valueFrom"]["secretKeyRef"]
        assert reference["key"] == name
        assert secret is None or reference["name"] == secret
    values = {name: e.get("value") for name, e in env.items()}
    values.update(
        DATABASE_URL="postgresql://u:pw@db:5432/botsched",
        SCHEDULER_API_KEYS="ck_live_4f9a2e8b7c1d:acme",
    )
    settings = Settings.from_env(values)
    assert (settings.platform, settings.store) == ("kubernetes", "postgres")
    assert settings.postgres_migrate == "off" and settings.database_url is not None


def test_the_init_container_migrates_with_the_same_image_and_database() -> None:
    """`botsched migrate` before the scheduler starts (which then runs no DDL): the CLI has the
    command, and it reads DATABASE_URL, from the same Secret."""
    (migrate,) = pod()["initContainers"]
    (scheduler,) = pod()["containers"]
    assert migrate["args"] == ["migrate"] and migrate["image"] == scheduler["image"]
    assert parser().parse_args(migrate["args"]).run.__name__ == "cmd_migrate"
    assert env_of(migrate)["DATABASE_URL"] == env_of(scheduler)["DATABASE_URL"]
    assert migrate["securityContext"] == scheduler["securityContext"]
    mounts = {m["mountPath"] for m in scheduler["volumeMounts"] + migrate["volumeMounts"]}
    volumes = {v["name"] for v in pod()["volumes"]}
    assert {m["name"] for m in scheduler["volumeMounts"] + migrate["volumeMounts"]} <= volumes
    assert mounts == {"/data", "/tmp"}


def test_a_database_outage_makes_a_pod_unready_not_restarted() -> None:
    """/health answers 503 while the store cannot be read: readiness takes the pod out of the
    Service; liveness only asks whether the server listens, so an outage restarts no pod."""
    (scheduler,) = pod()["containers"]
    assert scheduler["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert scheduler["livenessProbe"]["tcpSocket"] == {"port": "http"}


def test_kubectl_apply_of_the_folder_above_leaves_the_variant_out() -> None:
    """`kubectl apply -f infra/kubernetes/` (not recursive) reads only the files beside the
    folder: one scheduler Deployment, on SQLite."""
    deployments = [doc for _, doc in documents(INFRA) if doc["kind"] == "Deployment"]
    stores = [env_of(c)["SCHEDULER_STORE"]["value"] for c in pod(INFRA)["containers"]]
    assert len(deployments) == 1 and stores == ["sqlite"]
