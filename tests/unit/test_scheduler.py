"""The scheduler's state machine, one transition at a time, over every store."""

from __future__ import annotations

import asyncio

import pytest

from core.models import Job, JobState
from core.ports import JobStore
from core.scheduler import DISPATCH_LEASE, Scheduler
from tests.fakes import FakeBackend
from tests.unit.conftest import T0, Clock, MakeScheduler, at, fresh, spec, status_of

# -- submit ----------------------------------------------------------------------------------


async def test_submit_queues_a_job(scheduler: Scheduler, store: JobStore) -> None:
    job, created = await scheduler.submit("acme", spec(botName="Notes", priority=7))

    assert created is True
    assert job.id and job.version is not None
    assert (job.status, job.tenant, job.botName, job.priority) == ("queued", "acme", "Notes", 7)
    assert job.createdAt == T0 and job.notBefore == T0 and job.attempts == 0
    assert job.execution is None and job.leaseOwner is None
    assert (await scheduler.get("acme", job.id)).id == job.id
    assert (await scheduler.get(None, job.id)).id == job.id
    assert await store.get(job.id) is not None


async def test_join_at_holds_the_job_until_the_lead_time(
    scheduler: Scheduler, store: JobStore, backend: FakeBackend, clock: Clock
) -> None:
    job, _ = await scheduler.submit("acme", spec(joinAt=at(600)))
    assert job.notBefore == at(600 - 60)  # join_lead_seconds = 60

    report = await scheduler.drain_once(clock.at(539))
    assert report.dispatched == 0 and backend.starts[job.id] == 0
    assert await status_of(store, job) is JobState.QUEUED

    report = await scheduler.drain_once(clock.at(540))
    assert report.dispatched == 1 and backend.starts[job.id] == 1
    running = await fresh(store, job)
    assert running.status is JobState.RUNNING
    assert running.startedAt == at(540) and running.attempts == 1
    assert running.execution is not None and running.execution.id == job.id
    assert running.leaseOwner is None and running.leaseUntil is None


# -- dispatch order, cap and poll ------------------------------------------------------------


async def test_dispatch_order_cap_and_poll(
    make_scheduler: MakeScheduler, store: JobStore, backend: FakeBackend, clock: Clock
) -> None:
    scheduler = make_scheduler(max_concurrent_jobs=3)
    jobs: dict[str, Job] = {}
    # name: (created at, priority, joinAt); the queue order is priority desc, then
    # joinAt-or-createdAt asc: c, b, e, d, a. But d is scheduled: it holds a reservation, which
    # an unscheduled job may not take (README "Meeting-time scheduling"), so d starts before e.
    plan = {
        "a": (0, 1, None),
        "d": (1, 5, at(30)),
        "c": (2, 9, None),
        "b": (3, 9, None),
        "e": (4, 5, None),
    }
    for name, (created, priority, join_at) in plan.items():
        clock.at(created)
        jobs[name], _ = await scheduler.submit("acme", spec(priority=priority, joinAt=join_at))

    report = await scheduler.drain_once(clock.at(10))
    assert report.dispatched == 3
    assert set(backend.starts) == {jobs[n].id for n in "cbd"}
    assert await status_of(store, jobs["e"]) is JobState.QUEUED
    assert await status_of(store, jobs["a"]) is JobState.QUEUED

    # Nothing finished: no capacity, nothing more starts.
    report = await scheduler.drain_once(clock.at(11))
    assert (report.polled, report.dispatched) == (3, 0)

    backend.finish(jobs["c"].id, 0)
    report = await scheduler.drain_once(clock.at(20))
    assert (report.completed, report.dispatched) == (1, 1)
    done = await fresh(store, jobs["c"])
    assert done.status is JobState.COMPLETED
    assert done.exitCode == 0 and done.completedAt == at(20) and done.error is None
    assert backend.starts[jobs["e"].id] == 1 and backend.starts[jobs["a"].id] == 0

    backend.finish(jobs["b"].id, 3)
    report = await scheduler.drain_once(clock.at(30))
    assert (report.failed, report.dispatched) == (1, 1)
    failed = await fresh(store, jobs["b"])
    assert failed.status is JobState.FAILED
    assert failed.exitCode == 3 and failed.completedAt == at(30)
    assert failed.error and "3" in failed.error
    assert backend.starts[jobs["a"].id] == 1
    assert max(backend.starts.values()) == 1


@pytest.mark.parametrize("a_count", [3, 40])
async def test_per_tenant_cap_lets_other_tenants_through(
    make_scheduler: MakeScheduler,
    store: JobStore,
    backend: FakeBackend,
    clock: Clock,
    a_count: int,
) -> None:
    # All of tenant A's jobs outrank tenant B's only job; with 40 of them, A's queue is far
    # longer than one claim window (free + dispatch_batch = 5).
    scheduler = make_scheduler(max_concurrent_jobs=3, max_concurrent_per_tenant=1, dispatch_batch=2)
    a_jobs = []
    for n in range(a_count):
        clock.at(n / 10)  # A's jobs in submission order
        a_jobs.append((await scheduler.submit("A", spec(priority=90)))[0])
    b_job, _ = await scheduler.submit("B", spec(priority=1))

    report = await scheduler.drain_once(clock.at(10))
    assert report.dispatched == 2
    assert backend.starts[b_job.id] == 1
    assert backend.starts[a_jobs[0].id] == 1  # A's best job, and only that one
    assert sum(backend.starts[job.id] for job in a_jobs) == 1

    report = await scheduler.drain_once(clock.at(11))  # A is at its cap, B has nothing left
    assert report.dispatched == 0

    backend.finish(a_jobs[0].id, 0)
    await scheduler.drain_once(clock.at(12))
    assert backend.starts[a_jobs[1].id] == 1
    assert sum(backend.starts[job.id] for job in a_jobs) == 2
    assert (await scheduler.stats("A"))["runningJobs"] == 1


# -- start failures and backoff ----------------------------------------------------------------


async def test_start_failures_back_off_exponentially_then_fail(
    make_scheduler: MakeScheduler, store: JobStore, backend: FakeBackend, clock: Clock
) -> None:
    scheduler = make_scheduler(max_attempts=4, retry_base_seconds=10, retry_max_seconds=25)
    backend.fail_starts = 100
    job, _ = await scheduler.submit("acme", spec())

    t = 0.0
    for attempt, delay in ((1, 10), (2, 20), (3, 25)):  # base * 2**(n-1), capped at 25
        report = await scheduler.drain_once(clock.at(t))
        assert report.retried == 1 and report.dispatched == 0
        queued = await fresh(store, job)
        assert queued.status is JobState.QUEUED and queued.attempts == attempt
        assert queued.error and "start failed" in queued.error
        assert queued.notBefore == at(t + delay)
        assert queued.leaseOwner is None and queued.execution is None
        # not retried before its backoff is over
        assert (await scheduler.drain_once(clock.at(t + delay - 1))).retried == 0
        t += delay

    await scheduler.drain_once(clock.at(t))
    failed = await fresh(store, job)
    assert failed.status is JobState.FAILED and failed.attempts == 4
    assert failed.reason and "4 attempts" in failed.reason
    assert failed.completedAt == at(t)
    assert backend.starts[job.id] == 0
    assert (await scheduler.drain_once(clock.at(t + 1000))).dispatched == 0


async def test_a_start_that_fails_once_runs_on_retry(
    scheduler: Scheduler, store: JobStore, backend: FakeBackend, clock: Clock
) -> None:
    backend.fail_starts = 1
    job, _ = await scheduler.submit("acme", spec())
    await scheduler.drain_once(clock.at(0))
    await scheduler.drain_once(clock.at(10))
    running = await fresh(store, job)
    assert running.status is JobState.RUNNING and running.attempts == 2
    assert backend.starts[job.id] == 1


# -- recover -----------------------------------------------------------------------------------


async def test_expired_claim_is_requeued_by_another_owner(
    scheduler: Scheduler, store: JobStore, backend: FakeBackend, clock: Clock
) -> None:
    job, _ = await scheduler.submit("acme", spec())
    claim = job.model_copy(
        update={
            "status": JobState.PROVISIONING,
            "attempts": 1,
            "leaseOwner": "dead-dispatcher",
            "leaseUntil": at(120),
        }
    )
    await store.update(claim, job.version or "")

    # the claim holds until its lease ends plus the clock skew allowed (10 s by default)
    report = await scheduler.drain_once(clock.at(129))
    assert (report.recovered, report.dispatched) == (0, 0)
    assert await status_of(store, job) is JobState.PROVISIONING

    report = await scheduler.drain_once(clock.at(130))  # the backend has no run: requeued
    assert report.recovered == 1 and report.dispatched == 0
    queued = await fresh(store, job)
    assert queued.status is JobState.QUEUED and queued.attempts == 1
    assert queued.notBefore == at(140) and queued.leaseOwner is None
    assert queued.error and "claim" in queued.error

    await scheduler.drain_once(clock.at(140))
    running = await fresh(store, job)
    assert running.status is JobState.RUNNING and running.attempts == 2
    assert backend.starts[job.id] == 1


class DispatcherDied(BaseException):
    """The platform killed the dispatcher: not an Exception, so nothing may catch it."""


class DyingBackend(FakeBackend):
    """Dies in start, before (`after_run=False`) or after the run was started."""

    def __init__(self, shared: FakeBackend, after_run: bool, error: BaseException) -> None:
        super().__init__()
        self.shared, self.after_run, self.error = shared, after_run, error

    async def start(self, job: Job):  # type: ignore[no-untyped-def]
        if self.after_run:
            await self.shared.start(job)
        raise self.error


@pytest.mark.parametrize("after_run", [False, True], ids=["cancelled-before-run", "died-after-run"])
async def test_dispatcher_dying_mid_start_is_recovered_exactly_once(
    make_scheduler: MakeScheduler,
    store: JobStore,
    backend: FakeBackend,
    clock: Clock,
    after_run: bool,
) -> None:
    died: BaseException = DispatcherDied() if after_run else asyncio.CancelledError()
    doomed = make_scheduler(owner="doomed", backend_=DyingBackend(backend, after_run, died))
    survivor = make_scheduler(owner="survivor")
    job, _ = await doomed.submit("acme", spec())

    with pytest.raises(type(died)):
        await doomed.drain_once(clock.at(0))
    claimed = await fresh(store, job)
    assert claimed.status is JobState.PROVISIONING and claimed.leaseOwner == "doomed"
    assert backend.starts[job.id] == (1 if after_run else 0)

    assert (await survivor.drain_once(clock.at(129))).recovered == 0
    assert (await survivor.drain_once(clock.at(130))).recovered == 1
    # the backend's run (found by name) is adopted at once; without one the job is retried
    recovered = await fresh(store, job)
    assert recovered.status is (JobState.RUNNING if after_run else JobState.QUEUED)
    await survivor.drain_once(clock.at(140))
    running = await fresh(store, job)
    assert running.status is JobState.RUNNING
    assert backend.starts[job.id] == 1  # adopted the run the dead dispatcher started, or started it


async def test_lost_run_is_requeued_and_dispatched_again(
    scheduler: Scheduler, store: JobStore, backend: FakeBackend, clock: Clock
) -> None:
    job, _ = await scheduler.submit("acme", spec())
    await scheduler.drain_once(clock.at(0))
    assert backend.starts[job.id] == 1

    del backend.executions[job.id]  # the platform forgot the run
    report = await scheduler.drain_once(clock.at(5))
    assert report.retried == 1
    queued = await fresh(store, job)
    assert queued.status is JobState.QUEUED and queued.attempts == 1
    assert queued.execution is None and queued.notBefore == at(15)
    assert queued.error and "lost" in queued.error

    await scheduler.drain_once(clock.at(15))
    running = await fresh(store, job)
    assert running.status is JobState.RUNNING and running.attempts == 2
    assert backend.starts[job.id] == 2

    backend.finish(job.id, 0)
    await scheduler.drain_once(clock.at(20))
    assert await status_of(store, job) is JobState.COMPLETED


# -- deadline and max runtime ------------------------------------------------------------------


async def test_queued_job_past_its_deadline_expires_and_never_starts(
    make_scheduler: MakeScheduler, store: JobStore, backend: FakeBackend, clock: Clock
) -> None:
    scheduler = make_scheduler(max_concurrent_jobs=1)
    blocker, _ = await scheduler.submit("acme", spec(priority=9))
    late, _ = await scheduler.submit("acme", spec(priority=1, deadline=at(30)))
    await scheduler.drain_once(clock.at(0))
    assert await status_of(store, late) is JobState.QUEUED

    assert (await scheduler.drain_once(clock.at(29))).expired == 0
    report = await scheduler.drain_once(clock.at(30))
    assert report.expired == 1
    expired = await fresh(store, late)
    assert expired.status is JobState.FAILED and expired.reason == "expired"
    assert expired.completedAt == at(30)

    backend.finish(blocker.id, 0)
    await scheduler.drain_once(clock.at(40))
    assert backend.starts[late.id] == 0
    assert await status_of(store, late) is JobState.FAILED


async def test_run_past_max_runtime_is_stopped_and_failed(
    scheduler: Scheduler, store: JobStore, backend: FakeBackend, clock: Clock
) -> None:
    job, _ = await scheduler.submit("acme", spec(maxRuntimeSeconds=60))
    await scheduler.drain_once(clock.at(0))

    report = await scheduler.drain_once(clock.at(60))
    assert report.stopped == 0 and backend.stopped == []
    report = await scheduler.drain_once(clock.at(61))
    assert report.stopped == 1 and backend.stopped == [job.id]
    failed = await fresh(store, job)
    assert failed.status is JobState.FAILED and failed.completedAt == at(61)
    assert failed.reason and "maxRuntimeSeconds" in failed.reason


# -- dedup and idempotency ---------------------------------------------------------------------


async def test_dedup_key_returns_the_same_job(scheduler: Scheduler, store: JobStore) -> None:
    first, created = await scheduler.submit("acme", spec(dedupKey="meeting-1"))
    again, created_again = await scheduler.submit("acme", spec(dedupKey="meeting-1", priority=9))
    other, created_other = await scheduler.submit("globex", spec(dedupKey="meeting-1"))
    assert (created, created_again, created_other) == (True, False, True)
    assert again.id == first.id and again.priority == first.priority
    assert other.id != first.id and other.tenant == "globex"
    assert (await scheduler.stats())["totalJobs"] == 2


async def test_idempotency_key_returns_the_same_job(scheduler: Scheduler) -> None:
    first, _ = await scheduler.submit("acme", spec(), idempotency_key="req-1")
    again, created = await scheduler.submit("acme", spec(), idempotency_key="req-1")
    other, other_created = await scheduler.submit("globex", spec(), idempotency_key="req-1")
    fresh_key, fresh_created = await scheduler.submit("acme", spec(), idempotency_key="req-2")
    assert created is False and again.id == first.id
    assert other_created is True and other.id != first.id
    assert fresh_created is True and fresh_key.id not in (first.id, other.id)


# -- stats -------------------------------------------------------------------------------------


async def test_stats_count_every_state(
    make_scheduler: MakeScheduler, backend: FakeBackend, clock: Clock
) -> None:
    scheduler = make_scheduler(max_concurrent_jobs=3, max_concurrent_per_tenant=2)
    jobs = [(await scheduler.submit("acme", spec(priority=9 - n)))[0] for n in range(6)]
    await scheduler.submit("globex", spec(priority=0))
    await scheduler.drain_once(clock.at(0))  # jobs 0 and 1 run (per-tenant cap 2), + globex
    backend.finish(jobs[0].id, 0)
    backend.finish(jobs[1].id, 2)
    await scheduler.cancel("acme", jobs[5].id)
    await scheduler.drain_once(clock.at(1))  # 0 completed, 1 failed; jobs 2 and 3 start

    stats = await scheduler.stats()
    assert stats == {
        "queueSize": 1,
        "provisioningJobs": 0,
        "runningJobs": 3,
        "stoppingJobs": 0,
        "completedJobs": 1,
        "failedJobs": 1,
        "cancelledJobs": 1,
        "totalJobs": 7,
        "maxConcurrentJobs": 3,
        "maxConcurrentJobsPerTenant": 2,
        "platform": "fake",
        "backends": [
            {
                "name": "fake",
                "cap": None,
                "activeJobs": 3,
                "coolingDown": False,
                "coolingDownUntil": None,
                "consecutiveFailures": 0,
            }
        ],
        # five starts measured (instant on the fake): the lead is the floor, min 10 s
        "joinLeadSeconds": 10.0,
        "startLatencyP95Seconds": 0.0,
        "startLatencySamples": 5,
    }
    acme = await scheduler.stats("acme")
    assert (acme["totalJobs"], acme["runningJobs"], acme["queueSize"]) == (6, 2, 1)


# -- the dispatch lease ------------------------------------------------------------------------


async def test_dispatch_is_skipped_while_another_owner_holds_the_lease(
    scheduler: Scheduler, store: JobStore, backend: FakeBackend, clock: Clock
) -> None:
    job, _ = await scheduler.submit("acme", spec())
    assert await store.acquire_lease(DISPATCH_LEASE, "someone-else", at(30), at(0))

    report = await scheduler.drain_once(clock.at(10))
    assert report.dispatchSkipped is True and report.dispatched == 0
    assert await scheduler.dispatch(clock.at(29)) == 0
    assert backend.starts[job.id] == 0
    assert await status_of(store, job) is JobState.QUEUED

    report = await scheduler.drain_once(clock.at(30))  # the lease ran out
    assert report.dispatchSkipped is False and report.dispatched == 1
    assert backend.starts[job.id] == 1


async def test_dispatch_releases_its_lease(
    make_scheduler: MakeScheduler, store: JobStore, backend: FakeBackend, clock: Clock
) -> None:
    first, second = make_scheduler(owner="first"), make_scheduler(owner="second")
    await first.submit("acme", spec())
    assert (await first.drain_once(clock.at(0))).dispatched == 1
    job, _ = await second.submit("acme", spec())
    report = await second.drain_once(clock.at(1))
    assert report.dispatchSkipped is False and backend.starts[job.id] == 1
    # and the lease is free again for anyone
    assert await store.acquire_lease(DISPATCH_LEASE, "third", at(31), at(1))
