"""An in-process JobStore: the contract's reference, the tests' store, `SCHEDULER_STORE=memory`.

Every method runs without an `await` between its reads and its writes, so each one is atomic under
asyncio. A job is kept as its JSON and read back into a new Job, so callers never share state with
the store; and the stored jobs are strings, which the garbage collector never has to walk, so a
submit costs no more with a million jobs kept than with ten.

`due` walks a sorted index of the queued jobs that are due from the best and stops after `limit`
(jobs not due yet wait in an index by time and join it when their time comes), `expiring` walks
an index of deadlines, `active` reads a set of ids and `counts` a counter, so none of them grows
with the queue, nor does a write (sorted_keys.py); the listings scan a small record per job.
Records (events, webhooks, deliveries) are memory_records.py's.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime

from core.errors import Conflict, DuplicateKey, NotFound
from core.models import ACTIVE_STATES, MAX_PRIORITY, Job, JobState, Page, to_ms
from core.records import Record
from core.stores.cursor import decode_cursor, encode_cursor
from core.stores.memory_records import MemoryRecords
from core.stores.sorted_keys import SortedKeys

_KEY_FIELDS = ("dedupKey", "idempotencyKey")

KeyEntry = tuple[str, str, str]  # (field, tenant, key)
Listing = tuple[str, str, int, str]  # (tenant, status, created ms, version): what listings read

# Index keys are strings that sort as the index must: fixed-width numbers, then the job id (one
# string comparison each, where a tuple of equal numbers compares element by element).
MS_WIDTH = 15  # epoch milliseconds, zero-padded (clamped to 0 .. the year 33658)
MS_MAX = 999_999_999_999_999
QUEUE_ID_AT = 3 + MS_WIDTH  # the id's offset in a queue key


def _ms(moment: datetime) -> int:
    return min(max(to_ms(moment), 0), MS_MAX)


def _queue_key(job: Job) -> str:
    """Priority (higher first), then time (joinAt, else creation), then id."""
    return f"{MAX_PRIORITY - job.priority:03d}{_ms(job.sort_time):015d}{job.id}"


def _deadline_key(job: Job) -> str | None:
    return f"{_ms(job.deadline):015d}{job.id}" if job.deadline is not None else None


class MemoryStore(MemoryRecords):
    def __init__(self) -> None:
        super().__init__()
        self._data: dict[str, str] = {}  # id -> the job's JSON, its version included
        self._records: dict[str, Listing] = {}  # id -> what listings and version checks read
        self._keys: dict[KeyEntry, str] = {}  # -> id of the job holding that key
        self._leases: dict[str, tuple[str, int]] = {}  # name -> (owner, until ms)
        # queue keys of the queued jobs due by the horizon, the latest `now` given to `due` (in
        # _ms); the others wait in time order, their keys prefixed with their notBefore
        self._queue = SortedKeys()
        self._waiting = SortedKeys()
        self._horizon = -1
        self._deadlines = SortedKeys()  # _deadline_key of the queued jobs that have one
        self._active: set[str] = set()
        self._counts: Counter[tuple[str, JobState]] = Counter()  # (tenant, status) -> jobs

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def create(self, job: Job, records: Sequence[Record] = ()) -> Job:
        if job.id in self._data:
            raise Conflict(f"job {job.id} already exists", id=job.id)
        self._check_keys(job)
        self._check_new(records)
        created = job.model_copy(update={"version": "1"})  # the store keeps only its JSON
        self._put(created)
        self._index_keys(created)
        self._index_state(created)
        self._insert(records)
        return created

    async def get(self, job_id: str) -> Job | None:
        return self._load(job_id) if job_id in self._data else None

    async def list_jobs(
        self,
        tenant: str | None,
        status: JobState | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        after = decode_cursor(cursor) if cursor else None
        matches = (
            (created_ms, job_id)
            for job_id, (owner, state, created_ms, _) in self._records.items()
            if (tenant is None or owner == tenant)
            and (status is None or state == status.value)
            and (after is None or (created_ms, job_id) < after)
        )
        page = heapq.nlargest(limit + 1, matches)
        more = len(page) > limit
        page = page[:limit]
        next_cursor = encode_cursor(*page[-1]) if more and page else None
        return Page(jobs=self._loads(job_id for _, job_id in page), nextCursor=next_cursor)

    async def due(self, now: datetime, limit: int) -> list[Job]:
        self._advance(_ms(now))
        ready: list[Job] = []
        for key in self._queue:
            if len(ready) >= limit:
                break
            job = self._load(key[QUEUE_ID_AT:])
            if job.notBefore <= now:
                ready.append(job)
        return ready

    async def expiring(self, now: datetime, limit: int) -> list[Job]:
        now_ms, expired = to_ms(now), list[Job]()
        for key in self._deadlines:
            if int(key[:MS_WIDTH]) > now_ms or len(expired) >= limit:
                break
            expired.append(self._load(key[MS_WIDTH:]))
        return expired

    async def active(self) -> list[Job]:
        return self._loads(self._active)

    async def counts(self, tenant: str | None = None) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        for (owner, status), count in self._counts.items():
            if tenant is None or owner == tenant:
                counts[status] += count
        return counts

    async def update(self, job: Job, expected_version: str, records: Sequence[Record] = ()) -> Job:
        record = self._records.get(job.id)
        if record is None:
            raise NotFound(f"job {job.id} not found", id=job.id)
        if record[3] != expected_version:
            raise Conflict(f"job {job.id} was changed concurrently", id=job.id)
        self._check_keys(job, ignore=job.id)
        self._check_new(records)
        stored = self._load(job.id)
        updated = job.model_copy(update={"version": str(int(expected_version) + 1)})
        self._unindex_keys(stored)
        self._unindex_state(stored)
        self._put(updated)
        self._index_keys(updated)
        self._index_state(updated)
        self._insert(records)
        return updated

    async def acquire_lease(self, name: str, owner: str, until: datetime, now: datetime) -> bool:
        held = self._leases.get(name)
        if held is not None and held[0] != owner and held[1] > to_ms(now):
            return False
        self._leases[name] = (owner, to_ms(until))
        return True

    async def release_lease(self, name: str, owner: str) -> None:
        held = self._leases.get(name)
        if held is not None and held[0] == owner:
            del self._leases[name]

    # -- helpers (synchronous: no await may slip between a check and its write) --

    def _put(self, job: Job) -> None:
        self._data[job.id] = job.model_dump_json()
        created_ms = to_ms(job.createdAt)
        self._records[job.id] = (job.tenant, job.status.value, created_ms, job.version or "")

    def _load(self, job_id: str) -> Job:
        return Job.model_validate_json(self._data[job_id])

    def _loads(self, job_ids: Iterable[str]) -> list[Job]:
        return [self._load(job_id) for job_id in job_ids]

    @staticmethod
    def _key_entries(job: Job) -> list[KeyEntry]:
        entries = []
        for field in _KEY_FIELDS:
            key = getattr(job, field)
            if key is not None:
                entries.append((field, job.tenant, key))
        return entries

    def _check_keys(self, job: Job, ignore: str | None = None) -> None:
        for entry in self._key_entries(job):
            owner = self._keys.get(entry)
            if owner is not None and owner != ignore:
                existing = self._load(owner)
                raise DuplicateKey(f"a job with this {entry[0]} already exists", existing=existing)

    def _index_keys(self, job: Job) -> None:
        for entry in self._key_entries(job):
            self._keys[entry] = job.id

    def _unindex_keys(self, job: Job) -> None:
        for entry in self._key_entries(job):
            if self._keys.get(entry) == job.id:
                del self._keys[entry]

    def _index_state(self, job: Job) -> None:
        self._counts[job.tenant, job.status] += 1
        if job.status is JobState.QUEUED:
            index, key = self._queue_place(job)
            index.add(key)
            deadline = _deadline_key(job)
            if deadline is not None:
                self._deadlines.add(deadline)
        elif job.status in ACTIVE_STATES:
            self._active.add(job.id)

    def _unindex_state(self, job: Job) -> None:
        self._counts[job.tenant, job.status] -= 1
        if job.status is JobState.QUEUED:
            index, key = self._queue_place(job)
            index.remove(key)
            deadline = _deadline_key(job)
            if deadline is not None:
                self._deadlines.remove(deadline)
        self._active.discard(job.id)

    def _queue_place(self, job: Job) -> tuple[SortedKeys, str]:
        """The index that holds the queued job, and its key there."""
        not_before = _ms(job.notBefore)
        if not_before <= self._horizon:
            return self._queue, _queue_key(job)
        return self._waiting, f"{not_before:015d}{_queue_key(job)}"

    def _advance(self, now_ms: int) -> None:
        """Move the queued jobs whose time has come by `now_ms` into the due index. A `now`
        earlier than the horizon moves nothing: `due` skips the jobs not due yet at that time."""
        if now_ms <= self._horizon:
            return
        self._horizon = now_ms
        while self._waiting and int(self._waiting.first()[:MS_WIDTH]) <= now_ms:
            waiting = self._waiting.first()
            self._waiting.remove(waiting)
            self._queue.add(waiting[MS_WIDTH:])
