"""Events: one per transition, written with it; and the bot's own status reports.

Real parts: the memory and SQLite stores (the `store` fixture), the scheduler's own modules.
The backend is tests/fakes.py's FakeBackend (it runs nothing); the clock is the tests'.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from core.errors import Conflict, JobFinished, Unauthorized
from core.events import EVENT, event_id
from core.models import Execution, Job, JobState
from core.ports import JobStore
from core.records import Record
from core.scheduler import Scheduler
from core.webhooks.bot_status import BotReport
from tests.fakes import FakeBackend
from tests.unit.conftest import Clock, MakeScheduler, fresh, spec


async def types_of(scheduler: Scheduler, job: Job) -> list[str]:
    return [event["type"] for event in await scheduler.job_events(None, job.id)]


async def test_every_transition_writes_one_event_in_order(
    scheduler: Scheduler, backend: FakeBackend, clock: Clock, store: JobStore
) -> None:
    job, _ = await scheduler.submit("t1", spec())
    await scheduler.drain_once(clock.at(1))
    backend.executions[job.id] = Execution(phase="succeeded", exitCode=0)
    await scheduler.drain_once(clock.at(2))
    assert await types_of(scheduler, job) == [
        "job.queued",
        "job.provisioning",
        "job.running",
        "job.completed",
    ]
    events = await scheduler.job_events(None, job.id)
    assert [e["id"] for e in events] == [event_id(job.id, n) for n in range(1, 5)]
    assert events[-1]["data"]["status"] == "completed"
    assert events[-1]["data"]["exitCode"] == 0
    assert events[2]["data"]["containerId"] == job.id and events[2]["data"]["backend"] == "fake"
    assert "config" not in events[0]["data"]  # the summary, not the whole job
    assert (await fresh(store, job)).eventSeq == 4


async def test_retry_undo_and_cancel_have_their_own_events(
    make_scheduler: MakeScheduler, backend: FakeBackend, clock: Clock
) -> None:
    scheduler = make_scheduler(owner="main", max_concurrent_jobs=1)
    backend.fail_starts = 1
    job, _ = await scheduler.submit("t1", spec())
    await scheduler.drain_once(clock.at(1))  # the start fails: back to the queue
    await scheduler.drain_once(clock.at(60))  # runs
    await scheduler.cancel(None, job.id)  # running: stopping, then cancelled
    assert await types_of(scheduler, job) == [
        "job.queued",
        "job.provisioning",
        "job.retrying",
        "job.provisioning",
        "job.running",
        "job.stopping",
        "job.cancelled",
    ]
    events = await scheduler.job_events(None, job.id)
    assert events[2]["data"]["error"].startswith("start failed")
    assert events[-1]["data"]["reason"] == "cancelled"


async def test_a_write_that_loses_its_race_writes_no_event(
    scheduler: Scheduler, store: JobStore
) -> None:
    job, _ = await scheduler.submit("t1", spec())
    first = await scheduler._write(job, status=JobState.CANCELLED, reason="cancelled")
    with pytest.raises(Conflict):  # the same version again: loses, and leaves no event
        await scheduler._write(job, status=JobState.FAILED, reason="x")
    assert first.eventSeq == 2
    kept = await store.scan_records(EVENT, f"evt_{job.id}_", 10)
    assert [json.loads(r.data["body"])["type"] for r in kept] == ["job.queued", "job.cancelled"]


async def test_a_store_refusing_the_event_refuses_the_transition(
    scheduler: Scheduler, store: JobStore
) -> None:
    """One atomic write: an event that cannot be written keeps the job as it was."""
    job, _ = await scheduler.submit("t1", spec())
    await store.put_record(Record(EVENT, event_id(job.id, 2), {}), None)  # the next id, taken
    with pytest.raises(Conflict):
        await scheduler._write(job, status=JobState.CANCELLED)
    assert (await fresh(store, job)).status is JobState.QUEUED


async def test_new_events_are_due_for_delivery_when_someone_may_want_them(
    scheduler: Scheduler, store: JobStore
) -> None:
    """Every event is kept; only one an endpoint may want is queued for the deliverer."""
    quiet, _ = await scheduler.submit("t1", spec())
    assert await store.due_records(EVENT, 2**53, 10) == []
    assert await types_of(scheduler, quiet) == ["job.queued"]  # kept all the same
    await scheduler.webhooks.create("t1", "https://hooks.example.com/in", [], None)
    job, _ = await scheduler.submit("t1", spec())  # the tenant has an endpoint now
    other, _ = await scheduler.submit("t2", spec())  # another tenant has none
    (event,) = await store.due_records(EVENT, 2**53, 10)
    assert event.key == event_id(job.id, 1) and event.data["tenant"] == "t1"
    body = json.loads(event.data["body"])
    assert body["type"] == "job.queued" and body["id"] == event.key
    assert body["data"]["id"] == job.id and other.id != job.id


# -- the bot's own status ----------------------------------------------------------------------


class RecordingBackend(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.configs: dict[str, dict[str, object]] = {}

    async def start(self, job: Job):  # type: ignore[no-untyped-def]
        self.configs[job.id] = job.bot_config()
        return await super().start(job)


def report(job_id: str, code: str) -> BotReport:
    body = {"event": "bot.status_change", "data": {"bot_id": job_id, "status": {"code": code}}}
    return BotReport.model_validate(body)


@pytest.fixture
def reporting(make_scheduler: MakeScheduler) -> tuple[Scheduler, RecordingBackend]:
    backend = RecordingBackend()
    return make_scheduler("main", backend, public_url="http://127.0.0.1:8080"), backend


async def test_the_bot_is_given_a_token_only_it_holds(
    reporting: tuple[Scheduler, RecordingBackend], clock: Clock, store: JobStore
) -> None:
    scheduler, backend = reporting
    job, _ = await scheduler.submit("t1", spec())
    await scheduler.drain_once(clock.at(1))
    config = backend.configs[job.id]
    token = str(config["bots_api_key"])
    assert config["bot_id"] == job.id
    assert config["bots_webhook_url"] == "http://127.0.0.1:8080/api/scheduler/bot-status"
    stored = await fresh(store, job)
    assert stored.botTokenHash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in stored.model_dump_json() and "bots_api_key" not in stored.config
    assert "botTokenHash" not in stored.public()

    updated = await scheduler.report_bot_status(report(job.id, "in_call_recording"), token)
    assert updated.botStatus == "in_call_recording" and updated.botStatusAt is not None
    assert (await types_of(scheduler, job))[-1] == "bot.in_call_recording"


async def test_bad_tokens_and_finished_jobs_are_refused(
    reporting: tuple[Scheduler, RecordingBackend], clock: Clock
) -> None:
    scheduler, backend = reporting
    first, _ = await scheduler.submit("t1", spec())
    second, _ = await scheduler.submit("t1", spec())
    await scheduler.drain_once(clock.at(1))
    token = str(backend.configs[first.id]["bots_api_key"])
    other = str(backend.configs[second.id]["bots_api_key"])
    for job_id, given in [(first.id, "wrong"), (first.id, other), ("no-such-job", token)]:
        with pytest.raises(Unauthorized):
            await scheduler.report_bot_status(report(job_id, "joining_call"), given)
    await scheduler.cancel(None, first.id)
    with pytest.raises(JobFinished):
        await scheduler.report_bot_status(report(first.id, "call_ended"), token)


async def test_a_bot_url_the_client_set_is_left_alone(
    reporting: tuple[Scheduler, RecordingBackend], clock: Clock, store: JobStore
) -> None:
    scheduler, backend = reporting
    own = {"bots_webhook_url": "https://example.com/mine", "bots_api_key": "theirs"}
    job, _ = await scheduler.submit("t1", spec(config=own))
    await scheduler.drain_once(clock.at(1))
    assert backend.configs[job.id]["bots_webhook_url"] == "https://example.com/mine"
    assert backend.configs[job.id]["bots_api_key"] == "theirs"
    assert (await fresh(store, job)).botTokenHash is None
    with pytest.raises(Unauthorized):
        await scheduler.report_bot_status(report(job.id, "joining_call"), "theirs")


class EagerBotBackend(RecordingBackend):
    """A bot that reports before its start has returned: before the job reads `running`."""

    scheduler: Scheduler

    async def start(self, job: Job):  # type: ignore[no-untyped-def]
        ref = await super().start(job)
        token = str(self.configs[job.id]["bots_api_key"])
        await self.scheduler.report_bot_status(report(job.id, "joining_call"), token)
        return ref


async def test_a_report_racing_a_transition_does_not_stop_it(
    make_scheduler: MakeScheduler, clock: Clock, store: JobStore
) -> None:
    """The bot's report moves the job's version between the claim and `running`, and between
    a cancel's `stopping` and `cancelled`: both transitions still complete at once."""
    backend = EagerBotBackend()
    scheduler = make_scheduler("main", backend, public_url="http://127.0.0.1:8080")
    backend.scheduler = scheduler
    job, _ = await scheduler.submit("t1", spec())
    await scheduler.drain_once(clock.at(1))
    assert (await fresh(store, job)).status is JobState.RUNNING
    token = str(backend.configs[job.id]["bots_api_key"])

    async def stop_and_report(ref):  # type: ignore[no-untyped-def]
        await FakeBackend.stop(backend, ref)
        await scheduler.report_bot_status(report(job.id, "call_ended"), token)

    backend.stop = stop_and_report  # type: ignore[method-assign]
    cancelled = await scheduler.cancel(None, job.id)
    assert cancelled.status is JobState.CANCELLED
    assert await types_of(scheduler, job) == [
        "job.queued",
        "job.provisioning",
        "bot.joining_call",
        "job.running",
        "job.stopping",
        "bot.call_ended",
        "job.cancelled",
    ]


def test_an_endpoint_filter_takes_types_and_families() -> None:
    from core.webhooks.endpoints import check_events, wants

    def endpoint(events: list[str], disabled: bool = False) -> Record:
        return Record("webhook", "t:wh_1", {"events": check_events(events), "disabled": disabled})

    assert wants(endpoint([]), "bot.recording_paused")  # no filter: everything
    assert wants(endpoint(["bot.*"]), "bot.recording_paused")  # a code beyond the known five
    assert not wants(endpoint(["bot.*"]), "job.failed")
    assert wants(endpoint(["job.*"]), "job.failed")
    assert wants(endpoint(["job.failed", "bot.call_ended"]), "bot.call_ended")
    assert not wants(endpoint(["job.failed"]), "job.completed")
    assert not wants(endpoint([], disabled=True), "job.failed")
