"""The `store` fixture, one param per JobStore implementation, and `make_job`.

A new store joins the contract by adding its name to STORES and a branch to `_build`. The
azure_table store runs on a private Azurite (tests/azurite_env.py), started once per session;
the firestore store on a private Firestore emulator (tests/gcloud_env.py), likewise; the
postgres store on a private PostgreSQL server (tests/postgres_env.py), each store in a fresh
schema of its own.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from core.models import Job
from core.ports import JobStore
from core.stores.azure_table import AzureTableStore
from core.stores.d1 import D1Store
from core.stores.firestore import FirestoreStore
from core.stores.memory import MemoryStore
from core.stores.postgres import PostgresStore
from core.stores.sqlite import SqliteStore
from tests.azurite_env import AzuriteEnv
from tests.d1_fake import D1Database
from tests.gcloud_env import FirestoreEmulator
from tests.postgres_env import PostgresEnv

BASE = datetime(2025, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
STORES = ["memory", "sqlite", "azure_table", "firestore", "d1", "postgres"]

MakeJob = Callable[..., Job]


def make_job(**overrides: Any) -> Job:
    """A queued job of tenant t1 created at BASE; `offset` (seconds) shifts all its timestamps."""
    offset = timedelta(seconds=overrides.pop("offset", 0))
    fields: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "tenant": "t1",
        "meetingUrl": "https://meet.example.com/abc-defg-hij",
        "createdAt": BASE + offset,
        "updatedAt": BASE + offset,
        "notBefore": BASE + offset,
    }
    fields.update(overrides)
    return Job(**fields)


def fresh_table() -> str:
    """A table name no other test uses, so tests on one Azurite never see each other's rows."""
    return "t" + uuid.uuid4().hex[:12]


def fresh_collection() -> str:
    """A collection no other test uses, so tests on one emulator never see each other's jobs."""
    return "c" + uuid.uuid4().hex[:12]


def _build(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> JobStore:
    if name == "memory":
        return MemoryStore()
    if name == "sqlite":
        return SqliteStore(tmp_path / "db" / "jobs.db")
    if name == "azure_table":
        env: AzuriteEnv = request.getfixturevalue("azurite")
        return AzureTableStore(fresh_table(), connection_string=env.connection_string)
    if name == "firestore":
        emulator: FirestoreEmulator = request.getfixturevalue("firestore_emulator")
        return FirestoreStore(
            emulator.project, collection=fresh_collection(), emulator_host=emulator.host
        )
    if name == "d1":
        return D1Store(D1Database(tmp_path / "d1.db"))
    if name == "postgres":
        server: PostgresEnv = request.getfixturevalue("postgres")
        return PostgresStore(server.fresh_url(), migrate=True)
    raise ValueError(f"unknown store {name}")


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    async with every_store(request, tmp_path) as built:
        await built.open()  # open is idempotent
        yield built


@contextlib.asynccontextmanager
async def every_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    """The store `request.param` names (one of STORES), open for the block: what a `store`
    fixture parametrised over STORES yields."""
    built = _build(request.param, request, tmp_path)
    await built.open()
    try:
        yield built
    finally:
        await built.close()


@pytest.fixture(name="make_job")
def make_job_fixture() -> MakeJob:
    return make_job
