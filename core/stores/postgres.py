"""A JobStore on PostgreSQL, through psycopg 3's async driver and its connection pool.

The design is the SQLite store's (core/stores/sqlite.py): the job is kept as JSON in `data`
(without its version), beside copies of the fields its indexes need; `version` is an integer
that each compare-and-set update raises by one (`UPDATE ... WHERE id = $1 AND version = $2`);
dedup and idempotency keys are partial unique indexes, so the check and the insert are one
atomic step. Connections are in autocommit mode: a write is one statement, its own transaction,
also for a job written with records (its events: the outbox): the job's insert or update is a
data-modifying WITH of the statement that inserts the records (only when the update changed the
job's row), so both commit or neither does, in one round trip.
The schema comes from versioned migrations (postgres_schema.py); the connections, and what a
failure to connect or a dropped connection does, are in postgres_connections.py.

Query plans: `due` walks the partial index `jobs_queue` in ORDER BY order and stops after
`limit` ready jobs, `expiring` ranges over `jobs_deadline`, `active` reads `jobs_holding`, and
listings use the created-time indexes with a row comparison for the cursor. `counts` reads the
`job_counts` rows that triggers keep in each write's transaction: no job is read.

Leases run on the database's clock, so instances whose clocks differ agree on when one ends: a
lease taken with (until, now) lasts `until - now` from the database's `clock_timestamp()`, and
it is free once that clock has passed its end. The caller's `now` counts only for that length.

Wake-ups: a write that makes a job startable (a due job inserted or queued again, a slot freed)
sends a NOTIFY from a trigger, in its own transaction; `wait_notified` (the drain loops') listens
for them on a connection of its own (postgres_listen.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError, Conflict, DuplicateKey, NotFound, SchedulerError
from core.models import Job, JobState, Page, to_ms
from core.records import Record
from core.stores import postgres_records as records_sql
from core.stores import postgres_schema as schema
from core.stores.cursor import decode_cursor, encode_cursor
from core.stores.postgres_connections import connection, driver, open_pool, redact
from core.stores.postgres_listen import Listener
from core.stores.sql_records import expected_number
from core.stores.sqlite import list_filters, row_values

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

    from core.config import Settings

_COLUMNS = (
    "tenant, status, priority, sort_ms, not_before_ms, deadline_ms, created_ms, dedup_key, "
    "idempotency_key, data"
)
INSERT_SQL = f"INSERT INTO jobs (id, {_COLUMNS}, version) VALUES (%s, {', '.join(['%s'] * 10)}, 1)"
UPDATE_SQL = (
    "UPDATE jobs SET "
    + ", ".join(f"{column.strip()} = %s" for column in _COLUMNS.split(","))
    + ", version = version + 1 WHERE id = %s AND version = %s"
)
GET_SQL = "SELECT data, version FROM jobs WHERE id = %s"
EXISTS_SQL = "SELECT 1 FROM jobs WHERE id = %s"
DUE_SQL = (
    "SELECT data, version FROM jobs WHERE status = 'queued' AND not_before_ms <= %s "
    "ORDER BY priority DESC, sort_ms, id LIMIT %s"
)
EXPIRING_SQL = (
    "SELECT data, version FROM jobs WHERE status = 'queued' AND deadline_ms IS NOT NULL "
    "AND deadline_ms <= %s ORDER BY deadline_ms, id LIMIT %s"
)
ACTIVE_SQL = (
    "SELECT data, version FROM jobs WHERE status IN ('provisioning', 'running', 'stopping')"
)
ACQUIRE_LEASE_SQL = (
    "INSERT INTO leases AS held (name, owner, until_at) VALUES (%s, %s, clock_timestamp() + %s) "
    "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until_at = excluded.until_at "
    "WHERE held.until_at <= clock_timestamp() OR held.owner = excluded.owner"
)
RELEASE_LEASE_SQL = "DELETE FROM leases WHERE name = %s AND owner = %s"
DUPLICATE_SQL = {
    "dedupKey": "SELECT data, version FROM jobs WHERE tenant = %s AND dedup_key = %s AND id != %s",
    "idempotencyKey": (
        "SELECT data, version FROM jobs WHERE tenant = %s AND idempotency_key = %s AND id != %s"
    ),
}

Row = Sequence[Any]


def _job(row: Row) -> Job:
    job = Job.model_validate_json(row[0])
    job.version = str(row[1])
    return job


def list_sql(
    tenant: str | None, status: JobState | None, cursor: str | None, limit: int
) -> tuple[str, tuple[Any, ...]]:
    where, params = list_filters(tenant, status, "%s")
    if cursor is not None:
        created_ms, job_id = decode_cursor(cursor)
        where.append("(created_ms, id) < (%s, %s)")
        params += [created_ms, job_id]
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    sql = f"SELECT data, version, created_ms, id FROM jobs {clause}"
    return sql + "ORDER BY created_ms DESC, id DESC LIMIT %s", (*params, limit)


class PostgresStore:
    def __init__(self, url: str, *, pool_size: int = 10, migrate: bool = False) -> None:
        """`url`: a libpq connection string; `migrate`: apply missing migrations at open (else
        a database behind the code fails the open)."""
        self.url = url
        self.pool_size = pool_size
        self.migrate = migrate
        self._pool: AsyncConnectionPool[Any] | None = None
        self._opening = asyncio.Lock()
        self._listener: Listener | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> PostgresStore:
        if not settings.database_url:
            raise ConfigError(
                "SCHEDULER_STORE=postgres needs DATABASE_URL "
                "(postgresql://USER:PASSWORD@HOST:5432/DATABASE)"
            )
        migrate = settings.postgres_migrate == "auto"
        return cls(settings.database_url, pool_size=settings.postgres_pool_size, migrate=migrate)

    @property
    def description(self) -> str:
        """Where the jobs are, without the password."""
        return redact(self.url)

    async def open(self) -> None:
        async with self._opening:
            if self._pool is not None:
                return
            async with connection(self.url) as conn:
                await schema.prepare(conn, self.url, migrate=self.migrate)
            self._pool = await open_pool(self.url, self.pool_size)

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def wait_notified(self, seconds: float) -> bool:
        """Up to `seconds`: True as soon as another write made a job startable (a due
        job, a slot freed: the triggers' NOTIFY), False when the time ran out (core/ports.py
        Notifying). The first call opens this process's listening connection, apart from the
        pool, which reconnects by itself (postgres_listen.py); it never raises."""
        if self._listener is None:
            self._listener = Listener(self.url)
        return await self._listener.wait(seconds)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        if self._pool is None:
            raise RuntimeError("PostgresStore is not open")
        async with self._pool.connection() as conn:
            yield conn

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        async with self._connection() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()

    async def create(self, job: Job, records: Sequence[Record] = ()) -> Job:
        params = [job.id, *row_values(job), *records_sql.params_of(records)]
        async with self._connection() as conn:
            try:
                await conn.execute(_create_sql(len(records)), params)
            except driver()[0].errors.UniqueViolation as exc:
                raise await _refused(conn, exc, job, records) from None
        return job.duplicate(version="1")

    async def get(self, job_id: str) -> Job | None:
        rows = await self._rows(GET_SQL, (job_id,))
        return _job(rows[0]) if rows else None

    async def list_jobs(
        self,
        tenant: str | None,
        status: JobState | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        sql, params = list_sql(tenant, status, cursor, limit + 1)
        rows = await self._rows(sql, params)
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1][2], page[-1][3]) if len(rows) > limit else None
        return Page(jobs=[_job(row) for row in page], nextCursor=next_cursor)

    async def due(self, now: datetime, limit: int) -> list[Job]:
        return [_job(row) for row in await self._rows(DUE_SQL, (to_ms(now), limit))]

    async def expiring(self, now: datetime, limit: int) -> list[Job]:
        return [_job(row) for row in await self._rows(EXPIRING_SQL, (to_ms(now), limit))]

    async def active(self) -> list[Job]:
        return [_job(row) for row in await self._rows(ACTIVE_SQL)]

    async def counts(self, tenant: str | None = None) -> dict[JobState, int]:
        where, params = ("WHERE tenant = %s ", (tenant,)) if tenant is not None else ("", ())
        sql = f"SELECT status, sum(n) FROM job_counts {where}GROUP BY status"
        counts = dict.fromkeys(JobState, 0)
        for status, count in await self._rows(sql, params):
            counts[JobState(status)] = int(count)
        return counts

    async def update(self, job: Job, expected_version: str, records: Sequence[Record] = ()) -> Job:
        expected = expected_number(expected_version)
        params = [*row_values(job), job.id, expected, *records_sql.params_of(records)]
        async with self._connection() as conn:
            try:
                cursor = await conn.execute(_update_sql(len(records)), params)
            except driver()[0].errors.UniqueViolation as exc:
                raise await _refused(conn, exc, job, records) from None
            if cursor.rowcount == 0:  # the job's row, or with records the records, not written
                if await (await conn.execute(EXISTS_SQL, (job.id,))).fetchone() is None:
                    raise NotFound(f"job {job.id} not found", id=job.id)
                raise Conflict(f"job {job.id} was changed concurrently", id=job.id)
        return job.duplicate(version=str(expected + 1))

    async def acquire_lease(self, name: str, owner: str, until: datetime, now: datetime) -> bool:
        """On the database's clock: the lease lasts `until - now` from the database's now."""
        async with self._connection() as conn:
            cursor = await conn.execute(ACQUIRE_LEASE_SQL, (name, owner, until - now))
            return cursor.rowcount > 0

    async def release_lease(self, name: str, owner: str) -> None:
        await self._rows_changed(RELEASE_LEASE_SQL, (name, owner))

    async def _rows_changed(self, sql: str, params: Sequence[Any]) -> int:
        async with self._connection() as conn:
            return (await conn.execute(sql, params)).rowcount

    async def put_record(self, record: Record, expected_version: str | None) -> Record:
        async with self._connection() as conn:
            return await records_sql.put_record(conn, record, expected_version)

    async def get_record(self, kind: str, key: str) -> Record | None:
        async with self._connection() as conn:
            return await records_sql.get_record(conn, kind, key)

    async def scan_records(
        self, kind: str, prefix: str, limit: int, after: str | None = None
    ) -> list[Record]:
        async with self._connection() as conn:
            return await records_sql.scan_records(conn, kind, prefix, limit, after)

    async def due_records(self, kind: str, now_ms: int, limit: int) -> list[Record]:
        async with self._connection() as conn:
            return await records_sql.due_records(conn, kind, now_ms, limit)

    async def delete_record(self, kind: str, key: str, expected_version: str | None = None) -> None:
        async with self._connection() as conn:
            await records_sql.delete_record(conn, kind, key, expected_version)


@cache
def _create_sql(records: int) -> str:
    """The job's insert, with its `records` in the same statement (one round trip, atomic)."""
    if not records:
        return INSERT_SQL
    return f"WITH job AS ({INSERT_SQL}) {records_sql.insert_many_sql(records)}"


@cache
def _update_sql(records: int) -> str:
    """The job's compare-and-set update, with its `records` inserted in the same statement only
    when the update changed the row: the rows it changes are then those of the records."""
    if not records:
        return UPDATE_SQL
    return (
        f"WITH job AS ({UPDATE_SQL} RETURNING 1) {records_sql.insert_many_sql(records)}"
        " WHERE EXISTS (SELECT 1 FROM job)"
    )


async def _refused(
    conn: AsyncConnection[Any], error: Any, job: Job, records: Sequence[Record]
) -> SchedulerError:
    """The error for a write of `job` (and `records`) that hit a unique index: the job whose
    dedup or idempotency key it shares, the record whose key is taken, or its own id."""
    for field in ("dedupKey", "idempotencyKey"):  # first: whichever index the statement hit
        key = getattr(job, field)
        if key is None:
            continue
        cursor = await conn.execute(DUPLICATE_SQL[field], (job.tenant, key, job.id))
        row = await cursor.fetchone()
        if row is not None:
            return DuplicateKey(f"a job with this {field} already exists", existing=_job(row))
    if error.diag.constraint_name == "records_pkey":
        return await records_sql.taken(conn, records)
    return Conflict(f"job {job.id} already exists", id=job.id)
