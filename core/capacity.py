"""Capacity you can see: where a queued job stands, when it should start, and the refusal of a
submit that could not start now (`onCapacity: reject`).

**Position** (`queuePosition`): the queued jobs due now that rank ahead of the job in dispatch
order (priority desc, then joinAt or createdAt, then id), every tenant's; 0: it is the next to
start. For a job not due yet, only those the estimate below still sees waiting at its notBefore.
Read from the top of `store.due(now, window)` in doubling windows, at most POSITION_LIMIT jobs: a
job with more ahead reports POSITION_LIMIT ("at least"). `due` is only ever asked about now: a
future time would move jobs not due yet into the memory store's due index for good, slowing
every dispatch after.

**Estimated start** (`estimatedStartAt`): the cap's slots are free now (cap - active jobs) or
free up as the active jobs end, each at its start plus its expected run (its maxRuntimeSeconds
when that is shorter than the typical run; a job being stopped: now). The jobs ahead take the
earliest slots first, in order, each holding it for its own expected run; the job takes the
earliest slot after them, never before its own notBefore. With a per-tenant cap the same is done
for the tenant's own active jobs and jobs ahead, and the later of the two times is the estimate.
The typical run is the median of the newest completed jobs (RUN_SAMPLE of them), measured at
most every RUN_TTL seconds per process; `expected_run_seconds` until one completed.

A job due now is placed on a fresh reading of the queue. A job not due yet is placed on the
reading its process made at most SNAPSHOT_TTL seconds ago: a burst of scheduled submits (most
of them) costs one reading, not one each (on SQLite `due` walks the jobs not due yet).
"""

from __future__ import annotations

import heapq
import math
import statistics
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from core.config import Settings
from core.errors import SchedulerError
from core.models import Job, JobSpec, JobState, to_ms
from core.ports import JobStore
from core.reservations import bucket_of, bucket_start
from core.reserved_budget import Budget, reserved_budget

POSITION_LIMIT = 1000  # the most queued jobs read to place one job
FIRST_WINDOW = 32
RUN_SAMPLE = 50  # completed jobs the typical run is the median of
RUN_TTL = 60.0  # seconds a process keeps its measure of the typical run
SNAPSHOT_TTL = 1.0  # seconds a process reuses its view of the queue for jobs not due yet
DEFAULT_PRIORITY: int = JobSpec.model_fields["priority"].default
Rank = tuple[int, int, str]

# store -> (monotonic time the measure expires, typical run seconds)
_typical: weakref.WeakKeyDictionary[Any, tuple[float, float]] = weakref.WeakKeyDictionary()
_queues: weakref.WeakKeyDictionary[Any, _Queue] = weakref.WeakKeyDictionary()  # store -> view


class AtCapacity(SchedulerError):
    """`onCapacity: reject`, and the job could not start now."""

    status = 429
    code = "at_capacity"

    def __init__(self, message: str, retry_after: int, start: datetime) -> None:
        super().__init__(message, retryAfter=retry_after, estimatedStartAt=iso(start))
        self.retry_after = retry_after


@dataclass(frozen=True)
class Estimate:
    position: int  # POSITION_LIMIT: at least that many
    start: datetime
    active: int  # the jobs holding the global cap's slots
    tenant_active: int  # those of the job's tenant


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def rank(priority: int, sort_time: datetime, job_id: str) -> Rank:
    """A job's place in dispatch order, as the stores sort the queue (milliseconds)."""
    return (-priority, to_ms(sort_time), job_id)


def rank_of(job: Job) -> Rank:
    return rank(job.priority, job.sort_time, job.id)


async def estimate(store: JobStore, settings: Settings, job: Job, now: datetime) -> Estimate:
    """Where the queued (or about to be queued) `job` stands, and when it should start."""
    return await _estimate(store, settings, job.tenant, rank_of(job), job.notBefore, now)


async def queue_fields(store: JobStore, settings: Settings, job: Job, now: datetime) -> str:
    """`queuePosition` and `estimatedStartAt` of a queued job as JSON members to append to the
    job's JSON object (`,"queuePosition":…`); empty for a job in any other state."""
    if job.status is not JobState.QUEUED:
        return ""
    found = await estimate(store, settings, job, now)
    return f',"queuePosition":{found.position},"estimatedStartAt":"{iso(found.start)}"'


def with_fields(job_json: str, members: str) -> str:
    """A job's JSON object with `members` (from queue_fields) added."""
    return f"{job_json[:-1]}{members}}}" if members else job_json


async def estimated_wait(store: JobStore, settings: Settings, tenant: str, now: datetime) -> int:
    """Seconds a new unscheduled job of `tenant` (default priority) submitted now should wait."""
    target = rank(DEFAULT_PRIORITY, now, "\U0010ffff")  # after every job of its time
    found = await _estimate(store, settings, tenant, target, now, now)
    return _seconds(found.start - now)


async def check_capacity(store: JobStore, settings: Settings, job: Job, now: datetime) -> None:
    """For `onCapacity: reject`: raise AtCapacity when the new `job` could not start now (no
    free slot under the global cap or its tenant's once the jobs ahead have theirs). A job not
    due yet (joinAt, less the join lead, in the future) is never refused for the present."""
    if job.notBefore > now or (job.joinAt is not None and job.joinAt > now):
        return
    found = await estimate(store, settings, job, now)
    if found.start <= now:
        await _check_reserved(store, settings, job, now, found.position)
        return
    wait = _seconds(found.start - now)
    cap, per_tenant = settings.max_concurrent_jobs, settings.max_concurrent_per_tenant
    busy = f"{found.active} of {cap} slots busy"
    if per_tenant:
        busy += f", {found.tenant_active} of your {per_tenant}"
    ahead = f"{found.position}{'+' if found.position >= POSITION_LIMIT else ''}"
    raise AtCapacity(
        f"at capacity: {busy}, {ahead} queued ahead; estimated start {iso(found.start)} "
        f"(in {wait}s). Retry then, or submit with onCapacity: queue",
        wait,
        found.start,
    )


async def _check_reserved(
    store: JobStore, settings: Settings, job: Job, now: datetime, ahead: int
) -> None:
    """Raise AtCapacity when the slot free now is one that reservations of scheduled jobs need
    within the new job's expected run: the dispatcher would leave the job queued
    (core/reserved_budget.py). It may start when the current reservation bucket ends."""
    active = await store.active()
    budget = await reserved_budget(store, settings, Budget(settings, active), active, now)
    budget.base.free -= ahead  # the jobs ahead of it take their slots first
    if budget.fits(job.tenant, job):
        return
    end = bucket_start(bucket_of(now.timestamp(), settings) + 1, settings)
    start = datetime.fromtimestamp(end, UTC)
    wait = _seconds(start - now)
    raise AtCapacity(
        "at capacity: the free slots are reserved for scheduled meetings within this job's "
        f"expected run; retry at {iso(start)} (in {wait}s), or submit with onCapacity: queue",
        wait,
        start,
    )


async def typical_run(store: JobStore, settings: Settings) -> float:
    """The median run of the newest completed jobs, measured at most every RUN_TTL seconds."""
    cached = _typical.get(store)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    page = await store.list_jobs(None, JobState.COMPLETED, RUN_SAMPLE)
    runs = [
        (job.completedAt - job.startedAt).total_seconds()
        for job in page.jobs
        if job.startedAt is not None and job.completedAt is not None
    ]
    runs = [seconds for seconds in runs if seconds > 0]
    seconds = statistics.median(runs) if runs else settings.expected_run_seconds
    _typical[store] = (time.monotonic() + RUN_TTL, seconds)
    return seconds


def forget(store: JobStore) -> None:
    """Measure the typical run and read the queue afresh on the next estimate (tests)."""
    _typical.pop(store, None)
    _queues.pop(store, None)


# -- the parts -------------------------------------------------------------------------------


async def _estimate(
    store: JobStore,
    settings: Settings,
    tenant: str,
    target: Rank,
    not_before: datetime,
    now: datetime,
) -> Estimate:
    if not_before > now:  # its estimate is of a later time: a second-old view will do
        queue = await _snapshot(store, now)
        ahead = [job for job in queue.due if rank_of(job) < target]
        complete = queue.complete or len(ahead) < len(queue.due)
        holders = queue.holders
    else:
        ahead, complete = await _ahead(store, target, now)
        holders = await store.active()
    typical = await typical_run(store, settings)
    start, starts = _start(now, settings.max_concurrent_jobs, holders, ahead, typical)
    mine = [job for job in holders if job.tenant == tenant]
    per_tenant = settings.max_concurrent_per_tenant
    if per_tenant:
        own_ahead = [job for job in ahead if job.tenant == tenant]
        start = max(start, _start(now, per_tenant, mine, own_ahead, typical)[0])
    if not complete:
        position = POSITION_LIMIT
    elif not_before > now:  # not due yet: those still waiting when its time comes
        position = sum(begins >= not_before for begins in starts)
    else:
        position = len(ahead)
    return Estimate(position, max(start, not_before), len(holders), len(mine))


async def _ahead(store: JobStore, target: Rank, now: datetime) -> tuple[list[Job], bool]:
    """The due jobs that rank ahead of `target`, best first, and whether they are all of them
    (False: POSITION_LIMIT were read and more may follow)."""
    window = FIRST_WINDOW
    while True:
        batch = await store.due(now, window)
        ahead = [job for job in batch if rank_of(job) < target]
        if len(ahead) < len(batch) or len(batch) < window:
            return ahead, True
        if window >= POSITION_LIMIT:
            return ahead[:POSITION_LIMIT], False
        window = min(window * 2, POSITION_LIMIT)


@dataclass(frozen=True)
class _Queue:
    """The due jobs from the top, and the active jobs, as read by one process lately."""

    due: list[Job]
    complete: bool  # every due job is in `due`
    holders: list[Job]
    expires: float  # monotonic time


async def _snapshot(store: JobStore, now: datetime) -> _Queue:
    """The queue as read at most SNAPSHOT_TTL seconds ago, for jobs not due yet: a burst of
    scheduled submits reads it once, not once each."""
    cached = _queues.get(store)
    if cached is not None and cached.expires > time.monotonic():
        return cached
    window = FIRST_WINDOW
    while True:
        batch = await store.due(now, window)
        if len(batch) < window or window >= POSITION_LIMIT:
            break
        window = min(window * 2, POSITION_LIMIT)
    holders = await store.active()
    queue = _Queue(batch, len(batch) < window, holders, time.monotonic() + SNAPSHOT_TTL)
    _queues[store] = queue
    return queue


def _start(
    now: datetime, cap: int, holders: Sequence[Job], ahead: Iterable[Job], typical: float
) -> tuple[datetime, list[datetime]]:
    """When the next job after `ahead` gets one of `cap` slots that `holders` hold now, and
    when each job of `ahead` does."""
    ends = sorted(_end(job, now, typical) for job in holders)
    over = max(len(ends) - cap, 0)  # over the cap (briefly): those ends free no slot
    slots = [now] * max(cap - len(ends), 0) + ends[over:]
    heapq.heapify(slots)
    starts = []
    for job in ahead:
        begins = max(heapq.heappop(slots), job.notBefore)
        starts.append(begins)
        heapq.heappush(slots, begins + timedelta(seconds=_run(job, typical)))
    return slots[0], starts


def _end(job: Job, now: datetime, typical: float) -> datetime:
    """When an active job should give its slot back: now at the earliest."""
    if job.status is JobState.STOPPING:
        return now
    end = (job.startedAt or now) + timedelta(seconds=_run(job, typical))
    return max(end, now)


def _run(job: Job, typical: float) -> float:
    limit = job.maxRuntimeSeconds
    return min(limit, typical) if limit else typical


def _seconds(delta: timedelta) -> int:
    """Whole seconds, rounded up: a wait of 0.2 s is 1 s."""
    return max(math.ceil(delta.total_seconds()), 0)
