"""infra/kubernetes/ grants exactly what the kubernetes backend calls.

Three sets must be equal: the Role's rules (parsed from the YAML), the backend's `RBAC` constant
(every request asserts its permission is in it), and the permissions of the requests the backend
actually sent to the contract fake (tests/k8s_fake.py) while doing everything it can do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.backends.kubernetes import RBAC, KubernetesBackend
from tests.k8s_fake import KubeFake
from tests.kubernetes.conftest import make_job

yaml = pytest.importorskip("yaml")

INFRA = Path(__file__).resolve().parents[2] / "infra" / "kubernetes"


def manifests() -> dict[str, dict[str, Any]]:
    """kind -> the one document of that kind in infra/kubernetes/*.yaml."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(INFRA.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            assert document["kind"] not in found, f"two {document['kind']} documents"
            found[document["kind"]] = document
    return found


def role_permissions(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_role_grants_exactly_the_backends_rbac() -> None:
    role = manifests()["Role"]
    assert role_permissions(role) == set(RBAC)
    assert all(set(rule) == {"apiGroups", "resources", "verbs"} for rule in role["rules"])


def test_the_manifests_fit_together() -> None:
    docs = manifests()
    rbac = {"Namespace", "ServiceAccount", "Role", "RoleBinding"}
    assert set(docs) == rbac | {"PersistentVolumeClaim", "Deployment", "Service"}
    namespace = docs["Namespace"]["metadata"]["name"]
    for kind in set(docs) - {"Namespace"}:
        assert docs[kind]["metadata"]["namespace"] == namespace
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    binding = docs["RoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": docs["Role"]["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": docs["ServiceAccount"]["metadata"]["name"],
            "namespace": namespace,
        }
    ]
    names = sorted(path.name for path in INFRA.glob("*.yaml"))
    assert names[0].startswith("00-namespace")  # kubectl apply -f dir/ goes in name order


async def test_the_backend_uses_exactly_that_set(
    fake: KubeFake, backend: KubernetesBackend
) -> None:
    job = make_job()
    ref = await backend.start(job)
    await backend.start(job)
    await backend.logs(ref)  # no pod yet: list pods, get the Job
    fake.run(ref.id)
    fake.pod_logs[next(iter(fake.pods))] = "hello\n"
    await backend.status(ref)
    assert await backend.logs(ref) == "hello\n"
    fake.fail(ref.id, exit_code=1)
    await backend.status(ref)  # failed: lists pods for the exit code
    assert await backend.find(job.id) == ref
    assert await backend.runs() == {}  # failed: not live
    await backend.stop(ref)

    assert set(fake.calls) == set(RBAC)
