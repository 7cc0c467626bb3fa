"""Group commit on the SQLite store (core/stores/sqlite_groups.py), on real files: the writes
queued in one turn of the event loop commit in one transaction, each keeps its own outcome, and
a caller hears of its write only once it is committed (read back through another connection)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from core.errors import Conflict, DuplicateKey
from core.models import Job
from core.records import Record
from core.stores.sqlite import SqliteStore

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def make_job(job_id: str, **fields: Any) -> Job:
    at = NOW + timedelta(seconds=len(job_id))
    return Job(
        id=job_id,
        tenant="t1",
        meetingUrl=f"https://meet.example/{job_id}",
        createdAt=at,
        updatedAt=at,
        notBefore=at,
        **fields,
    )


@pytest.fixture
def store(sqlite_store: SqliteStore) -> SqliteStore:
    return sqlite_store


def statements(store: SqliteStore) -> list[str]:
    """Every statement the event loop's connection runs from now on."""
    seen: list[str] = []
    inline = store._db._inline
    assert inline is not None
    inline.set_trace_callback(seen.append)
    return seen


def committed(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """What another connection reads: only what was committed."""
    connection = sqlite3.connect(path)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


async def test_concurrent_writes_commit_in_one_transaction(store: SqliteStore) -> None:
    seen = statements(store)
    await asyncio.gather(*(store.put_record(Record("event", f"k{n}", {}), None) for n in range(20)))
    assert seen.count("BEGIN IMMEDIATE") == 1
    assert seen.count("COMMIT") == 1
    assert seen.count("SAVEPOINT write") == 20
    keys = committed(store.path, "SELECT key FROM records ORDER BY key")
    assert sorted(key for (key,) in keys) == sorted(f"k{n}" for n in range(20))


async def test_a_write_alone_is_its_own_transaction(store: SqliteStore) -> None:
    seen = statements(store)
    await store.create(make_job("alone"), [Record("event", "e1", {})])
    assert "SAVEPOINT write" not in seen
    assert seen.count("BEGIN IMMEDIATE") == seen.count("COMMIT") == 1
    assert committed(store.path, "SELECT id FROM jobs") == [("alone",)]


async def test_a_failing_write_of_a_group_fails_alone(store: SqliteStore) -> None:
    await store.create(make_job("first", dedupKey="same"))
    await store.put_record(Record("slot", "held", {}), None)
    outcomes = await asyncio.gather(
        store.create(make_job("ok-1"), [Record("slot", "free-1", {})]),
        store.create(make_job("dup", dedupKey="same")),  # a duplicate key
        store.create(make_job("taken"), [Record("slot", "free-2", {}), Record("slot", "held", {})]),
        store.create(make_job("ok-2"), [Record("slot", "free-3", {})]),
        return_exceptions=True,
    )
    assert [type(outcome) for outcome in outcomes] == [Job, DuplicateKey, Conflict, Job]
    duplicate = outcomes[1]
    assert isinstance(duplicate, DuplicateKey) and duplicate.existing is not None
    assert duplicate.existing.id == "first"
    jobs = committed(store.path, "SELECT id FROM jobs ORDER BY id")
    assert jobs == [("first",), ("ok-1",), ("ok-2",)]
    # the refused create wrote none of its records: free-2 went with it
    slots = committed(store.path, "SELECT key FROM records WHERE kind = 'slot' ORDER BY key")
    assert slots == [("free-1",), ("free-3",), ("held",)]


async def test_a_busy_file_sends_the_group_to_the_thread(store: SqliteStore) -> None:
    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        writes = asyncio.gather(
            *(store.put_record(Record("event", f"w{n}", {}), None) for n in range(5))
        )
        await asyncio.sleep(0.1)
        assert not writes.done()
        assert await store.get_record("event", "w0") is None  # reads go on meanwhile
        other.execute("COMMIT")
        await asyncio.wait_for(writes, 10)
    finally:
        other.close()
    assert len(committed(store.path, "SELECT key FROM records WHERE key LIKE 'w%'")) == 5


async def test_a_cancelled_caller_leaves_the_others_of_its_group(store: SqliteStore) -> None:
    tasks = [
        asyncio.ensure_future(store.put_record(Record("event", f"c{n}", {}), None))
        for n in range(4)
    ]
    await asyncio.sleep(0)  # every task has queued its write
    tasks[1].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    assert all(isinstance(done[n], Record) for n in (0, 2, 3))
    # the write itself was already queued: it is committed like the others
    assert len(committed(store.path, "SELECT key FROM records WHERE key LIKE 'c%'")) == 4


async def test_groups_with_full_sync_run_in_the_thread(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "full.db", synchronous="full")
    await store.open()
    try:
        seen = statements(store)
        jobs = [make_job(f"full-{n}") for n in range(6)]
        await asyncio.gather(*(store.create(job) for job in jobs))
        assert seen == []  # nothing ran on the event loop's connection
        assert len(committed(store.path, "SELECT id FROM jobs")) == 6
    finally:
        await store.close()


async def test_concurrent_submits_of_one_process_choose_different_slots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Meetings an hour apart share their windows' edge buckets. Submitted together, their
    creates commit in one group: each chose its slots seeing those the others chose, so none
    loses a slot and tries again (one create per submit)."""
    from bench.asgi_driver import SUBMIT_PATH, request, submit_body
    from core.api import create_app
    from core.config import Settings

    creates: list[str] = []
    seen: list[str] = []
    create, open_store = SqliteStore.create, SqliteStore.open

    async def counted(self: SqliteStore, job: Job, records: Any = ()) -> Job:
        creates.append(job.id)
        return await create(self, job, records)

    async def traced(self: SqliteStore) -> None:
        await open_store(self)
        assert self._db._inline is not None
        self._db._inline.set_trace_callback(seen.append)

    monkeypatch.setattr(SqliteStore, "create", counted)
    monkeypatch.setattr(SqliteStore, "open", traced)
    app = create_app(Settings(store="sqlite", data_dir=tmp_path, max_concurrent_jobs=4))
    async with app.router.lifespan_context(app):
        bodies = [submit_body(24 * 365 + hour) for hour in range(24)]
        answers = await asyncio.gather(*(request(app, "POST", SUBMIT_PATH, b) for b in bodies))
    assert [status for status, _ in answers] == [201] * 24
    assert len(creates) == 24
    assert seen.count("COMMIT") < len(creates)  # some did commit together


async def test_queued_writes_wait_for_a_checkpoint_ending_the_wal(store: SqliteStore) -> None:
    tasks = [
        asyncio.ensure_future(store.put_record(Record("event", f"e{n}", {}), None))
        for n in range(3)
    ]
    await asyncio.sleep(0)  # queued; their group runs at the end of this turn
    ending = asyncio.get_running_loop().create_future()
    store._db._ending = ending
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in tasks)
    assert committed(store.path, "SELECT key FROM records") == []
    store._db._ending = None
    ending.set_result(None)
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert len(committed(store.path, "SELECT key FROM records")) == 3
