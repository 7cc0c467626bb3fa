"""Records (core/records.py) in SQL, shared by the SQLite store and the D1 store.

One table keyed by (kind, key): a scan by prefix ranges over its primary key
(`key >= prefix AND key < prefix_end(prefix)`, in key order), and `records_due`, a partial index
on (kind, due_ms, key) of the records that have a `due`, gives `due_records` in (due, key) order
with no sort. `data` is the record's JSON; `version` an integer, random at the insert and
counting up with each update, handed out as text (a version that is not such a number's text
matches none): a key deleted and inserted again does not get a version it had, which a
conditional delete relies on. The SQL is plain SQLite, within what D1 accepts.

The synchronous calls below run on one of the SQLite store's connections
(sqlite_connections.py); the D1 store runs the same statements through its binding.
`INSERT_AFTER_SQL` is for a D1 batch: it inserts only if the statement before it changed exactly
one row, so a job update that lost its compare-and-set writes none of the records after it.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
from collections.abc import Sequence
from typing import Any

from core.errors import Conflict, NotFound, SchedulerError
from core.records import Record, prefix_end

RECORDS_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS records (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        due_ms INTEGER,
        version INTEGER NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (kind, key)
    )""",
    """CREATE INDEX IF NOT EXISTS records_due
        ON records(kind, due_ms, key) WHERE due_ms IS NOT NULL""",
)

_COLUMNS = "key, data, due_ms, version"  # what a read selects: see `record_of`

INSERT_SQL = "INSERT INTO records (kind, key, due_ms, version, data) VALUES (?, ?, ?, ?, ?)"

INSERT_AFTER_SQL = (
    "INSERT INTO records (kind, key, due_ms, version, data) SELECT ?, ?, ?, ?, ? "
    "WHERE changes() = 1"
)

UPDATE_SQL = (
    "UPDATE records SET due_ms = ?, data = ?, version = version + 1 "
    "WHERE kind = ? AND key = ? AND version = ?"
)

GET_SQL = f"SELECT {_COLUMNS} FROM records WHERE kind = ? AND key = ?"

EXISTS_SQL = "SELECT 1 AS found FROM records WHERE kind = ? AND key = ?"

DELETE_SQL = "DELETE FROM records WHERE kind = ? AND key = ?"

DELETE_VERSION_SQL = "DELETE FROM records WHERE kind = ? AND key = ? AND version = ?"

DUE_SQL = (
    f"SELECT {_COLUMNS} FROM records WHERE kind = ? AND due_ms IS NOT NULL AND due_ms <= ? "
    "ORDER BY due_ms, key LIMIT ?"
)

_SCAN_FROM = (
    f"SELECT {_COLUMNS} FROM records WHERE kind = ? AND key >= ? AND key < ? ORDER BY key LIMIT ?"
)
_SCAN_AFTER = _SCAN_FROM.replace("key >= ?", "key > ?")

_VERSION = re.compile(r"[1-9][0-9]{0,17}")  # what the store hands out, and fits in 64 bits
VERSION_BITS = 52  # an inserted record's version is below 2**52 (+1): updates never overflow

Row = tuple[Any, ...]


def scan_sql(kind: str, prefix: str, limit: int, after: str | None) -> tuple[str, Row]:
    """The scan of `kind`'s keys starting with `prefix` (and > `after`), in key order: one range
    of the primary key, from the higher of the two lower bounds."""
    if after is None or after < prefix:  # every key starting with `prefix` is > `after`
        return _SCAN_FROM, (kind, prefix, prefix_end(prefix), limit)
    return _SCAN_AFTER, (kind, after, prefix_end(prefix), limit)


def expected_number(version: str) -> int:
    """The stored version `version` names; -1 (which none has) when it is not one we hand out."""
    return int(version) if _VERSION.fullmatch(version) else -1


def new_version() -> int:
    """The version of a record inserted: random, so not one a deleted record of the key had."""
    return new_versions(1)[0]


def new_versions(count: int) -> list[int]:
    """`count` versions (1 to 2**VERSION_BITS), from one read of the random source."""
    raw = secrets.token_bytes(8 * count)
    shift = 64 - VERSION_BITS
    return [(int.from_bytes(raw[i : i + 8]) >> shift) + 1 for i in range(0, 8 * count, 8)]


def insert_params(record: Record, version: int | None = None, text: str | None = None) -> Row:
    """For INSERT_SQL and INSERT_AFTER_SQL (`version`: new_version() when None; `text`: the
    data's JSON when the caller has it)."""
    number = new_version() if version is None else version
    return (record.kind, record.key, record.due, number, text or _json(record))


def delete_error(kind: str, key: str) -> Conflict:
    """The error of a conditional delete that found another version."""
    return Conflict(f"{kind} {key} was changed concurrently", kind=kind, key=key)


def update_params(record: Record, expected: int) -> Row:
    """For UPDATE_SQL."""
    return (record.due, _json(record), record.kind, record.key, expected)


def record_of(kind: str, row: Sequence[Any]) -> Record:
    """The record from a row of (key, data, due_ms, version): `_COLUMNS`, in order."""
    key, data, due, version = row
    return Record(kind, key, json.loads(data), None if due is None else int(due), str(int(version)))


def exists_error(record: Record) -> Conflict:
    return Conflict(f"{record.kind} {record.key} already exists", kind=record.kind, key=record.key)


def not_written_error(record: Record, found: bool) -> SchedulerError:
    """The error for an update of `record` that changed no row."""
    if not found:
        return NotFound(f"{record.kind} {record.key} not found", kind=record.kind, key=record.key)
    message = f"{record.kind} {record.key} was changed concurrently"
    return Conflict(message, kind=record.kind, key=record.key)


_dumps = json.JSONEncoder(separators=(",", ":")).encode  # json.dumps with these separators


def _json(record: Record) -> str:
    return _dumps(record.data)


# -- synchronous calls, run on either of the SQLite store's connections ----------------------


def put_record(db: sqlite3.Connection, record: Record, expected_version: str | None) -> Record:
    if expected_version is None:
        version = new_version()
        try:
            db.execute(INSERT_SQL, insert_params(record, version))
        except sqlite3.IntegrityError:
            raise exists_error(record) from None
        return record.but(version=str(version))
    expected = expected_number(expected_version)
    if db.execute(UPDATE_SQL, update_params(record, expected)).rowcount == 0:
        found = db.execute(EXISTS_SQL, (record.kind, record.key)).fetchone() is not None
        raise not_written_error(record, found)
    return record.but(version=str(expected + 1))


def insert_records(db: sqlite3.Connection, records: Sequence[Record]) -> None:
    """Insert new records, in one statement run (Conflict naming the first record whose key is
    taken; the caller's transaction rolls back)."""
    texts: dict[int, str] = {}  # one JSON text per data object (a job's slots share theirs)
    rows = []
    for record, version in zip(records, new_versions(len(records)), strict=True):
        text = texts.get(id(record.data)) or texts.setdefault(id(record.data), _json(record))
        rows.append(insert_params(record, version, text))
    before = db.total_changes
    try:
        db.executemany(INSERT_SQL, rows)
    except sqlite3.IntegrityError:
        raise exists_error(records[db.total_changes - before]) from None


def get_record(db: sqlite3.Connection, kind: str, key: str) -> Record | None:
    row = db.execute(GET_SQL, (kind, key)).fetchone()
    return None if row is None else record_of(kind, row)


def scan_records(
    db: sqlite3.Connection, kind: str, prefix: str, limit: int, after: str | None
) -> list[Record]:
    sql, params = scan_sql(kind, prefix, limit, after)
    return [record_of(kind, row) for row in db.execute(sql, params).fetchall()]


def due_records(db: sqlite3.Connection, kind: str, now_ms: int, limit: int) -> list[Record]:
    rows = db.execute(DUE_SQL, (kind, now_ms, limit)).fetchall()
    return [record_of(kind, row) for row in rows]


def delete_record(
    db: sqlite3.Connection, kind: str, key: str, expected_version: str | None = None
) -> None:
    if expected_version is None:
        db.execute(DELETE_SQL, (kind, key))
        return
    params = (kind, key, expected_number(expected_version))
    deleted = db.execute(DELETE_VERSION_SQL, params).rowcount
    if not deleted and db.execute(EXISTS_SQL, (kind, key)).fetchone() is not None:
        raise delete_error(kind, key)
