"""What the delivery tests share: fast settings, a scheduler on a fake backend driving jobs
through their states, the server's own delivery loop, and the checks on a receiver's log."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from core.config import Settings
from core.events import EVENT, events_prefix
from core.loops import deliver_forever, drain_forever, running
from core.models import JobSpec, JobState
from core.ports import JobStore
from core.records import Record
from core.scheduler import Scheduler
from core.webhooks.delivery import ATTEMPT, DELIVERY
from tests.fakes import FakeBackend
from tests.webhooks.receiver import Handle

MEETING = "https://meet.example.com/abc-defg-hij"
LIFECYCLE = ["job.queued", "job.provisioning", "job.running", "job.completed"]
WAIT_SECONDS = 30.0

# Real time, short: four attempts within ~1.7 s, each given at most a second.
FAST: dict[str, Any] = {
    "webhook_allow_private": True,
    "webhook_retry_schedule": (0, 0.2, 0.5, 1.0),
    "webhook_timeout_seconds": 1.0,
    "max_clock_skew_seconds": 0,
    "max_concurrent_jobs": 50,
    "polling_interval_ms": 50,
}

Entry = dict[str, Any]


def fast_settings(**overrides: Any) -> Settings:
    return Settings(**{**FAST, **overrides})


@dataclass
class Rig:
    """A scheduler (real) on a store (real) with a backend double that runs nothing."""

    store: JobStore
    settings: Settings = field(default_factory=fast_settings)
    tenant: str = "t1"
    backend: FakeBackend = field(default_factory=FakeBackend)
    scheduler: Scheduler = field(init=False)

    def __post_init__(self) -> None:
        self.scheduler = Scheduler(self.store, self.backend, self.settings)

    async def endpoint(self, receiver: Handle, path: str | None = "/hook", **options: Any) -> str:
        """A new endpoint of the tenant at `receiver`'s `path` (None: the secret of the jobs' own
        webhookUrl); the receiver learns its secret (beside the ones it had)."""
        url = None if path is None else f"{receiver.url}{path}"
        view, secret = await self.scheduler.webhooks.create(
            self.tenant, url, options.get("events", []), options.get("description")
        )
        known = receiver.secrets_file.read_text().split() if receiver.secrets_file.exists() else []
        receiver.set_secrets([*known, secret])
        endpoint_id: str = view["id"]
        return endpoint_id

    async def submit(self, webhook_url: str | None = None, job_id: str | None = None) -> str:
        fields = {"meetingUrl": MEETING, "webhookUrl": webhook_url}
        spec = JobSpec.model_validate(fields, context={"webhook_allow_private": True})
        job, _ = await self.scheduler.submit(self.tenant, spec, job_id=job_id)
        return job.id

    async def drain_until(self, job_id: str, state: JobState) -> None:
        for _ in range(20):
            if (await self.scheduler.get(None, job_id)).status is state:
                return
            await self.scheduler.drain_once()
        raise AssertionError(f"job {job_id} did not reach {state.value}")

    async def start_job(self, webhook_url: str | None = None, job_id: str | None = None) -> str:
        """Submitted and dispatched: queued, provisioning, running."""
        job_id = await self.submit(webhook_url, job_id)
        await self.drain_until(job_id, JobState.RUNNING)
        return job_id

    async def finish_job(self, job_id: str) -> None:
        self.backend.finish(job_id)
        await self.drain_until(job_id, JobState.COMPLETED)

    async def run_job(self, webhook_url: str | None = None, job_id: str | None = None) -> str:
        """A job through its whole life: queued, provisioning, running, completed."""
        job_id = await self.start_job(webhook_url, job_id)
        await self.finish_job(job_id)
        return job_id

    async def running(self, job_id: str) -> bool:
        return (await self.scheduler.get(None, job_id)).status is JobState.RUNNING

    async def fanned_out(self, job_id: str) -> bool:
        """Whether every event of the job has been fanned out to the endpoints."""
        found = await self.store.scan_records(EVENT, events_prefix(job_id), 1000)
        return all(event.due is None for event in found)

    async def event_ids(self, job_id: str) -> list[str]:
        """The job's events as the store has them, in order."""
        return [event["id"] for event in await self.scheduler.job_events(None, job_id)]

    async def states(self, endpoint_id: str, event_ids: list[str]) -> list[str | None]:
        """The state of each event's delivery to the endpoint (None: not made yet)."""
        found = [await self.store.get_record(DELIVERY, f"{endpoint_id}:{e}") for e in event_ids]
        return [record.data["state"] if record else None for record in found]

    async def wait_states(self, endpoint_id: str, event_ids: list[str], state: str) -> None:
        async def reached() -> bool:
            return await self.states(endpoint_id, event_ids) == [state] * len(event_ids)

        await wait_until(reached, f"{len(event_ids)} deliveries to {endpoint_id} {state}")

    async def wait_delivered(
        self, receiver: Handle, endpoint_id: str, expected: dict[str, list[str]]
    ) -> float:
        """Until the receiver accepted every event of `expected` and the store says so too
        (the attempt settled and logged); returns when the receiver had them all."""
        arrived = await wait_delivered(receiver, expected)
        ids = [event for events in expected.values() for event in events]
        await self.wait_states(endpoint_id, ids, "delivered")
        return arrived

    async def delivery(self, endpoint_id: str, event_id: str) -> Record:
        record = await self.store.get_record(DELIVERY, f"{endpoint_id}:{event_id}")
        assert record is not None, f"no delivery of {event_id} to {endpoint_id}"
        return record

    async def attempts(self, endpoint_id: str) -> list[Entry]:
        """The endpoint's attempt log, oldest first (every tenant's)."""
        found = await self.store.scan_records(ATTEMPT, "", 5000)
        mine = [r.data for r in found if r.data["deliveryId"].startswith(f"{endpoint_id}:")]
        return sorted(mine, key=lambda a: (a["at"], a["attempt"]))


@contextlib.asynccontextmanager
async def delivering(
    scheduler: Scheduler, every: float = 0.05, drain: bool = False
) -> AsyncIterator[None]:
    """The local server's delivery loop (core/routes.py) running beside the test; with `drain`,
    its drain loop too, as `botsched serve` runs them (neither waits for the other)."""
    loops = [deliver_forever(scheduler, every)] + (
        [drain_forever(scheduler, every)] if drain else []
    )
    try:
        async with running(*loops):
            yield
    finally:
        await scheduler.deliverer.close()


async def wait_until(
    check: Callable[[], bool | Awaitable[bool]], what: str, seconds: float = WAIT_SECONDS
) -> float:
    """Poll `check` until it holds; returns when it first held (time.monotonic())."""
    deadline = time.monotonic() + seconds
    while True:
        outcome = check()
        if outcome if isinstance(outcome, bool) else await outcome:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:g} s: {what}")
        await asyncio.sleep(0.02)


async def wait_delivered(
    receiver: Handle, expected: dict[str, list[str]], path: str | None = None
) -> float:
    """Until the receiver has accepted every event of `expected` (job id -> event ids)."""
    ids = [event for events in expected.values() for event in events]
    where = f"on {path}" if path else "in all"
    return await wait_until(
        lambda: has_all(receiver.entries(), ids, path), f"{len(ids)} events accepted {where}"
    )


def accepted(entries: list[Entry], path: str | None = None) -> list[Entry]:
    """The deliveries the receiver verified and answered 200, in arrival order."""
    return [
        e
        for e in entries
        if e["verified"] and e["answer"] == 200 and (path is None or e["path"] == path)
    ]


def has_all(entries: list[Entry], ids: list[str], path: str | None = None) -> bool:
    return set(ids) <= {e["id"] for e in accepted(entries, path)}


def assert_in_order_once(
    entries: list[Entry], expected: dict[str, list[str]], path: str | None = None
) -> None:
    """Every expected event accepted exactly once, verified, and per job in order: no attempt
    at an event arrived before every earlier event of its job had been accepted."""
    mine = [e for e in entries if path is None or e["path"] == path]
    assert all(e["verified"] for e in mine), [e for e in mine if not e["verified"]]
    ids = [e["id"] for e in accepted(mine)]
    assert sorted(ids) == sorted(i for events in expected.values() for i in events), ids
    assert len(ids) == len(set(ids)), f"an id accepted twice: {ids}"
    for job_id, events in expected.items():
        arrived = [e["id"] for e in accepted(mine) if e["jobId"] == job_id]
        assert arrived == events, f"job {job_id}: {arrived} != {events}"
        assert_no_overtaking([e for e in mine if e["jobId"] == job_id], events)


def assert_no_overtaking(entries: list[Entry], events: list[str]) -> None:
    """No attempt at event n arrived before event n-1 was accepted."""
    done: set[str] = set()
    for entry in entries:
        position = events.index(entry["id"])
        assert set(events[:position]) <= done, f"{entry['id']} arrived before {events[:position]}"
        if entry["answer"] == 200:
            done.add(entry["id"])


def types_of(entries: list[Entry], job_id: str) -> list[str]:
    return [e["type"] for e in accepted(entries) if e["jobId"] == job_id]
