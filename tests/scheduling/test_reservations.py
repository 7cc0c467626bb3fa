"""Reservations (core/reservations.py) on EVERY store: the real stores (memory, SQLite, Azure
Table on Azurite, Firestore on its emulator, D1 on its SQLite stand-in) and the real Scheduler
(submit, drain, dispatch); only the backend (tests/fakes.py, which runs nothing and counts
starts) and the clock (explicit) are doubles. Races are real concurrent submits on one store."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta

import pytest

from core.errors import Overbooked
from core.meetings import KIND as MEETING
from core.meetings import submit_warnings
from core.models import Job, JobSpec, JobState
from core.ports import JobStore
from core.reservations import KIND, slot_part, store_state
from tests.fakes import FakeBackend
from tests.scheduling.conftest import MakeScheduler
from tests.unit.conftest import T0, Clock, fresh

BUCKET = 900  # reservation_bucket_seconds; T0 (12:00:00) is a bucket boundary
LEAD = 60  # join_lead_seconds of the test settings
RUN = 1800  # maxRuntimeSeconds of the scheduled jobs
_meetings = iter(range(81_000_000_000, 82_000_000_000))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def scheduled(join: float, **fields: object) -> JobSpec:
    """A job for a meeting of its own, joining at T0 + `join` seconds."""
    url = f"https://zoom.us/j/{next(_meetings)}"
    return JobSpec(meetingUrl=url, joinAt=at(join), maxRuntimeSeconds=RUN, **fields)  # type: ignore[arg-type]


def unscheduled(**fields: object) -> JobSpec:
    return JobSpec(meetingUrl=f"https://zoom.us/j/{next(_meetings)}", **fields)  # type: ignore[arg-type]


async def reserved_by(store: JobStore, job: Job) -> list[str]:
    found = await store.scan_records(KIND, "res", 1000)
    return [record.key for record in found if record.data["jobId"] == job.id]


async def test_two_overlapping_windows_fit_a_third_is_refused_with_its_earliest_start(
    make_scheduler: MakeScheduler, store: JobStore
) -> None:
    scheduler = make_scheduler(max_concurrent_jobs=2, overbooking="reject")
    first, _ = await scheduler.submit("acme", scheduled(3600 + LEAD))  # window 3600..5460
    second, _ = await scheduler.submit("acme", scheduled(4000))  # window 3940..5800
    start = int(T0.timestamp())
    assert await reserved_by(store, first) == [f"res:{start + s}:0" for s in (3600, 4500, 5400)]
    assert await reserved_by(store, second) == [f"res:{start + s}:1" for s in (3600, 4500, 5400)]

    with pytest.raises(Overbooked) as refused:
        await scheduler.submit("acme", scheduled(3600 + LEAD))
    # the windows end in the bucket 5400..6300: the first window that fits starts at 6300
    assert refused.value.status == 409 and refused.value.code == "overbooked"
    assert refused.value.details == {"earliestStart": "2025-03-01T13:46:00Z"}
    assert at(6300 + LEAD) == datetime.fromisoformat("2025-03-01T13:46:00+00:00")

    later, created = await scheduler.submit("acme", scheduled(6300 + LEAD))
    assert created and await reserved_by(store, later) == [
        f"res:{start + s}:0" for s in (6300, 7200, 8100)
    ]
    earlier, created = await scheduler.submit("acme", scheduled(1000))  # ends 2800: no overlap
    assert created and len(await reserved_by(store, earlier)) == 3  # 900..3600
    assert len((await store.list_jobs("acme")).jobs) == 4


async def test_the_per_tenant_cap_is_reserved_too(make_scheduler: MakeScheduler) -> None:
    scheduler = make_scheduler(max_concurrent_jobs=3, max_concurrent_per_tenant=1)
    await scheduler.submit("acme", scheduled(3600))
    with pytest.raises(Overbooked) as refused:
        await scheduler.submit("acme", scheduled(3700))
    assert refused.value.details["earliestStart"] is not None
    _, created = await scheduler.submit("globex", scheduled(3700))
    assert created


async def test_a_finished_jobs_reservation_is_released(
    make_scheduler: MakeScheduler, store: JobStore
) -> None:
    scheduler = make_scheduler(max_concurrent_jobs=1)
    first, _ = await scheduler.submit("acme", scheduled(3600))
    with pytest.raises(Overbooked):
        await scheduler.submit("acme", scheduled(3600))
    await scheduler.cancel("acme", first.id)
    second, created = await scheduler.submit("acme", scheduled(3600))
    assert created and len(await reserved_by(store, second)) == 3
    assert await reserved_by(store, first) == []


async def test_overbooking_queue_accepts_without_a_slot_and_says_so(
    make_scheduler: MakeScheduler, store: JobStore
) -> None:
    scheduler = make_scheduler(max_concurrent_jobs=1, overbooking="queue")
    first, _ = await scheduler.submit("acme", scheduled(3600))
    assert submit_warnings(first.id) == []
    queued, created = await scheduler.submit("acme", scheduled(3600))
    assert created and queued.status is JobState.QUEUED
    assert await reserved_by(store, queued) == []
    (warning,) = submit_warnings(queued.id)
    assert "queued without a reserved slot" in warning and "OVERBOOKING=queue" in warning
    assert submit_warnings(queued.id) == []  # said once


async def test_eight_concurrent_scheduled_submits_into_a_cap_of_two_accept_two(
    make_scheduler: MakeScheduler, store: JobStore
) -> None:
    schedulers = [make_scheduler(max_concurrent_jobs=2) for _ in range(8)]
    results = await asyncio.gather(
        *(s.submit("acme", scheduled(3600 + LEAD)) for s in schedulers),
        return_exceptions=True,
    )
    accepted = [result for result in results if isinstance(result, tuple)]
    assert len(accepted) == 2, results
    assert all(isinstance(result, Overbooked) for result in results if result not in accepted)
    assert len((await store.list_jobs("acme")).jobs) == 2
    keys = [record.key for record in await store.scan_records(KIND, "res:", 100)]
    assert len(keys) == 6 and len(set(keys)) == 6  # 3 buckets x 2 slots, each held once


async def test_an_unscheduled_job_leaves_a_reservation_its_slot(
    make_scheduler: MakeScheduler, store: JobStore, backend: FakeBackend, clock: Clock
) -> None:
    """Cap 1: a job joining at 30 min holds the slot from 29 min on. An unscheduled job of the
    default expected run (1 h) would still run then: it waits. One of 10 min fits before."""
    scheduler = make_scheduler(max_concurrent_jobs=1, expected_run_seconds=3600)
    meeting, _ = await scheduler.submit("acme", scheduled(1800))
    long, _ = await scheduler.submit("acme", unscheduled())
    short, _ = await scheduler.submit("acme", unscheduled(maxRuntimeSeconds=600))
    await scheduler.drain_once(clock.at(1))
    assert backend.starts.keys() == {short.id}
    assert (await fresh(store, long)).status is JobState.QUEUED
    backend.finish(short.id)
    await scheduler.drain_once(clock.at(700))
    assert backend.starts.keys() == {short.id}  # the slot is free, but reserved from 1740

    await scheduler.drain_once(clock.at(1800 - LEAD))
    assert backend.starts.keys() == {short.id, meeting.id}
    backend.finish(meeting.id)
    await scheduler.drain_once(clock.at(2 * BUCKET + 100))  # in the next bucket
    assert (await fresh(store, meeting)).status is JobState.COMPLETED
    await scheduler.drain_once(clock.at(2 * BUCKET + 101))
    assert backend.starts.keys() == {short.id, meeting.id, long.id}


async def test_an_unscheduled_job_starts_beside_a_reservation_that_leaves_it_a_slot(
    make_scheduler: MakeScheduler, backend: FakeBackend, clock: Clock
) -> None:
    """Cap 2 and one reservation within the job's expected run: a slot is left for it."""
    scheduler = make_scheduler(max_concurrent_jobs=2, expected_run_seconds=3600)
    meeting, _ = await scheduler.submit("acme", scheduled(1800))
    now, _ = await scheduler.submit("acme", unscheduled())
    await scheduler.drain_once(clock.at(1))
    assert backend.starts.keys() == {now.id}
    await scheduler.drain_once(clock.at(1800 - LEAD))
    assert backend.starts.keys() == {now.id, meeting.id}


async def test_an_unscheduled_job_starts_when_the_reservations_come_after_its_run(
    make_scheduler: MakeScheduler, backend: FakeBackend, clock: Clock
) -> None:
    """Cap 1 and a reservation 3 h away, beyond the job's expected run of 1 h: it starts."""
    scheduler = make_scheduler(max_concurrent_jobs=1, expected_run_seconds=3600)
    await scheduler.submit("acme", scheduled(3 * 3600))
    now, _ = await scheduler.submit("acme", unscheduled())
    await scheduler.drain_once(clock.at(1))
    assert backend.starts.keys() == {now.id}


async def test_a_retry_into_a_full_window_returns_the_job_it_created(
    make_scheduler: MakeScheduler,
) -> None:
    """The window is full (of the job itself): the retry is still a duplicate, not a 409."""
    scheduler = make_scheduler(max_concurrent_jobs=1)
    spec = scheduled(3600)
    first, _ = await scheduler.submit("acme", spec, "idem-1")
    again, created = await scheduler.submit("acme", spec, "idem-1")
    assert not created and again.id == first.id


async def test_slots_of_past_buckets_are_swept(
    make_scheduler: MakeScheduler, store: JobStore, clock: Clock
) -> None:
    scheduler = make_scheduler(max_concurrent_jobs=1)
    first, _ = await scheduler.submit("acme", scheduled(3600))
    await scheduler.cancel("acme", first.id)
    assert len(await reserved_by(store, first)) == 3
    assert len(await store.scan_records(MEETING, "", 10)) == 2
    clock.at(86_400)
    store_state(store).swept = -math.inf  # as a minute later
    second, _ = await scheduler.submit("acme", scheduled(90_000))
    assert await reserved_by(store, first) == []
    assert {r.data["jobId"] for r in await store.scan_records(MEETING, "", 10)} == {second.id}


def test_long_tenants_and_meeting_keys_make_valid_slot_keys() -> None:
    long = "t" * 150
    assert slot_part(long).startswith("~h") and len(slot_part(long)) == 42
    assert slot_part("acme") == "acme"
    assert slot_part("zoom:81234567890") == "zoom~3A81234567890"


async def test_twenty_concurrent_scheduled_submits_under_a_cap_of_twenty_all_fit(
    make_scheduler: MakeScheduler, store: JobStore
) -> None:
    """Contention for the same slots is no refusal: the losers of a race look again, each
    from a random slot on, until every job has one."""
    schedulers = [make_scheduler(max_concurrent_jobs=20) for _ in range(20)]
    results = await asyncio.gather(*(s.submit("acme", scheduled(3600)) for s in schedulers))
    assert all(created for _, created in results)
    keys = [record.key for record in await store.scan_records(KIND, "res:", 100)]
    assert len(keys) == 60 and len(set(keys)) == 60
