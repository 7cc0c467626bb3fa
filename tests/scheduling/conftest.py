"""The `store` fixture of the scheduling tests: every JobStore, built as the contract suite builds
them (tests/contract/conftest.py): memory, sqlite, azure_table on Azurite, firestore on its
emulator, d1 on its stand-in (a real SQLite behind the binding's interface). The backend is the
test double of tests/fakes.py and the clock an explicit one (tests/unit/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from core.ports import JobStore
from core.scheduler import Scheduler
from tests.contract.conftest import STORES, every_store
from tests.fakes import FakeBackend
from tests.unit.conftest import Clock, backend, clock, settings

MakeScheduler = Callable[..., Scheduler]


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    async with every_store(request, tmp_path) as built:
        yield built


@pytest.fixture
def make_scheduler(store: JobStore, backend: FakeBackend, clock: Clock) -> MakeScheduler:
    """A scheduler on the test's store, backend and clock; keyword arguments are Settings.
    Overbooked windows are refused unless a test says `overbooking="queue"` (the default)."""

    def make(**overrides: Any) -> Scheduler:
        config = settings(**{"overbooking": "reject", **overrides})
        return Scheduler(store, backend, config, owner="main", clock=clock)

    return make


__all__ = ["backend", "clock"]  # the unit tests' fixtures, shared
