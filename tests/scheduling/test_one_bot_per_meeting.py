"""One bot per meeting (core/meetings.py) on EVERY store: the real stores (memory, SQLite, Azure
Table on Azurite, Firestore on its emulator, D1 on its SQLite stand-in) and the real Scheduler;
only the backend (tests/fakes.py) and the clock are doubles. Races are real concurrent submits on
one store: the meeting's slot records, created in the job's atomic write, let exactly one win."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from core.meetings import KIND, duplicate_reason
from core.models import JobSpec, JobState
from core.ports import JobStore
from tests.scheduling.conftest import MakeScheduler
from tests.unit.conftest import T0, Clock

ZOOM = "https://us02web.zoom.us/j/81234567890?pwd=aBcD1234&uname=Ann"
ZOOM_AGAIN = "https://zoom.us/j/812%203456%207890"
MEET = "https://meet.google.com/abc-defg-hij"
MEET_AGAIN = "https://meet.google.com/ABC-DEFG-HIJ/?authuser=1&hl=en"
WINDOW = 3600.0  # meeting_window_seconds (L)


def job(url: str, **fields: object) -> JobSpec:
    return JobSpec(meetingUrl=url, **fields)  # type: ignore[arg-type]


async def test_another_spelling_of_the_meeting_returns_the_first_job(
    make_scheduler: MakeScheduler,
) -> None:
    scheduler = make_scheduler()
    first, created = await scheduler.submit("acme", job(ZOOM))
    assert created and first.meetingKey == "zoom:81234567890"
    again, created = await scheduler.submit("acme", job(ZOOM_AGAIN))
    assert not created and again.id == first.id
    assert duplicate_reason(job(ZOOM_AGAIN), None, again) == "meeting"

    meet, created = await scheduler.submit("acme", job(MEET))
    assert created and meet.meetingKey == "meet:abc-defg-hij"
    same, created = await scheduler.submit("acme", job(MEET_AGAIN, botName="Other name"))
    assert not created and same.id == meet.id


async def test_allow_second_bot_another_meeting_or_another_tenant_make_a_new_job(
    make_scheduler: MakeScheduler,
) -> None:
    scheduler = make_scheduler()
    first, _ = await scheduler.submit("acme", job(ZOOM))
    second, created = await scheduler.submit("acme", job(ZOOM_AGAIN, allowSecondBot=True))
    assert created and second.id != first.id
    other, created = await scheduler.submit("acme", job("https://zoom.us/j/81234567891"))
    assert created and other.id != first.id
    tenant, created = await scheduler.submit("globex", job(ZOOM))
    assert created and tenant.id != first.id
    again, created = await scheduler.submit("globex", job(ZOOM_AGAIN))
    assert not created and again.id == tenant.id


async def test_starts_less_than_the_window_apart_share_more_than_two_apart_never(
    make_scheduler: MakeScheduler,
) -> None:
    scheduler = make_scheduler(meeting_window_seconds=WINDOW, overbooking="queue")
    base = T0 + timedelta(hours=5)
    first, _ = await scheduler.submit("acme", job(MEET, joinAt=base))
    near, created = await scheduler.submit(
        "acme", job(MEET, joinAt=base + timedelta(seconds=WINDOW - 1))
    )
    assert not created and near.id == first.id
    earlier, created = await scheduler.submit(
        "acme", job(MEET, joinAt=base - timedelta(seconds=WINDOW - 1))
    )
    assert not created and earlier.id == first.id
    later, created = await scheduler.submit(
        "acme", job(MEET, joinAt=base + timedelta(seconds=2 * WINDOW + 1))
    )
    assert created and later.id != first.id
    unscheduled, created = await scheduler.submit("acme", job(MEET))  # starts now: 5 h before
    assert created and unscheduled.id not in (first.id, later.id)


async def test_a_finished_jobs_slot_is_released_for_a_new_job(
    make_scheduler: MakeScheduler, store: JobStore
) -> None:
    scheduler = make_scheduler()
    first, _ = await scheduler.submit("acme", job(ZOOM))
    await scheduler.cancel("acme", first.id)
    second, created = await scheduler.submit("acme", job(ZOOM_AGAIN))
    assert created and second.id != first.id
    slots = await store.scan_records(KIND, "acme:", 10)
    assert len(slots) == 2 and {slot.data["jobId"] for slot in slots} == {second.id}
    third, created = await scheduler.submit("acme", job(ZOOM))
    assert not created and third.id == second.id


async def test_ten_concurrent_submits_for_one_meeting_create_one_job(
    make_scheduler: MakeScheduler, store: JobStore, clock: Clock
) -> None:
    schedulers = [make_scheduler() for _ in range(10)]  # ten instances on one store
    spellings = [ZOOM, ZOOM_AGAIN, "https://acme.zoom.us/j/81234567890/", ZOOM + "#success"]
    results = await asyncio.gather(
        *(s.submit("acme", job(spellings[n % 4])) for n, s in enumerate(schedulers))
    )
    created = [found for found, new in results if new]
    assert len(created) == 1
    assert {found.id for found, _ in results} == {created[0].id}
    page = await store.list_jobs("acme")
    assert [stored.id for stored in page.jobs] == [created[0].id]
    assert page.jobs[0].status is JobState.QUEUED


async def test_a_url_key_names_the_job_but_does_not_refuse_a_second_bot(
    make_scheduler: MakeScheduler,
) -> None:
    """An unknown site's URL loses its query in the key (`url:`), which may be what tells its
    meetings apart: such a key is kept on the job, never used to refuse one."""
    scheduler = make_scheduler()
    first, _ = await scheduler.submit("acme", job("https://whereby.com/standup?room=1"))
    second, created = await scheduler.submit("acme", job("https://whereby.com/standup?room=2"))
    assert created and second.id != first.id
    assert first.meetingKey == second.meetingKey == "url:whereby.com/standup"


async def test_a_slot_whose_job_moved_is_stale(
    make_scheduler: MakeScheduler, store: JobStore
) -> None:
    """The slot records keep the joinAt they were taken for: a job moved to another time (as a
    reschedule writes it) no longer holds them."""
    scheduler = make_scheduler(overbooking="queue")
    join = T0 + timedelta(hours=5)
    first, _ = await scheduler.submit("acme", job(MEET, joinAt=join))
    stored = await store.get(first.id)
    assert stored is not None and stored.version is not None
    moved = stored.model_copy(update={"joinAt": join + timedelta(days=1)})
    await store.update(moved, stored.version)
    second, created = await scheduler.submit("acme", job(MEET_AGAIN, joinAt=join))
    assert created and second.id != first.id


async def test_a_retried_submit_says_which_key_it_repeated(make_scheduler: MakeScheduler) -> None:
    scheduler = make_scheduler()
    spec = job(ZOOM, dedupKey="standup-1")
    first, _ = await scheduler.submit("acme", spec, "idem-1")
    again, created = await scheduler.submit("acme", spec, "idem-1")
    assert not created and again.id == first.id
    assert duplicate_reason(spec, "idem-1", again) == "idempotencyKey"
    again, created = await scheduler.submit("acme", spec, "idem-2")
    assert not created and duplicate_reason(spec, "idem-2", again) == "dedupKey"
    other = job(ZOOM_AGAIN)
    again, created = await scheduler.submit("acme", other, "idem-3")
    assert not created and duplicate_reason(other, "idem-3", again) == "meeting"


async def test_ten_concurrent_submits_after_the_meeting_job_ended_create_one_job(
    make_scheduler: MakeScheduler, store: JobStore
) -> None:
    """All ten find the ended job's slot stale and release it (a delete conditioned on the
    version read: once); one creates the new job, the nine others return it."""
    schedulers = [make_scheduler() for _ in range(10)]
    ended, _ = await schedulers[0].submit("acme", job(ZOOM))
    await schedulers[0].cancel("acme", ended.id)
    results = await asyncio.gather(*(s.submit("acme", job(ZOOM_AGAIN)) for s in schedulers))
    created = [found for found, new in results if new]
    assert len(created) == 1 and created[0].id != ended.id
    assert {found.id for found, _ in results} == {created[0].id}
    slots = await store.scan_records(KIND, "acme:", 10)
    assert {slot.data["jobId"] for slot in slots} == {created[0].id} and len(slots) == 2
