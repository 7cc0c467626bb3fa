"""A submit's first try takes its reservation slots from what its process has seen taken (the
hints of core/reservations.py) and reads no bucket; the store decides. On EVERY store (real
stores: memory, SQLite, Azure Table on Azurite, Firestore on its emulator, D1 on its SQLite
stand-in); the backend and the clock are the doubles of tests/fakes.py and tests/unit/conftest.py.

A process whose hints missed the submits of other processes is played by forgetting the hints
between submits: it then believes the window empty, as a second instance would."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from core.errors import Overbooked
from core.meetings import submit_warnings
from core.ports import JobStore
from core.records import Record
from core.reservations import KIND, store_state
from tests.scheduling.conftest import MakeScheduler
from tests.scheduling.test_reservations import reserved_by, scheduled


def forget_hints(store: JobStore) -> None:
    """As another instance: it has seen none of the slots taken so far."""
    state = store_state(store)
    state.taken.clear()
    state.full.clear()


def count_scans(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The prefixes of the reservation buckets `store` is asked to scan, from now on."""
    scanned: list[str] = []
    real = store.scan_records

    async def scan(kind: str, prefix: str, *args: Any, **kwargs: Any) -> Sequence[Record]:
        if kind == KIND:
            scanned.append(prefix)
        return await real(kind, prefix, *args, **kwargs)

    monkeypatch.setattr(store, "scan_records", scan)
    return scanned


async def test_submits_into_windows_with_free_slots_read_no_bucket(
    make_scheduler: MakeScheduler, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduler = make_scheduler(max_concurrent_jobs=3)
    scans = count_scans(store, monkeypatch)
    jobs = [(await scheduler.submit("acme", scheduled(3600)))[0] for _ in range(3)]
    assert scans == []  # three windows in the same buckets, no read of any
    slots = [sorted(key.rsplit(":", 1)[1] for key in await reserved_by(store, j)) for j in jobs]
    assert slots == [["0"] * 3, ["1"] * 3, ["2"] * 3]


async def test_stale_hints_cost_a_retry_and_take_the_slot_that_is_free(
    make_scheduler: MakeScheduler, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheduler = make_scheduler(max_concurrent_jobs=3)
    for _ in range(2):
        await scheduler.submit("acme", scheduled(3600))
    forget_hints(store)
    scans = count_scans(store, monkeypatch)
    third, created = await scheduler.submit("acme", scheduled(3600))
    assert created
    assert scans  # the first try wanted slot 0, taken: the second read the buckets
    assert {key.rsplit(":", 1)[1] for key in await reserved_by(store, third)} == {"2"}


async def test_stale_hints_never_overbook_a_full_window(
    make_scheduler: MakeScheduler, store: JobStore
) -> None:
    scheduler = make_scheduler(max_concurrent_jobs=2, overbooking="reject")
    for _ in range(2):
        await scheduler.submit("acme", scheduled(3600))
    forget_hints(store)
    with pytest.raises(Overbooked):
        await scheduler.submit("acme", scheduled(3600))
    assert len((await store.list_jobs("acme")).jobs) == 2
    slots = await store.scan_records(KIND, "res", 100)
    assert len(slots) == 2 * 3  # two jobs, three buckets each: no third holder anywhere


async def test_stale_hints_with_overbooking_queue_queue_the_job_holding_no_slot(
    make_scheduler: MakeScheduler, store: JobStore
) -> None:
    scheduler = make_scheduler(max_concurrent_jobs=2, overbooking="queue")
    for _ in range(2):
        await scheduler.submit("acme", scheduled(3600))
    forget_hints(store)
    third, created = await scheduler.submit("acme", scheduled(3600))
    assert created and await reserved_by(store, third) == []
    assert any("queued without a reserved slot" in text for text in submit_warnings(third.id))
