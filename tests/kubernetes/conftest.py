"""Fixtures for the kubernetes backend's tests: the contract fake (tests/k8s_fake.py) and a
backend wired to it through httpx.ASGITransport."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from core.backends.kube_auth import Cluster, StaticToken
from core.backends.kubernetes import KubeOptions, KubernetesBackend
from core.config import Settings
from core.models import Job
from tests.k8s_fake import KubeFake, require_spec

NAMESPACE = "bots"
TOKEN = "sa-token-9f8e7d6c5b4a"
SERVER = "https://kube.test:6443"

MakeBackend = Callable[..., KubernetesBackend]


@pytest.fixture
def fake() -> KubeFake:
    require_spec()
    return KubeFake(namespace=NAMESPACE)


@pytest.fixture
def settings() -> Settings:
    return Settings(
        platform="kubernetes",
        container_image="registry.test/meet-bot:1.2",
        default_cpu="1",
        default_memory="2Gi",
        stop_grace_seconds=7.5,
    )


@pytest.fixture
async def make_backend(fake: KubeFake, settings: Settings) -> AsyncIterator[MakeBackend]:
    backends: list[KubernetesBackend] = []

    def make(cluster: Cluster | None = None, **options: Any) -> KubernetesBackend:
        cluster = cluster or Cluster(server=SERVER, token=StaticToken(TOKEN))
        opts = KubeOptions(**{"namespace": NAMESPACE, **options})
        backend = KubernetesBackend(settings, cluster, opts, transport=fake.transport)
        backends.append(backend)
        return backend

    yield make
    for backend in backends:
        await backend.close()


@pytest.fixture
def backend(make_backend: MakeBackend) -> KubernetesBackend:
    return make_backend()


def make_job(**fields: Any) -> Job:
    now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    values: dict[str, Any] = {
        "id": "6f1c2a9e-0d3b-4c5e-8f7a-1b2c3d4e5f60",
        "tenant": "acme",
        "meetingUrl": "https://meet.example.com/abc-defg-hij",
        "botName": "Notes Bot",
        "createdAt": now,
        "updatedAt": now,
        "notBefore": now,
        **fields,
    }
    return Job(**values)
