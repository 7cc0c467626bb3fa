"""The two ports: where jobs are kept (JobStore) and where bots run (Backend).

Stores and backends never decide a state: they keep what the scheduler writes and report what
they see. Every write of a job is a compare-and-set on the version the store handed out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from core.models import Execution, ExecutionRef, Job, JobState, Page
from core.records import Record


class RecordStore(Protocol):
    """The records a JobStore keeps beside its jobs (core/records.py). Every JobStore is one:
    `create` and `update` of JobStore take `records` too, written in the same atomic write."""

    async def put_record(self, record: Record, expected_version: str | None) -> Record:
        """Insert (`expected_version` None: Conflict when the key exists) or compare-and-set
        (Conflict when the stored version differs, NotFound when the record is gone); returns
        the record with its new version."""

    async def get_record(self, kind: str, key: str) -> Record | None: ...

    async def scan_records(
        self, kind: str, prefix: str, limit: int, after: str | None = None
    ) -> list[Record]:
        """Records of `kind` whose key starts with `prefix` (and is > `after`), in key order,
        at most `limit`, reading O(limit) rows."""

    async def due_records(self, kind: str, now_ms: int, limit: int) -> list[Record]:
        """Records of `kind` with `due` <= now_ms, by (due, key), at most `limit`, through an
        index."""

    async def delete_record(self, kind: str, key: str, expected_version: str | None = None) -> None:
        """Remove the record; a missing one is not an error. With `expected_version`, only if
        the stored version is still that one (Conflict otherwise). A version is never handed out
        twice for a key, even after a delete and a new insert, so a conditional delete cannot
        remove a record written after the one it read."""


class JobStore(RecordStore, Protocol):
    async def open(self) -> None:
        """Create tables, indexes or clients; safe to call more than once."""

    async def close(self) -> None: ...

    async def create(self, job: Job, records: Sequence[Record] = ()) -> Job:
        """Insert a new job and return it with its version; `records` (new ones: their keys
        must be free) are inserted in the same atomic write, or none is.

        Raises DuplicateKey (carrying the existing job) when the tenant already has a job with the
        same dedupKey or idempotencyKey; the check and the insert are one atomic step. Raises
        Conflict when the id exists.
        """

    async def get(self, job_id: str) -> Job | None: ...

    async def list_jobs(
        self,
        tenant: str | None,
        status: JobState | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """Newest first, paged by an opaque cursor (BadRequest when it cannot be decoded)."""

    async def due(self, now: datetime, limit: int) -> list[Job]:
        """Queued jobs with notBefore <= now, best first: priority desc, then joinAt or createdAt
        asc, then id. Reads O(limit) rows through an index, not the whole queue."""

    async def expiring(self, now: datetime, limit: int) -> list[Job]:
        """Queued jobs whose deadline is <= now, earliest deadline first, through an index."""

    async def active(self) -> list[Job]:
        """Jobs in provisioning or running (bounded by the concurrency cap), in no set order."""

    async def counts(self, tenant: str | None = None) -> dict[JobState, int]: ...

    async def update(self, job: Job, expected_version: str, records: Sequence[Record] = ()) -> Job:
        """Write `job` if the stored version is still `expected_version`; return it with its new
        version. Raises Conflict otherwise (and NotFound if the job is gone). `records` are
        inserted in the same atomic write: all of them with the job, or nothing."""

    async def acquire_lease(self, name: str, owner: str, until: datetime, now: datetime) -> bool:
        """Take or renew the named lease if it is free, expired or already `owner`'s."""

    async def release_lease(self, name: str, owner: str) -> None: ...


@runtime_checkable
class Notifying(Protocol):
    """What a JobStore may offer besides the contract (the postgres store does): telling a
    drain loop that a write, by any process, made a job startable (a due job written, a slot
    freed), so that it dispatches then instead of at its next tick. Drain loops check for it
    with isinstance (core/loops.py); stores without it are polled on the interval."""

    async def wait_notified(self, seconds: float) -> bool:
        """Up to `seconds`: True as soon as such a write was notified (since the last
        call), False when the time ran out. Never raises: a store that cannot listen for now
        only times out."""


class Backend(Protocol):
    name: str

    async def start(self, job: Job) -> ExecutionRef:
        """Start the job's bot, or adopt the run already started for this job."""

    async def status(self, ref: ExecutionRef) -> Execution:
        """Raises ExecutionLost when the backend has no such run."""

    async def stop(self, ref: ExecutionRef) -> None:
        """Stop the run; stopping a finished or unknown run is not an error."""

    async def find(self, job_id: str) -> ExecutionRef | None:
        """The run this backend has for `job_id` (live or finished), found by the name or label
        `start` gives it; None when the backend has none. Raises BackendError when it cannot
        tell: the scheduler then treats the run as one that may exist."""

    async def runs(self) -> dict[str, ExecutionRef]:
        """The live (not finished) runs this backend holds for this scheduler, by job id: what
        the reconcile pass compares with the store. Raises NotSupported where the platform
        cannot list its runs."""

    async def logs(self, ref: ExecutionRef, tail: int = 200) -> str:
        """The run's output, last `tail` lines. May raise NotSupported."""

    async def close(self) -> None: ...
