"""Events: one for every transition the scheduler writes, kept in the store as an outbox.

The scheduler's modules write a job only through a compare-and-set; `outbox` turns the job read
and the job to write into the events that write makes, and the store writes them in the same
atomic write as the job (JobStore.update's `records`). So an event exists exactly when its
transition does: never a job written without its event, never an event for a write that lost.

An event's id is `evt_{job id}_{seq:06d}`: stable (a retried delivery carries the same id), and
a job's events list in order. Its `body` is the JSON text delivered, written once here, so the
signature of every attempt covers the same bytes. A new event is `due` (now): the deliverer
(core/webhooks/delivery.py) fans it out to the tenant's endpoints and clears that mark.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from core.models import Job, JobState, to_ms
from core.records import Record, key_part

EVENT = "event"
JOB_EVENTS = (
    "job.queued",
    "job.rescheduled",
    "job.provisioning",
    "job.running",
    "job.retrying",
    "job.stopping",
    "job.completed",
    "job.failed",
    "job.cancelled",
)
BOT_CODES = (
    "joining_call",
    "in_waiting_room",
    "in_call_not_recording",
    "in_call_recording",
    "call_ended",
)
BOT_EVENTS = tuple(f"bot.{code}" for code in BOT_CODES)
EVENT_TYPES = JOB_EVENTS + BOT_EVENTS
# what an endpoint's filter may name: a type, or all of a family (bot.* also takes the codes
# a bot reports beyond BOT_CODES)
FILTER_TYPES = (*EVENT_TYPES, "job.*", "bot.*")
SUMMARY_FIELDS = (
    "id",
    "status",
    "reason",
    "error",
    "exitCode",
    "attempts",
    "outcome",
    "meetingUrl",
    "botName",
    "botStatus",
    "joinAt",
    "createdAt",
    "startedAt",
    "completedAt",
    "metadata",
)
_SUMMARY_SET = set(SUMMARY_FIELDS)
# what a client may change while its job is queued (PATCH, PUT by key): such a change of a queued
# job is the event `job.rescheduled`
CHANGEABLE_FIELDS = (
    "meetingUrl",
    "joinAt",
    "deadline",
    "priority",
    "maxRuntimeSeconds",
    "botName",
    "email",
    "recordingMode",
    "config",
    "cpu",
    "memory",
    "metadata",
    "webhookUrl",
)


def events_prefix(job_id: str) -> str:
    """The key prefix of the job's events and of no other job's: `_` in an id is escaped."""
    return f"evt_{key_part(job_id)}_"


def event_id(job_id: str, seq: int) -> str:
    return f"{events_prefix(job_id)}{seq:06d}"


def transition(old: Job | None, new: Job) -> str | None:
    """The event type of the write `old` -> `new`: a new status, or None."""
    if old is None:
        return "job.queued"
    if new.status is old.status:
        return "job.rescheduled" if new.status is JobState.QUEUED and _changed(old, new) else None
    if new.status is JobState.QUEUED and new.attempts == old.attempts:
        return "job.retrying"  # a claim put back before any start lowers attempts: queued
    return f"job.{new.status.value}"


def _changed(old: Job, new: Job) -> bool:
    """Whether a write of a queued job changed what its client asked for."""
    return any(getattr(old, name) != getattr(new, name) for name in CHANGEABLE_FIELDS)


def bot_report(old: Job | None, new: Job) -> str | None:
    """The event of a new report of the bot's own status, or None."""
    if new.botStatus is None or old is None:
        return None
    if (new.botStatus, new.botStatusAt) == (old.botStatus, old.botStatusAt):
        return None
    return f"bot.{new.botStatus}"


def outbox(
    old: Job | None, new: Job, now: datetime, deliver: bool = True
) -> tuple[Job, list[Record]]:
    """`new` numbered for the events its write makes, and those events as records; `deliver`:
    marked due for the deliverer (someone may want them). `new` is the caller's own copy: it is
    numbered in place."""
    types = [kind for kind in (transition(old, new), bot_report(old, new)) if kind]
    if not types:
        return new, []
    seq = old.eventSeq if old is not None else 0
    records = []
    for kind in types:
        seq += 1
        records.append(_event(new, kind, seq, now, deliver))
    new.eventSeq = seq
    return new, records


def summary_json(job: Job) -> str:
    """`summary` as JSON text, written by pydantic's serializer in one step."""
    text = job.model_dump_json(include=_SUMMARY_SET)
    run = job.execution
    if run is None:
        return f'{text[:-1]},"containerId":null,"backend":null}}'
    return f'{text[:-1]},"containerId":{json.dumps(run.id)},"backend":{json.dumps(run.backend)}}}'


def _event(job: Job, kind: str, seq: int, now: datetime, deliver: bool) -> Record:
    key = event_id(job.id, seq)
    timestamp = now.isoformat().replace("+00:00", "Z")
    # the id (key characters), the type (ours) and the time (ISO 8601) need no escaping
    head = f'{{"id":"{key}","type":"{kind}","timestamp":"{timestamp}"'
    data = {
        "id": key,
        "type": kind,
        "jobId": job.id,
        "tenant": job.tenant,
        "seq": seq,
        "createdAt": timestamp,
        "body": f'{head},"data":{summary_json(job)}}}',
    }
    if job.webhookUrl:
        data["webhookUrl"] = job.webhookUrl
    return Record(EVENT, key, data, due=to_ms(now) if deliver else None)


def timeline(records: list[Record]) -> list[dict[str, Any]]:
    """A job's events as the API shows them: each the body its deliveries carry."""
    return [json.loads(record.data["body"]) for record in records]
