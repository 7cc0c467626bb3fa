"""A JobStore on Google Cloud Firestore (native mode), through google-cloud-firestore's AsyncClient.

Design. Three collections (FIRESTORE_COLLECTION, default "botsched_jobs"), and one per record kind:

    {collection}/{id}                      the job: its JSON in `data`, plus the queried fields
    {collection}_keys/{tenant}|{field}|{key}   a dedupKey / idempotencyKey naming its job
    {collection}_leases/{name}             a lease: owner, until_ms
    {collection}_rec_{kind}/~{key}         a record (core/records.py): firestore_records.py

Ids are escaped (core/stores/firestore_docs.py `part`): no '/', never '.', '..' or `__x__`
(a record's id is its key after a '~': keys need no escape).

Versions and compare-and-set. A job's version is its document's update time, as RFC 3339 with
nanoseconds. Every write is one batched commit (atomic: all its writes or none) whose job write
carries a precondition: `create` (the document must not exist) or `last_update_time` (it must
still be the version read). A create also creates the key documents in the same commit, so a taken
key fails the whole commit (AlreadyExists) and the store answers DuplicateKey with the job that
holds it; an update creates the keys the job gains and deletes those it lost in the same commit.
A failed precondition is a Conflict (NotFound when the job is gone). The client retries a commit
answered UNAVAILABLE, which may have been applied: when the retry then fails its precondition and
the stored job is exactly the one written, that write is ours and succeeds.

The outbox. The records given to `create` or `update` are created (precondition: must not exist)
in the job's commit, so the job and its records are written together or not at all. A commit
refused AlreadyExists is told apart by reading: the job id taken is a Conflict, a dedup key
taken a DuplicateKey, a record key taken a Conflict (checked in that order); a stale job version
is a Conflict, and no record is written.

Queries, each served by an index (infra/gcp/firestore.indexes.json):
- `due(k)`: `queue_key >= ""` ordered by `queue_key`, limit k: ONE ordered, limited query on a
  single-field index. A query with a range filter is ordered by the filtered field first (the
  classic rule), so `not_before_ms <= now` cannot come with priority order; instead `queue_key`
  (`{100-priority:03d}|{sortMs:015d}|{id}`) sorts like the queue and exists only while the job
  is queued, and notBefore is checked here. A queued job that ranks above the due ones but is not
  due yet (a retry in backoff, a higher-priority meeting later on) is skipped; the next page (k
  more, after the last one read) is read only when a page held such jobs. So due(k) reads k
  documents plus the not-yet-due jobs that outrank the k-th due one.
- `expiring(k)`: `deadline_queued_ms <= now` ordered by it, then id, limit k.
- `active()`: `state in [provisioning, running]` (bounded by the concurrency cap).
- `counts()`: one COUNT aggregation per state (and tenant), concurrently: no document is read.
- `list_jobs`: `tenant ==` (and `state ==`) ordered by `created_ms desc, id desc`, limit + 1,
  continued with `start_after` from the shared cursor (core/stores/cursor.py).
Leases take the same compare-and-set: `create`, or an update conditioned on the update time read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from core.config import Settings
from core.errors import Conflict, DuplicateKey, NotFound
from core.models import ACTIVE_STATES, Job, JobState, Page, to_ms
from core.records import Record
from core.stores import firestore_docs as fd
from core.stores.cursor import decode_cursor, encode_cursor
from core.stores.firestore_records import FirestoreRecords

if TYPE_CHECKING:
    from google.cloud.firestore_v1.async_client import AsyncClient
    from google.cloud.firestore_v1.async_collection import AsyncCollectionReference
    from google.cloud.firestore_v1.async_query import AsyncQuery

TRIES = 5


class FirestoreStore(FirestoreRecords):
    def __init__(
        self,
        project: str | None = None,
        database: str = fd.DEFAULT_DATABASE,
        collection: str = fd.DEFAULT_COLLECTION,
        emulator_host: str | None = None,
        client: AsyncClient | None = None,
    ) -> None:
        """`emulator_host` (host:port) talks to an emulator without credentials; without it the
        client honours FIRESTORE_EMULATOR_HOST itself, else signs in with Application Default
        Credentials. `client` is used as it is (and not closed by `close`)."""
        self.project = project
        self.database = database or fd.DEFAULT_DATABASE
        self.collection = fd.check_collection(collection)
        self.emulator_host = emulator_host
        self._client = client
        self._own_client = client is None
        self.reads = 0  # documents read (gets and query results): for tests and tuning
        self.queries = 0  # queries run (not counting aggregations)

    @classmethod
    def from_settings(cls, settings: Settings) -> FirestoreStore:
        return cls(
            project=settings.gcp_project_id,
            database=settings.firestore_database,
            collection=settings.firestore_collection,
            emulator_host=settings.firestore_emulator_host,
        )

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            raise RuntimeError("FirestoreStore is not open")
        return self._client

    async def open(self) -> None:
        if self._client is None:
            self._client = self._connect()

    def _connect(self) -> AsyncClient:
        s = fd.sdk()
        if self.emulator_host is None:
            return s.async_client(project=self.project, database=self.database)
        client = s.async_client(
            project=self.project or "demo-botsched",
            credentials=s.anonymous_credentials(),
            database=self.database,
        )
        # What the SDK sets from FIRESTORE_EMULATOR_HOST: an insecure channel to the emulator
        # and its "Bearer owner" metadata. Set here so that the process environment can stay
        # as it is (and several stores can talk to several emulators).
        client._emulator_host = self.emulator_host
        return client

    async def close(self) -> None:
        if not self._own_client:
            return  # the caller's client: the caller closes it
        client, self._client = self._client, None
        api = getattr(client, "_firestore_api_internal", None)  # the channel, once one was made
        if api is not None:
            await api.transport.close()

    @property
    def _jobs(self) -> AsyncCollectionReference:
        return self.client.collection(self.collection)

    @property
    def _keys(self) -> AsyncCollectionReference:
        return self.client.collection(self.collection + fd.KEYS_SUFFIX)

    @property
    def _leases(self) -> AsyncCollectionReference:
        return self.client.collection(self.collection + fd.LEASES_SUFFIX)

    # -- jobs --

    async def create(self, job: Job, records: Sequence[Record] = ()) -> Job:
        s = fd.sdk()
        ref = self._jobs.document(fd.part(job.id))
        fields = fd.job_fields(job, update=False)
        creates = self._record_creates(records)
        for _ in range(TRIES):
            batch = self.client.batch()
            batch.create(ref, fields)
            for doc_id, doc in fd.key_docs(job).items():
                batch.create(self._keys.document(doc_id), doc)
            for record_ref, record_fields in creates:
                batch.create(record_ref, record_fields)
            try:
                results = await batch.commit()
            except s.already_exists:
                stored = await self._get(ref)
                if stored is not None and stored.get("data") == fields["data"]:
                    return fd.job_from(stored)  # our own commit, retried by the client
                if stored is not None:
                    raise Conflict(f"job {job.id} already exists", id=job.id) from None
                duplicate = await self._duplicate(job, set())
                if duplicate is not None:
                    raise duplicate from None
                if await self._records_taken(creates):
                    raise Conflict("a record with this key already exists", id=job.id) from None
                continue  # the key was released meanwhile: try again
            return job.duplicate(version=fd.version(results[0].update_time))
        raise Conflict(f"job {job.id}: its keys kept changing, try again", id=job.id)

    async def get(self, job_id: str) -> Job | None:
        snapshot = await self._get(self._jobs.document(fd.part(job_id)))
        return fd.job_from(snapshot) if snapshot is not None else None

    async def update(self, job: Job, expected_version: str, records: Sequence[Record] = ()) -> Job:
        s = fd.sdk()
        ref = self._jobs.document(fd.part(job.id))
        expected = fd.timestamp(expected_version)
        fields = fd.job_fields(job, update=True)
        creates = self._record_creates(records)
        refused = False  # a commit of ours failed its precondition
        for _ in range(TRIES):
            stored = await self._get(ref)
            if stored is None:
                raise NotFound(f"job {job.id} not found", id=job.id)
            if expected is None or fd.version(stored.update_time) != fd.version(expected):
                if refused and stored.get("data") == fields["data"]:
                    return fd.job_from(stored)  # our own commit, retried by the client
                raise Conflict(f"job {job.id} was changed concurrently", id=job.id)
            old_keys, new_keys = fd.key_docs(fd.job_from(stored)), fd.key_docs(job)
            batch = self.client.batch()
            option = self.client.write_option(last_update_time=stored.update_time)
            batch.update(ref, fields, option=option)
            for doc_id, doc in new_keys.items():
                if doc_id not in old_keys:
                    batch.create(self._keys.document(doc_id), doc)
            for doc_id in old_keys.keys() - new_keys.keys():
                batch.delete(self._keys.document(doc_id))
            for record_ref, record_fields in creates:
                batch.create(record_ref, record_fields)
            try:
                results = await batch.commit()
            except (s.failed_precondition, s.not_found):
                refused = True  # changed or deleted since it was read: the next read says which
                continue
            except s.already_exists:
                duplicate = await self._duplicate(job, set(old_keys))
                if duplicate is not None:
                    raise duplicate from None
                taken = await self._records_taken(creates)
                if taken is None:  # every record is this commit's: applied, then retried
                    stored = await self._get(ref)
                    if stored is not None and stored.get("data") == fields["data"]:
                        return fd.job_from(stored)
                if taken is not False:
                    raise Conflict("a record with this key already exists", id=job.id) from None
                continue  # the key was released meanwhile: try again
            return job.duplicate(version=fd.version(results[0].update_time))
        raise Conflict(f"job {job.id} was changed concurrently", id=job.id)

    async def _duplicate(self, job: Job, held: set[str]) -> DuplicateKey | None:
        """The DuplicateKey for the first of the job's keys (not in `held`) another job holds."""
        for doc_id, doc in fd.key_docs(job).items():
            if doc_id in held:
                continue
            key = await self._get(self._keys.document(doc_id))
            owner = key.get("job") if key is not None else None
            existing = await self.get(owner) if owner not in (None, job.id) else None
            if existing is not None:
                message = f"a job with this {doc['field']} already exists"
                return DuplicateKey(message, existing=existing)
        return None

    # -- queries --

    async def list_jobs(
        self,
        tenant: str | None,
        status: JobState | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        after = decode_cursor(cursor) if cursor else None
        if limit <= 0:
            return Page(jobs=[])
        query = self.list_query(tenant, status, after)
        snapshots = await self._query(query.limit(limit + 1))
        jobs = [fd.job_from(snapshot) for snapshot in snapshots[:limit]]
        last = jobs[-1] if len(snapshots) > limit else None
        next_cursor = encode_cursor(to_ms(last.createdAt), last.id) if last else None
        return Page(jobs=jobs, nextCursor=next_cursor)

    def list_query(
        self, tenant: str | None, status: JobState | None, after: tuple[int, str] | None
    ) -> AsyncQuery:
        """Newest first: `created_ms desc, id desc`, after the cursor's (created_ms, id)."""
        s = fd.sdk()
        query: Any = self._jobs
        if tenant is not None:
            query = query.where(filter=s.field_filter("tenant", "==", tenant))
        if status is not None:
            query = query.where(filter=s.field_filter("state", "==", status.value))
        query = query.order_by("created_ms", direction=s.descending)
        query = query.order_by("id", direction=s.descending)
        if after is not None:
            query = query.start_after({"created_ms": after[0], "id": after[1]})
        listed: AsyncQuery = query
        return listed

    def due_query(self, limit: int) -> AsyncQuery:
        """The one query `due` runs (and continues with `start_after` past skipped jobs)."""
        s = fd.sdk()
        queued = self._jobs.where(filter=s.field_filter("queue_key", ">=", ""))
        return queued.order_by("queue_key").limit(limit)

    async def due(self, now: datetime, limit: int) -> list[Job]:
        found: list[Job] = []
        if limit <= 0:
            return found
        now_ms = to_ms(now)
        query = self.due_query(limit)
        while True:
            page = await self._query(query)
            for snapshot in page:
                job = fd.job_from(snapshot)
                if to_ms(job.notBefore) <= now_ms:
                    found.append(job)
                    if len(found) == limit:
                        return found
            if len(page) < limit:
                return found
            query = self.due_query(limit).start_after(page[-1])

    async def expiring(self, now: datetime, limit: int) -> list[Job]:
        if limit <= 0:
            return []
        return [
            fd.job_from(snapshot) for snapshot in await self._query(self.expiring_query(now, limit))
        ]

    def expiring_query(self, now: datetime, limit: int) -> AsyncQuery:
        s = fd.sdk()
        expired = self._jobs.where(filter=s.field_filter("deadline_queued_ms", "<=", to_ms(now)))
        return expired.order_by("deadline_queued_ms").order_by("id").limit(limit)

    async def active(self) -> list[Job]:
        s = fd.sdk()
        states = [state.value for state in ACTIVE_STATES]
        query = self._jobs.where(filter=s.field_filter("state", "in", states))
        return [fd.job_from(snapshot) for snapshot in await self._query(query)]

    async def counts(self, tenant: str | None = None) -> dict[JobState, int]:
        """One COUNT aggregation per state, run concurrently (billed per 1,000 index entries)."""
        s = fd.sdk()

        async def count(state: JobState) -> int:
            query: Any = self._jobs.where(filter=s.field_filter("state", "==", state.value))
            if tenant is not None:
                query = query.where(filter=s.field_filter("tenant", "==", tenant))
            result = await query.count(alias="n").get()
            return int(result[0][0].value)

        states = list(JobState)
        totals = await asyncio.gather(*(count(state) for state in states))
        return dict(zip(states, totals, strict=True))

    # -- leases --

    async def acquire_lease(self, name: str, owner: str, until: datetime, now: datetime) -> bool:
        s = fd.sdk()
        ref = self._leases.document(fd.part(name))
        lease = {"owner": owner, "until_ms": to_ms(until)}
        for _ in range(TRIES):
            held = await self._get(ref)
            try:
                if held is None:
                    await ref.create(lease)
                    return True
                if held.get("owner") != owner and held.get("until_ms") > to_ms(now):
                    return False
                option = self.client.write_option(last_update_time=held.update_time)
                await ref.update(lease, option=option)
                return True
            except (s.already_exists, s.failed_precondition, s.not_found):
                continue  # someone else wrote the lease meanwhile: look again
        return False

    async def release_lease(self, name: str, owner: str) -> None:
        s = fd.sdk()
        ref = self._leases.document(fd.part(name))
        held = await self._get(ref)
        if held is None or held.get("owner") != owner:
            return
        option = self.client.write_option(last_update_time=held.update_time)
        with contextlib.suppress(s.failed_precondition, s.not_found):
            await ref.delete(option=option)  # fails when taken over meanwhile: not ours any more

    # -- reading documents --

    async def _get(self, ref: Any) -> Any:
        snapshot = await ref.get()
        self.reads += 1  # Firestore bills a read for a missing document too
        return snapshot if snapshot.exists else None

    async def _query(self, query: Any) -> list[Any]:
        snapshots = [snapshot async for snapshot in query.stream()]
        self.queries += 1
        self.reads += len(snapshots)
        return snapshots
