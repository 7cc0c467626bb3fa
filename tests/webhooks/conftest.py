"""The webhook delivery tests' fixtures: the contract suite's `store` (memory, sqlite, d1 on its
stand-in, azure_table on Azurite, firestore on its emulator) and a real receiver per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from core.ports import JobStore
from tests.contract.conftest import STORES, every_store
from tests.processes import free_port
from tests.webhooks.receiver import Receiver


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[JobStore]:
    async with every_store(request, tmp_path) as built:
        yield built


def new_receiver(tmp_path: Path, name: str) -> Receiver:
    """A receiver in this process on a free loopback port, logging to tmp_path/`name`.jsonl."""
    port = free_port()
    receiver = Receiver(port, tmp_path / f"{name}.secrets", tmp_path / f"{name}.jsonl")
    return receiver.start()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    started = new_receiver(tmp_path, "receiver")
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def other_receiver(tmp_path: Path) -> Iterator[Receiver]:
    """A second receiver, on a port of its own."""
    started = new_receiver(tmp_path, "other")
    try:
        yield started
    finally:
        started.stop()
