"""A queued job that moves (core/moves.py) takes the slots of its new time in the write that
moves it, on EVERY store (the `store` fixture, tests/scheduling/conftest.py: memory, SQLite,
Azure Table on Azurite, Firestore on its emulator, D1 on its SQLite stand-in, ...) and the real
Scheduler (submit, reschedule, PUT by key); only the backend (tests/fakes.py) and the clock
(explicit) are doubles. Races are real concurrent moves on one store, through wrappers that yield
to the event loop around every store call."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from core.errors import MeetingTaken, Overbooked
from core.meetings import KIND as MEETING
from core.meetings import submit_warnings
from core.models import Job, JobSpec, JobState
from core.ports import JobStore
from core.reservations import KIND, holds, iso
from core.scheduler import Scheduler
from tests.fakes import FakeBackend
from tests.scheduling.conftest import MakeScheduler
from tests.unit.conftest import T0, Clock, YieldingStore, fresh, settings

# reservation_bucket_seconds is 900; T0 (12:00:00) is a bucket boundary
LEAD = 60  # join_lead_seconds of the test settings
RUN = 1800  # maxRuntimeSeconds of the scheduled jobs
LATER = 3 * 3600 + LEAD  # a window of its own: 3 h .. 3 h 31 min, buckets 10800, 11700, 12600
_meetings = iter(range(83_000_000_000, 84_000_000_000))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def zoom() -> str:
    return f"https://zoom.us/j/{next(_meetings)}"


def scheduled(join: float, url: str | None = None) -> JobSpec:
    """A job joining at T0 + `join` seconds, for a meeting of its own unless `url` says."""
    return JobSpec(meetingUrl=url or zoom(), joinAt=at(join), maxRuntimeSeconds=RUN)


async def reserved_by(store: JobStore, job: Job) -> list[str]:
    """The keys of the reservation slots `job` holds (as it is stored now)."""
    current = await fresh(store, job)
    found = await store.scan_records(KIND, "res", 1000)
    return sorted(r.key for r in found if r.data["jobId"] == job.id and holds(current, r))


async def own_slots(store: JobStore, job: Job, kind: str = KIND) -> list[str]:
    """The keys of every slot record naming `job`, held or not."""
    found = await store.scan_records(kind, "" if kind == MEETING else "res", 1000)
    return sorted(record.key for record in found if record.data["jobId"] == job.id)


def slots(*starts: int) -> list[str]:
    """The slot keys n=0 of the buckets starting at T0 + each of `starts` seconds."""
    return [f"res:{int(T0.timestamp()) + start}:0" for start in starts]


async def move(scheduler: Scheduler, job: Job, **fields: object) -> Job:
    return await scheduler.reschedule(job.tenant, job.id, dict(fields))


# -- (1) a moved job holds its new window and frees its old one ------------------------------------


async def test_a_moved_job_holds_its_new_window_and_frees_its_old_one(
    make_scheduler: MakeScheduler, store: JobStore
) -> None:
    scheduler = make_scheduler(max_concurrent_jobs=1)
    job, _ = await scheduler.submit("acme", scheduled(3600))  # buckets 2700, 3600, 4500
    moved = await move(scheduler, job, joinAt=at(LATER))
    assert moved.joinAt == at(LATER)
    assert await reserved_by(store, job) == slots(10800, 11700, 12600)
    assert await own_slots(store, job) == slots(10800, 11700, 12600)  # the old ones released

    with pytest.raises(Overbooked):  # the last slot of the new window is the moved job's
        await scheduler.submit("acme", scheduled(LATER))
    other, created = await scheduler.submit("acme", scheduled(3600))  # the old window is free
    assert created and await reserved_by(store, other) == slots(2700, 3600, 4500)


async def test_a_move_within_its_buckets_keeps_its_own_slots(
    make_scheduler: MakeScheduler, store: JobStore
) -> None:
    """Cap 1, and the job holds the only slot of each bucket: 5 minutes later is no overbooking
    (its slots are its own), and the shorter run of the second move frees its last bucket."""
    scheduler = make_scheduler(max_concurrent_jobs=1)
    job, _ = await scheduler.submit("acme", scheduled(3600 + LEAD))  # buckets 3600, 4500, 5400
    await move(scheduler, job, joinAt=at(3600 + LEAD + 300))
    assert await reserved_by(store, job) == slots(3600, 4500, 5400)
    await move(scheduler, job, maxRuntimeSeconds=600)  # window 3900 .. 4560: buckets 3600, 4500
    assert await reserved_by(store, job) == slots(3600, 4500)
    assert len(await own_slots(store, job, MEETING)) == 2

    later, created = await scheduler.submit("acme", scheduled(5400 + LEAD))
    assert created and await reserved_by(store, later) == slots(5400, 6300, 7200)
    with pytest.raises(Overbooked):
        await scheduler.submit("acme", scheduled(4500 + LEAD))


async def test_a_job_moved_by_its_key_holds_its_new_window(
    make_scheduler: MakeScheduler, store: JobStore
) -> None:
    scheduler = make_scheduler(max_concurrent_jobs=1)
    url = zoom()
    outcome = await scheduler.put_by_key("acme", "cal-1:occurrence", scheduled(3600, url))
    moved = await scheduler.put_by_key("acme", "cal-1:occurrence", scheduled(LATER, url))
    assert moved.job.id == outcome.job.id and moved.job.joinAt == at(LATER)
    assert await reserved_by(store, moved.job) == slots(10800, 11700, 12600)
    with pytest.raises(Overbooked):
        await scheduler.submit("acme", scheduled(LATER))
    _, created = await scheduler.submit("acme", scheduled(3600))
    assert created


# -- (2) a move into a full window -----------------------------------------------------------------


async def test_with_reject_a_move_into_a_full_window_is_refused_and_changes_nothing(
    make_scheduler: MakeScheduler, store: JobStore
) -> None:
    scheduler = make_scheduler(max_concurrent_jobs=1, overbooking="reject")
    job, _ = await scheduler.submit("acme", scheduled(3600))
    await scheduler.submit("acme", scheduled(LATER))  # holds 10800, 11700, 12600
    before = await fresh(store, job)

    with pytest.raises(Overbooked) as refused:
        await move(scheduler, job, joinAt=at(LATER))
    # the first window past 12600's bucket that fits starts at 13500, its joinAt a lead later
    assert refused.value.status == 409 and refused.value.code == "overbooked"
    assert refused.value.details == {"earliestStart": iso(at(13500 + LEAD))}
    after = await fresh(store, job)
    assert after.version == before.version and after.joinAt == at(3600)
    assert await reserved_by(store, job) == slots(2700, 3600, 4500)
    with pytest.raises(Overbooked):  # it still holds its window
        await scheduler.submit("acme", scheduled(3600))

    moved = await move(scheduler, job, joinAt=at(13500 + LEAD))  # where it fits
    assert await reserved_by(store, moved) == slots(13500, 14400, 15300)


async def test_with_queue_a_move_into_a_full_window_holds_no_slot_and_says_so(
    make_scheduler: MakeScheduler, store: JobStore
) -> None:
    scheduler = make_scheduler(max_concurrent_jobs=1, overbooking="queue")
    job, _ = await scheduler.submit("acme", scheduled(3600))
    await scheduler.submit("acme", scheduled(LATER))
    assert submit_warnings(job.id) == []

    moved = await move(scheduler, job, joinAt=at(LATER))
    assert moved.joinAt == at(LATER) and moved.status is JobState.QUEUED
    assert await own_slots(store, job) == []  # neither old slots nor new ones
    (warning,) = submit_warnings(job.id)
    assert "queued without a reserved slot" in warning and "OVERBOOKING=queue" in warning
    _, created = await scheduler.submit("acme", scheduled(3600))  # its old window is free
    assert created


# -- (3) one bot per meeting -----------------------------------------------------------------------


async def test_a_move_onto_a_meeting_another_job_holds_is_refused_until_it_moves_away(
    make_scheduler: MakeScheduler, store: JobStore
) -> None:
    scheduler = make_scheduler(max_concurrent_jobs=10)
    url = zoom()
    first, _ = await scheduler.submit("acme", scheduled(3600, url))
    second, created = await scheduler.submit("acme", scheduled(6 * 3600, url))  # 5 h apart
    assert created and second.id != first.id

    with pytest.raises(MeetingTaken) as refused:
        await move(scheduler, second, joinAt=at(3600 + 600))
    assert refused.value.status == 409 and refused.value.code == "meeting_taken"
    assert refused.value.details == {"jobId": first.id} and first.id in refused.value.message
    assert (await fresh(store, second)).joinAt == at(6 * 3600)

    await move(scheduler, first, joinAt=at(12 * 3600))  # away: frees the meeting at 1 h
    assert len(await own_slots(store, first, MEETING)) == 2  # its new start's, not the old
    moved = await move(scheduler, second, joinAt=at(3600 + 600))
    assert moved.joinAt == at(3600 + 600)
    again, created = await scheduler.submit("acme", scheduled(3600, url))
    assert not created and again.id == second.id  # the meeting at 1 h is now the second's
    with pytest.raises(MeetingTaken):  # and the first cannot come back
        await move(scheduler, first, joinAt=at(3600))


async def test_a_move_by_key_onto_a_meeting_another_job_holds_is_refused(
    make_scheduler: MakeScheduler, store: JobStore
) -> None:
    scheduler = make_scheduler(max_concurrent_jobs=10)
    url = zoom()
    first, _ = await scheduler.submit("acme", scheduled(3600, url))
    keyed = await scheduler.put_by_key("acme", "cal-2:occurrence", scheduled(6 * 3600, url))
    with pytest.raises(MeetingTaken) as refused:
        await scheduler.put_by_key("acme", "cal-2:occurrence", scheduled(3600 + 900, url))
    assert refused.value.details == {"jobId": first.id}
    assert (await fresh(store, keyed.job)).joinAt == at(6 * 3600)


# -- (4) races -------------------------------------------------------------------------------------


def racers(store: JobStore, clock: Clock, **overrides: object) -> list[Scheduler]:
    """Two instances on one store, whose calls yield to the event loop (each its own way)."""
    config = settings(**{"max_concurrent_jobs": 2, "overbooking": "reject", **overrides})
    return [
        Scheduler(YieldingStore(store, seed=n), FakeBackend(), config, clock=clock)
        for n in range(2)
    ]


async def test_two_concurrent_moves_into_one_free_slot_one_wins(
    make_scheduler: MakeScheduler, store: JobStore, clock: Clock
) -> None:
    scheduler = make_scheduler(max_concurrent_jobs=2)
    one, _ = await scheduler.submit("acme", scheduled(3600))
    two, _ = await scheduler.submit("acme", scheduled(3600))
    await scheduler.submit("acme", scheduled(LATER))  # 1 of the 2 slots of the window
    first, second = racers(store, clock)

    results = await asyncio.gather(
        move(first, one, joinAt=at(LATER)),
        move(second, two, joinAt=at(LATER)),
        return_exceptions=True,
    )
    won = [result for result in results if isinstance(result, Job)]
    assert len(won) == 1, results
    assert all(isinstance(r, Overbooked) for r in results if not isinstance(r, Job)), results
    loser = two if won[0].id == one.id else one
    assert len(await reserved_by(store, won[0])) == 3
    assert await own_slots(store, won[0]) == await reserved_by(store, won[0])  # old ones released
    assert (await fresh(store, loser)).joinAt == at(3600)
    assert len(await reserved_by(store, loser)) == 3  # its own window still
    for bucket in (10800, 11700, 12600):
        prefix = f"res:{int(T0.timestamp()) + bucket}:"
        assert len(await store.scan_records(KIND, prefix, 10)) == 2  # each slot held once


async def test_two_concurrent_moves_with_queue_one_holds_the_slot(
    make_scheduler: MakeScheduler, store: JobStore, clock: Clock
) -> None:
    scheduler = make_scheduler(max_concurrent_jobs=2, overbooking="queue")
    one, _ = await scheduler.submit("acme", scheduled(3600))
    two, _ = await scheduler.submit("acme", scheduled(3600))
    await scheduler.submit("acme", scheduled(LATER))
    first, second = racers(store, clock, overbooking="queue")

    moved = await asyncio.gather(
        move(first, one, joinAt=at(LATER)), move(second, two, joinAt=at(LATER))
    )
    assert [job.joinAt for job in moved] == [at(LATER), at(LATER)]
    held = sorted([len(await reserved_by(store, job)) for job in moved])
    assert held == [0, 3]
    for bucket in (10800, 11700, 12600):
        prefix = f"res:{int(T0.timestamp()) + bucket}:"
        assert len(await store.scan_records(KIND, prefix, 10)) == 2
