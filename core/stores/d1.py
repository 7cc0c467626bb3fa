"""A JobStore on Cloudflare D1, with the SQLite store's SQL.

D1 is SQLite behind a binding: `db.prepare(sql).bind(*args)` gives a statement whose `first()`,
`all()` and `run()` are awaitable, and `db.batch([...])` runs statements in one transaction. The
schema, the indexes and every query are `core.stores.sqlite`'s, so `due` walks the same
`jobs_queue` index and reads O(limit) rows, and `update` is the same compare-and-set
(`... WHERE id = ? AND version = ?`, then `meta.changes`).

`db` is the binding as a Python Worker sees it (`self.env.DB`: the workers SDK wraps it and
converts results to Python dicts and lists, None to null). A raw JS binding works as well: results
that are still JS objects are converted with `.to_py()`. The store imports no JS module itself, so
it also runs in CPython over any object of that shape (the tests use one over `sqlite3`).

Every statement is its own implicit transaction on D1, as every statement is in the SQLite store's
autocommit connection, so the atomicity arguments carry over unchanged. A job created or updated
with records (its events: the outbox) is one `db.batch`, one transaction that rolls back whole
when a statement fails: the job's INSERT or UPDATE, then each record's insert, which fires only
if the statement before it changed exactly one row (`... WHERE changes() = 1`: a batch goes on
after an UPDATE that lost its compare-and-set). A record key already taken fails the batch.
Records themselves are sql_records.py's SQL, as in the SQLite store.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from core.config import Settings
from core.errors import ConfigError, Conflict, DuplicateKey, NotFound, SchedulerError
from core.models import Job, JobState, Page, to_ms
from core.records import Record
from core.stores import sql_records
from core.stores.cursor import encode_cursor
from core.stores.sqlite import (
    ACQUIRE_LEASE_SQL,
    ACTIVE_SQL,
    DUE_SQL,
    EXPIRING_SQL,
    INSERT_SQL,
    RELEASE_LEASE_SQL,
    SCHEMA,
    UPDATE_SQL,
    list_sql,
    row_values,
)

GET_SQL = "SELECT data, version FROM jobs WHERE id = ?"
EXISTS_SQL = "SELECT 1 AS found FROM jobs WHERE id = ?"

Row = dict[str, Any]


def _py(value: Any) -> Any:
    """A D1 result as plain Python: JS objects (JsProxy) are converted, the rest passes."""
    to_py = getattr(value, "to_py", None)
    return to_py() if callable(to_py) else value


def _is_unique_violation(exc: BaseException) -> bool:
    # D1 reports "D1_ERROR: UNIQUE constraint failed: jobs.id: SQLITE_CONSTRAINT" (a JsException
    # under Pyodide); sqlite3 says "UNIQUE constraint failed: ..." too.
    text = str(exc)
    return "UNIQUE constraint failed" in text or "SQLITE_CONSTRAINT" in text


def _on_records(exc: BaseException) -> bool:
    """Whether a constraint error is the records table's ("... failed: records.kind, ...")."""
    return "records." in str(exc)


def _record(kind: str, row: Row) -> Record:
    return sql_records.record_of(kind, (row["key"], row["data"], row["due_ms"], row["version"]))


def _job(record: Row) -> Job:
    job = Job.model_validate_json(record["data"])
    job.version = str(int(record["version"]))
    return job


class D1Store:
    """JobStore over a D1 database binding (`env.DB`)."""

    def __init__(self, db: Any) -> None:
        self.db = db

    @classmethod
    def from_settings(cls, settings: Settings) -> D1Store:
        raise ConfigError(
            "SCHEDULER_STORE=d1 needs the Worker's D1 binding: serve through "
            "handlers/cloudflare.py (wrangler.toml binds it as DB)"
        )

    async def open(self) -> None:
        await self.db.batch([self.db.prepare(statement) for statement in SCHEMA])

    async def close(self) -> None:
        return None

    async def create(self, job: Job, records: Sequence[Record] = ()) -> Job:
        params = (job.id, *row_values(job))
        try:
            if records:
                await self._with_records(INSERT_SQL, params, records)
            else:
                await self._run(INSERT_SQL, *params)
        except Exception as exc:
            if not _is_unique_violation(exc):
                raise
            raise await self._refused(job, records, exc) from None
        return job.duplicate(version="1")

    async def get(self, job_id: str) -> Job | None:
        record = await self._first(GET_SQL, job_id)
        return _job(record) if record else None

    async def list_jobs(
        self,
        tenant: str | None,
        status: JobState | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        sql, params = list_sql(tenant, status, cursor)
        records = await self._all(sql, *params, limit + 1)
        page = records[:limit]
        next_cursor = None
        if len(records) > limit:
            next_cursor = encode_cursor(int(page[-1]["created_ms"]), page[-1]["id"])
        return Page(jobs=[_job(record) for record in page], nextCursor=next_cursor)

    async def due(self, now: datetime, limit: int) -> list[Job]:
        return [_job(record) for record in await self._all(DUE_SQL, to_ms(now), limit)]

    async def expiring(self, now: datetime, limit: int) -> list[Job]:
        return [_job(record) for record in await self._all(EXPIRING_SQL, to_ms(now), limit)]

    async def active(self) -> list[Job]:
        return [_job(record) for record in await self._all(ACTIVE_SQL)]

    async def counts(self, tenant: str | None = None) -> dict[JobState, int]:
        where, params = ("WHERE tenant = ? ", (tenant,)) if tenant is not None else ("", ())
        sql = f"SELECT status, COUNT(*) AS n FROM jobs {where}GROUP BY status"
        counts = dict.fromkeys(JobState, 0)
        for record in await self._all(sql, *params):
            counts[JobState(record["status"])] = int(record["n"])
        return counts

    async def update(self, job: Job, expected_version: str, records: Sequence[Record] = ()) -> Job:
        try:
            expected = int(expected_version)
        except ValueError:
            expected = -1  # no stored version can match
        params = (*row_values(job), job.id, expected)
        try:
            if records:
                changed = await self._with_records(UPDATE_SQL, params, records)
            else:
                changed = await self._run(UPDATE_SQL, *params)
        except Exception as exc:
            if not _is_unique_violation(exc):
                raise
            raise await self._refused(job, records, exc) from None
        if changed == 0:
            if await self._first(EXISTS_SQL, job.id) is None:
                raise NotFound(f"job {job.id} not found", id=job.id)
            raise Conflict(f"job {job.id} was changed concurrently", id=job.id)
        return job.duplicate(version=str(expected + 1))

    async def acquire_lease(self, name: str, owner: str, until: datetime, now: datetime) -> bool:
        return await self._run(ACQUIRE_LEASE_SQL, name, owner, to_ms(until), to_ms(now)) > 0

    async def release_lease(self, name: str, owner: str) -> None:
        await self._run(RELEASE_LEASE_SQL, name, owner)

    # -- records --

    async def put_record(self, record: Record, expected_version: str | None) -> Record:
        if expected_version is None:
            version = sql_records.new_version()
            try:
                await self._run(sql_records.INSERT_SQL, *sql_records.insert_params(record, version))
            except Exception as exc:
                if not _is_unique_violation(exc):
                    raise
                raise sql_records.exists_error(record) from None
            return record.but(version=str(version))
        expected = sql_records.expected_number(expected_version)
        params = sql_records.update_params(record, expected)
        if await self._run(sql_records.UPDATE_SQL, *params) == 0:
            found = await self._first(sql_records.EXISTS_SQL, record.kind, record.key)
            raise sql_records.not_written_error(record, found is not None)
        return record.but(version=str(expected + 1))

    async def get_record(self, kind: str, key: str) -> Record | None:
        row = await self._first(sql_records.GET_SQL, kind, key)
        return _record(kind, row) if row else None

    async def scan_records(
        self, kind: str, prefix: str, limit: int, after: str | None = None
    ) -> list[Record]:
        sql, params = sql_records.scan_sql(kind, prefix, limit, after)
        return [_record(kind, row) for row in await self._all(sql, *params)]

    async def due_records(self, kind: str, now_ms: int, limit: int) -> list[Record]:
        rows = await self._all(sql_records.DUE_SQL, kind, now_ms, limit)
        return [_record(kind, row) for row in rows]

    async def delete_record(self, kind: str, key: str, expected_version: str | None = None) -> None:
        if expected_version is None:
            await self._run(sql_records.DELETE_SQL, kind, key)
            return
        expected = sql_records.expected_number(expected_version)
        deleted = await self._run(sql_records.DELETE_VERSION_SQL, kind, key, expected)
        if not deleted and await self._first(sql_records.EXISTS_SQL, kind, key) is not None:
            raise sql_records.delete_error(kind, key)

    # -- the binding --

    def _statement(self, sql: str, params: tuple[Any, ...]) -> Any:
        statement = self.db.prepare(sql)
        return statement.bind(*params) if params else statement

    async def _all(self, sql: str, *params: Any) -> list[Row]:
        result = _py(await self._statement(sql, params).all())
        return [_py(record) for record in (result["results"] or [])]

    async def _first(self, sql: str, *params: Any) -> Row | None:
        record = _py(await self._statement(sql, params).first())
        return record or None

    async def _run(self, sql: str, *params: Any) -> int:
        """Run a write; the number of rows it changed."""
        result = _py(await self._statement(sql, params).run())
        return int(_py(result["meta"])["changes"])

    async def _with_records(
        self, sql: str, params: tuple[Any, ...], records: Sequence[Record]
    ) -> int:
        """Run the job's write `sql` and insert `records` in one batch (one transaction), each
        insert only if the statement before it changed one row; the rows the job's write changed.
        """
        statements = [self._statement(sql, params)]
        for record in records:
            insert = sql_records.INSERT_AFTER_SQL, sql_records.insert_params(record)
            statements.append(self._statement(*insert))
        results = _py(await self.db.batch(statements))
        changes = [int(_py(_py(result)["meta"])["changes"]) for result in results]
        if len(changes) != len(statements) or len(set(changes)) != 1 or changes[0] > 1:
            # each insert fires iff the job's write changed its row: all 1, or all 0
            raise SchedulerError(
                f"D1 batch changed {changes} rows: the job's records are not all written"
            )
        return changes[0]

    async def _refused(self, job: Job, records: Sequence[Record], exc: Exception) -> Exception:
        """The error for a job write (with `records`) that hit a unique index."""
        if records and _on_records(exc):
            return Conflict(f"a record of job {job.id} already exists", id=job.id)
        return await self._duplicate(job)

    async def _duplicate(self, job: Job) -> Exception:
        """The error for an insert or update that hit a unique index."""
        for field, column in (("dedupKey", "dedup_key"), ("idempotencyKey", "idempotency_key")):
            key = getattr(job, field)
            if key is None:
                continue
            sql = f"SELECT data, version FROM jobs WHERE tenant = ? AND {column} = ? AND id != ?"
            record = await self._first(sql, job.tenant, key, job.id)
            if record:
                message = f"a job with this {field} already exists"
                return DuplicateKey(message, existing=_job(record))
        return Conflict(f"job {job.id} already exists", id=job.id)
