"""Cancel in every state, and who may see a job."""

from __future__ import annotations

import asyncio

import pytest

from core.errors import JobFinished, NotFound
from core.models import JobState
from core.ports import JobStore
from core.scheduler import Scheduler
from tests.fakes import FakeBackend
from tests.unit.conftest import T0, Clock, GatedBackend, MakeScheduler, spec, status_of

# -- cancel ------------------------------------------------------------------------------------


async def test_cancel_queued_job_never_starts(
    scheduler: Scheduler, store: JobStore, backend: FakeBackend, clock: Clock
) -> None:
    job, _ = await scheduler.submit("acme", spec())
    cancelled = await scheduler.cancel("acme", job.id)
    assert cancelled.status is JobState.CANCELLED and cancelled.completedAt == T0
    await scheduler.drain_once(clock.at(10))
    assert backend.starts[job.id] == 0 and backend.stopped == []
    assert await status_of(store, job) is JobState.CANCELLED


async def test_cancel_running_job_stops_its_run(
    scheduler: Scheduler, store: JobStore, backend: FakeBackend, clock: Clock
) -> None:
    job, _ = await scheduler.submit("acme", spec())
    await scheduler.drain_once(clock.at(0))
    cancelled = await scheduler.cancel(None, job.id)
    assert cancelled.status is JobState.CANCELLED
    assert backend.stopped == [job.id]
    await scheduler.drain_once(clock.at(10))  # the stopped run's exit does not overwrite it
    assert await status_of(store, job) is JobState.CANCELLED


async def test_cancel_while_provisioning_stops_the_run_that_starts(
    make_scheduler: MakeScheduler, store: JobStore, clock: Clock
) -> None:
    gated = GatedBackend()
    scheduler = make_scheduler(backend_=gated)
    job, _ = await scheduler.submit("acme", spec())

    drain = asyncio.create_task(scheduler.drain_once(clock.at(0)))
    await asyncio.wait_for(gated.entered.wait(), 5)
    assert await status_of(store, job) is JobState.PROVISIONING
    # the dispatcher may be starting the run: the job holds its slot until that run is gone
    stopping = await scheduler.cancel("acme", job.id)
    assert stopping.status is JobState.STOPPING and stopping.outcome is JobState.CANCELLED
    gated.gate.set()
    report = await asyncio.wait_for(drain, 5)

    assert report.dispatched == 0
    assert gated.starts[job.id] == 1 and gated.stopped == [job.id]
    assert gated.executions[job.id].phase != "running"
    assert await status_of(store, job) is JobState.CANCELLED  # its dispatcher settled it
    await scheduler.drain_once(clock.at(500))
    assert await status_of(store, job) is JobState.CANCELLED
    assert gated.starts[job.id] == 1


@pytest.mark.parametrize("end", ["completed", "failed", "cancelled"])
async def test_cancel_a_finished_job_is_refused(
    scheduler: Scheduler, backend: FakeBackend, clock: Clock, end: str
) -> None:
    job, _ = await scheduler.submit("acme", spec())
    if end == "cancelled":
        await scheduler.cancel("acme", job.id)
    else:
        await scheduler.drain_once(clock.at(0))
        backend.finish(job.id, 0 if end == "completed" else 1)
        await scheduler.drain_once(clock.at(1))
    assert (await scheduler.get("acme", job.id)).status == end
    with pytest.raises(JobFinished):
        await scheduler.cancel("acme", job.id)


async def test_another_tenants_job_is_not_found(scheduler: Scheduler, store: JobStore) -> None:
    job, _ = await scheduler.submit("acme", spec())
    with pytest.raises(NotFound):
        await scheduler.get("other", job.id)
    with pytest.raises(NotFound):
        await scheduler.cancel("other", job.id)
    with pytest.raises(NotFound):
        await scheduler.cancel("acme", "no-such-job")
    assert await status_of(store, job) is JobState.QUEUED


async def test_logs_need_a_run(scheduler: Scheduler, backend: FakeBackend, clock: Clock) -> None:
    job, _ = await scheduler.submit("acme", spec())
    with pytest.raises(NotFound):
        await scheduler.logs("acme", job.id)
    await scheduler.drain_once(clock.at(0))
    assert job.id in await scheduler.logs("acme", job.id, tail=2)
    with pytest.raises(NotFound):
        await scheduler.logs("other", job.id)


async def test_a_slow_start_after_recovery_is_adopted_then_cancel_stops_it(
    make_scheduler: MakeScheduler, store: JobStore, clock: Clock
) -> None:
    gated = GatedBackend()
    slow = make_scheduler(owner="slow", backend_=gated)
    other = make_scheduler(owner="other", backend_=gated)
    job, _ = await slow.submit("acme", spec())

    drain = asyncio.create_task(slow.drain_once(clock.at(0)))
    await asyncio.wait_for(gated.entered.wait(), 5)
    assert (await other.drain_once(clock.at(130))).recovered == 1  # the claim ran out
    assert await status_of(store, job) is JobState.QUEUED
    gated.gate.set()
    await asyncio.wait_for(drain, 5)  # the slow start did start a run, then lost the race
    # The requeued job adopts the run (through a claim the caps verify) instead of a second one.
    stored = await store.get(job.id)
    assert stored is not None and stored.status is JobState.RUNNING
    assert stored.execution is not None and gated.starts[job.id] == 1

    await other.cancel("acme", job.id)
    assert gated.executions[job.id].phase != "running", "the bot keeps recording a cancelled job"
    await other.drain_once(clock.at(200))
    assert gated.starts[job.id] == 1
