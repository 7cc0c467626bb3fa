"""One bot per meeting, and the write of a new job with every slot it takes.

**Meeting slots.** A new job of a known platform's meeting (its `meetingKey`: core/meeting_keys.py;
not a `url:` key, which may drop what tells an unknown site's meetings apart) takes, unless
`allowSecondBot`, two records of kind `meeting`: with L = `meeting_window_seconds`, s the job's
start (joinAt, else its creation) in epoch seconds and b = floor(s / L), the keys
`{tenant}:{meetingKey}:{b}` and `…:{b + 1}` (each part escaped by key_part, hashed past
KEY_PART_MAX). Two jobs of a tenant for one meeting whose starts are less than L apart share a key;
more than 2L apart, never. The slots are created in the same atomic write as the job (and its
events and reservations: core/reservations.py), so of two submits racing for a meeting exactly one
creates a job, on every store. The other finds the slot's job and returns it (created False):
`duplicate_reason` then says "meeting". A slot whose job is final or missing (or moved to another
joinAt or meeting) is stale: released by a delete conditioned on the version read, then the
create is tried again (at most TRIES times in all). A queued job that moves takes the slots of
its new start in the write that moves it (core/moves.py).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import OrderedDict
from datetime import UTC, datetime

from core.budget_ledger import RACES
from core.budgets import Budgets
from core.config import Settings
from core.errors import BudgetExceeded, Conflict, DuplicateKey, Overbooked
from core.meeting_keys import is_platform_key, meeting_key
from core.models import Job, JobSpec
from core.ports import JobStore
from core.records import Record
from core.reservations import KIND as RESERVATION
from core.reservations import (
    Booking,
    Holders,
    book,
    earliest_start,
    forget,
    holds,
    iso,
    release,
    slot_data,
    slot_part,
    sweep,
    sweep_due,
)

KIND = "meeting"
TRIES = 8  # creates of one submit: slots taken meanwhile, stale slots released
WARNINGS_KEPT = 1024

_warnings: OrderedDict[str, list[str]] = OrderedDict()


def meeting_slots(job: Job, settings: Settings) -> list[Record]:
    """The meeting slots `job` takes: none with allowSecondBot or without a platform key."""
    if job.allowSecondBot or not is_platform_key(job.meetingKey):
        return []
    assert job.meetingKey is not None
    window = settings.meeting_window_seconds
    start = job.sort_time.timestamp()
    index = math.floor(start / window)
    prefix = f"{slot_part(job.tenant)}:{slot_part(job.meetingKey)}:"
    data = {**slot_data(job), "meetingKey": job.meetingKey}
    due = int((index + 2) * window * 1000)  # past then: no new job's start maps here
    return [Record(KIND, f"{prefix}{b}", data, due=due) for b in (index, index + 1)]


async def insert_job(
    store: JobStore, settings: Settings, job: Job, events: list[Record], budgets: Budgets
) -> tuple[Job, bool]:
    """Create `job` with `events`, its meeting slots, its reservations and its budget's charge
    (core/budgets.py): (the job, True); or (the job that holds its dedup key, idempotency key or
    meeting, False). Sets its meetingKey. Raises Overbooked (overbooking "reject", a bucket
    full), BudgetExceeded, and Conflict (its id in use, or slots that kept changing)."""
    job.meetingKey = meeting_key(job.meetingUrl)
    insert = _Insert(store, settings, job, events, budgets)
    await _sweep(store, job)
    attempt = races = 0
    while attempt < TRIES:  # the first from the process's hints, the others from scans
        done = await insert.attempt(random.random() if attempt else 0.0, hints=attempt == 0)
        if done is not None:
            return done
        if insert.lost_ledger and races < RACES:  # another submit charged first
            races += 1
            await asyncio.sleep(random.random() * 0.001 * races)
            continue
        attempt += 1
    raise Conflict("the meeting's or the window's slots kept changing; try again")


class _Insert:
    """One submit's write of its job: the slots it takes, chosen again on each attempt."""

    def __init__(
        self, store: JobStore, settings: Settings, job: Job, events: list[Record], budgets: Budgets
    ):
        self.store, self.settings, self.job, self.events = store, settings, job, events
        self.slots = meeting_slots(job, settings)
        self.budgets = budgets
        self.lost_ledger = False

    async def attempt(self, spread: float, hints: bool) -> tuple[Job, bool] | None:
        """One create, with slots chosen from `spread` on; None: try again."""
        holders = Holders(self.store)
        job, settings = self.job, self.settings
        charge = await self._charge(holders)
        if isinstance(charge, Job):
            return charge, False
        booking = await book(self.store, settings, job, job.createdAt, holders, spread, hints)
        queued = booking.full and self.settings.overbooking == "queue"
        records = [*self.events, *self.slots, *([] if queued else booking.records), *charge]
        try:
            created = await self.store.create(self.job, records)
        except DuplicateKey as duplicate:
            return duplicate.existing, False
        except Conflict:
            holder = await _meeting_holder(self.store, self.slots, holders)
            if holder is not None:
                return holder, False
            if await self.store.get(self.job.id) is not None:
                raise
            self.lost_ledger = bool(charge) and await self.budgets.ledger.moved(charge)
            if booking.full and not queued and not self.lost_ledger:
                raise await overbooked(
                    self.store, self.settings, self.job, booking, holders, self.job.createdAt
                ) from None
            return None
        self.budgets.ledger.wrote(charge)
        _created(self.store, created, booking, queued, self.settings)
        return created, True

    async def _charge(self, holders: Holders) -> list[Record] | Job:
        """The budget's charge of the job; when its budget refuses it, the job already holding
        its meeting is the answer instead (a repeated submit), else the refusal is raised."""
        try:
            return await self.budgets.charge(self.job)
        except BudgetExceeded:
            holder = await _meeting_holder(self.store, self.slots, holders)
            holder = holder or await self._key_holder()
            if holder is not None:
                return holder
            raise

    async def _key_holder(self) -> Job | None:
        """The job holding the refused job's idempotency or dedup key: a create that cannot
        succeed (it carries a record that exists) says DuplicateKey first when there is one."""
        job = self.job
        taken = await self.budgets.taken_entry(job) if job.idempotencyKey or job.dedupKey else None
        if taken is None:
            return None
        try:
            await self.store.create(job, [taken])
        except DuplicateKey as duplicate:
            return duplicate.existing
        except Conflict:
            return None
        raise AssertionError("a create carrying an existing ledger entry was accepted")


def _created(store: JobStore, job: Job, booking: Booking, queued: bool, settings: Settings) -> None:
    if booking.records and not queued:
        forget(store)  # its slots are in the process's hints since `book` chose them
    if queued:
        warn_queued(job.id, booking, settings)


def warn_queued(job_id: str, booking: Booking, settings: Settings) -> None:
    """Say in the answer about `job_id` that it is queued holding no slot of its full window."""
    if booking.window is not None:
        queue = "queued without a reserved slot: it starts when one is free"
        _warn(job_id, f"{_full_text(booking, settings)}; {queue} (SCHEDULER_OVERBOOKING=queue)")


async def _meeting_holder(store: JobStore, slots: list[Record], holders: Holders) -> Job | None:
    """The unfinished job holding one of `slots`; stale holders' slots are released."""
    for slot in slots:
        stored = await store.get_record(KIND, slot.key)
        if stored is None:
            continue
        holder = await holders.get(stored.data.get("jobId", ""))
        if holds(holder, stored):
            return holder
        await release(store, stored)
    return None


async def overbooked(
    store: JobStore,
    settings: Settings,
    job: Job,
    booking: Booking,
    holders: Holders,
    now: datetime,
) -> Overbooked:
    """The refusal of `job` (new or moved at `now`): its window, and the earliest that fits."""
    earliest = await earliest_start(store, settings, job, now, holders)
    text = iso(earliest) if earliest is not None else None
    later = f"the earliest joinAt that fits is {text}" if text else "no later joinAt fits soon"
    return Overbooked(f"{_full_text(booking, settings)}: {later}", text)


def _full_text(booking: Booking, settings: Settings) -> str:
    start, end = booking.window or (0.0, 0.0)
    caps = f"SCHEDULER_MAX_CONCURRENT_JOBS={settings.max_concurrent_jobs}"
    if settings.max_concurrent_per_tenant:
        caps += f", SCHEDULER_MAX_CONCURRENT_PER_TENANT={settings.max_concurrent_per_tenant}"
    begin = iso(datetime.fromtimestamp(start, UTC))
    finish = iso(datetime.fromtimestamp(end, UTC))
    return f"joinAt: every slot ({caps}) is reserved at some time from {begin} to {finish}"


async def _sweep(store: JobStore, job: Job) -> None:
    """Now and then, delete the slot records of times past (core/reservations.py)."""
    if sweep_due(store):
        await sweep(store, RESERVATION, job.createdAt, None)
        await sweep(store, KIND, job.createdAt, Holders(store))


def _warn(job_id: str, text: str) -> None:
    _warnings[job_id] = [*_warnings.get(job_id, []), text]
    while len(_warnings) > WARNINGS_KEPT:
        _warnings.popitem(last=False)


# -- for the routes ------------------------------------------------------------------------------


def submit_warnings(job_id: str) -> list[str]:
    """What the submit that created `job_id`, or the move of it (core/moves.py), in this process
    has to say (an overbooked window accepted with overbooking "queue"), once: the answer's
    `warnings`."""
    return _warnings.pop(job_id, [])


def duplicate_reason(spec: JobSpec, idempotency_key: str | None, existing: Job) -> str:
    """Why a submit of `spec` returned `existing` instead of a new job: "idempotencyKey",
    "dedupKey", or "meeting" (an unfinished job of the tenant for the same meeting and time)."""
    if idempotency_key is not None and existing.idempotencyKey == idempotency_key:
        return "idempotencyKey"
    if spec.dedupKey is not None and existing.dedupKey == spec.dedupKey:
        return "dedupKey"
    return "meeting"
