"""An in-process JobStore: the contract's reference, the tests' store, `SCHEDULER_STORE=memory`.

Every method runs without an `await` between its reads and its writes, so each one is atomic under
asyncio. Jobs are deep-copied in and out, so callers never share state with the store. `due`
walks a sorted index of the queued jobs from the best and stops after `limit` due ones, and
`active` reads a set of ids, so neither grows with the queue; `expiring` and the listings scan.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable
from datetime import datetime

from core.errors import Conflict, DuplicateKey, NotFound
from core.models import ACTIVE_STATES, Job, JobState, Page, to_ms
from core.stores.cursor import decode_cursor, encode_cursor

_KEY_FIELDS = ("dedupKey", "idempotencyKey")

KeyEntry = tuple[str, str, str]  # (field, tenant, key)


def _newest_first(job: Job) -> tuple[int, str]:
    return to_ms(job.createdAt), job.id


def _queue_order(job: Job) -> tuple[int, int, str]:
    return -job.priority, to_ms(job.sort_time), job.id


class MemoryStore:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._keys: dict[KeyEntry, str] = {}  # -> id of the job holding that key
        self._leases: dict[str, tuple[str, int]] = {}  # name -> (owner, until ms)
        self._queue: list[tuple[int, int, str]] = []  # _queue_order of queued jobs, sorted
        self._active: set[str] = set()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def create(self, job: Job) -> Job:
        if job.id in self._jobs:
            raise Conflict(f"job {job.id} already exists", id=job.id)
        self._check_keys(job)
        stored = job.model_copy(deep=True, update={"version": "1"})
        self._jobs[stored.id] = stored
        self._index_keys(stored)
        self._index_state(stored)
        return stored.model_copy(deep=True)

    async def get(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        return job.model_copy(deep=True) if job else None

    async def list_jobs(
        self,
        tenant: str | None,
        status: JobState | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        after = decode_cursor(cursor) if cursor else None
        matches = [
            job
            for job in self._jobs.values()
            if (tenant is None or job.tenant == tenant)
            and (status is None or job.status == status)
            and (after is None or _newest_first(job) < after)
        ]
        page = heapq.nlargest(limit + 1, matches, key=_newest_first)
        more = len(page) > limit
        page = page[:limit]
        next_cursor = encode_cursor(*_newest_first(page[-1])) if more and page else None
        return Page(jobs=self._copies(page), nextCursor=next_cursor)

    async def due(self, now: datetime, limit: int) -> list[Job]:
        ready: list[Job] = []
        for _, _, job_id in self._queue:
            if len(ready) >= limit:
                break
            job = self._jobs[job_id]
            if job.notBefore <= now:
                ready.append(job)
        return self._copies(ready)

    async def expiring(self, now: datetime, limit: int) -> list[Job]:
        now_ms = to_ms(now)
        expired = (
            job
            for job in self._jobs.values()
            if job.status == JobState.QUEUED
            and job.deadline is not None
            and to_ms(job.deadline) <= now_ms
        )
        return self._copies(
            heapq.nsmallest(limit, expired, key=lambda job: (to_ms(job.deadline or now), job.id))
        )

    async def active(self) -> list[Job]:
        return self._copies(self._jobs[job_id] for job_id in self._active)

    async def counts(self, tenant: str | None = None) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        for job in self._jobs.values():
            if tenant is None or job.tenant == tenant:
                counts[job.status] += 1
        return counts

    async def update(self, job: Job, expected_version: str) -> Job:
        stored = self._jobs.get(job.id)
        if stored is None:
            raise NotFound(f"job {job.id} not found", id=job.id)
        if stored.version != expected_version:
            raise Conflict(f"job {job.id} was changed concurrently", id=job.id)
        self._check_keys(job, ignore=job.id)
        version = str(int(expected_version) + 1)
        updated = job.model_copy(deep=True, update={"version": version})
        self._unindex_keys(stored)
        self._unindex_state(stored)
        self._jobs[job.id] = updated
        self._index_keys(updated)
        self._index_state(updated)
        return updated.model_copy(deep=True)

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

    @staticmethod
    def _copies(jobs: Iterable[Job]) -> list[Job]:
        return [job.model_copy(deep=True) for job in jobs]

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
                existing = self._jobs[owner].model_copy(deep=True)
                raise DuplicateKey(f"a job with this {entry[0]} already exists", existing=existing)

    def _index_keys(self, job: Job) -> None:
        for entry in self._key_entries(job):
            self._keys[entry] = job.id

    def _index_state(self, job: Job) -> None:
        if job.status is JobState.QUEUED:
            bisect.insort(self._queue, _queue_order(job))
        elif job.status in ACTIVE_STATES:
            self._active.add(job.id)

    def _unindex_state(self, job: Job) -> None:
        if job.status is JobState.QUEUED:
            index = bisect.bisect_left(self._queue, _queue_order(job))
            del self._queue[index]
        self._active.discard(job.id)

    def _unindex_keys(self, job: Job) -> None:
        for entry in self._key_entries(job):
            if self._keys.get(entry) == job.id:
                del self._keys[entry]
