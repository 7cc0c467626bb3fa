"""The records (core/records.py) of the Azure Table store, in the partition of the jobs so that a
job write and the records written with it are one entity group transaction (the design is in
core/stores/azure_table.py):

    r|{kind}|{key}               the record: its JSON (`data`, `data1`, ... as a job's) and `due`
    u|{kind}|{due:015d}|{key}    due index: one row, carrying nothing, per record with a due time

A record's version is its row's ETag. Every write of a record is one transaction with the changes
of its due row: an insert creates the record row (a taken key fails the transaction: Conflict),
a compare-and-set replaces it conditioned on the ETag (412: Conflict) after a point read that
finds its old due row. `scan_records` reads a RowKey range, `due_records` a range of due rows and
then the records they name (O(limit) point reads); a due row its record does not have (left by a
write from outside this store) is skipped and deleted with its ETag as the condition.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from core.errors import Conflict, NotFound
from core.records import Record
from core.stores import azure_index as ix
from core.stores.azure_rows import JOBS_FILTER, TRIES, TableRows, quoted

DUE_WIDTH = 15


def record_key(kind: str, key: str) -> str:
    return f"r|{kind}|{key}"


def due_prefix(kind: str) -> str:
    return f"u|{kind}|"


def due_key(kind: str, due: int, key: str) -> str:
    return f"{due_prefix(kind)}{min(max(due, 0), ix.MS_MAX):0{DUE_WIDTH}d}|{key}"


def is_record_row(row: ix.Entity) -> bool:
    return str(row["RowKey"]).startswith("r|")


def valid(kind: str, key: str = "k") -> bool:
    """Whether `kind` and `key` may name a record (a RowKey takes no other text)."""
    try:
        Record(kind, key)
    except ValueError:
        return False
    return True


def _row(row_key: str) -> ix.Entity:
    return {"PartitionKey": ix.JOBS, "RowKey": row_key}


def record_entity(record: Record) -> ix.Entity:
    text = json.dumps(record.data, ensure_ascii=False, separators=(",", ":"))
    entity = _row(record_key(record.kind, record.key))
    entity.update(ix.data_columns(text, f"{record.kind} record"))
    if record.due is not None:
        entity["due"] = ix.int64(record.due)
    return entity


def record_from_entity(kind: str, key: str, entity: Any) -> Record:
    due = entity.get("due")
    return Record(
        kind,
        key,
        json.loads(ix.data_text(entity)),
        None if due is None else ix.as_int(due),
        entity.metadata["etag"],
    )


def stored_due_key(kind: str, key: str, entity: Any) -> str | None:
    due = entity.get("due")
    return None if due is None else due_key(kind, ix.as_int(due), key)


def _due_ops(old: str | None, new: str | None, missing: set[str]) -> list[ix.Op]:
    """Moving a record's due row from `old` to `new` (either None: no row); rows in `missing`
    are gone already."""
    if old == new:
        return []
    ops: list[ix.Op] = []
    if old is not None and old not in missing:
        ops.append(("delete", _row(old), {}))
    if new is not None:
        ops.append(("upsert", _row(new), {"mode": ix.sdk().update_mode.REPLACE}))
    return ops


def insert_ops(records: Sequence[Record]) -> list[ix.Op]:
    """The operations that insert new `records` (into a job's transaction): each record row is
    created, so a taken key fails the whole transaction."""
    if len({(record.kind, record.key) for record in records}) < len(records):
        raise Conflict("a record with this key already exists")
    ops: list[ix.Op] = []
    for record in records:
        ops.append(("create", record_entity(record), {}))
        ops += _due_ops(None, _new_due_key(record), set())
    return ops


def record_taken(row: ix.Entity) -> Conflict | None:
    """The error of a transaction whose creation of `row` failed (409), if it is a record row."""
    if not is_record_row(row):
        return None
    return Conflict(f"a record with this key already exists: {row['RowKey']}")


def _new_due_key(record: Record) -> str | None:
    return None if record.due is None else due_key(record.kind, record.due, record.key)


class AzureRecords(TableRows):
    async def put_record(self, record: Record, expected_version: str | None) -> Record:
        s = ix.sdk()
        name = f"{record.kind} {record.key}"
        entity = record_entity(record)
        if expected_version is None:
            first: ix.Op = ("create", entity, {})
            old = None
        else:
            stored = await self._get(entity["RowKey"])
            if stored is None:
                raise NotFound(f"{name} not found")
            if stored.metadata["etag"] != expected_version:
                raise Conflict(f"{name} was changed concurrently")
            condition = {
                "etag": expected_version,
                "match_condition": s.match_conditions.IfNotModified,
            }
            first = ("update", entity, {"mode": s.update_mode.REPLACE, **condition})
            old = stored_due_key(record.kind, record.key, stored)
        missing: set[str] = set()
        for _ in range(TRIES):
            ops = [first, *_due_ops(old, _new_due_key(record), missing)]
            try:
                results = await self._submit(ops)
            except s.transaction_error as exc:
                index = exc.index if 0 <= exc.index < len(ops) else 0
                if index > 0 and exc.status_code == 404 and ops[index][0] == "delete":
                    missing.add(ops[index][1]["RowKey"])  # deleted from outside: skip it
                    continue
                if exc.status_code in (409, 412):
                    taken = expected_version is None and exc.status_code == 409
                    raise Conflict(
                        f"{name} {'already exists' if taken else 'was changed'}"
                    ) from None
                if exc.status_code == 404:
                    raise NotFound(f"{name} not found") from None
                raise
            return record.but(version=results[0]["etag"])
        raise Conflict(f"{name}: its rows kept changing, try again")

    async def get_record(self, kind: str, key: str) -> Record | None:
        if not valid(kind, key):
            return None
        entity = await self._get(record_key(kind, key))
        return None if entity is None else record_from_entity(kind, key, entity)

    async def scan_records(
        self, kind: str, prefix: str, limit: int, after: str | None = None
    ) -> list[Record]:
        found: list[Record] = []
        if limit <= 0 or not valid(kind):
            return found
        low = record_key(kind, prefix)
        high = low[:-1] + chr(ord(low[-1]) + 1)  # the first RowKey after those starting with low
        query = f"{JOBS_FILTER} and RowKey ge {quoted(low)} and RowKey lt {quoted(high)}"
        if after is not None:
            query += f" and RowKey gt {quoted(record_key(kind, after))}"
        start = len(record_key(kind, ""))
        async for page in self._pages(query, limit):
            rows = page[: limit - len(found)]
            found += [record_from_entity(kind, row["RowKey"][start:], row) for row in rows]
            if len(found) >= limit:
                break
        return found

    async def due_records(self, kind: str, now_ms: int, limit: int) -> list[Record]:
        found: list[Record] = []
        if limit <= 0 or now_ms < 0 or not valid(kind):
            return found
        low = due_prefix(kind)
        high = low + f"{now_ms + 1:0{DUE_WIDTH}d}" if now_ms < ix.MS_MAX else low[:-1] + "}"
        query = f"{JOBS_FILTER} and RowKey ge {quoted(low)} and RowKey lt {quoted(high)}"
        async for page in self._pages(query, limit):
            while page and len(found) < limit:
                need = limit - len(found)
                found += await self._due_checked(kind, page[:need])
                page = page[need:]
            if len(found) >= limit:
                break
        return found

    async def _due_checked(self, kind: str, rows: list[Any]) -> list[Record]:
        """The records the due rows name, read concurrently, in the rows' order. A row that its
        record does not have is stale: skipped, and deleted unless it changed since it was read."""
        start = len(due_prefix(kind)) + DUE_WIDTH + 1
        keys = [str(row["RowKey"])[start:] for row in rows]
        records = await asyncio.gather(*(self.get_record(kind, key) for key in keys))
        kept: list[Record] = []
        for row, record in zip(rows, records, strict=True):
            if record is None or _new_due_key(record) != row["RowKey"]:
                await self._drop(row)
            else:
                kept.append(record)
        return kept

    async def delete_record(self, kind: str, key: str, expected_version: str | None = None) -> None:
        """Delete the record row and its due row in one transaction, conditioned on the ETag read
        (with `expected_version`: that ETag, else Conflict)."""
        if not valid(kind, key):
            return
        s = ix.sdk()
        missing: set[str] = set()
        for _ in range(TRIES):
            stored = await self._get(record_key(kind, key))
            if stored is None:
                return
            if expected_version is not None and stored.metadata["etag"] != expected_version:
                raise Conflict(f"{kind} {key} was changed concurrently")
            condition = {
                "etag": stored.metadata["etag"],
                "match_condition": s.match_conditions.IfNotModified,
            }
            ops: list[ix.Op] = [("delete", _row(record_key(kind, key)), condition)]
            ops += _due_ops(stored_due_key(kind, key, stored), None, missing)
            try:
                await self._submit(ops)
                return
            except s.transaction_error as exc:
                index = exc.index if 0 <= exc.index < len(ops) else 0
                if index > 0 and exc.status_code == 404 and ops[index][0] == "delete":
                    missing.add(ops[index][1]["RowKey"])
                elif exc.status_code not in (404, 412):  # else gone or changed: look again
                    raise
        raise Conflict(f"{kind} {key}: its rows kept changing, try again")
