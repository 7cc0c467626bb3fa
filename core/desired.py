"""Changing a queued job, and a job's desired state by the client's own key.

`PATCH /api/scheduler/jobs/{jobId}` changes SCHEDULE_FIELDS of a queued job. `PUT
/api/scheduler/jobs/by-key/{externalKey}` makes one job per (tenant, key) look as its body says:
creates it, changes it while queued, cancels it, or makes a new one once it has ended (the rules
are `Scheduler.put_by_key`'s). The key's uniqueness is a record (core/records.py) of kind
EXTERNAL, inserted if absent (a compare-and-set on every store) and naming the job of the key: the
job is created under the id the record names, so concurrent PUTs of one key make one job.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.errors import SchedulerError, ValidationFailed
from core.events import CHANGEABLE_FIELDS
from core.meeting_keys import meeting_key
from core.models import Job, JobSpec, to_ms
from core.records import key_part

EXTERNAL = "external"
ATTEMPTS = 16  # compare-and-set rounds a PATCH or PUT makes before a 409 `conflict`
SCHEDULE_FIELDS = ("joinAt", "deadline", "priority", "maxRuntimeSeconds")
# PUT by key: changed in place while queued (SCHEDULE_FIELDS among them, and meetingUrl when it
# is another spelling of the job's meeting: another meeting replaces the job); the other fields
# of a spec are the submit's alone
REPLACED_FIELDS = CHANGEABLE_FIELDS
KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+=~-]{0,199}$"
_KEY = re.compile(KEY_PATTERN)
KEY_RULE = (
    "1 to 200 characters: letters, digits and . _ : @ + = ~ -, starting with a letter or digit"
)


class NotQueued(SchedulerError):
    """Only a queued job can be changed; the answer says the job's state."""

    status = 409
    code = "not_queued"

    def __init__(self, job: Job, why: str = "only a queued job can be changed") -> None:
        super().__init__(f"job {job.id} is {job.status.value}: {why}", state=job.status.value)


@dataclass
class Outcome:
    """What a PUT by key did."""

    job: Job
    created: bool = False
    duplicate: bool = False  # the submit returned a job that existed (dedupKey, same meeting)
    not_applied: list[str] = field(default_factory=list)  # fields a started job keeps


async def backoff(attempt: int) -> None:
    """After a lost compare-and-set: a short random pause, longer each time, so that writers of
    one job take turns rather than collide again."""
    await asyncio.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 6)))


def check_key(key: str) -> str:
    if not _KEY.match(key):
        raise ValidationFailed(f"externalKey: {KEY_RULE}", fields=["externalKey"])
    return key


def record_key(tenant: str, key: str) -> str:
    """The EXTERNAL record's key: the tenant, and a digest of the key (any length fits)."""
    return f"{key_part(tenant)}:{hashlib.sha256(key.encode()).hexdigest()}"


def same(old: Any, new: Any) -> bool:
    """Equal values; times to the millisecond, as the stores index them."""
    if isinstance(old, datetime) and isinstance(new, datetime):
        return to_ms(old) == to_ms(new)
    return bool(old == new)


def same_meeting(job: Job, spec: JobSpec) -> bool:
    """Whether `spec` is for the job's meeting: its URL, or another spelling of it (the same
    meetingKey: core/meeting_keys.py)."""
    if same(job.meetingUrl, spec.meetingUrl):
        return True
    return job.meetingKey is not None and meeting_key(spec.meetingUrl) == job.meetingKey


def changes(job: Job, spec: JobSpec, names: tuple[str, ...] = REPLACED_FIELDS) -> dict[str, Any]:
    """The fields of `names` in which `spec` differs from `job`, with the spec's values."""
    return {
        name: getattr(spec, name)
        for name in names
        if not same(getattr(job, name), getattr(spec, name))
    }
