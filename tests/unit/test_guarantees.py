"""The scheduler's guarantees in one process, on stores that interleave: both caps on every
path that can put a run on the backend, the backend asked before a job leaves the active states,
stops retried until confirmed, status failures surfaced, and a queue scan that yields every due
job in order. The real-process proofs are in tests/stress. The memory store and the D1 stand-in
never suspend on their own, so a wrapper yields to the loop around each of their calls.

The backend is a test double (tests/fakes.py) that records, at each start, how many runs are
alive in all and per tenant: the caps are measured from the runs, not from the store.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from core.errors import BackendError, StartRefused
from core.models import DrainReport, ExecutionRef, Job, JobState
from core.ports import JobStore
from core.scheduler import Scheduler
from tests.fakes import FakeBackend
from tests.unit.conftest import Clock, at, fresh, settings, spec


class TenantBackend(FakeBackend):
    """Remembers the most runs alive at once, in all and per tenant, at every start."""

    def __init__(self, start_delay: float = 0.0) -> None:
        super().__init__(start_delay)
        self.tenant_of: dict[str, str] = {}
        self.max_alive = 0
        self.max_per_tenant: Counter[str] = Counter()

    async def start(self, job: Job) -> ExecutionRef:
        self.tenant_of[job.id] = job.tenant
        ref = await super().start(job)
        self.max_alive = max(self.max_alive, self.alive())
        per_tenant = Counter(self.tenant_of[job_id] for job_id in self.live_ids())
        for tenant, count in per_tenant.items():
            self.max_per_tenant[tenant] = max(self.max_per_tenant[tenant], count)
        return ref

    def live_ids(self) -> list[str]:
        return [job_id for job_id, run in self.executions.items() if run.phase == "running"]


async def test_one_process_shared_by_timer_and_parallel_submits_keeps_both_caps(
    race_store: JobStore,
) -> None:
    """The production topology of `botsched serve`: one Scheduler whose drain timer and every
    submit's dispatch run at once. 30 parallel submits with a cap of 3 (2 per tenant)."""
    backend = TenantBackend(start_delay=0.005)
    config = settings(max_concurrent_jobs=3, max_concurrent_per_tenant=2)
    scheduler = Scheduler(race_store, backend, config, owner="serve")

    async def submit(n: int) -> None:
        await scheduler.submit(f"tenant-{n % 2}", spec())
        await scheduler.dispatch()

    async def timer() -> None:
        for _ in range(20):
            await scheduler.drain_once()
            await asyncio.sleep(0)

    await asyncio.gather(timer(), *(submit(n) for n in range(30)))
    for _ in range(40):  # finish runs as they go, until every job ran
        for job_id in backend.live_ids()[:2]:
            backend.finish(job_id)
        await asyncio.gather(scheduler.drain_once(), scheduler.dispatch())
    assert backend.max_alive <= 3
    assert max(backend.max_per_tenant.values()) <= 2
    assert len(backend.starts) == 30 and max(backend.starts.values()) == 1


async def test_dispatchers_without_a_working_lease_keep_the_caps(race_store: JobStore) -> None:
    """Clocks skewed beyond the dispatch lease: every dispatcher believes the lease free, so all
    claim at once. Claim-then-verify alone must hold both caps."""
    backend = TenantBackend(start_delay=0.005)
    config = settings(max_concurrent_jobs=4, max_concurrent_per_tenant=3, dispatch_lease_seconds=1)
    clocks = [Clock(at(10 * n)) for n in range(8)]
    schedulers = [
        Scheduler(race_store, backend, config, owner=f"d{n}", clock=clocks[n]) for n in range(8)
    ]
    for n in range(40):
        await schedulers[0].submit(f"tenant-{n % 3}", spec(priority=n % 5))
    for round_ in range(30):
        await asyncio.gather(
            *(s.dispatch(at(100 + 10 * n + round_ * 100)) for n, s in enumerate(schedulers))
        )
        for job_id in backend.live_ids()[::2]:
            backend.finish(job_id)
        await schedulers[round_ % 8].drain_once(at(100 + round_ * 100))
    # the caps hold (how close the runs came to them depends on the interleaving), and every
    # job ran exactly once
    assert backend.max_alive <= 4
    assert max(backend.max_per_tenant.values()) <= 3
    assert len(backend.starts) == 40 and max(backend.starts.values()) == 1


async def test_a_dead_dispatchers_run_is_adopted_not_doubled_even_with_attempts_spent(
    store: JobStore, backend: FakeBackend, clock: Clock
) -> None:
    """Killed after the start but before `running` was written, on its last attempt: recovery
    finds the run by name and adopts it, so the job neither fails while its bot runs on nor
    lets a second bot start beside it."""
    config = settings(max_concurrent_jobs=1, max_attempts=1)
    dead = Scheduler(store, backend, config, owner="dead", clock=clock)
    job, _ = await dead.submit("acme", spec())
    claimed = await dead._claim(at(0), dead_report := DrainReport())
    assert [c.id for c in claimed] == [job.id] and dead_report.conflicts == 0
    await backend.start(claimed[0])  # the bot runs; the dispatcher dies before writing it

    survivor = Scheduler(store, backend, config, owner="survivor", clock=clock)
    other, _ = await survivor.submit("acme", spec())
    report = await survivor.drain_once(clock.at(129))
    assert report.recovered == 0 and report.dispatched == 0  # the claim may still be alive
    report = await survivor.drain_once(clock.at(131))
    adopted = await fresh(store, job)
    assert report.recovered == 1 and adopted.status is JobState.RUNNING
    assert adopted.execution is not None and adopted.execution.id == job.id
    assert backend.starts == Counter({job.id: 1}) and backend.alive() == 1
    assert (await fresh(store, other)).status is JobState.QUEUED  # the cap of 1 holds


async def test_cancel_stops_a_run_whose_start_was_never_recorded(
    store: JobStore, backend: FakeBackend, clock: Clock
) -> None:
    scheduler = Scheduler(store, backend, settings(), owner="main", clock=clock)
    job, _ = await scheduler.submit("acme", spec())
    report = DrainReport()
    [claimed] = await scheduler._claim(at(0), report)
    await backend.start(claimed)  # the dispatcher died here
    clock.at(200)  # its claim ran out
    cancelled = await scheduler.cancel("acme", job.id)
    assert cancelled.status is JobState.CANCELLED
    assert backend.stopped == [job.id] and backend.alive() == 0


async def test_a_failing_stop_keeps_the_job_stopping_and_its_slot_until_it_works(
    store: JobStore, clock: Clock
) -> None:
    backend = StubbornBackend()
    scheduler = Scheduler(store, backend, settings(max_concurrent_jobs=1), clock=clock)
    first, _ = await scheduler.submit("acme", spec())
    await scheduler.drain_once(clock.at(0))
    second, _ = await scheduler.submit("acme", spec())

    backend.refuse_stops = 2
    assert (await scheduler.cancel("acme", first.id)).status is JobState.STOPPING
    report = await scheduler.drain_once(clock.at(10))
    assert (await fresh(store, first)).status is JobState.STOPPING  # second refusal
    assert report.dispatched == 0 and (await fresh(store, second)).status is JobState.QUEUED
    report = await scheduler.drain_once(clock.at(20))
    assert (await fresh(store, first)).status is JobState.CANCELLED
    assert backend.alive() == 1 and (await fresh(store, second)).status is JobState.RUNNING
    assert scheduler.events["stop_errors"] == 2


class StubbornBackend(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.refuse_stops = 0
        self.refuse_status = False

    async def stop(self, ref: ExecutionRef) -> None:
        if self.refuse_stops:
            self.refuse_stops -= 1
            raise BackendError("403: not allowed to stop")
        await super().stop(ref)

    async def status(self, ref: ExecutionRef):  # type: ignore[no-untyped-def]
        if self.refuse_status:
            raise BackendError("403: not allowed to read")
        return await super().status(ref)


async def test_status_failures_show_on_the_job_and_max_runtime_still_holds(
    store: JobStore, clock: Clock
) -> None:
    backend = StubbornBackend()
    scheduler = Scheduler(store, backend, settings(), clock=clock)
    job, _ = await scheduler.submit("acme", spec(maxRuntimeSeconds=60))
    await scheduler.drain_once(clock.at(0))
    backend.refuse_status = True
    await scheduler.drain_once(clock.at(10))
    await scheduler.drain_once(clock.at(20))
    failing = await fresh(store, job)
    assert failing.status is JobState.RUNNING and failing.statusErrors == 2
    assert failing.error and "403" in failing.error and "2 times" in failing.error
    assert scheduler.events["status_errors"] == 2

    await scheduler.drain_once(clock.at(61))  # past maxRuntimeSeconds: stopped all the same
    assert backend.stopped == [job.id]
    stopping = await fresh(store, job)
    assert stopping.status is JobState.STOPPING  # gone is not confirmed while status fails
    backend.refuse_status = False
    await scheduler.drain_once(clock.at(70))
    final = await fresh(store, job)
    assert final.status is JobState.FAILED and "maxRuntimeSeconds" in (final.reason or "")


async def test_reconcile_stops_runs_of_final_and_unknown_jobs_and_adopts_a_queued_ones(
    store: JobStore, backend: FakeBackend, clock: Clock
) -> None:
    scheduler = Scheduler(store, backend, settings(max_concurrent_jobs=2), clock=clock)
    done, _ = await scheduler.submit("acme", spec())
    queued, _ = await scheduler.submit("acme", spec(joinAt=at(3600)))
    await scheduler.drain_once(clock.at(0))
    backend.finish(done.id)
    await scheduler.drain_once(clock.at(1))
    assert (await fresh(store, done)).status is JobState.COMPLETED
    for job in (done, queued):  # runs that no active job holds
        backend.executions.pop(job.id, None)
        await backend.start(job)
    await backend.start(Job(**{**done.model_dump(), "id": "unknown-job"}))

    report = await scheduler.drain_once(clock.at(2))
    assert sorted(backend.stopped) == sorted([done.id, "unknown-job"])
    assert report.orphans == 2
    adopted = await fresh(store, queued)
    assert adopted.status is JobState.RUNNING and adopted.execution is not None
    assert backend.alive() == 1


async def test_the_queue_scan_yields_every_due_job_whatever_was_claimed_meanwhile(
    store: JobStore, backend: FakeBackend, clock: Clock
) -> None:
    """One tenant at its cap fills the first window; a job just behind it (where the old scan's
    offset skipped) must still start while slots are free."""
    config = settings(max_concurrent_jobs=10, max_concurrent_per_tenant=1, dispatch_batch=32)
    scheduler = Scheduler(store, backend, config, clock=clock)
    for n in range(42):  # window = 10 free + 32 extra
        clock.at(n / 1000)
        await scheduler.submit("busy", spec(priority=9))
    behind, _ = await scheduler.submit("other", spec(priority=5))
    for _ in range(10):
        await scheduler.submit("busy", spec(priority=1))
    report = await scheduler.drain_once(clock.at(1))
    assert report.dispatched == 2
    assert (await fresh(store, behind)).status is JobState.RUNNING


async def test_a_late_start_after_recovery_is_adopted_within_the_caps(
    store: JobStore, clock: Clock
) -> None:
    """A start that outlived its claim (beyond the documented bound): the requeued job adopts
    the run through a claim that the caps verify; with the cap taken, the run is stopped."""
    backend = FakeBackend()
    config = settings(max_concurrent_jobs=1)
    slow = Scheduler(store, backend, config, owner="slow", clock=clock)
    other = Scheduler(store, backend, config, owner="other", clock=clock)
    job, _ = await slow.submit("acme", spec())
    report = DrainReport()
    [claimed] = await slow._claim(at(0), report)
    await other.drain_once(clock.at(200))  # recovered: no run yet, so requeued with backoff
    blocker, _ = await other.submit("acme", spec())
    await other.drain_once(clock.at(201))
    assert (await fresh(store, blocker)).status is JobState.RUNNING
    ref = await backend.start(claimed)  # the slow dispatcher's start lands now
    await slow._record_run(claimed, ref, report)
    assert backend.stopped == [job.id] and backend.alive() == 1
    assert (await fresh(store, job)).status is JobState.QUEUED


class RefusingBackend(FakeBackend):
    def __init__(self, error: BackendError) -> None:
        super().__init__()
        self.error = error

    async def start(self, job: Job) -> ExecutionRef:
        raise self.error


@pytest.mark.parametrize("refused", [True, False], ids=["refused", "transient"])
async def test_a_start_that_cannot_succeed_fails_at_once_and_a_transient_one_is_retried(
    store: JobStore, clock: Clock, refused: bool
) -> None:
    error = StartRefused("bot command not found: bot") if refused else BackendError("timeout")
    scheduler = Scheduler(store, RefusingBackend(error), settings(), clock=clock)
    job, _ = await scheduler.submit("acme", spec())
    await scheduler.drain_once(clock.at(0))
    after = await fresh(store, job)
    assert after.attempts == 1
    if refused:
        assert after.status is JobState.FAILED and after.completedAt == at(0)
        assert after.error == "start refused: bot command not found: bot"
    else:
        assert after.status is JobState.QUEUED and after.error == "start failed: timeout"
