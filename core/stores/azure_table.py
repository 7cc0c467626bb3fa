"""A JobStore on one Azure Storage table, through azure-data-tables' async client.

Design. An entity group transaction is the only atomic multi-row write the Table service has, and
it covers one partition. So everything that must change together lives in ONE partition, "jobs":

    j|{id}                                   the job row: its JSON plus typed columns
    k|{field}|{tenant}|{key}                 a dedupKey / idempotencyKey row naming its job
    q|{100-priority:03d}|{sortMs:015d}|{id}  queue index (queued jobs; carries notBeforeMs)
    d|{deadlineMs:015d}|{id}                 deadline index (queued jobs with a deadline)
    a|{id}                                   active index (provisioning, running, stopping jobs)
    l|{tenant}|{inverted createdMs}|{~id}    list index, newest first, one per tenant ...
    l|*|{inverted createdMs}|{~id}           ... and one across tenants; both carry the state
                                             when final, else "open" (core/stores/azure_lists.py)
    r|{kind}|{key}                           a record (core/records.py): its JSON, `due` if any
    u|{kind}|{due:015d}|{key}                due index of the records (core/stores/azure_records.py)

Every create and update is one transaction in that partition: the job row (create, or replace
conditioned on its ETag), the key rows it gains (create: a taken key fails the whole transaction,
which is how a duplicate is refused atomically, even by 20 concurrent creates) and the index rows
whose set or content changed (core/stores/azure_index.py computes them from the job, and an update
diffs the stored job's rows against the new job's). So the indexes never disagree with the jobs.
An update needs the stored job to know its old rows: the one this store last read or wrote at the
version the caller holds (it remembers the latest of each job, bounded), else it reads the job row
first (a stale version fails right there). Its transaction is conditioned on that version: a 412
is a Conflict, so a remembered job can never stand in for a row that changed. The records written
with a job are created in its transaction (a taken record key fails it: Conflict, where a taken
dedup key is a DuplicateKey), so at most 100 rows change at once (PayloadTooLarge beyond).
Writes in flight at the same moment share transactions (core/stores/azure_batch.py): a refused
group is sent again write by write, so each keeps its own condition and its own error.

The version is the job row's ETag. `due`, `expiring`, `active` and `list_jobs` read a RowKey range
of the partition in the service's order (PartitionKey, RowKey) page by page and stop once they have
enough: `due(k)` reads k index rows (future notBefore rows are filtered by the service) and at most
k job rows. Every write marks the job row, its queue row and its active row with one random stamp;
a queue or active row whose stamp is that of the job this store last read or wrote stands for the
job as it is, with no point read (the row and the job row changed together), so a process that
submits and dispatches reads no job row it wrote itself. Each index row is checked against the job
it names; one the job does not have (left by a write from outside this store) is skipped and
deleted with its ETag as the condition, so a row that a concurrent write has just re-created
survives. `counts` reads the list rows of the scope with `select=["state"]` and the active jobs:
O(jobs in the scope), kept for /stats and /metrics, off the dispatch path.
Leases are rows of the "lease" partition, taken by create or by an ETag-conditioned replace.

One partition has one partition's throughput (the service's target is 2,000 entities/s), far
beyond what starting bot containers needs. The JSON of a job takes `data`, `data1`, ... (at most
15 properties of 32,000 UTF-16 units, under the 1 MiB entity limit); a larger job is refused with
PayloadTooLarge. Times are typed Edm.Int64 epoch milliseconds; the JSON keeps the datetimes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from core.config import Settings
from core.errors import BadRequest, ConfigError, Conflict, DuplicateKey, NotFound, PayloadTooLarge
from core.models import Job, JobState, Page, to_ms
from core.records import Record
from core.stores import azure_index as ix
from core.stores.azure_batch import GroupCommit
from core.stores.azure_lists import active_page, state_filter, tally
from core.stores.azure_records import AzureRecords, insert_ops, record_taken
from core.stores.azure_rows import JOBS_FILTER as _JOBS
from core.stores.azure_rows import TRIES
from core.stores.cursor import decode_cursor, encode_cursor

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.data.tables.aio import TableClient, TableServiceClient

DEFAULT_TABLE = "botschedjobs"
SEEN_MAX = 10_000  # jobs whose latest version read or written is remembered
_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")


def _default_credential() -> AsyncTokenCredential:
    try:
        from azure.identity.aio import DefaultAzureCredential
    except ImportError as exc:
        raise ConfigError(
            "AZURE_STORAGE_ACCOUNT_URL without a SAS token signs in with a managed identity "
            f"(DefaultAzureCredential), which needs azure-identity: {ix.INSTALL_HINT}"
        ) from exc
    return DefaultAzureCredential()


class AzureTableStore(AzureRecords):
    def __init__(
        self,
        table_name: str = DEFAULT_TABLE,
        connection_string: str | None = None,
        account_url: str | None = None,
        credential: Any = None,
    ) -> None:
        if not _TABLE_NAME.match(table_name):
            raise ConfigError(f"AZURE_TABLE_NAME={table_name!r}: 3-63 letters or digits")
        if not connection_string and not account_url:
            raise ConfigError(
                "the Azure Table store needs AZURE_STORAGE_CONNECTION_STRING or "
                "AZURE_STORAGE_ACCOUNT_URL"
            )
        super().__init__()
        self.table_name = table_name
        self._connection_string = connection_string
        self._account_url = account_url
        self._credential = credential
        self._own_credential: AsyncTokenCredential | None = None
        self._service: TableServiceClient | None = None
        self._lock = asyncio.Lock()
        self._seen: OrderedDict[str, ix.Stamped] = OrderedDict()  # latest read or written
        self._group: GroupCommit | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AzureTableStore:
        return cls(
            table_name=settings.azure_table_name,
            connection_string=settings.azure_storage_connection_string,
            account_url=settings.azure_storage_account_url,
        )

    async def open(self) -> None:
        async with self._lock:
            if self._table is None:
                self._service = self._connect()
                self._table = await self._ensure_table(self._service)
                self._group = GroupCommit(
                    self._submit, (ix.sdk().transaction_error, PayloadTooLarge)
                )

    def _connect(self) -> TableServiceClient:
        s = ix.sdk()
        if self._connection_string:
            return s.service_client.from_connection_string(self._connection_string)
        assert self._account_url is not None
        url = urlparse(self._account_url)
        endpoint, credential = self._account_url, self._credential
        if credential is None and "sig=" in url.query:
            # Transactions sign with the SAS only as a credential, not inside the URL
            # (Azure/azure-sdk-for-python#17093).
            endpoint = url._replace(query="").geturl()
            credential = s.sas_credential(url.query)
        elif credential is None:
            credential = self._own_credential = _default_credential()
        return s.service_client(endpoint=endpoint, credential=credential)

    async def _ensure_table(self, service: TableServiceClient) -> TableClient:
        try:
            return await service.create_table_if_not_exists(self.table_name)
        except ix.sdk().http_error as exc:
            if exc.status_code != 403:  # a SAS for the table alone may not create tables
                await self.close()
                raise
            return service.get_table_client(self.table_name)

    async def close(self) -> None:
        for closable in (self._table, self._service, self._own_credential):
            if closable is not None:
                await closable.close()
        self._table = self._service = self._own_credential = None

    # -- jobs --

    async def create(self, job: Job, records: Sequence[Record] = ()) -> Job:
        ix.check_id(job.id)
        return await self._write(None, job, None, records)

    async def get(self, job_id: str) -> Job | None:
        try:
            ix.check_id(job_id)
        except BadRequest:
            return None
        stored = await self._read(job_id)
        return stored[0].duplicate() if stored is not None else None

    async def _read(self, job_id: str) -> ix.Stamped | None:
        """The job row, remembered as this store's latest read of the job."""
        entity = await self._get(ix.job_key(job_id))
        if entity is None:
            return None
        return self._remember(ix.job_from_entity(entity), ix.stamp_of(entity))

    async def update(self, job: Job, expected_version: str, records: Sequence[Record] = ()) -> Job:
        stored = self._seen.get(job.id)
        if stored is None or stored[0].version != expected_version:
            stored = await self._read(job.id)
        if stored is None:
            raise NotFound(f"job {job.id} not found", id=job.id)
        if stored[0].version != expected_version:
            raise Conflict(f"job {job.id} was changed concurrently", id=job.id)
        return await self._write(stored, job, expected_version, records)

    async def _write(
        self, old: ix.Stamped | None, job: Job, etag: str | None, records: Sequence[Record]
    ) -> Job:
        s = ix.sdk()
        missing: set[str] = set()
        inserts = insert_ops(records)
        assert self._group is not None, "AzureTableStore is not open"
        for _ in range(TRIES):
            stamp = ix.new_stamp()
            ops = ix.plan(old, job, stamp, etag, frozenset(missing)) + inserts
            try:
                results = await self._group.submit(ops)
            except s.transaction_error as exc:
                index = exc.index if 0 <= exc.index < len(ops) else 0
                op, row, _ = ops[index]
                if index > 0 and exc.status_code == 404 and op == "delete":
                    missing.add(row["RowKey"])  # an index row deleted from outside: skip it
                    continue
                if index > 0 and exc.status_code == 409 and op == "create":
                    taken = record_taken(row) or await self._duplicate(row)
                    if taken is None:
                        continue  # the key was released meanwhile: try again
                    raise taken from None
                error = self._job_error(job, exc.status_code)
                if error is None:
                    raise  # not a race: a refused write (400, 413, ...) surfaces as it is
                raise error from None
            written = job.duplicate(version=results[0]["etag"])
            self._remember(written.duplicate(), stamp)
            return written
        raise Conflict(f"job {job.id}: its rows kept changing, try again", id=job.id)

    def _remember(self, job: Job, stamp: str | None) -> ix.Stamped:
        """Keep `job` (which no caller holds) as this store's latest read or write of it."""
        stored = self._seen[job.id] = (job, stamp)
        self._seen.move_to_end(job.id)
        if len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)
        return stored

    @staticmethod
    def _job_error(job: Job, status: int | None) -> Exception | None:
        if status == 409:
            return Conflict(f"job {job.id} already exists", id=job.id)
        if status == 412:
            return Conflict(f"job {job.id} was changed concurrently", id=job.id)
        if status == 404:
            return NotFound(f"job {job.id} not found", id=job.id)
        return None

    async def _duplicate(self, key_row: ix.Entity) -> DuplicateKey | None:
        held = await self._get(key_row["RowKey"])
        existing = await self.get(held["jobId"]) if held is not None else None
        if existing is None:
            return None
        field = key_row["field"]
        return DuplicateKey(f"a job with this {field} already exists", existing=existing)

    # -- reads through the indexes --

    async def list_jobs(
        self,
        tenant: str | None,
        status: JobState | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        if status is not None and status.active:
            return active_page(await self.active(), tenant, status, limit, cursor)
        prefix = ix.list_prefix(tenant)
        query = f"{_JOBS} and {ix.prefix_range(prefix)}"
        if cursor is not None:
            created_ms, job_id = decode_cursor(cursor)
            created_ms = min(max(created_ms, 0), ix.MS_MAX)
            query += f" and RowKey gt '{ix.list_key(tenant, created_ms, job_id)}'"
        if status is not None:
            query += f" and {state_filter(status)}"
        rows: list[Any] = []
        async for page in self._pages(query, limit + 1):
            rows += page
            if len(rows) > limit:
                break
        shown = rows[:limit] if limit > 0 else []
        jobs = await self._checked(shown, lambda job: status is None or job.status is status)
        last = shown[-1] if len(rows) > limit and shown else None
        next_cursor = encode_cursor(ix.as_int(last["createdMs"]), last["jobId"]) if last else None
        return Page(jobs=jobs, nextCursor=next_cursor)

    async def due(self, now: datetime, limit: int) -> list[Job]:
        now_ms = to_ms(now)
        query = f"{_JOBS} and {ix.prefix_range('q|')} and notBeforeMs le {now_ms}L"
        return await self._scan(
            query, limit, lambda job: job.status is JobState.QUEUED and job.notBefore <= now
        )

    async def expiring(self, now: datetime, limit: int) -> list[Job]:
        end = f"d|{min(max(to_ms(now) + 1, 0), ix.MS_MAX):015d}"
        query = f"{_JOBS} and RowKey ge 'd|' and RowKey lt '{end}'"
        return await self._scan(
            query,
            limit,
            lambda job: (
                job.status is JobState.QUEUED and job.deadline is not None and job.deadline <= now
            ),
        )

    async def active(self) -> list[Job]:
        query = f"{_JOBS} and {ix.prefix_range('a|')}"
        jobs: list[Job] = []
        async for page in self._pages(query, 100):
            jobs += await self._checked(page, lambda job: job.status.active)
        return jobs

    async def counts(self, tenant: str | None = None) -> dict[JobState, int]:
        """O(jobs of the tenant, or of all tenants): one `state` column per list row, and the
        active jobs (core/stores/azure_lists.py)."""
        query = f"{_JOBS} and {ix.prefix_range(ix.list_prefix(tenant))}"
        states: list[str] = []
        async for page in self._pages(query, 1000, select=["state"]):
            states += [row["state"] for row in page]
        return tally(states, await self.active(), tenant)

    async def _scan(self, query: str, limit: int, wanted: Callable[[Job], bool]) -> list[Job]:
        """The first `limit` wanted jobs named by the index rows `query` returns, in order."""
        found: list[Job] = []
        if limit <= 0:
            return found
        async for page in self._pages(query, limit):
            while page and len(found) < limit:
                need = limit - len(found)
                found += await self._checked(page[:need], wanted)
                page = page[need:]
            if len(found) >= limit:
                break
        return found

    async def _checked(self, rows: list[Any], wanted: Callable[[Job], bool]) -> list[Job]:
        """The jobs the index rows name, in the rows' order: the job as this store last read or
        wrote it when the row carries that write's stamp, else read (concurrently). A row that
        its job does not have is stale: skipped, and deleted unless it changed since it was read."""
        known = [self._known(row) for row in rows]
        unknown = [row["jobId"] for row, job in zip(rows, known, strict=True) if job is None]
        read = iter(await asyncio.gather(*(self.get(job_id) for job_id in unknown)))
        jobs = [job if job is not None else next(read) for job in known]
        kept: list[Job] = []
        for row, job in zip(rows, jobs, strict=True):
            if job is None or row["RowKey"] not in ix.index_rows(job):
                await self._drop(row)
            elif wanted(job):
                kept.append(job)
        return kept

    def _known(self, row: Any) -> Job | None:
        """The job a queue or active row names, when the row is as the write this store last
        read or wrote of it left it (the same stamp): it is the job as it is now."""
        seen, stamp = self._seen.get(row["jobId"]), ix.stamp_of(row)
        if seen is None or stamp is None or seen[1] != stamp:
            return None
        self._seen.move_to_end(row["jobId"])
        return seen[0].duplicate()

    # -- leases --

    async def acquire_lease(self, name: str, owner: str, until: datetime, now: datetime) -> bool:
        s = ix.sdk()
        row_key = ix.part(name)
        lease = {
            "PartitionKey": ix.LEASES, "RowKey": row_key, "owner": owner,
            "untilMs": ix.int64(to_ms(until)),
        }  # fmt: skip
        for _ in range(TRIES):
            held = await self._get(row_key, ix.LEASES)
            try:
                if held is None:
                    await self.client.create_entity(lease)
                    return True
                if held["owner"] != owner and ix.as_int(held["untilMs"]) > to_ms(now):
                    return False
                await self.client.update_entity(
                    lease,
                    mode=s.update_mode.REPLACE,
                    etag=held.metadata["etag"],
                    match_condition=s.match_conditions.IfNotModified,
                )
                return True
            except (s.exists, s.modified, s.not_found):
                continue  # someone else wrote the lease meanwhile: look again
        return False

    async def release_lease(self, name: str, owner: str) -> None:
        s = ix.sdk()
        held = await self._get(ix.part(name), ix.LEASES)
        if held is None or held["owner"] != owner:
            return
        with contextlib.suppress(s.modified, s.not_found):
            await self.client.delete_entity(
                ix.LEASES,
                ix.part(name),
                etag=held.metadata["etag"],
                match_condition=s.match_conditions.IfNotModified,
            )
