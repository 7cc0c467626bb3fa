"""Fixtures for the scheduler tests: a store per implementation, an injected clock, helpers.

Scheduling logic never sleeps for real: every drain gets an explicit time from `Clock`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings
from core.models import Job, JobSpec, JobState
from core.ports import JobStore
from core.scheduler import Scheduler
from core.stores.d1 import D1Store
from core.stores.memory import MemoryStore
from core.stores.sqlite import SqliteStore
from tests.d1_fake import D1Database
from tests.fakes import FakeBackend

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
MEETING = "https://meet.example.com/abc-defg-hij"

# What the scheduler tests run with unless a test says otherwise.
TEST_SETTINGS: dict[str, Any] = {
    "max_concurrent_jobs": 2,
    "max_attempts": 3,
    "retry_base_seconds": 10.0,
    "retry_max_seconds": 60.0,
    "join_lead_seconds": 60.0,
    "claim_ttl_seconds": 120.0,
    "dispatch_lease_seconds": 30.0,
}


class Clock:
    """The scheduler's clock; tests move it explicitly."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def at(self, seconds: float) -> datetime:
        """Set the clock to T0 + `seconds` and return that time."""
        self.now = T0 + timedelta(seconds=seconds)
        return self.now


def spec(**fields: Any) -> JobSpec:
    return JobSpec(meetingUrl=MEETING, **fields)


def settings(**overrides: Any) -> Settings:
    return Settings(**{**TEST_SETTINGS, **overrides})


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def open_store(kind: str, tmp_path: Path) -> JobStore:
    store: JobStore
    if kind == "memory":
        store = MemoryStore()
    elif kind == "sqlite":
        store = SqliteStore(tmp_path / "jobs.db")
    elif kind == "d1":  # the D1 store over its stand-in binding (tests/d1_fake.py)
        store = D1Store(D1Database(tmp_path / "d1.db"))
    else:
        raise ValueError(kind)
    await store.open()
    return store


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    opened = await open_store(request.param, tmp_path)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


MakeScheduler = Callable[..., Scheduler]


@pytest.fixture
def make_scheduler(store: JobStore, backend: FakeBackend, clock: Clock) -> MakeScheduler:
    """A scheduler on the shared store, backend and clock; keyword arguments are Settings."""

    def make(owner: str | None = None, backend_: Any = None, **overrides: Any) -> Scheduler:
        return Scheduler(
            store, backend_ or backend, settings(**overrides), owner=owner, clock=clock
        )

    return make


@pytest.fixture
def scheduler(make_scheduler: MakeScheduler) -> Scheduler:
    return make_scheduler(owner="main")


async def status_of(store: JobStore, job: Job) -> JobState:
    stored = await store.get(job.id)
    assert stored is not None
    return stored.status


async def fresh(store: JobStore, job: Job) -> Job:
    stored = await store.get(job.id)
    assert stored is not None
    return stored


class GatedBackend(FakeBackend):
    """A backend whose start waits for the test to open the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()

    async def start(self, job: Job):  # type: ignore[no-untyped-def]
        self.entered.set()
        await self.gate.wait()
        return await super().start(job)


class YieldingStore:
    """A store wrapper that yields to the event loop before and after every call, so that
    concurrent dispatchers interleave between reads and writes even on the in-memory store."""

    def __init__(self, inner: JobStore, seed: int) -> None:
        self._inner = inner
        self._random = random.Random(seed)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            for _ in range(self._random.randint(0, 2)):
                await asyncio.sleep(0)
            result = await method(*args, **kwargs)
            for _ in range(self._random.randint(0, 2)):
                await asyncio.sleep(0)
            return result

        return call


@pytest.fixture(params=["memory", "memory-yielding", "d1-yielding", "sqlite"])
async def race_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    kind: str = request.param
    store = await open_store(kind.split("-")[0], tmp_path)
    try:
        yield YieldingStore(store, seed=7) if kind.endswith("yielding") else store  # type: ignore[misc]
    finally:
        await store.close()
