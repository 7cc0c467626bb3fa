"""Records (core/records.py) on PostgreSQL: the statements of sql_records.py (the SQLite and D1
stores' records), with PostgreSQL's placeholders, on one of the store's connections.

The table is the same (core/stores/postgres_schema.py): keyed by (kind, key) in code-point order
(the "C" collation), so a prefix scan is one range of the primary key; `records_due` gives
`due_records` in (due, key) order; versions are integers, random at the insert and counting up,
so a key deleted and inserted again never gets back a version it had.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from core.errors import Conflict
from core.records import Record
from core.stores import sql_records as sql
from core.stores.postgres_connections import driver

if TYPE_CHECKING:
    from psycopg import AsyncConnection


def _pg(statement: str) -> str:
    """A statement of sql_records.py with PostgreSQL's placeholders (it holds no other `?`)."""
    return statement.replace("?", "%s")


INSERT_SQL = _pg(sql.INSERT_SQL)
UPDATE_SQL = _pg(sql.UPDATE_SQL)
GET_SQL = _pg(sql.GET_SQL)
EXISTS_SQL = _pg(sql.EXISTS_SQL)
DELETE_SQL = _pg(sql.DELETE_SQL)
DELETE_VERSION_SQL = _pg(sql.DELETE_VERSION_SQL)
DUE_SQL = _pg(sql.DUE_SQL)
# several records in one statement: a SELECT of typed VALUES, one row per record, so that a
# WHERE can follow (core/stores/postgres.py)
TYPED_VALUES = "(%s::text, %s::text, %s::bigint, %s::bigint, %s::text)"


async def exists(conn: AsyncConnection[Any], kind: str, key: str) -> bool:
    cursor = await conn.execute(EXISTS_SQL, (kind, key))
    return await cursor.fetchone() is not None


async def put_record(
    conn: AsyncConnection[Any], record: Record, expected_version: str | None
) -> Record:
    if expected_version is None:
        version = sql.new_version()
        try:
            await conn.execute(INSERT_SQL, sql.insert_params(record, version))
        except driver()[0].errors.UniqueViolation:
            raise sql.exists_error(record) from None
        return record.but(version=str(version))
    expected = sql.expected_number(expected_version)
    cursor = await conn.execute(UPDATE_SQL, sql.update_params(record, expected))
    if cursor.rowcount == 0:
        raise sql.not_written_error(record, await exists(conn, record.kind, record.key))
    return record.but(version=str(expected + 1))


def params_of(records: Sequence[Record]) -> list[Any]:
    """The parameters of `insert_many_sql(len(records))`: each record's, one after the other."""
    return [param for record in records for param in sql.insert_params(record)]


def insert_many_sql(records: int) -> str:
    """An insert of `records` new records (UniqueViolation when a key is taken: `taken` then
    says which), as a SELECT to which a WHERE may be added."""
    rows = ", ".join([TYPED_VALUES] * records)
    return f"INSERT INTO records (kind, key, due_ms, version, data) SELECT * FROM (VALUES {rows}) v"


async def taken(conn: AsyncConnection[Any], records: Sequence[Record]) -> Conflict:
    """The error for `records` of which one had a key already taken."""
    for record in records:
        if await exists(conn, record.kind, record.key):
            return sql.exists_error(record)
    return Conflict("a record written with the job already exists")


async def get_record(conn: AsyncConnection[Any], kind: str, key: str) -> Record | None:
    cursor = await conn.execute(GET_SQL, (kind, key))
    row = await cursor.fetchone()
    return None if row is None else sql.record_of(kind, row)


async def scan_records(
    conn: AsyncConnection[Any], kind: str, prefix: str, limit: int, after: str | None
) -> list[Record]:
    statement, params = sql.scan_sql(kind, prefix, limit, after)
    cursor = await conn.execute(_pg(statement), params)
    return [sql.record_of(kind, row) for row in await cursor.fetchall()]


async def due_records(
    conn: AsyncConnection[Any], kind: str, now_ms: int, limit: int
) -> list[Record]:
    cursor = await conn.execute(DUE_SQL, (kind, now_ms, limit))
    return [sql.record_of(kind, row) for row in await cursor.fetchall()]


async def delete_record(
    conn: AsyncConnection[Any], kind: str, key: str, expected_version: str | None
) -> None:
    if expected_version is None:
        await conn.execute(DELETE_SQL, (kind, key))
        return
    params = (kind, key, sql.expected_number(expected_version))
    cursor = await conn.execute(DELETE_VERSION_SQL, params)
    if cursor.rowcount == 0 and await exists(conn, kind, key):
        raise sql.delete_error(kind, key)
