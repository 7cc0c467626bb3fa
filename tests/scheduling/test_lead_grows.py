"""A join lead learned after a job was submitted still starts it on time (core/leads.py `ready`,
read by the dispatcher): the job's notBefore was joinAt less the lead of its submit, but it is
dispatched at joinAt less the lead of now. On EVERY store (memory, SQLite, Azure Table on
Azurite, Firestore on its emulator, D1 on its SQLite stand-in); the backend (tests/fakes.py) and
the clock are doubles."""

from __future__ import annotations

from datetime import timedelta

from core.leads import KIND, MIN_SAMPLES
from core.models import JobSpec, JobState
from core.ports import JobStore
from core.records import Record
from tests.fakes import FakeBackend
from tests.scheduling.conftest import MakeScheduler
from tests.unit.conftest import Clock, at

JOIN = 3600  # joinAt, seconds after T0
FIRST_LEAD = 60  # join_lead_seconds: the lead before any start was measured
LEARNED = 150 + 10  # the p95 of the samples below plus the 10 s margin


def meeting(n: int, join: float) -> JobSpec:
    return JobSpec(meetingUrl=f"https://meet.example.com/lead-{n}", joinAt=at(join))


async def test_a_job_submitted_before_the_lead_grew_starts_at_the_new_lead(
    make_scheduler: MakeScheduler, store: JobStore, backend: FakeBackend, clock: Clock
) -> None:
    scheduler = make_scheduler(
        join_lead_seconds=FIRST_LEAD, max_concurrent_jobs=5, overbooking="queue"
    )
    early, _ = await scheduler.submit("acme", meeting(1, JOIN))
    assert early.notBefore == at(JOIN - FIRST_LEAD)  # no samples yet: the first lead
    samples = [150.0] * MIN_SAMPLES  # starts measured since: they take 150 s
    await store.put_record(Record(KIND, backend.name, {"samples": samples}), None)
    await scheduler.leads.refresh()
    late, _ = await scheduler.submit("acme", meeting(2, JOIN + 200))  # ready at JOIN + 40

    clock.now = at(JOIN - LEARNED - 5)  # not yet, at either lead
    await scheduler.drain_once()
    assert not backend.starts

    clock.now = at(JOIN - LEARNED + 1)  # the new lead has come; the submit's lead has not
    assert clock.now < early.notBefore
    await scheduler.drain_once()
    assert set(backend.starts) == {early.id}
    stored = await store.get(early.id)
    assert stored is not None and stored.status is JobState.RUNNING

    clock.now += timedelta(seconds=LEARNED - 5)
    assert clock.now < late.notBefore  # the later job waits for its own time
    await scheduler.drain_once()
    assert set(backend.starts) == {early.id}
