"""The scheduler with PLATFORM listing two backends: which backend each claim goes to, the caps of
each held by claim-then-verify across dispatchers, cool-downs, and exactly one run per job.

Real parts: the scheduler, the stores (memory, SQLite, D1 over its stand-in; two SQLite
connections on one file for two processes) and the composite (core/backends/spill.py). The two
backends are tests/fakes.py's FakeBackend under the names `a` and `b`: they run nothing, the tests
play the platform. tests/podman/test_spill_podman.py runs the same on the process and Podman
backends.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from core.backends.spill import SpillBackend
from core.errors import BackendError
from core.models import ExecutionRef, Job, JobState
from core.ports import JobStore
from core.scheduler import Scheduler
from tests.unit.conftest import Clock, at, fresh, settings, spec
from tests.unit.test_spill import Named, Ticks


class Counting(Named):
    """Counts start calls, and the most runs running at once."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.calls: Counter[str] = Counter()
        self.max_running = 0
        self.made_but_raised = 0  # fault injection: the next N starts make the run, then raise

    def running(self) -> list[str]:
        return [job_id for job_id, run in self.executions.items() if run.phase == "running"]

    async def start(self, job: Job) -> ExecutionRef:
        self.calls[job.id] += 1
        ref = await super().start(job)
        self.max_running = max(self.max_running, len(self.running()))
        if self.made_but_raised > 0:
            self.made_but_raised -= 1
            raise BackendError("FAULT INJECTION: the run was made, the answer lost")
        return ref


def two(
    store: JobStore, clock: Clock, ticks: Ticks | None = None, owner: str = "main", **config: Any
) -> tuple[Scheduler, Counting, Counting]:
    first, second = Counting("a"), Counting("b")
    overrides = {"platform": "a,b", "backend_failures": 2, "backend_cooldown_seconds": 60}
    settings_ = settings(**{**overrides, **config})
    backend = SpillBackend({"a": first, "b": second}, settings_, clock=ticks or Ticks())
    return Scheduler(store, backend, settings_, owner=owner, clock=clock), first, second


async def test_the_next_job_spills_to_the_second_backend_once_the_first_is_full(
    store: JobStore, clock: Clock
) -> None:
    scheduler, first, second = two(store, clock, max_concurrent_jobs=3, backend_caps={"a": 1})
    jobs = [(await scheduler.submit("t1", spec(priority=9 - n)))[0] for n in range(4)]
    await scheduler.drain_once(at(0))
    placed = [await fresh(store, job) for job in jobs]
    assert [job.backend for job in placed] == ["a", "b", "b", None]  # the global cap: 3
    assert [job.execution.backend for job in placed[:3] if job.execution] == ["a", "b", "b"]
    assert placed[1].backends == ("b",) and placed[3].status is JobState.QUEUED
    assert (set(first.starts), set(second.starts)) == ({jobs[0].id}, {jobs[1].id, jobs[2].id})

    stats = {entry["name"]: entry for entry in (await scheduler.stats())["backends"]}
    assert (stats["a"]["cap"], stats["a"]["activeJobs"], stats["b"]["activeJobs"]) == (1, 1, 2)
    assert stats["b"]["cap"] is None and not stats["a"]["coolingDown"]

    first.finish(jobs[0].id)
    await scheduler.drain_once(at(1))
    assert (await fresh(store, jobs[3])).backend == "a"  # a has room again: it comes first


async def test_failing_starts_spill_then_cool_down_then_one_trial(
    store: JobStore, clock: Clock
) -> None:
    ticks = Ticks()
    scheduler, first, _ = two(
        store, clock, ticks, max_concurrent_jobs=10, retry_base_seconds=0, max_attempts=5
    )
    first.fail_starts = 100  # the first backend's API is down
    jobs = []
    for moment in range(4):  # one at a time: a burst is claimed before any start answers
        jobs.append((await scheduler.submit("t1", spec()))[0])
        await scheduler.drain_once(at(moment))
        await scheduler.drain_once(at(moment + 0.5))  # the retry of a failed start
    assert sum(first.calls.values()) == 2  # SCHEDULER_BACKEND_FAILURES, then it is skipped
    for job in jobs:
        done = await fresh(store, job)
        assert done.execution is not None and done.execution.backend == "b"
    assert (await fresh(store, jobs[0])).backends == ("a", "b")
    assert (await fresh(store, jobs[3])).backends == ("b",)
    stats = (await scheduler.stats())["backends"][0]
    assert stats["coolingDown"] and stats["consecutiveFailures"] == 2

    ticks.now += 60  # the cool-down is over: one start is tried there again
    first.fail_starts = 0
    later = [(await scheduler.submit("t1", spec(priority=9 - n)))[0] for n in range(2)]
    await scheduler.drain_once(at(10))
    assert [(await fresh(store, job)).backend for job in later] == ["a", "b"]
    assert (await scheduler.stats())["backends"][0]["consecutiveFailures"] == 0
    third = (await scheduler.submit("t1", spec()))[0]
    await scheduler.drain_once(at(11))
    assert (await fresh(store, third)).backend == "a"  # healthy again: the first backend


async def test_a_start_that_made_the_run_but_raised_is_adopted_never_restarted_elsewhere(
    store: JobStore, clock: Clock
) -> None:
    scheduler, first, second = two(store, clock, retry_base_seconds=0)
    first.made_but_raised = 1
    job, _ = await scheduler.submit("t1", spec())
    await scheduler.drain_once(at(0))
    adopted = await fresh(store, job)
    assert adopted.status is JobState.RUNNING and adopted.execution == ExecutionRef(
        backend="a", id=job.id
    )
    assert second.calls == Counter() and first.starts[job.id] == 1


async def test_while_a_backend_cannot_tell_the_job_keeps_its_claim_and_starts_nowhere_else(
    store: JobStore, clock: Clock
) -> None:
    scheduler, first, second = two(store, clock, retry_base_seconds=0, claim_ttl_seconds=5)
    first.fail_starts = 1
    first.find_error = BackendError("API unreachable")
    job, _ = await scheduler.submit("t1", spec())
    for moment in range(0, 60, 10):  # claims run out, recovery asks again and again
        await scheduler.drain_once(at(moment))
        assert (await fresh(store, job)).status is JobState.PROVISIONING
    assert second.calls == Counter()
    first.find_error = None  # it can tell again: no run there, so the job is retried, on b
    await scheduler.drain_once(at(100))
    await scheduler.drain_once(at(101))
    moved = await fresh(store, job)
    assert moved.status is JobState.RUNNING and moved.backends == ("a", "b")
    assert moved.execution is not None and moved.execution.backend == "b"


async def test_a_retry_asks_every_backend_it_was_assigned(store: JobStore, clock: Clock) -> None:
    """A job that failed on a, then made its run on b but lost the answer: the run on b is
    found and adopted, not a third start."""
    scheduler, first, second = two(store, clock, retry_base_seconds=0)
    first.fail_starts = 1
    second.made_but_raised = 1
    job, _ = await scheduler.submit("t1", spec())
    await scheduler.drain_once(at(0))
    await scheduler.drain_once(at(1))
    adopted = await fresh(store, job)
    assert adopted.status is JobState.RUNNING and adopted.backends == ("a", "b")
    assert sum(first.calls.values()) == 1 and sum(second.calls.values()) == 1


async def test_a_backend_the_job_was_never_assigned_is_not_asked(
    store: JobStore, clock: Clock
) -> None:
    """Its run made on b but the answer lost, while a cannot tell anything: a was never
    assigned this job, so b's answer alone decides, and the job adopts its run."""
    scheduler, first, second = two(store, clock, backend_caps={"a": 0})
    first.find_error = BackendError("API unreachable")
    second.made_but_raised = 1
    job, _ = await scheduler.submit("t1", spec())
    await scheduler.drain_once(at(0))
    adopted = await fresh(store, job)
    assert adopted.status is JobState.RUNNING and adopted.backends == ("b",)
    assert adopted.execution == ExecutionRef(backend="b", id=job.id)


async def test_a_live_run_of_a_queued_job_is_adopted_on_its_backend_within_its_cap(
    store: JobStore, clock: Clock
) -> None:
    scheduler, _, second = two(store, clock, backend_caps={"b": 1})
    job, _ = await scheduler.submit("t1", spec(), job_id="job-q")
    other, _ = await scheduler.submit("t1", spec(), job_id="job-r")
    await second.start(job)
    await second.start(other)  # two runs on b, whose cap is 1
    report = await scheduler.drain_once(at(0))
    kept = await fresh(store, job)
    assert kept.status is JobState.RUNNING and kept.backend == "b"
    assert report.orphans == 1 and second.stopped == [other.id]


async def test_with_one_backend_nothing_is_recorded_on_the_job(
    store: JobStore, clock: Clock
) -> None:
    scheduler = Scheduler(store, Counting("a"), settings(), clock=clock)
    job, _ = await scheduler.submit("t1", spec())
    await scheduler.drain_once(at(0))
    done = await fresh(store, job)
    assert done.status is JobState.RUNNING and (done.backend, done.backends) == (None, ())


CAPS = {"a": 2, "b": 3}
GLOBAL = 10
JOBS = 40
DISPATCHERS = 8


async def test_racing_dispatchers_keep_each_backend_s_cap(race_store: JobStore) -> None:
    """Dispatchers whose dispatch leases ran out claim at once (each drain at a time past the
    previous one's lease): only the verification of each backend's cap can keep it."""
    clock = Clock()
    first, second = Counting("a"), Counting("b")
    config = settings(
        platform="a,b", backend_caps=CAPS, max_concurrent_jobs=GLOBAL, dispatch_lease_seconds=1
    )
    first.start_delay = second.start_delay = 0.005
    schedulers = []
    for n in range(DISPATCHERS):  # one composite per process, over the same platforms
        backend = SpillBackend({"a": first, "b": second}, config)
        schedulers.append(Scheduler(race_store, backend, config, owner=f"d{n}", clock=clock))
    jobs = [(await schedulers[0].submit(f"t{n % 3}", spec()))[0] for n in range(JOBS)]
    for round_ in range(40):
        base = 10 + round_ * 20
        await asyncio.gather(*(s.drain_once(at(base + 2 * n)) for n, s in enumerate(schedulers)))
        assert len(first.running()) <= CAPS["a"] and len(second.running()) <= CAPS["b"]
        for platform in (first, second):
            for index, job_id in enumerate(sorted(platform.running())):
                if index % 2 == 0 or round_ % 3 == 2:
                    platform.finish(job_id)
        if (await race_store.counts())[JobState.COMPLETED] == JOBS:
            break
    assert (await race_store.counts())[JobState.COMPLETED] == JOBS
    assert (first.max_running, second.max_running) == (CAPS["a"], CAPS["b"])
    calls = first.calls + second.calls
    assert set(calls) == {job.id for job in jobs} and max(calls.values()) == 1


async def test_every_backend_cooling_down_still_starts_jobs(store: JobStore, clock: Clock) -> None:
    scheduler, _, _ = two(store, clock, backend_failures=1, retry_base_seconds=0)
    assert isinstance(scheduler.backend, SpillBackend)
    scheduler.backend.health.failed("a")
    scheduler.backend.health.failed("b")
    job, _ = await scheduler.submit("t1", spec())
    await scheduler.drain_once(at(0))
    assert (await fresh(store, job)).execution == ExecutionRef(backend="a", id=job.id)
