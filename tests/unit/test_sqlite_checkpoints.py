"""The SQLite store's checkpoints: every CHECKPOINT_EVERY writes one runs in a worker thread, and
a WAL grown past WAL_FRAMES_MAX gets a second one that no write of the process overlaps, so
that the WAL starts over instead of growing without end."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from core.records import Record
from core.stores import sqlite_connections
from core.stores.sqlite import SqliteStore


def wal_frames(path: Path) -> int:
    """The pages the file's WAL holds (a passive checkpoint reports them, and copies them)."""
    connection = sqlite3.connect(path)
    try:
        _busy, frames, _copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(frames)
    finally:
        connection.close()


async def write_until_checkpoint(store: SqliteStore, every: int) -> None:
    for n in range(every):
        await store.put_record(Record("event", f"k{n}", {"n": n}), None)
    pending = store._db._checkpoint
    assert pending is not None, "the last write began a checkpoint"
    await pending


@pytest.mark.parametrize(("frames", "closing"), [(10, [False]), (100, [False, True])])
async def test_a_second_checkpoint_without_writes_follows_a_wal_past_its_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, frames: int, closing: list[bool]
) -> None:
    store = SqliteStore(tmp_path / "checkpoints.db")
    await store.open()
    seen: list[bool] = []

    def checkpoint(db: sqlite3.Connection) -> int:
        seen.append(store._db._ending is not None)
        return frames

    monkeypatch.setattr(sqlite_connections, "CHECKPOINT_EVERY", 5)
    monkeypatch.setattr(sqlite_connections, "WAL_FRAMES_MAX", 50)
    monkeypatch.setattr(sqlite_connections, "_checkpoint", checkpoint)
    try:
        await write_until_checkpoint(store, 5)
        assert seen == closing
        assert store._db._ending is None
    finally:
        await store.close()


async def test_writes_wait_on_the_loop_while_a_checkpoint_ends_the_wal(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "ending.db")
    await store.open()
    ending = asyncio.get_running_loop().create_future()
    store._db._ending = ending
    try:
        write = asyncio.ensure_future(store.put_record(Record("event", "waited", {}), None))
        assert await store.get_record("event", "waited") is None  # reads go on meanwhile
        await asyncio.sleep(0.01)
        assert not write.done()
        store._db._ending = None
        ending.set_result(None)
        await write
        assert await store.get_record("event", "waited") is not None
    finally:
        await store.close()


async def test_the_wal_starts_over_after_a_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a real file: past the limit, the write after the checkpoints starts the WAL over."""
    path = tmp_path / "restart.db"
    store = SqliteStore(path)
    await store.open()
    monkeypatch.setattr(sqlite_connections, "CHECKPOINT_EVERY", 40)
    monkeypatch.setattr(sqlite_connections, "WAL_FRAMES_MAX", 1)
    try:
        await write_until_checkpoint(store, 40)
        await store.put_record(Record("event", "after", {}), None)
        assert wal_frames(path) < 10  # the pages of the one write after, not of all 41
    finally:
        await store.close()
