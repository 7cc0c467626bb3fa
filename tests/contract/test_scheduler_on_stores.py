"""The scheduler's exactly-once and cap guarantees on EVERY store (the contract suite's `store`
fixture: memory, sqlite, azure_table on Azurite, firestore on its emulator, d1 on its stand-in),
with the backend double of tests/fakes.py counting every start."""

from __future__ import annotations

import asyncio

from core.models import JobState
from core.ports import JobStore
from core.scheduler import Scheduler
from tests.unit.conftest import Clock, at, settings
from tests.unit.test_scheduler_concurrency import (
    CAP,
    JOBS,
    CountingBackend,
    assert_exactly_once_under_cap,
    race,
    submit_all,
)

DISPATCHERS = 8


async def test_dispatchers_start_every_job_exactly_once_under_the_cap(store: JobStore) -> None:
    clock = Clock()
    backend = CountingBackend(start_delay=0.01)
    config = settings(max_concurrent_jobs=CAP)
    schedulers = [
        Scheduler(store, backend, config, owner=f"dispatcher-{n}", clock=clock)
        for n in range(DISPATCHERS)
    ]
    jobs = await submit_all(schedulers[0], clock)

    await race(schedulers, [store], backend, clock)

    assert_exactly_once_under_cap(backend, jobs)
    for job in jobs:
        stored = await store.get(job.id)
        assert stored is not None and stored.status is JobState.COMPLETED
        assert stored.attempts == 1 and stored.exitCode == 0
    assert await store.due(at(1000), 10) == []
    assert await store.active() == []


async def test_dispatchers_whose_leases_ran_out_still_start_each_job_once(
    store: JobStore,
) -> None:
    """Every dispatcher drains after the previous one's dispatch lease expired, so all claim at
    once: the per-job compare-and-set alone must keep starts unique."""
    clock = Clock()
    backend = CountingBackend(start_delay=0.01)
    config = settings(max_concurrent_jobs=JOBS, dispatch_lease_seconds=1)
    schedulers = [
        Scheduler(store, backend, config, owner=f"dispatcher-{n}", clock=clock)
        for n in range(DISPATCHERS)
    ]
    jobs = await submit_all(schedulers[0], clock)

    await asyncio.gather(*(s.drain_once(at(10 + 2 * n)) for n, s in enumerate(schedulers)))

    assert max(backend.calls.values()) == 1
    assert set(backend.starts) == {job.id for job in jobs}
    assert (await store.counts())[JobState.RUNNING] == JOBS
