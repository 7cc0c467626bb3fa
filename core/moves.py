"""Moving a queued job: its slots follow it, in the write that moves it.

A change of a queued job's joinAt, maxRuntimeSeconds or meetingUrl (PATCH, PUT by key:
`Scheduler._change_queued`) takes the slots of the moved job as a submit does
(core/meetings.py, core/reservations.py), in the compare-and-set that changes the job:

- **Reservations.** In each bucket and cap of the new window, the slot the job already holds
  there is kept; elsewhere a free one, chosen from a scan of the bucket, is inserted with the
  job. With no free slot in some bucket: overbooking
  "reject" refuses the move (Overbooked, 409, with earliestStart), the job unchanged; "queue"
  moves it holding no reservation, with a warning (`submit_warnings`).
- **Meeting slots** of the new start: one the job holds is kept, a free or stale one inserted;
  one another unfinished job of the tenant holds refuses the move (MeetingTaken, 409, naming
  that job).

Stores insert records with a job, never rewrite them, so a kept slot is **marked** before the
write: its record gets the moved job's joinAt and run in `also` (a compare-and-set on its
version; the newest ALSO_KEPT times), and then belongs to the job both before and after the move
(`holds`). A failed write unmarks it (best effort: a time left in `also` is one whose window
holds that slot's bucket, so it is right if the job ever moves there).

After the move, best effort, the job's slots of its old window and start that it no longer holds
are released (deletes conditioned on the version read). A crash before leaves them stale, which
`holds` sees: they name a joinAt or run that is no longer the job's.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.config import Settings
from core.errors import Conflict, MeetingTaken, NotFound
from core.meetings import KIND as MEETING
from core.meetings import meeting_slots, overbooked, warn_queued
from core.models import Job
from core.ports import JobStore
from core.records import Record
from core.reservations import (
    KIND,
    SCAN_EXTRA,
    Booking,
    Choice,
    Holders,
    bucket_start,
    buckets,
    first_free,
    forget,
    freed,
    holds,
    lanes,
    live,
    release,
    slot_data,
    took,
    window,
)

log = logging.getLogger("botsched.scheduler")
SLOT_FIELDS = frozenset({"joinAt", "maxRuntimeSeconds", "meetingUrl"})
MARK_TRIES = 8  # marks of one kept slot, when moves of the same job mark it at once
ALSO_KEPT = 4  # the times a slot's `also` names at most (the newest)

Write = Callable[[Sequence[Record]], Awaitable[Job]]


def moves_slots(update: Mapping[str, Any]) -> bool:
    """Whether a change of these fields of a queued job moves its slots."""
    return not SLOT_FIELDS.isdisjoint(update)


@dataclass
class Slots:
    """The slots a move takes: records inserted with the job, and the job's own slots it keeps
    (each as stored, and as written for the moved job)."""

    inserts: list[Record] = field(default_factory=list)
    kept: list[tuple[Record, Record]] = field(default_factory=list)

    def __add__(self, other: Slots) -> Slots:
        return Slots([*self.inserts, *other.inserts], [*self.kept, *other.kept])


async def move_job(
    store: JobStore, settings: Settings, job: Job, moved: Job, now: datetime, write: Write
) -> Job:
    """Write `moved` (queued `job` with its changes) by `write`, which inserts the records it is
    given with the job, holding the slots of its new time (module docstring). Raises
    MeetingTaken, Overbooked (overbooking "reject"), and Conflict when the job or a slot
    changed meanwhile (the caller reads the job again and retries)."""
    holders = Holders(store)
    meeting = await _meeting(store, settings, job, moved, holders)
    booking, reserved = await _reserve(store, settings, job, moved, now, holders)
    if booking.full and settings.overbooking == "reject":
        raise await overbooked(store, settings, moved, booking, holders, now)
    slots = meeting if booking.full else meeting + reserved
    marked = await _mark(store, job, slots.kept, moved)
    try:
        written = await write(slots.inserts)
    except Exception:
        await _unmark(store, marked)
        raise
    if booking.full:
        warn_queued(written.id, booking, settings)
    await _settle(store, settings, job, now, slots.inserts)
    return written


# -- choosing ------------------------------------------------------------------------------------


async def _meeting(
    store: JobStore, settings: Settings, job: Job, moved: Job, holders: Holders
) -> Slots:
    """The meeting slots of the moved job's start: kept (the job holds it), or inserted (free,
    or stale: released first). MeetingTaken when another unfinished job holds one."""
    slots = Slots()
    for slot in meeting_slots(moved, settings):
        stored = await store.get_record(MEETING, slot.key)
        if stored is not None and _own(stored, job) and holds(job, stored):
            slots.kept.append((stored, slot))
            continue
        if stored is not None:
            holder = await holders.get(stored.data.get("jobId", ""))
            if holder is not None and holds(holder, stored):
                raise _taken(job, holder)
            await release(store, stored)
        slots.inserts.append(slot)
    return slots


def _taken(job: Job, holder: Job) -> Conflict | MeetingTaken:
    """The refusal of a move onto a meeting slot `holder` holds: the job itself as it is now
    (it changed since it was read: Conflict, the move reads it again), or another job."""
    if holder.id == job.id:
        return Conflict(f"job {job.id} was changed concurrently", id=job.id)
    return MeetingTaken(
        f"meetingUrl: job {holder.id} already has a bot for this meeting at about this time "
        "(one bot per meeting): cancel or move that job first",
        holder.id,
    )


async def _reserve(
    store: JobStore, settings: Settings, job: Job, moved: Job, now: datetime, holders: Holders
) -> tuple[Booking, Slots]:
    """The reservation slots of the moved job's window (none without joinAt), chosen from a
    random slot on (so that moves retried after a lost race do not all want the same one)."""
    span = window(moved, settings, now)
    if span is None:
        return Booking(), Slots()
    wanted = [
        (index, f"{prefix}{bucket_start(index, settings)}:", cap)
        for index in buckets(*span, settings)
        for prefix, cap in lanes(moved.tenant, settings)
    ]
    spread = random.random()
    picks = await asyncio.gather(
        *(_pick(store, p, cap, job, holders, spread) for _, p, cap in wanted)
    )
    data = slot_data(moved)
    records, slots = [], Slots()
    for (index, _, _), (choice, own) in zip(wanted, picks, strict=True):
        record = Record(KIND, choice.key, data, due=bucket_start(index + 1, settings) * 1000)
        records.append(record)
        if own is None:
            slots.inserts.append(record)
        else:
            slots.kept.append((own, record))
    return Booking(records, not all(choice.free for choice, _ in picks), span), slots


async def _pick(
    store: JobStore, prefix: str, cap: int, job: Job, holders: Holders, spread: float
) -> tuple[Choice, Record | None]:
    """The slot under `prefix` (a bucket and cap) the moving job takes: the one it holds there
    (with its record), else the first free one from `spread` x cap on, the other jobs' stale
    ones released when the bucket looks full (Choice.free False: none is free)."""
    taken = await store.scan_records(KIND, prefix, cap + SCAN_EXTRA)
    mine = next((r for r in taken if _own(r, job) and holds(job, r)), None)
    if mine is not None:
        return Choice(mine.key, True), mine
    if len(taken) >= cap:
        taken = await live(store, taken, holders)
    key = first_free(prefix, cap, {r.key for r in taken}, spread) if len(taken) < cap else None
    if key is None:
        return Choice(taken[0].key, False), None
    return Choice(key, True), None


def _own(record: Record, job: Job) -> bool:
    return record.data.get("jobId") == job.id


# -- marking -------------------------------------------------------------------------------------


async def _mark(
    store: JobStore, job: Job, kept: list[tuple[Record, Record]], moved: Job
) -> list[tuple[Record, Record]]:
    """Add the moved job's time to `also` of each kept slot that does not name it yet: (the slot
    as read, as marked). Conflict when one is no longer the job's (the marks made are undone)."""
    marked: list[tuple[Record, Record]] = []
    for stored, new in kept:
        if holds(moved, stored):
            continue
        try:
            marked.append(await _mark_one(store, job, stored, new, moved))
        except Conflict:
            await _unmark(store, marked)
            raise
    return marked


async def _mark_one(
    store: JobStore, job: Job, stored: Record, new: Record, moved: Job
) -> tuple[Record, Record]:
    """Mark `stored` (a compare-and-set); when a move of the same job marked it meanwhile, read
    it again and mark that, as long as the job (as read) still holds it."""
    for _ in range(MARK_TRIES):
        try:
            return stored, await _put(store, _marked(stored, new, job, moved))
        except Conflict:
            fresh = await store.get_record(stored.kind, stored.key)
            if fresh is None or not (_own(fresh, job) and holds(job, fresh)):
                raise
            stored = fresh
    raise Conflict(f"{stored.kind} {stored.key} kept changing", id=job.id)


def _marked(stored: Record, new: Record, job: Job, moved: Job) -> Record:
    """`stored` naming in `also` the moved job's time, and the job's time as read (the last
    ALSO_KEPT entries), due when the later of its and `new`'s buckets ends."""
    also: list[dict[str, Any]] = []
    for entry in [*stored.data.get("also", ()), _entry(job), _entry(moved)]:
        if entry not in also and entry != _entry_of(stored.data):
            also.append(entry)
    due = max(stored.due or 0, new.due or 0) or None
    return stored.but(data={**stored.data, "also": also[-ALSO_KEPT:]}, due=due)


def _entry(job: Job) -> dict[str, Any]:
    return _entry_of(slot_data(job))


def _entry_of(data: dict[str, Any]) -> dict[str, Any]:
    return {"joinAt": data.get("joinAt"), "run": data.get("run")}


async def _unmark(store: JobStore, marked: list[tuple[Record, Record]]) -> None:
    """Put the marked slots back as they were read, unless they changed since (best effort: a
    failure is logged, and the caller raises what made it unmark)."""
    for stored, written in marked:
        try:
            await _put(store, stored.but(version=written.version))
        except Conflict:
            continue
        except Exception:
            log.warning("could not unmark slot %s %s", stored.kind, stored.key, exc_info=True)


async def _put(store: JobStore, record: Record) -> Record:
    """A compare-and-set of `record` on its version; a record gone meanwhile is a Conflict."""
    try:
        return await store.put_record(record, record.version)
    except NotFound:
        raise Conflict(f"{record.kind} {record.key} was released meanwhile") from None


# -- after the move ------------------------------------------------------------------------------


async def _settle(
    store: JobStore, settings: Settings, job: Job, now: datetime, inserts: list[Record]
) -> None:
    """Release the job's slots of its old window and start that it no longer holds (best
    effort, after the move: a failure is logged; stale slots are released anyway, by whoever
    finds them in their way)."""
    took(store, [record for record in inserts if record.kind == KIND])
    forget(store)
    try:
        own = await _old_slots(store, settings, job, now)
        if own:
            await live(store, own, Holders(store))  # reads the job as it is now
            freed(store)
    except Exception:
        log.warning("job %s moved; its old slots are left stale", job.id, exc_info=True)


async def _old_slots(store: JobStore, settings: Settings, job: Job, now: datetime) -> list[Record]:
    """The job's slot records of its window and start before the move."""
    found: list[Record] = []
    span = window(job, settings, now)
    if span is not None:
        limit = max(cap for _, cap in lanes(job.tenant, settings)) + SCAN_EXTRA
        prefixes = [
            f"{prefix}{bucket_start(index, settings)}:"
            for index in buckets(*span, settings)
            for prefix, _ in lanes(job.tenant, settings)
        ]
        scans = await asyncio.gather(*(store.scan_records(KIND, p, limit) for p in prefixes))
        found += [record for scan in scans for record in scan]
    for slot in meeting_slots(job, settings):
        stored = await store.get_record(MEETING, slot.key)
        found += [stored] if stored is not None else []
    return [record for record in found if _own(record, job)]
