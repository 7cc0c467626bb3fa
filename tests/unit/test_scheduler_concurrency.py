"""Many dispatchers on one store: every job starts exactly once, and the cap always holds.

The runs interleave for real (the backend's start sleeps a little, SQLite calls run in threads,
and `YieldingStore` hands control back to the loop around every store call), but scheduling
time is explicit: every round drains at a fixed `now`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from core.models import ExecutionRef, Job, JobState
from core.ports import JobStore
from core.scheduler import Scheduler
from core.stores.sqlite import SqliteStore
from tests.fakes import FakeBackend
from tests.unit.conftest import Clock, at, settings, spec

JOBS = 50
CAP = 5
DISPATCHERS = 10
MAX_ROUNDS = 60


class CountingBackend(FakeBackend):
    """Counts every call to start (FakeBackend's `starts` cannot exceed one, since a second start
    adopts the run named after the job) and remembers the most runs running at any moment."""

    def __init__(self, start_delay: float = 0.0) -> None:
        super().__init__(start_delay)
        self.calls: Counter[str] = Counter()
        self.max_running = 0

    def running(self) -> list[str]:
        return [job_id for job_id, run in self.executions.items() if run.phase == "running"]

    async def start(self, job: Job) -> ExecutionRef:
        self.calls[job.id] += 1
        ref = await super().start(job)  # a run only ever appears here
        self.max_running = max(self.max_running, len(self.running()))
        return ref


async def submit_all(scheduler: Scheduler, clock: Clock) -> list[Job]:
    jobs = []
    for n in range(JOBS):
        clock.at(n / 100)
        tenant = f"tenant-{n % 3}"
        jobs.append((await scheduler.submit(tenant, spec(priority=n % 4)))[0])
    return jobs


async def race(
    schedulers: list[Scheduler],
    stores: list[JobStore],
    backend: CountingBackend,
    clock: Clock,
) -> None:
    """Drain with every scheduler at once, round after round, finishing some runs in between,
    until every job is completed."""
    store = stores[0]
    for round_ in range(MAX_ROUNDS):
        now = clock.at(10 + round_)
        reports = await asyncio.gather(*(s.drain_once(now) for s in schedulers))
        assert sum(r.recovered + r.retried for r in reports) == 0
        for each in stores:
            assert len(await each.active()) <= CAP
        assert len(backend.running()) <= CAP
        # finish every other running run (and all of them now and then)
        for index, job_id in enumerate(sorted(backend.running())):
            if index % 2 == 0 or round_ % 3 == 2:
                backend.finish(job_id, 0)
        counts = await store.counts()
        if counts[JobState.COMPLETED] == JOBS:
            return
    pytest.fail(f"not all jobs completed after {MAX_ROUNDS} rounds: {await store.counts()}")


def assert_exactly_once_under_cap(backend: CountingBackend, jobs: list[Job]) -> None:
    assert set(backend.starts) == {job.id for job in jobs}
    assert max(backend.starts.values()) == 1
    assert max(backend.calls.values()) == 1  # not even an adopting second start
    assert sum(backend.starts.values()) == JOBS
    assert 1 < backend.max_running <= CAP


async def test_ten_dispatchers_start_every_job_exactly_once_under_the_cap(
    race_store: JobStore,
) -> None:
    clock = Clock()
    backend = CountingBackend(start_delay=0.01)
    config = settings(max_concurrent_jobs=CAP)
    schedulers = [
        Scheduler(race_store, backend, config, owner=f"dispatcher-{n}", clock=clock)
        for n in range(DISPATCHERS)
    ]
    jobs = await submit_all(schedulers[0], clock)

    await race(schedulers, [race_store], backend, clock)

    assert_exactly_once_under_cap(backend, jobs)
    for job in jobs:
        stored = await race_store.get(job.id)
        assert stored is not None and stored.status is JobState.COMPLETED
        assert stored.attempts == 1 and stored.exitCode == 0


async def test_two_sqlite_connections_race_exactly_once_under_the_cap(tmp_path: Path) -> None:
    """Two stores on one file, as two processes would have, with dispatchers on each."""
    stores = [SqliteStore(tmp_path / "shared.db"), SqliteStore(tmp_path / "shared.db")]
    for store in stores:
        await store.open()
    try:
        clock = Clock()
        backend = CountingBackend(start_delay=0.01)
        config = settings(max_concurrent_jobs=CAP)
        schedulers = [
            Scheduler(stores[n % 2], backend, config, owner=f"process-{n % 2}-{n}", clock=clock)
            for n in range(6)
        ]
        jobs = await submit_all(schedulers[1], clock)

        await race(schedulers, stores, backend, clock)

        assert_exactly_once_under_cap(backend, jobs)
        for job in jobs:
            seen = [await store.get(job.id) for store in stores]
            assert all(s is not None and s.status is JobState.COMPLETED for s in seen)
    finally:
        for store in stores:
            await store.close()


async def test_dispatchers_whose_leases_ran_out_still_start_each_job_once(
    race_store: JobStore,
) -> None:
    """Each dispatcher drains at a time when the previous one's dispatch lease has expired, so
    they all claim at once: the per-job compare-and-set alone must keep starts unique."""
    clock = Clock()
    backend = CountingBackend(start_delay=0.01)
    config = settings(max_concurrent_jobs=JOBS, dispatch_lease_seconds=1)
    schedulers = [
        Scheduler(race_store, backend, config, owner=f"dispatcher-{n}", clock=clock)
        for n in range(DISPATCHERS)
    ]
    jobs = await submit_all(schedulers[0], clock)

    await asyncio.gather(*(s.drain_once(at(10 + 2 * n)) for n, s in enumerate(schedulers)))

    assert max(backend.starts.values()) == 1
    assert max(backend.calls.values()) == 1
    assert set(backend.starts) == {job.id for job in jobs}
    assert (await race_store.counts())[JobState.RUNNING] == JOBS


async def test_cancels_racing_dispatchers_leave_no_run_behind(race_store: JobStore) -> None:
    """Cancel every job while ten dispatchers start them: each ends cancelled, and any run that
    was started for it is stopped."""
    clock = Clock()
    backend = CountingBackend(start_delay=0.01)
    config = settings(max_concurrent_jobs=CAP)
    schedulers = [
        Scheduler(race_store, backend, config, owner=f"dispatcher-{n}", clock=clock)
        for n in range(DISPATCHERS)
    ]
    jobs = await submit_all(schedulers[0], clock)

    async def cancel_all() -> None:
        for job in jobs:
            await asyncio.sleep(0.001)
            await schedulers[0].cancel(job.tenant, job.id)

    for round_ in range(3):
        now = clock.at(10 + round_)
        await asyncio.gather(
            cancel_all() if round_ == 0 else asyncio.sleep(0),
            *(s.drain_once(now) for s in schedulers),
        )

    assert (await race_store.counts())[JobState.CANCELLED] == JOBS
    assert backend.running() == []
    assert max(backend.calls.values(), default=0) <= 1
    assert set(backend.starts) <= set(backend.stopped)
