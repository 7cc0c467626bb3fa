"""A JobStore on one SQLite file, with the stdlib `sqlite3` only.

Each call runs on the event loop's own connection, or in a worker thread when it would wait
(sqlite_connections.py: where calls run, and `synchronous`, what a commit survives). Connections
are in autocommit mode and a write is one statement, so each write is one transaction, atomic,
and compare-and-set holds across connections and processes sharing the file (WAL). The exception:
a job created or updated with records (its events: the outbox) is written with them in one
explicit transaction, in the same synchronous call, so all commit or none does. Writes queued at
the same moment share one transaction (sqlite_groups.py), each in a savepoint that is rolled back
alone when it fails, so each keeps these properties and its own outcome. The SQL is plain
SQLite, kept within what Cloudflare D1 accepts.

Records (core/records.py) are a table of their own: sql_records.py has their SQL and calls.

The job itself is kept as JSON in `data` (without its version); the other columns are copies of
its fields that the indexes need.

Query plans (checked by the contract tests): `due` walks `jobs_queue` in ORDER BY order and stops
after `limit` ready jobs (queued jobs not ready yet that rank above them are skipped on the way);
`expiring` ranges over `jobs_deadline`; listing by tenant uses the tenant indexes. There is
deliberately no index led by `status` alone: with one, the planner prefers it for `due` and sorts
the whole queue. So a listing of every tenant filtered by status walks `jobs_created` and filters.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from core.errors import Conflict, DuplicateKey, NotFound
from core.models import Job, JobState, Page, to_ms
from core.records import Record
from core.stores import sql_records
from core.stores.cursor import decode_cursor, encode_cursor
from core.stores.sqlite_connections import Connections, Synchronous
from core.stores.sqlite_groups import transaction

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        status TEXT NOT NULL,
        priority INTEGER NOT NULL,
        sort_ms INTEGER NOT NULL,
        not_before_ms INTEGER NOT NULL,
        deadline_ms INTEGER,
        created_ms INTEGER NOT NULL,
        dedup_key TEXT,
        idempotency_key TEXT,
        version INTEGER NOT NULL,
        data TEXT NOT NULL
    )""",
    """CREATE UNIQUE INDEX IF NOT EXISTS jobs_dedup
        ON jobs(tenant, dedup_key) WHERE dedup_key IS NOT NULL""",
    """CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency
        ON jobs(tenant, idempotency_key) WHERE idempotency_key IS NOT NULL""",
    """CREATE INDEX IF NOT EXISTS jobs_queue
        ON jobs(priority DESC, sort_ms, id, not_before_ms) WHERE status = 'queued'""",
    """CREATE INDEX IF NOT EXISTS jobs_deadline
        ON jobs(deadline_ms, id) WHERE status = 'queued' AND deadline_ms IS NOT NULL""",
    "DROP INDEX IF EXISTS jobs_active",
    """CREATE INDEX IF NOT EXISTS jobs_holding
        ON jobs(status) WHERE status IN ('provisioning', 'running', 'stopping')""",
    "CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_ms DESC, id DESC)",
    "CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs(tenant, created_ms DESC, id DESC)",
    """CREATE INDEX IF NOT EXISTS jobs_tenant_status
        ON jobs(tenant, status, created_ms DESC, id DESC)""",
    """CREATE TABLE IF NOT EXISTS leases (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        until_ms INTEGER NOT NULL
    )""",
    *sql_records.RECORDS_SCHEMA,
)

_COLUMNS = (
    "tenant, status, priority, sort_ms, not_before_ms, deadline_ms, created_ms, dedup_key, "
    "idempotency_key, data"
)

INSERT_SQL = f"INSERT INTO jobs (id, {_COLUMNS}, version) VALUES (?, {', '.join('?' * 10)}, 1)"

UPDATE_SQL = (
    "UPDATE jobs SET "
    + ", ".join(f"{column.strip()} = ?" for column in _COLUMNS.split(","))
    + ", version = version + 1 WHERE id = ? AND version = ?"
)

DUE_SQL = (
    "SELECT data, version FROM jobs WHERE status = 'queued' AND not_before_ms <= ? "
    "ORDER BY priority DESC, sort_ms, id LIMIT ?"
)

EXPIRING_SQL = (
    "SELECT data, version FROM jobs WHERE status = 'queued' AND deadline_ms IS NOT NULL "
    "AND deadline_ms <= ? ORDER BY deadline_ms, id LIMIT ?"
)

ACTIVE_SQL = (
    "SELECT data, version FROM jobs WHERE status IN ('provisioning', 'running', 'stopping')"
)

ACQUIRE_LEASE_SQL = (
    "INSERT INTO leases (name, owner, until_ms) VALUES (?, ?, ?) "
    "ON CONFLICT(name) DO UPDATE SET owner = excluded.owner, until_ms = excluded.until_ms "
    "WHERE leases.until_ms <= ? OR leases.owner = excluded.owner"
)

RELEASE_LEASE_SQL = "DELETE FROM leases WHERE name = ? AND owner = ?"

Row = tuple[Any, ...]


def row_values(job: Job) -> tuple[Any, ...]:
    """The job's column values, in `_COLUMNS` order."""
    return (
        job.tenant,
        job.status.value,
        job.priority,
        to_ms(job.sort_time),
        to_ms(job.notBefore),
        to_ms(job.deadline) if job.deadline else None,
        to_ms(job.createdAt),
        job.dedupKey,
        job.idempotencyKey,
        job.model_dump_json(exclude={"version"}),
    )


def _job(row: Row) -> Job:
    job = Job.model_validate_json(row[0])
    job.version = str(row[1])
    return job


def list_filters(
    tenant: str | None, status: JobState | None, mark: str = "?"
) -> tuple[list[str], list[Any]]:
    """The WHERE terms and parameters of a listing by tenant and status (`mark`: the driver's
    placeholder; the PostgreSQL store's is `%s`)."""
    where: list[str] = []
    params: list[Any] = []
    if tenant is not None:
        where.append(f"tenant = {mark}")
        params.append(tenant)
    if status is not None:
        where.append(f"status = {mark}")
        params.append(status.value)
    return where, params


def list_sql(tenant: str | None, status: JobState | None, cursor: str | None) -> tuple[str, Row]:
    where, params = list_filters(tenant, status)
    if cursor is not None:
        created_ms, job_id = decode_cursor(cursor)
        where.append("created_ms <= ? AND (created_ms < ? OR id < ?)")
        params += [created_ms, created_ms, job_id]
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    sql = f"SELECT data, version, created_ms, id FROM jobs {clause}"
    return sql + "ORDER BY created_ms DESC, id DESC LIMIT ?", tuple(params)


class SqliteStore:
    def __init__(self, path: str | Path, *, synchronous: Synchronous = "normal") -> None:
        self.path = Path(path)
        self._db = Connections(self.path, synchronous)

    async def open(self) -> None:
        await asyncio.to_thread(self._db.open, SCHEMA)

    async def close(self) -> None:
        await self._db.close()

    async def create(self, job: Job, records: Sequence[Record] = ()) -> Job:
        return await self._db.write(_create, job, tuple(records))

    async def get(self, job_id: str) -> Job | None:
        rows = await self._db.read(_query, "SELECT data, version FROM jobs WHERE id = ?", job_id)
        return _job(rows[0]) if rows else None

    async def list_jobs(
        self,
        tenant: str | None,
        status: JobState | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        sql, params = list_sql(tenant, status, cursor)
        rows = await self._db.in_thread(_query, sql, *params, limit + 1)  # may walk many rows
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1][2], page[-1][3]) if len(rows) > limit else None
        return Page(jobs=[_job(row) for row in page], nextCursor=next_cursor)

    async def due(self, now: datetime, limit: int) -> list[Job]:
        # in the thread: it walks past the queued jobs not due yet that rank above the due ones
        rows = await self._db.in_thread(_query, DUE_SQL, to_ms(now), limit)
        return [_job(row) for row in rows]

    async def expiring(self, now: datetime, limit: int) -> list[Job]:
        rows = await self._db.read(_query, EXPIRING_SQL, to_ms(now), limit)
        return [_job(row) for row in rows]

    async def active(self) -> list[Job]:
        return [_job(row) for row in await self._db.read(_query, ACTIVE_SQL)]

    async def counts(self, tenant: str | None = None) -> dict[JobState, int]:
        where, params = ("WHERE tenant = ? ", (tenant,)) if tenant is not None else ("", ())
        sql = f"SELECT status, COUNT(*) FROM jobs {where}GROUP BY status"
        counts = dict.fromkeys(JobState, 0)
        for status, count in await self._db.in_thread(_query, sql, *params):  # reads every job
            counts[JobState(status)] = count
        return counts

    async def update(self, job: Job, expected_version: str, records: Sequence[Record] = ()) -> Job:
        return await self._db.write(_update, job, expected_version, tuple(records))

    async def acquire_lease(self, name: str, owner: str, until: datetime, now: datetime) -> bool:
        params = (name, owner, to_ms(until), to_ms(now))
        return await self._db.write(_execute, ACQUIRE_LEASE_SQL, *params) > 0

    async def release_lease(self, name: str, owner: str) -> None:
        await self._db.write(_execute, RELEASE_LEASE_SQL, name, owner)

    async def put_record(self, record: Record, expected_version: str | None) -> Record:
        return await self._db.write(sql_records.put_record, record, expected_version)

    async def get_record(self, kind: str, key: str) -> Record | None:
        return await self._db.read(sql_records.get_record, kind, key)

    async def scan_records(
        self, kind: str, prefix: str, limit: int, after: str | None = None
    ) -> list[Record]:
        return await self._db.read(sql_records.scan_records, kind, prefix, limit, after)

    async def due_records(self, kind: str, now_ms: int, limit: int) -> list[Record]:
        return await self._db.read(sql_records.due_records, kind, now_ms, limit)

    async def delete_record(self, kind: str, key: str, expected_version: str | None = None) -> None:
        await self._db.write(sql_records.delete_record, kind, key, expected_version)


# -- synchronous parts, run on either connection (sqlite_connections.py) ---------------------


def _create(db: sqlite3.Connection, job: Job, records: tuple[Record, ...]) -> Job:
    if not records:
        _insert(db, job)
    else:
        with transaction(db):
            _insert(db, job)
            sql_records.insert_records(db, records)
    return job.duplicate(version="1")


def _update(
    db: sqlite3.Connection, job: Job, expected_version: str, records: tuple[Record, ...]
) -> Job:
    try:
        expected = int(expected_version)
    except ValueError:
        expected = -1  # no stored version can match
    if not records:
        _compare_and_set(db, job, expected)
    else:
        with transaction(db):
            _compare_and_set(db, job, expected)
            sql_records.insert_records(db, records)
    return job.duplicate(version=str(expected + 1))


def _insert(db: sqlite3.Connection, job: Job) -> None:
    try:
        _execute(db, INSERT_SQL, job.id, *row_values(job))
    except sqlite3.IntegrityError:
        raise _duplicate(db, job) from None


def _compare_and_set(db: sqlite3.Connection, job: Job, expected: int) -> None:
    try:
        changed = _execute(db, UPDATE_SQL, *row_values(job), job.id, expected)
    except sqlite3.IntegrityError:
        raise _duplicate(db, job) from None
    if changed == 0:
        if not _query(db, "SELECT 1 FROM jobs WHERE id = ?", job.id):
            raise NotFound(f"job {job.id} not found", id=job.id)
        raise Conflict(f"job {job.id} was changed concurrently", id=job.id)


def _query(db: sqlite3.Connection, sql: str, *params: Any) -> list[Row]:
    return db.execute(sql, params).fetchall()


def _execute(db: sqlite3.Connection, sql: str, *params: Any) -> int:
    return db.execute(sql, params).rowcount


def _duplicate(db: sqlite3.Connection, job: Job) -> Exception:
    """The error for an insert or update that hit a unique index."""
    for field, column in (("dedupKey", "dedup_key"), ("idempotencyKey", "idempotency_key")):
        key = getattr(job, field)
        if key is None:
            continue
        sql = f"SELECT data, version FROM jobs WHERE tenant = ? AND {column} = ? AND id != ?"
        rows = _query(db, sql, job.tenant, key, job.id)
        if rows:
            return DuplicateKey(f"a job with this {field} already exists", existing=_job(rows[0]))
    return Conflict(f"job {job.id} already exists", id=job.id)
