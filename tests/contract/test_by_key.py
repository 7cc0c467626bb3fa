"""One job per external key on EVERY store (the contract suite's `store` fixture): concurrent
PUTs of one key through `Scheduler.put_by_key`, some through schedulers of their own (other
instances), create exactly one job, and the key's record names it. The store is wrapped so that
every call yields to the event loop, and the PUTs interleave between their reads and writes even
where a store's calls never wait.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from core.desired import EXTERNAL, record_key
from core.models import JobState
from core.ports import JobStore
from core.scheduler import Scheduler
from tests.fakes import FakeBackend
from tests.unit.conftest import T0, Clock, YieldingStore, settings, spec

KEY = "cal-1@example.com:2025-03-02T09:00:00Z"
PUTS = 12


class Ticking(Clock):
    """A clock a microsecond later at each reading: no two jobs are made at the same time."""

    def __call__(self) -> datetime:
        self.now += timedelta(microseconds=1)
        return self.now


def schedulers(store: JobStore) -> list[Scheduler]:
    """Four instances on one store, whose calls yield to the event loop (each its own way)."""
    clock, config = Ticking(), settings(overbooking="queue")
    return [
        Scheduler(YieldingStore(store, seed=n), FakeBackend(), config, clock=clock)
        for n in range(4)
    ]


async def test_concurrent_puts_of_one_key_create_one_job(store: JobStore) -> None:
    instances = schedulers(store)
    times = [T0 + timedelta(days=1, minutes=n) for n in range(PUTS)]  # each PUT its own time
    outcomes = await asyncio.gather(
        *(instances[n % 4].put_by_key("t1", KEY, spec(joinAt=when)) for n, when in enumerate(times))
    )

    assert sum(outcome.created for outcome in outcomes) == 1
    ids = {outcome.job.id for outcome in outcomes}
    assert len(ids) == 1
    record = await store.get_record(EXTERNAL, record_key("t1", KEY))
    assert record is not None and record.data["jobId"] in ids
    page = await store.list_jobs("t1")
    assert [job.id for job in page.jobs] == list(ids)
    job = page.jobs[0]
    assert job.status is JobState.QUEUED and job.externalKey == KEY
    assert job.joinAt in times


async def test_concurrent_puts_after_the_job_ended_create_one_new_job(store: JobStore) -> None:
    instances = schedulers(store)
    first = await instances[0].put_by_key("t1", KEY, spec(joinAt=T0 + timedelta(days=1)))
    await instances[0].put_by_key("t1", KEY, None, cancelled=True)
    moved = spec(joinAt=T0 + timedelta(days=2))
    outcomes = await asyncio.gather(
        *(instances[n % 4].put_by_key("t1", KEY, moved) for n in range(PUTS))
    )

    assert sum(outcome.created for outcome in outcomes) == 1
    ids = {outcome.job.id for outcome in outcomes}
    assert len(ids) == 1 and first.job.id not in ids
    jobs = {job.id: job.status for job in (await store.list_jobs("t1")).jobs}
    assert jobs == {first.job.id: JobState.CANCELLED, ids.pop(): JobState.QUEUED}
