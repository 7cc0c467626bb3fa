"""Reservations: a job with `joinAt` holds its slots of the caps for the time its bot will run.

**Window.** [joinAt - lead, joinAt + run): the lead is the larger of `join_lead_seconds` and the
job's own (joinAt - notBefore: the learned lead, at most `join_lead_max_seconds`), the run its
`maxRuntimeSeconds` or `expected_run_seconds`; a window that began before the submit starts at
the submit.

**Buckets.** Time is cut in buckets of `reservation_bucket_seconds` (B), aligned on the epoch. A
window holds every bucket it overlaps, at most MAX_BUCKETS of them (its first ones: a longer run
reserves its first MAX_BUCKETS x B), so that a job, its events and its slots stay one Azure entity
group transaction of at most 100 operations.

**Slots.** Per bucket (starting at epoch second S) the global cap has the slot records
`res:{S}:{n}`, n in 0..max_concurrent_jobs-1, and with a per-tenant cap each tenant
`rest:{tenant}:{S}:{n}`, n in 0..max_concurrent_per_tenant-1 (kind `reservation`). A job takes a
free n of each bucket and cap in the same atomic create as the job itself: a slot taken meanwhile
fails the create (Conflict) and the submit scans again. The first try of a submit reads nothing:
it takes a slot the process has not seen taken (its **hints**: the slots its last scan of the
bucket found and those its own creates took); only a bucket its hints show full is scanned, and
every try after a Conflict scans each bucket. The store decides, so stale hints cost a retry,
never an overbooking. A slot is stale when its job is missing, final, or has another joinAt
or maxRuntimeSeconds than the slot records (`joinAt`, `run`; or an entry of its `also`, added by
a move that kept the slot: core/moves.py): it is released (a delete conditioned on the version
read) when a bucket would otherwise be full.

**Full.** With `overbooking` "reject" the submit is refused (Overbooked, 409) with `earliestStart`:
the earliest joinAt after the requested one whose whole window fits (it then starts on a bucket
boundary; searched over SEARCH_BUCKETS buckets, else null). With "queue" it is accepted holding
no slot, with a warning.

**Dispatch** counts the reservations beside the active jobs: core/reserved_budget.py.

Slot records are due at the end of their bucket: every SWEEP_SECONDS a submit deletes the ones
past (SWEEP_LIMIT at a time). Changing B leaves the old slots uncounted against new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core.config import Settings
from core.errors import Conflict
from core.models import Job, to_ms
from core.ports import JobStore
from core.records import Record, key_part

KIND = "reservation"
MAX_BUCKETS = 8  # the most buckets one job reserves (Azure: 100 operations per transaction)
SEARCH_BUCKETS = 96  # how far ahead a refused submit looks for its earliest start
SCAN_EXTRA = 64  # slot records read beyond the cap per bucket (stale ones, a lowered cap)
SWEEP_SECONDS = 60.0  # how often a process deletes the slot records of past buckets
SWEEP_LIMIT = 16
FULL_SECONDS = 2.0
FULL_KEPT = 1024
HINTS_KEPT = 4096  # buckets whose taken slots a process remembers
KEY_PART_MAX = 90  # a longer escaped part of a slot key is hashed


@dataclass
class StoreState:
    """What a process keeps per store: its view of the reservations for dispatch
    (core/reserved_budget.py) and when it last swept."""

    view: tuple[float, int, Any] | None = None  # (expires, first bucket, the view)
    swept: float = -math.inf
    # buckets found full of live slots: prefix -> (until, a slot key); a submit into a busy
    # window then reads nothing for FULL_SECONDS (a slot freed meanwhile is seen after it)
    full: dict[str, tuple[float, str]] = field(default_factory=dict)
    # the slot keys seen taken per bucket prefix (a scan's live slots, this process's creates)
    taken: OrderedDict[str, set[str]] = field(default_factory=OrderedDict)

    def saw(self, prefix: str, keys: set[str]) -> None:
        self.taken[prefix] = keys
        self.taken.move_to_end(prefix)
        if len(self.taken) > HINTS_KEPT:
            self.taken.popitem(last=False)


_states: weakref.WeakKeyDictionary[Any, StoreState] = weakref.WeakKeyDictionary()


def store_state(store: object) -> StoreState:
    try:
        state = _states.get(store)
        return state if state is not None else _states.setdefault(store, StoreState())
    except TypeError:  # not weakly referable: nothing kept
        return StoreState()


def forget(store: object) -> None:
    """Drop the process's view of `store`'s reservations (after it made one)."""
    store_state(store).view = None


def freed(store: object) -> None:
    """A job with reservations ended in this process: its buckets are no longer known full."""
    store_state(store).full.clear()


# -- time ------------------------------------------------------------------------------------


def bucket_of(seconds: float, settings: Settings) -> int:
    return math.floor(seconds / settings.reservation_bucket_seconds)


def bucket_start(index: int, settings: Settings) -> int:
    """The epoch second bucket `index` starts at: what its slot keys carry."""
    return int(index * settings.reservation_bucket_seconds)


def lead_of(job: Job, settings: Settings) -> float:
    """Seconds from the window's start to joinAt (0 without joinAt)."""
    if job.joinAt is None:
        return 0.0
    own = (job.joinAt - job.notBefore).total_seconds()  # beyond the most: notBefore was now
    return max(settings.join_lead_seconds, min(own, settings.join_lead_max_seconds))


def window(job: Job, settings: Settings, now: datetime) -> tuple[float, float] | None:
    """The job's window in epoch seconds, from `now` at the earliest; None without joinAt or
    when it is over."""
    if job.joinAt is None:
        return None
    join = job.joinAt.timestamp()
    start = max(join - lead_of(job, settings), now.timestamp())
    end = join + (job.maxRuntimeSeconds or settings.expected_run_seconds)
    return (start, end) if end > start else None


def buckets(start: float, end: float, settings: Settings) -> list[int]:
    """The buckets [start, end) overlaps, the first MAX_BUCKETS of them."""
    first = bucket_of(start, settings)
    last = math.ceil(end / settings.reservation_bucket_seconds) - 1
    return list(range(first, min(last, first + MAX_BUCKETS - 1) + 1))


def slot_part(text: str) -> str:
    """`text` as a piece of a slot key: escaped (key_part), or `~h` and a hash when longer than
    KEY_PART_MAX (key_part never writes `~h`), so that a key stays within 200 characters."""
    part = key_part(text)
    if len(part) <= KEY_PART_MAX:
        return part
    return "~h" + hashlib.sha256(part.encode()).hexdigest()[:40]


def lanes(tenant: str, settings: Settings) -> list[tuple[str, int]]:
    """(slot key prefix before the bucket, cap) of each cap a job's slots count against."""
    found = [("res:", settings.max_concurrent_jobs)]
    if settings.max_concurrent_per_tenant:
        found.append((f"rest:{slot_part(tenant)}:", settings.max_concurrent_per_tenant))
    return found


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- holders ---------------------------------------------------------------------------------


class Holders:
    """The jobs slot records name, each read once per operation."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._jobs: dict[str, Job | None] = {}

    async def get(self, job_id: str) -> Job | None:
        if not job_id:
            return None
        if job_id not in self._jobs:
            self._jobs[job_id] = await self.store.get(job_id)
        return self._jobs[job_id]


def holds(holder: Job | None, record: Record) -> bool:
    """Whether `record` (a slot) still belongs to `holder`: the job exists, is not final, and
    has the joinAt and maxRuntimeSeconds (and meeting) the slot was taken for, or that a move
    keeping the slot added to its `also` (core/moves.py)."""
    if holder is None or holder.status.final:
        return False
    taken = [record.data, *record.data.get("also", ())]
    if not any(taken_for(holder, entry) for entry in taken):
        return False
    return record.data.get("meetingKey", holder.meetingKey) == holder.meetingKey


def taken_for(holder: Job, entry: dict[str, Any]) -> bool:
    """Whether `entry` (a slot's data, or one of its `also`) names `holder`'s joinAt and run (a
    slot written before slots recorded the run counts for any)."""
    join = to_ms(holder.joinAt) if holder.joinAt is not None else None
    run = entry.get("run", holder.maxRuntimeSeconds)
    return entry.get("joinAt") == join and run == holder.maxRuntimeSeconds


def slot_data(job: Job) -> dict[str, Any]:
    join = to_ms(job.joinAt) if job.joinAt is not None else None
    return {"jobId": job.id, "tenant": job.tenant, "joinAt": join, "run": job.maxRuntimeSeconds}


async def release(store: JobStore, record: Record) -> None:
    """Delete a stale slot unless it changed since it was read (then the caller looks again)."""
    with contextlib.suppress(Conflict):
        await store.delete_record(record.kind, record.key, record.version)


async def live(store: JobStore, records: Sequence[Record], holders: Holders) -> list[Record]:
    """The slots of `records` their jobs still hold; the others are released."""
    jobs = await asyncio.gather(*(holders.get(r.data.get("jobId", "")) for r in records))
    kept = []
    for record, job in zip(records, jobs, strict=True):
        if holds(job, record):
            kept.append(record)
        else:
            await release(store, record)
    return kept


# -- taking slots ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    key: str
    free: bool  # False: every slot of the bucket is held; `key` is one of them


NONE_TAKEN: frozenset[str] = frozenset()


def first_free(prefix: str, cap: int, used: AbstractSet[str], spread: float) -> str | None:
    """The first slot key under `prefix` not in `used`, from `spread` x cap on, round."""
    first = int(spread * cap)
    for n in range(cap):
        key = f"{prefix}{(first + n) % cap}"
        if key not in used:
            return key
    return None


def hinted(state: StoreState, prefix: str, cap: int, spread: float) -> str | None:
    """A free slot's key as far as the process has seen (no read), or None when its hints show
    the bucket full: then it is scanned."""
    used = state.taken.get(prefix, NONE_TAKEN)
    return first_free(prefix, cap, used, spread) if len(used) < cap else None


def took(store: object, records: Sequence[Record]) -> None:
    """The slots in `records` are now taken by this process's create: add them to its hints."""
    state = store_state(store)
    for record in records:
        prefix = record.key[: record.key.rindex(":") + 1]
        state.saw(prefix, {*state.taken.get(prefix, ()), record.key})


async def choose(
    store: JobStore, prefix: str, cap: int, holders: Holders, spread: float = 0.0
) -> Choice:
    """A free slot under `prefix` (`res:{S}:`) from a scan of its slots: the first free n from
    `spread` x cap on, round; stale ones are released first when the bucket looks full."""
    state = store_state(store)
    known = state.full.get(prefix)
    if known is not None and known[0] > time.monotonic():
        return Choice(known[1], False)
    taken = await store.scan_records(KIND, prefix, cap + SCAN_EXTRA)
    if len(taken) >= cap:
        taken = await live(store, taken, holders)
    used = {record.key for record in taken}
    state.saw(prefix, used)
    key = first_free(prefix, cap, used, spread) if len(taken) < cap else None
    if key is None:
        if len(state.full) >= FULL_KEPT:
            state.full.clear()
        state.full[prefix] = (time.monotonic() + FULL_SECONDS, taken[0].key)
        return Choice(taken[0].key, False)
    return Choice(key, True)


@dataclass(frozen=True)
class Booking:
    """What a job reserves: one slot record per bucket and cap; `full`: some bucket had none
    free (its record then names a taken slot, so a create with it fails)."""

    records: list[Record] = field(default_factory=list)
    full: bool = False
    window: tuple[float, float] | None = None


async def book(
    store: JobStore,
    settings: Settings,
    job: Job,
    now: datetime,
    holders: Holders,
    spread: float = 0.0,
    hints: bool = False,
) -> Booking:
    """The slots `job` takes (none without joinAt): in each of its buckets, the first free n
    from `spread` (in [0, 1): a fraction of the cap) on. With `hints`, from what the process
    has seen taken (a bucket that looks full is scanned); else from a scan of each bucket.
    Submits that lost a race for a slot retry with a random spread, so that they do not all want
    the same n again."""
    span = window(job, settings, now)
    if span is None:
        return Booking()
    caps = lanes(job.tenant, settings)
    wanted = [  # (due in epoch ms, slot key prefix, cap): one per bucket and cap
        (bucket_start(index + 1, settings) * 1000, f"{lane}{bucket_start(index, settings)}:", cap)
        for index in buckets(*span, settings)
        for lane, cap in caps
    ]
    state = store_state(store)
    keys = [hinted(state, p, cap, spread) if hints else None for _, p, cap in wanted]
    scans = [
        choose(store, p, cap, holders, spread)
        for (_, p, cap), key in zip(wanted, keys, strict=True)
        if key is None
    ]
    scanned = iter(await asyncio.gather(*scans) if scans else ())
    made = [Choice(key, True) if key is not None else next(scanned) for key in keys]
    data = slot_data(job)
    records = [
        Record(KIND, choice.key, data, due=due)
        for (due, _, _), choice in zip(wanted, made, strict=True)
    ]
    # taken from now on as far as this process's other submits see (until a scan says
    # otherwise): concurrent submits, whose writes may commit together, choose other slots
    took(store, records)
    return Booking(records, not all(choice.free for choice in made), span)


async def earliest_start(
    store: JobStore, settings: Settings, job: Job, now: datetime, holders: Holders
) -> datetime | None:
    """The earliest joinAt after `job`'s whose whole window has a free slot in every bucket,
    its window starting on a bucket boundary; None within SEARCH_BUCKETS buckets."""
    span = window(job, settings, now)
    if span is None or job.joinAt is None:
        return None
    lead = lead_of(job, settings)
    run = span[1] - job.joinAt.timestamp()
    free: dict[str, bool] = {}
    first = bucket_of(span[0], settings) + 1
    candidate = first
    while candidate < first + SEARCH_BUCKETS:
        begin = bucket_start(candidate, settings)
        blocked = await _first_full(store, settings, job.tenant, begin, lead + run, free, holders)
        if blocked is None:
            return datetime.fromtimestamp(begin + lead, UTC)
        candidate = blocked + 1
    return None


async def _first_full(
    store: JobStore,
    settings: Settings,
    tenant: str,
    begin: float,
    length: float,
    free: dict[str, bool],
    holders: Holders,
) -> int | None:
    """The first bucket of [begin, begin + length) with no free slot, or None."""
    for index in buckets(begin, begin + length, settings):
        for prefix, cap in lanes(tenant, settings):
            key = f"{prefix}{bucket_start(index, settings)}:"
            if key not in free:
                free[key] = (await choose(store, key, cap, holders)).free
            if not free[key]:
                return index
    return None


def sweep_due(store: object) -> bool:
    """Whether this process should sweep `store`'s past slots now (every SWEEP_SECONDS)."""
    state = store_state(store)
    if time.monotonic() - state.swept < SWEEP_SECONDS:
        return False
    state.swept = time.monotonic()
    return True


async def sweep(store: JobStore, kind: str, now: datetime, holders: Holders | None) -> None:
    """Delete up to SWEEP_LIMIT slot records of `kind` past their due time; with `holders`,
    only those their job no longer holds."""
    for record in await store.due_records(kind, to_ms(now), SWEEP_LIMIT):
        if holders is None:
            await release(store, record)
        else:
            await live(store, [record], holders)
