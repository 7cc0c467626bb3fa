"""The in-process store's records (core/records.py): a dict, a sorted index of keys per kind and
a sorted index of due times per kind. Synchronous throughout, so each call is atomic."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Sequence

from core.errors import Conflict, NotFound
from core.records import Record
from core.stores.sorted_keys import SortedKeys

DUE_WIDTH = 15
Kept = tuple[str, int | None, int]  # (data as JSON, due, version)


def _due_key(due: int, key: str) -> str:
    return f"{min(max(due, 0), 10**DUE_WIDTH - 1):0{DUE_WIDTH}d}{key}"


class MemoryRecords:
    def __init__(self) -> None:
        self._record_data: dict[tuple[str, str], Kept] = {}
        self._record_keys: defaultdict[str, SortedKeys] = defaultdict(SortedKeys)
        self._record_dues: defaultdict[str, SortedKeys] = defaultdict(SortedKeys)
        # one counter for every record write: a key deleted and inserted again never gets a
        # version it had before (a conditional delete relies on that)
        self._record_versions = itertools.count(1)

    async def put_record(self, record: Record, expected_version: str | None) -> Record:
        self._check_put(record, expected_version)
        return record.but(version=str(self._write(record)))

    async def get_record(self, kind: str, key: str) -> Record | None:
        kept = self._record_data.get((kind, key))
        return None if kept is None else _record(kind, key, kept)

    async def scan_records(
        self, kind: str, prefix: str, limit: int, after: str | None = None
    ) -> list[Record]:
        found: list[Record] = []
        for key in self._record_keys[kind].iter_from(max(prefix, after or "")):
            if len(found) >= limit or not key.startswith(prefix):
                break
            if after is None or key > after:
                found.append(_record(kind, key, self._record_data[kind, key]))
        return found

    async def due_records(self, kind: str, now_ms: int, limit: int) -> list[Record]:
        found: list[Record] = []
        for entry in self._record_dues[kind]:
            if len(found) >= limit or int(entry[:DUE_WIDTH]) > now_ms:
                break
            key = entry[DUE_WIDTH:]
            found.append(_record(kind, key, self._record_data[kind, key]))
        return found

    async def delete_record(self, kind: str, key: str, expected_version: str | None = None) -> None:
        kept = self._record_data.get((kind, key))
        if kept is None:
            return
        if expected_version is not None and str(kept[2]) != expected_version:
            raise Conflict(f"{kind} {key} was changed concurrently")
        del self._record_data[kind, key]
        self._record_keys[kind].remove(key)
        if kept[1] is not None:
            self._record_dues[kind].remove(_due_key(kept[1], key))

    # -- for the job writes (synchronous: checked first, then written) --

    def _check_new(self, records: Sequence[Record]) -> None:
        keys = {(record.kind, record.key) for record in records}
        if len(keys) < len(records) or any(key in self._record_data for key in keys):
            raise Conflict("a record with this key already exists")

    def _insert(self, records: Sequence[Record]) -> None:
        """Keep `records`, none of which exists (`_check_new`)."""
        texts: dict[int, str] = {}  # one JSON text per data object (a job's slots share theirs)
        for record in records:
            text = texts.get(id(record.data))
            if text is None:
                text = texts[id(record.data)] = json.dumps(record.data)
            self._write(record, text)

    def _check_put(self, record: Record, expected_version: str | None) -> None:
        kept = self._record_data.get((record.kind, record.key))
        if expected_version is None and kept is not None:
            raise Conflict(f"{record.kind} {record.key} already exists")
        if expected_version is not None and kept is None:
            raise NotFound(f"{record.kind} {record.key} not found")
        if kept is not None and str(kept[2]) != expected_version:
            raise Conflict(f"{record.kind} {record.key} was changed concurrently")

    def _write(self, record: Record, text: str | None = None) -> int:
        """Keep `record` (`text`: its data's JSON, when the caller has it); returns its new
        version."""
        old = self._record_data.get((record.kind, record.key))
        version = next(self._record_versions)
        if old is None:
            self._record_keys[record.kind].add(record.key)
        elif old[1] is not None:
            self._record_dues[record.kind].remove(_due_key(old[1], record.key))
        if record.due is not None:
            self._record_dues[record.kind].add(_due_key(record.due, record.key))
        data = text if text is not None else json.dumps(record.data)
        self._record_data[record.kind, record.key] = (data, record.due, version)
        return version


def _record(kind: str, key: str, kept: Kept) -> Record:
    return Record(kind, key, json.loads(kept[0]), kept[1], str(kept[2]))
