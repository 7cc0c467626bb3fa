"""`onCapacity: reject` counts reservations: a job the dispatcher would leave queued because the
free slot is reserved for a scheduled meeting within its expected run is refused (429) instead
of queued. On EVERY store (memory, SQLite, Azure Table on Azurite, Firestore on its emulator, D1
on its SQLite stand-in); the backend (tests/fakes.py) and the clock are doubles."""

from __future__ import annotations

import pytest

from core.capacity import AtCapacity
from core.ports import JobStore
from tests.fakes import FakeBackend
from tests.scheduling.conftest import MakeScheduler
from tests.scheduling.test_reservations import scheduled, unscheduled


async def test_a_free_slot_reserved_within_the_run_refuses_a_reject_job(
    make_scheduler: MakeScheduler, store: JobStore, backend: FakeBackend
) -> None:
    scheduler = make_scheduler(max_concurrent_jobs=1, expected_run_seconds=3600)
    meeting, _ = await scheduler.submit("acme", scheduled(600))  # joins in 10 minutes
    with pytest.raises(AtCapacity) as refused:
        await scheduler.submit("acme", unscheduled(onCapacity="reject"))
    assert refused.value.status == 429 and refused.value.retry_after > 0
    assert "reserved for scheduled meetings" in refused.value.message
    assert [job.id for job in (await store.list_jobs("acme")).jobs] == [meeting.id]

    queued, created = await scheduler.submit("acme", unscheduled())  # onCapacity queue: waits
    assert created
    await scheduler.drain_once()
    assert queued.id not in backend.starts  # the dispatcher keeps the slot for the meeting


async def test_a_reservation_beyond_the_run_leaves_the_slot_to_a_reject_job(
    make_scheduler: MakeScheduler, backend: FakeBackend
) -> None:
    scheduler = make_scheduler(max_concurrent_jobs=1, expected_run_seconds=3600)
    await scheduler.submit("acme", scheduled(3 * 3600))  # its window is hours away
    job, created = await scheduler.submit("acme", unscheduled(onCapacity="reject"))
    assert created
    await scheduler.drain_once()
    assert job.id in backend.starts
