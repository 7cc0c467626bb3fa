"""infra/kubernetes/: every manifest is valid for the Kubernetes API, and they fit the image and
the app.

Each document is validated with kubernetes-validate (PyPI), which carries the official OpenAPI
schemas of each Kubernetes release, in strict mode (an unknown field is an error), for the oldest
and the newest release this repository supports. No cluster runs here: admission (quotas, the
StorageClass, pulling the image) is not proven.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from core.config import Settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra" / "kubernetes"
DOCKERFILE = ROOT / "Dockerfile"
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(INFRA.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def kind(name: str) -> dict[str, Any]:
    (doc,) = [d for _, d in documents() if d["kind"] == name]
    return doc


def scheduler_container() -> dict[str, Any]:
    (container,) = kind("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("file", "doc"), documents(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_each_manifest_is_valid_kubernetes(file: str, doc: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_refuses_a_wrong_manifest() -> None:
    deployment = kind("Deployment")
    wrong = {**deployment, "spec": {**deployment["spec"], "replica": 1}}
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(wrong, VERSIONS[-1], strict=True)


def test_one_scheduler_on_its_sqlite_volume() -> None:
    """SQLite has one writer: one replica, replaced with Recreate, the claim mounted at the data
    directory the app uses."""
    spec = kind("Deployment")["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    claim = kind("PersistentVolumeClaim")
    volumes = {v["name"]: v for v in pod["volumes"]}
    data = next(n for n, v in volumes.items() if "persistentVolumeClaim" in v)
    assert volumes[data]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    env = {e["name"]: e for e in scheduler_container()["env"]}
    mounts = {m["name"]: m["mountPath"] for m in scheduler_container()["volumeMounts"]}
    assert env["SCHEDULER_STORE"]["value"] == "sqlite"
    assert mounts[data] == env["SCHEDULER_DATA_DIR"]["value"]


def test_the_api_keys_come_from_a_secret_and_the_env_is_one_the_app_accepts() -> None:
    container = scheduler_container()
    keys = next(e for e in container["env"] if e["name"] == "SCHEDULER_API_KEYS")
    assert keys["valueFrom"]["secretKeyRef"] == {
        "name": "botsched-api-keys",
        "key": "SCHEDULER_API_KEYS",
    }
    env = {e["name"]: e.get("value") for e in container["env"]}
    env["SCHEDULER_API_KEYS"] = "ck_live_4f9a2e8b7c1d:acme"
    settings = Settings.from_env(env)
    assert (settings.platform, settings.store, settings.host) == ("kubernetes", "sqlite", "0.0.0.0")
    assert settings.api_keys  # bound to all addresses: the keys are required


def test_probes_resources_and_the_service_reach_the_apps_port() -> None:
    container = scheduler_container()
    (port,) = container["ports"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert port == {"name": "http", "containerPort": int(env["PORT"])}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    service = kind("Service")["spec"]
    assert (
        service["selector"].items()
        <= kind("Deployment")["spec"]["template"]["metadata"]["labels"].items()
    )
    assert service["ports"][0]["targetPort"] == "http"


def test_the_pod_runs_the_images_unprivileged_user() -> None:
    """runAsUser is the Dockerfile's USER; the root filesystem is read-only (only /data and /tmp
    are written) and no capability is kept."""
    dockerfile = DOCKERFILE.read_text()
    user = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    pod = kind("Deployment")["spec"]["template"]["spec"]
    assert user == [
        (str(pod["securityContext"]["runAsUser"]), str(pod["securityContext"]["runAsGroup"]))
    ]
    assert pod["securityContext"]["runAsNonRoot"] is True
    context = scheduler_container()["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"] for m in scheduler_container()["volumeMounts"]}
    assert mounts == {"/data", "/tmp"}
    assert re.search(r"^EXPOSE 8080$", dockerfile, re.M)
    assert "SCHEDULER_DATA_DIR=/data" in dockerfile
