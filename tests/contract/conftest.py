"""The `store` fixture, one param per JobStore implementation, and `make_job`.

A new store joins the contract by adding its name to STORES and a branch to `_build`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from core.models import Job
from core.ports import JobStore
from core.stores.memory import MemoryStore
from core.stores.sqlite import SqliteStore

BASE = datetime(2025, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
STORES = ["memory", "sqlite"]

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


def _build(name: str, tmp_path: Path) -> JobStore:
    if name == "memory":
        return MemoryStore()
    if name == "sqlite":
        return SqliteStore(tmp_path / "db" / "jobs.db")
    raise ValueError(f"unknown store {name}")


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    built = _build(request.param, tmp_path)
    await built.open()
    await built.open()  # open is idempotent
    try:
        yield built
    finally:
        await built.close()


@pytest.fixture(name="make_job")
def make_job_fixture() -> MakeJob:
    return make_job
