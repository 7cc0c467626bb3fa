"""The records contract (core/records.py), run against every store like the job contract: keys,
compare-and-set, scans, the due index, and records written in one atomic write with a job."""

from __future__ import annotations

import asyncio

import pytest

from core.errors import Conflict, DuplicateKey, NotFound
from core.models import JobState
from core.ports import JobStore
from core.records import Record, key_part
from tests.contract.conftest import MakeJob


def keys(records: list[Record]) -> list[str]:
    return [record.key for record in records]


async def test_put_get_compare_and_set_delete(store: JobStore) -> None:
    data = {"text": "héllo ✓", "nested": {"list": [1, 2.5, None, True]}, "big": "x" * 20_000}
    first = await store.put_record(Record("webhook", "t1:wh_1", data, due=5), None)
    assert first.version is not None
    got = await store.get_record("webhook", "t1:wh_1")
    assert got is not None and got.data == data and got.due == 5 and got.version == first.version
    with pytest.raises(Conflict):
        await store.put_record(Record("webhook", "t1:wh_1", {}), None)
    second = await store.put_record(first.but(data={"n": 2}, due=None), first.version)
    assert second.version != first.version
    with pytest.raises(Conflict):  # the version it was read at is gone
        await store.put_record(first.but(data={"n": 3}), first.version)
    got = await store.get_record("webhook", "t1:wh_1")
    assert got is not None and got.data == {"n": 2} and got.due is None
    assert await store.get_record("delivery", "t1:wh_1") is None  # kinds are apart
    await store.delete_record("webhook", "t1:wh_1")
    await store.delete_record("webhook", "t1:wh_1")  # gone already: no error
    assert await store.get_record("webhook", "t1:wh_1") is None
    with pytest.raises(NotFound):
        await store.put_record(second, second.version)


async def test_scan_by_prefix_in_key_order(store: JobStore) -> None:
    for key in ["a:2", "a:10", "a:1", "ab:1", "a", "b:1", "a:1:x"]:
        await store.put_record(Record("event", key, {"k": key}), None)
    await store.put_record(Record("attempt", "a:0", {}), None)
    found = await store.scan_records("event", "a:", 10)
    assert keys(found) == ["a:1", "a:10", "a:1:x", "a:2"]  # code-point order
    assert [record.data["k"] for record in found] == keys(found)
    assert keys(await store.scan_records("event", "a:", 2)) == ["a:1", "a:10"]
    assert keys(await store.scan_records("event", "a:", 10, after="a:10")) == ["a:1:x", "a:2"]
    assert keys(await store.scan_records("event", "", 3)) == ["a", "a:1", "a:10"]
    assert await store.scan_records("event", "c", 10) == []


async def test_due_index(store: JobStore) -> None:
    puts = {"k3": 300, "k1": 100, "k2": 100, "k4": None, "k5": 500}
    stored = {
        key: await store.put_record(Record("delivery", key, {}, due=due), None)
        for key, due in puts.items()
    }
    await store.put_record(Record("event", "k0", {}, due=1), None)
    assert keys(await store.due_records("delivery", 300, 10)) == ["k1", "k2", "k3"]
    assert keys(await store.due_records("delivery", 300, 2)) == ["k1", "k2"]
    assert keys(await store.due_records("delivery", 99, 10)) == []
    await store.put_record(stored["k1"].but(due=None), stored["k1"].version)  # done
    await store.put_record(stored["k5"].but(due=50), stored["k5"].version)  # brought forward
    await store.put_record(stored["k4"].but(due=200), stored["k4"].version)  # made due
    await store.delete_record("delivery", "k2")
    assert keys(await store.due_records("delivery", 1000, 10)) == ["k5", "k4", "k3"]


async def test_records_written_with_a_job_are_atomic(store: JobStore, make_job: MakeJob) -> None:
    job = await store.create(make_job(dedupKey="d1"), [Record("event", "e:1", {"n": 1}, due=1)])
    assert keys(await store.scan_records("event", "e:", 10)) == ["e:1"]
    with pytest.raises(DuplicateKey):  # refused job: its records are not written either
        await store.create(make_job(dedupKey="d1"), [Record("event", "e:x", {}, due=1)])
    assert version_of(job) is not None
    running = job.model_copy(update={"status": JobState.RUNNING})
    updated = await store.update(running, version_of(job), [Record("event", "e:2", {}, due=2)])
    with pytest.raises(Conflict):  # stale version: neither the job nor the record
        await store.update(running, version_of(job), [Record("event", "e:y", {}, due=2)])
    with pytest.raises(Conflict):  # a record key that exists: neither
        done = updated.model_copy(update={"status": JobState.COMPLETED})
        await store.update(done, version_of(updated), [Record("event", "e:2", {"again": 1})])
    current = await store.get(job.id)
    assert current is not None and current.status is JobState.RUNNING
    assert current.version == updated.version
    assert keys(await store.scan_records("event", "e:", 10)) == ["e:1", "e:2"]
    assert keys(await store.due_records("event", 10, 10)) == ["e:1", "e:2"]
    second = await store.get_record("event", "e:2")
    assert second is not None and second.data == {}


async def test_concurrent_record_writes_have_one_winner(store: JobStore) -> None:
    results = await asyncio.gather(
        *(store.put_record(Record("delivery", "race", {"n": n}), None) for n in range(8)),
        return_exceptions=True,
    )
    winners = [result for result in results if isinstance(result, Record)]
    assert len(winners) == 1
    assert all(isinstance(r, Conflict) for r in results if not isinstance(r, Record))
    base = winners[0]
    results = await asyncio.gather(
        *(store.put_record(base.but(data={"m": n}), base.version) for n in range(8)),
        return_exceptions=True,
    )
    assert sum(isinstance(result, Record) for result in results) == 1


def version_of(job: object) -> str:
    version = getattr(job, "version", None)
    assert isinstance(version, str)
    return version


def test_key_part_makes_keys_of_any_text() -> None:
    texts = ["plain-Tenant-1", "with space", "a/b\\c#d?e", "ünï", "~tilde", "a:b", "a_b", "a.b"]
    parts = [key_part(text) for text in texts]
    assert parts[0] == "plain-Tenant-1"
    assert len(set(parts)) == len(texts)
    for part in parts:
        Record("webhook", part)  # a valid key
        assert not set("_.:") & set(part)  # so any of them can follow a part unambiguously
    assert key_part("a_b:c.d", keep="_.:") == "a_b:c.d"


async def test_sqlite_record_query_plans_use_indexes(tmp_path: object) -> None:
    import sqlite3
    from pathlib import Path

    from core.stores import sql_records
    from core.stores.sqlite import SqliteStore

    assert isinstance(tmp_path, Path)
    path = tmp_path / "plan.db"
    store = SqliteStore(path)
    await store.open()
    try:
        for i in range(60):
            due = i if i % 3 else None
            await store.put_record(Record(("event", "delivery")[i % 2], f"k{i:03d}", {}, due), None)
    finally:
        await store.close()
    queries = [
        (sql_records.DUE_SQL, ("delivery", 10, 5), "records_due"),
        (*sql_records.scan_sql("event", "k0", 5, None), "sqlite_autoindex_records_1"),
        (*sql_records.scan_sql("event", "k0", 5, "k01"), "sqlite_autoindex_records_1"),
    ]
    connection = sqlite3.connect(path)
    try:
        for sql, params, index in queries:
            plan = [str(row[-1]) for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            assert any(f"USING INDEX {index}" in detail for detail in plan), plan
            assert not any("TEMP B-TREE" in detail for detail in plan), plan
    finally:
        connection.close()


# -- conditional deletes (core/reservations.py releases stale slots with them) ---------------


async def test_delete_with_a_version_deletes_only_that_version(store: JobStore) -> None:
    first = await store.put_record(Record("reservation", "res:900:0", {"n": 1}, due=5), None)
    assert first.version is not None
    second = await store.put_record(first.but(data={"n": 2}), first.version)
    assert second.version is not None
    with pytest.raises(Conflict):  # read before the update: refused, the record stays
        await store.delete_record("reservation", "res:900:0", first.version)
    with pytest.raises(Conflict):
        await store.delete_record("reservation", "res:900:0", "not-a-version")
    kept = await store.get_record("reservation", "res:900:0")
    assert kept is not None and kept.data == {"n": 2}
    await store.delete_record("reservation", "res:900:0", second.version)
    assert await store.get_record("reservation", "res:900:0") is None
    assert keys(await store.due_records("reservation", 10, 10)) == []  # its due row went too
    await store.delete_record("reservation", "res:900:0", second.version)  # gone: no error


async def test_a_version_is_not_handed_out_again_after_a_delete(store: JobStore) -> None:
    """Delete and insert the key again: a conditional delete holding the old version must not
    remove the new record (the release of a stale slot that someone else re-took)."""
    old = await store.put_record(Record("meeting", "t1:zoom~3A1:7", {"jobId": "a"}), None)
    assert old.version is not None
    await store.delete_record("meeting", "t1:zoom~3A1:7", old.version)
    new = await store.put_record(Record("meeting", "t1:zoom~3A1:7", {"jobId": "b"}), None)
    assert new.version != old.version
    with pytest.raises(Conflict):
        await store.delete_record("meeting", "t1:zoom~3A1:7", old.version)
    kept = await store.get_record("meeting", "t1:zoom~3A1:7")
    assert kept is not None and kept.data == {"jobId": "b"}


async def test_concurrent_conditional_deletes_never_fail(store: JobStore) -> None:
    record = await store.put_record(Record("reservation", "res:1800:1", {}, due=1), None)
    assert record.version is not None
    version = record.version
    await asyncio.gather(
        *(store.delete_record("reservation", "res:1800:1", version) for _ in range(6))
    )
    assert await store.get_record("reservation", "res:1800:1") is None


async def test_a_duplicate_key_is_reported_before_a_taken_record(
    store: JobStore, make_job: MakeJob
) -> None:
    """A create whose dedupKey is held and one of whose records is taken raises DuplicateKey
    (with the job holding the key): a submit refused for a full window still returns the job a
    retry of it created."""
    first = await store.create(make_job(dedupKey="same"), [Record("reservation", "res:0:0", {})])
    with pytest.raises(DuplicateKey) as raised:
        await store.create(make_job(dedupKey="same"), [Record("reservation", "res:0:0", {})])
    assert raised.value.existing.id == first.id
    with pytest.raises(Conflict):  # no key in the way: the taken record refuses it
        await store.create(make_job(dedupKey="other"), [Record("reservation", "res:0:0", {})])
