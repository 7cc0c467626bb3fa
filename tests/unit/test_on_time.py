"""Meeting time (core/leads.py): the join lead learned from start latencies, and `missed`.

Every test moves an injected clock (Clock); a backend whose start "takes" N seconds advances it
by N, so claim -> running is N seconds as the scheduler measures it. Stores: memory and SQLite
(the `store` fixture), and D1 over its stand-in binding where a test names it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from core.errors import Conflict
from core.leads import KIND, MIN_SAMPLES, SAMPLES_KEPT, Leads, effective_deadline, learned_lead
from core.leads import missed as past_window
from core.models import ExecutionRef, Job, JobSpec, JobState
from core.ports import JobStore
from core.records import Record
from core.scheduler import Scheduler
from tests.fakes import FakeBackend
from tests.unit.conftest import Clock, MakeScheduler, at, fresh, open_store, settings, spec

TOLERANCE = 120.0  # late_tolerance_seconds in these tests


class SlowBackend(FakeBackend):
    """A backend whose starts take `latencies` seconds in turn (on the test's clock), and
    whose next `fail_starts` starts raise after taking theirs."""

    def __init__(self, clock: Clock, latencies: list[float]) -> None:
        super().__init__()
        self.clock = clock
        self.latencies = list(latencies)

    async def start(self, job: Job) -> ExecutionRef:
        if self.latencies:
            self.clock.now += timedelta(seconds=self.latencies.pop(0))
        return await super().start(job)


def meeting(n: int, **fields: Any) -> JobSpec:
    """A job for meeting `n`: each test's jobs are for meetings of their own (one bot per
    meeting is another rule's)."""
    return JobSpec(meetingUrl=f"https://meet.example.com/room-{n}", **fields)


async def seed(store: JobStore, samples: list[float], backend: str = "fake") -> None:
    await store.put_record(Record(KIND, backend, {"samples": samples}), None)


async def event_types(scheduler: Scheduler, job: Job) -> list[tuple[str, Any]]:
    return [(e["type"], e["data"]["reason"]) for e in await scheduler.job_events(None, job.id)]


# -- the lead ----------------------------------------------------------------------------------


def test_the_lead_is_the_default_until_enough_samples_then_p95_plus_margin_bounded() -> None:
    config = settings(
        join_lead_seconds=60,
        join_lead_margin_seconds=10,
        join_lead_min_seconds=15,
        join_lead_max_seconds=120,
    )
    assert learned_lead([], config).seconds == 60 and learned_lead([], config).p95 is None
    few = learned_lead([30.0] * (MIN_SAMPLES - 1), config)
    assert (few.seconds, few.p95, few.samples) == (60, 30.0, MIN_SAMPLES - 1)
    # 20 samples 1..20: the nearest-rank p95 is the 19th, 19 s; + 10 s margin
    assert learned_lead([float(n) for n in range(1, 21)], config).seconds == 29
    assert learned_lead([1.0] * 10, config).seconds == 15  # the floor
    assert learned_lead([500.0] * 10, config).seconds == 120  # the ceiling
    spiky = learned_lead([2.0] * 19 + [400.0], config)  # one outlier in 20 is past the p95
    assert (spiky.seconds, spiky.p95) == (15, 2.0)


async def test_samples_are_shared_by_instances_and_only_the_newest_kept(store: JobStore) -> None:
    config = settings(join_lead_min_seconds=0, join_lead_margin_seconds=0)
    writer, reader = Leads(store, config, "fake"), Leads(store, config, "fake", refresh_seconds=0)
    for n in range(SAMPLES_KEPT + 10):
        await writer.record(float(n))
    record = await store.get_record(KIND, "fake")
    assert record is not None and record.data["samples"][0] == 10.0
    assert len(record.data["samples"]) == SAMPLES_KEPT
    lead = await reader.lead()  # another instance reads what the first wrote
    assert (lead.samples, lead.p95) == (SAMPLES_KEPT, 57.0)
    assert lead == writer.current()


async def test_a_stale_copy_is_read_again_a_fresh_one_is_not(store: JobStore) -> None:
    ticks = [0.0]
    leads = Leads(store, settings(), "fake", refresh_seconds=30, timer=lambda: ticks[0])
    assert (await leads.lead()).samples == 0
    await seed(store, [20.0] * MIN_SAMPLES)
    ticks[0] = 29.0
    assert (await leads.lead()).samples == 0  # the copy is 29 s old: no store read
    ticks[0] = 30.0
    assert (await leads.lead()).seconds == 30.0  # read again: p95 20 s + 10 s margin


async def test_a_lost_race_drops_the_sample_and_never_raises(store: JobStore) -> None:
    leads = Leads(store, settings(), "fake")

    class Racing:
        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        async def put_record(self, record: Record, expected: str | None) -> Record:
            raise Conflict("another instance wrote first")

    leads.store = Racing()
    await leads.record(5.0)
    assert leads.current().samples == 0


async def test_dispatch_learns_the_lead_from_claim_to_running(
    store: JobStore, clock: Clock
) -> None:
    backend = SlowBackend(clock, [10, 20, 30, 40, 50, 60])
    scheduler = Scheduler(store, backend, settings(max_concurrent_jobs=10), clock=clock)
    for n in range(6):
        await scheduler.submit("A", meeting(n))
        await scheduler.drain_once()  # each start advances the clock by its latency
    stats = await scheduler.stats()
    # p95 of 10..60 (nearest rank, 6 samples) is 60 s, + the 10 s margin
    assert (stats["startLatencySamples"], stats["startLatencyP95Seconds"]) == (6, 60.0)
    assert stats["joinLeadSeconds"] == 70.0


async def test_not_before_is_join_at_less_the_learned_lead_or_now(
    make_scheduler: MakeScheduler, store: JobStore, clock: Clock
) -> None:
    scheduler = make_scheduler(join_lead_seconds=60, max_concurrent_jobs=10)
    early, _ = await scheduler.submit("A", meeting(10, joinAt=at(3600)))
    assert early.notBefore == at(3600 - 60)  # no samples: join_lead_seconds
    await seed(store, [25.0] * MIN_SAMPLES)
    await scheduler.leads.refresh()
    learned, _ = await scheduler.submit("A", meeting(11, joinAt=at(3600)))
    assert learned.notBefore == at(3600 - 35)  # p95 25 s + 10 s margin
    soon, _ = await scheduler.submit("A", meeting(12, joinAt=at(20)))
    assert soon.notBefore == at(0)  # joinAt - lead is past: now


async def test_metrics_show_the_lead(make_scheduler: MakeScheduler, store: JobStore) -> None:
    from core.metrics import render_metrics

    scheduler = make_scheduler()
    await seed(store, [25.0] * MIN_SAMPLES)
    await scheduler.leads.refresh()
    text = render_metrics(await store.counts(), scheduler)
    assert 'botsched_join_lead_seconds{backend="fake"} 35' in text
    assert 'botsched_start_latency_p95_seconds{backend="fake"} 25' in text
    assert 'botsched_start_latency_samples{backend="fake"} 5' in text
    assert 'botsched_events_total{event="missed"} 0' in text


# -- missed ------------------------------------------------------------------------------------


def test_effective_deadline_ends_a_scheduled_jobs_window() -> None:
    config = settings(late_tolerance_seconds=TOLERANCE)
    times = {"createdAt": at(0), "updatedAt": at(0), "notBefore": at(0)}
    job = Job.from_spec(spec(joinAt=at(600)), id="j", tenant="A", **times)
    assert effective_deadline(job, config) == at(600 + TOLERANCE)
    assert effective_deadline(job.model_copy(update={"deadline": at(650)}), config) == at(650)
    assert effective_deadline(job.model_copy(update={"deadline": at(9000)}), config) == at(720)
    plain = job.model_copy(update={"joinAt": None, "deadline": at(50)})
    assert effective_deadline(plain, config) == at(50)
    assert not past_window(job, config, at(719)) and past_window(job, config, at(720))
    stored = job.model_copy(update={"deadline": effective_deadline(job, config)})
    moved = stored.model_copy(update={"joinAt": at(1800)})  # rescheduled: a new window
    assert effective_deadline(moved, config, before=stored) == at(1800 + TOLERANCE)
    own = stored.model_copy(update={"deadline": at(1850), "joinAt": at(1800)})
    assert effective_deadline(own, config, before=stored) == at(1850)  # its own: kept


async def test_a_job_stuck_behind_the_caps_fails_missed_by_the_expiry_pass(
    make_scheduler: MakeScheduler, backend: FakeBackend, clock: Clock
) -> None:
    """With its deadline at the end of its window (what effective_deadline gives at submit)."""
    scheduler = make_scheduler(
        max_concurrent_jobs=1, late_tolerance_seconds=TOLERANCE, overbooking="queue"
    )
    blocker, _ = await scheduler.submit("A", meeting(2, priority=100))
    await scheduler.drain_once(clock.at(0))
    window = at(600 + TOLERANCE)
    job, _ = await scheduler.submit("A", meeting(20, joinAt=at(600), deadline=window))
    await scheduler.drain_once(clock.at(600 + TOLERANCE - 1))  # still in its window, no slot
    assert (await fresh(scheduler.store, job)).status is JobState.QUEUED
    report = await scheduler.drain_once(clock.at(600 + TOLERANCE))
    failed = await fresh(scheduler.store, job)
    assert (failed.status, failed.reason) == (JobState.FAILED, "missed")
    assert (report.failed, report.expired) == (1, 0)
    assert failed.error and "not started by joinAt + 120s" in failed.error
    assert (await event_types(scheduler, job))[-1] == ("job.failed", "missed")
    assert backend.starts[job.id] == 0 and scheduler.events["missed"] == 1
    backend.finish(blocker.id)
    await scheduler.drain_once(clock.at(700 + TOLERANCE))
    assert backend.starts[job.id] == 0  # a slot freed: the missed job is not started


async def test_a_deadline_before_the_window_ends_expires(
    make_scheduler: MakeScheduler, clock: Clock
) -> None:
    scheduler = make_scheduler(
        max_concurrent_jobs=1, late_tolerance_seconds=TOLERANCE, overbooking="queue"
    )
    await scheduler.submit("A", meeting(3, priority=100))
    await scheduler.drain_once(clock.at(0))
    job, _ = await scheduler.submit("A", meeting(21, joinAt=at(600), deadline=at(630)))
    await scheduler.drain_once(clock.at(630))
    assert (await fresh(scheduler.store, job)).reason == "expired"


async def test_a_claim_past_the_window_fails_missed_and_is_never_started(
    make_scheduler: MakeScheduler, backend: FakeBackend, clock: Clock
) -> None:
    """Behind the caps past its window: the expiry pass fails it `missed` (its deadline is the
    end of its window) before the freed slot could start it."""
    scheduler = make_scheduler(
        max_concurrent_jobs=1, late_tolerance_seconds=TOLERANCE, overbooking="queue"
    )
    blocker, _ = await scheduler.submit("A", meeting(4, priority=100))
    await scheduler.drain_once(clock.at(0))
    job, _ = await scheduler.submit("A", meeting(22, joinAt=at(600)))
    backend.finish(blocker.id)
    report = await scheduler.drain_once(clock.at(600 + TOLERANCE + 5))  # the slot frees late
    stored = await fresh(scheduler.store, job)
    assert (stored.status, stored.reason, report.dispatched) == (JobState.FAILED, "missed", 0)
    assert backend.starts[job.id] == 0
    types = await event_types(scheduler, job)
    assert types == [("job.queued", None), ("job.failed", "missed")]
    assert stored.deadline == at(600 + TOLERANCE)


async def test_a_start_that_fails_after_the_window_is_not_retried(
    store: JobStore, clock: Clock
) -> None:
    backend = SlowBackend(clock, [TOLERANCE + 60])  # the start takes past the window, then fails
    backend.fail_starts = 1
    config = settings(late_tolerance_seconds=TOLERANCE, join_lead_seconds=60)
    scheduler = Scheduler(store, backend, config, clock=clock)
    job, _ = await scheduler.submit("A", meeting(23, joinAt=at(600)))
    clock.at(540)
    report = await scheduler.drain_once()
    stored = await fresh(store, job)
    assert (stored.status, stored.reason, report.retried) == (JobState.FAILED, "missed", 0)
    assert stored.error and "platform said no" in stored.error
    assert (await event_types(scheduler, job))[-1] == ("job.failed", "missed")


async def test_a_retry_within_the_window_comes_before_it_ends(
    make_scheduler: MakeScheduler, backend: FakeBackend, clock: Clock
) -> None:
    scheduler = make_scheduler(
        late_tolerance_seconds=TOLERANCE, retry_base_seconds=600, retry_max_seconds=600
    )
    job, _ = await scheduler.submit("A", meeting(24, joinAt=at(600)))
    backend.fail_starts = 1
    await scheduler.drain_once(clock.at(600))
    retried = await fresh(scheduler.store, job)
    # 120 s left in the window: the 600 s backoff is cut to half of them
    assert (retried.status, retried.notBefore) == (JobState.QUEUED, at(660))
    await scheduler.drain_once(clock.at(660))
    assert (await fresh(scheduler.store, job)).status is JobState.RUNNING


async def test_a_lost_claim_recovered_after_the_window_fails_missed(
    make_scheduler: MakeScheduler, backend: FakeBackend, clock: Clock
) -> None:
    scheduler = make_scheduler(late_tolerance_seconds=TOLERANCE)
    job, _ = await scheduler.submit("A", meeting(25, joinAt=at(600)))
    claimed = await fresh(scheduler.store, job)
    until = at(560) + timedelta(seconds=120)
    await scheduler.store.update(
        claimed.model_copy(
            update={"status": JobState.PROVISIONING, "leaseOwner": "dead", "leaseUntil": until}
        ),
        claimed.version or "",
    )  # a dispatcher claimed it at 560 s and died before starting anything
    report = await scheduler.drain_once(clock.at(600 + TOLERANCE + 60))
    stored = await fresh(scheduler.store, job)
    assert (stored.status, stored.reason) == (JobState.FAILED, "missed")
    assert (report.recovered, report.retried) == (1, 0)  # not put back in the queue
    assert backend.starts[job.id] == 0


# -- on D1 too ---------------------------------------------------------------------------------


@pytest.fixture
async def d1(tmp_path: Path) -> AsyncIterator[JobStore]:
    store = await open_store("d1", tmp_path)
    try:
        yield store
    finally:
        await store.close()


async def test_on_d1_the_lead_is_learned_and_a_late_job_missed(d1: JobStore, clock: Clock) -> None:
    backend = SlowBackend(clock, [30.0] * MIN_SAMPLES)
    scheduler = Scheduler(d1, backend, settings(max_concurrent_jobs=10), clock=clock)
    for n in range(MIN_SAMPLES):
        await scheduler.submit("A", meeting(n))
        await scheduler.drain_once()
    assert (await scheduler.stats())["joinLeadSeconds"] == 40.0
    start = clock.now
    job, _ = await scheduler.submit("A", meeting(30, joinAt=start + timedelta(hours=1)))
    assert job.notBefore == start + timedelta(hours=1, seconds=-40)
    clock.now = start + timedelta(hours=1, seconds=scheduler.settings.late_tolerance_seconds)
    await scheduler.drain_once()
    assert (await fresh(d1, job)).reason == "missed"
    assert backend.starts[job.id] == 0
