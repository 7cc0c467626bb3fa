"""The Firestore store's records (core/records.py); the store's design is in firestore.py.

One collection per kind, `{collection}_rec_{kind}`, one document per record:

    id       "~" + the key: every key is a valid document id then ("." and `__x__` are keys
             too), and ids sort as the keys do (the due index's tiebreak is the id)
    key      the key, for the range queries of `scan_records`
    due      epoch ms, absent when the record has none (so it is not in the due index)
    data     the record's JSON
    write    a token naming the write that wrote the document: a commit the client retried
             (after UNAVAILABLE) that fails its precondition is ours when the token is ours

A record's version is its document's update time, as for jobs (every write sets a new `write`,
so every write moves it). `put_record` is one write with a precondition: `create`, or the update
time read. Both queries are served by single-field indexes: `key >= lower and key < end` ordered
by key, and `due <= now` ordered by due (then the id, Firestore's implicit tiebreak: the key).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from core.errors import Conflict, NotFound, PayloadTooLarge
from core.records import Record, prefix_end
from core.stores import firestore_docs as fd

if TYPE_CHECKING:
    from google.cloud.firestore_v1.async_client import AsyncClient
    from google.cloud.firestore_v1.async_collection import AsyncCollectionReference
    from google.cloud.firestore_v1.async_document import AsyncDocumentReference

RECORDS_INFIX = "_rec_"
ID_PREFIX = "~"

RecordWrite = tuple["AsyncDocumentReference", fd.Fields]  # a document to create, its fields


def record_id(key: str) -> str:
    return ID_PREFIX + key


def record_fields(record: Record, write: str, *, update: bool) -> fd.Fields:
    """The record's document. `due` is left out when None (an update deletes it)."""
    data = json.dumps(record.data, ensure_ascii=False, separators=(",", ":"))
    if len(data.encode()) > fd.MAX_DATA_BYTES:
        raise PayloadTooLarge(
            f"the record is larger than the Firestore store keeps ({fd.MAX_DATA_BYTES} bytes of "
            "JSON)"
        )
    fields: fd.Fields = {"key": record.key, "data": data, "write": write}
    if record.due is not None:
        fields["due"] = record.due
    elif update:
        fields["due"] = fd.sdk().delete_field
    return fields


def record_from(kind: str, snapshot: Any) -> Record:
    fields = snapshot.to_dict()
    data = json.loads(fields["data"])
    return Record(kind, fields["key"], data, fields.get("due"), fd.version(snapshot.update_time))


def new_write() -> str:
    return uuid.uuid4().hex


class FirestoreRecords:
    """The RecordStore half of FirestoreStore (a mixin: it uses the store's client and reads)."""

    collection: str
    reads: int

    if TYPE_CHECKING:

        @property
        def client(self) -> AsyncClient: ...

        async def _get(self, ref: Any) -> Any: ...

        async def _query(self, query: Any) -> list[Any]: ...

    def _record_collection(self, kind: str) -> AsyncCollectionReference:
        return self.client.collection(self.collection + RECORDS_INFIX + kind)

    def _record_ref(self, kind: str, key: str) -> AsyncDocumentReference:
        return self._record_collection(kind).document(record_id(key))

    async def put_record(self, record: Record, expected_version: str | None) -> Record:
        s = fd.sdk()
        ref = self._record_ref(record.kind, record.key)
        write = new_write()
        fields = record_fields(record, write, update=expected_version is not None)
        expected = fd.timestamp(expected_version) if expected_version is not None else None
        try:
            if expected_version is None:
                result = await ref.create(fields)
                return record.but(version=fd.version(result.update_time))
            if expected is not None:  # else not a version: no stored record has it
                option = self.client.write_option(last_update_time=expected)
                result = await ref.update(fields, option=option)
                return record.but(version=fd.version(result.update_time))
        except (s.already_exists, s.failed_precondition, s.not_found):
            pass  # refused: the stored document says why
        stored = await self._get(ref)
        if stored is not None and stored.get("write") == write:
            return record_from(record.kind, stored)  # our own commit, retried by the client
        name = f"{record.kind} {record.key}"
        if expected_version is None:
            raise Conflict(f"{name} already exists")
        if stored is None:
            raise NotFound(f"{name} not found")
        raise Conflict(f"{name} was changed concurrently")

    async def get_record(self, kind: str, key: str) -> Record | None:
        snapshot = await self._get(self._record_ref(kind, key))
        return record_from(kind, snapshot) if snapshot is not None else None

    async def scan_records(
        self, kind: str, prefix: str, limit: int, after: str | None = None
    ) -> list[Record]:
        if limit <= 0:
            return []
        s = fd.sdk()
        start = (">", after) if after is not None and after >= prefix else (">=", prefix)
        query = (
            self._record_collection(kind)
            .where(filter=s.field_filter("key", *start))
            .where(filter=s.field_filter("key", "<", prefix_end(prefix)))
            .order_by("key")
            .limit(limit)
        )
        return [record_from(kind, snapshot) for snapshot in await self._query(query)]

    async def due_records(self, kind: str, now_ms: int, limit: int) -> list[Record]:
        if limit <= 0:
            return []
        s = fd.sdk()
        due = self._record_collection(kind).where(filter=s.field_filter("due", "<=", now_ms))
        query = due.order_by("due").limit(limit)  # ties: by id, which sorts as the key
        return [record_from(kind, snapshot) for snapshot in await self._query(query)]

    async def delete_record(self, kind: str, key: str, expected_version: str | None = None) -> None:
        """With `expected_version`: a delete with the update time as its precondition (a
        document written since, even deleted and created again, has another)."""
        ref = self._record_ref(kind, key)
        if expected_version is None:
            await ref.delete()
            return
        s = fd.sdk()
        expected = fd.timestamp(expected_version)
        try:
            if expected is not None:  # else not a version: no stored record has it
                await ref.delete(option=self.client.write_option(last_update_time=expected))
                return
        except (s.failed_precondition, s.not_found):
            pass  # refused: gone already (a retried commit of ours, too), or changed
        if await self._get(ref) is not None:
            raise Conflict(f"{kind} {key} was changed concurrently")

    # -- records written with a job: created in the job's commit --

    def _record_creates(self, records: Sequence[Record]) -> list[RecordWrite]:
        """The documents to create in a job's commit (one `write` token for them all); a key
        given twice is a Conflict, as a key that exists is."""
        if len({(record.kind, record.key) for record in records}) < len(records):
            raise Conflict("a record with this key already exists")
        write = new_write()
        return [
            (self._record_ref(r.kind, r.key), record_fields(r, write, update=False))
            for r in records
        ]

    async def _records_taken(self, creates: list[RecordWrite]) -> bool | None:
        """After a commit answered AlreadyExists: True when one of the records exists, written
        by another write; None when all of them exist, written by this one (the commit was
        applied, then retried by the client); False when none is in the way."""
        if not creates:
            return False
        written = {ref.path: fields["write"] for ref, fields in creates}
        stored = [s async for s in self.client.get_all([ref for ref, _ in creates])]
        self.reads += len(stored)
        found = {s.reference.path: s.get("write") for s in stored if s.exists}
        if any(found[path] != write for path, write in written.items() if path in found):
            return True
        return None if len(found) == len(written) else False
