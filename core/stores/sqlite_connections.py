"""The SQLite store's two connections to its file, and where each call runs.

A point read takes tens of microseconds: less than a hop to a worker thread. So it runs on the
event loop's own connection, which never waits for a lock (busy_timeout 0). When that connection
is in use or the file is busy (another connection, maybe another process, is writing), the call
has done nothing (every statement is its own transaction, and a call that writes more than one
statement runs them in `transaction`, which takes the write lock first) and runs again in a
worker thread on the connection that waits up to BUSY_TIMEOUT_MS. Calls that may read many rows,
and writes when every commit syncs to disk (`full`), always run in the thread.

Writes are queued: those queued during one turn of the event loop run together at the end of it,
in one transaction, each within a savepoint of its own (group commit, sqlite_groups.py), on the
loop's connection or, as any call, in the thread when it would wait. A write alone runs as it is.

Both connections are in autocommit mode and WAL. `synchronous` is SQLite's: `normal` (the
default) syncs the WAL to disk at checkpoints only, so a commit survives the process being killed
but the last ones before a power cut or an OS crash may be lost; `full` syncs every commit. The
event loop's connection never checkpoints by itself (a checkpoint syncs the file): every
CHECKPOINT_EVERY writes, a passive checkpoint runs in a worker thread, beside the writes. A
checkpoint that writes overlap leaves the newest pages of the WAL uncopied, and the WAL starts over
from its beginning only once it is wholly copied: so when it has grown past WAL_FRAMES_MAX pages,
a second checkpoint follows at once, with this process's writes waiting for it (on the event
loop: sent to the thread instead, they would hold the write lock there, and the writes after them
would find the file busy and follow them into the thread, one after another). It copies only what
was written during the first, and the next write starts the WAL over.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

from core.stores.sqlite_groups import Group, Outcome, alone, is_busy, run_group

log = logging.getLogger("botsched.sqlite")

BUSY_TIMEOUT_MS = 5000
CHECKPOINT_EVERY = 200  # writes between two checkpoints of the WAL into the database file
WAL_FRAMES_MAX = 65536  # pages in the WAL (256 MiB of 4 KiB pages) past which a checkpoint ends it

Synchronous = Literal["normal", "full"]
P = ParamSpec("P")
T = TypeVar("T")
Call = Callable[Concatenate[sqlite3.Connection, P], T]
Queued = tuple[Callable[[sqlite3.Connection], Any], "asyncio.Future[Any]"]


def connect(path: Path, *, busy_timeout_ms: int, synchronous: Synchronous) -> sqlite3.Connection:
    """Autocommit (each statement its own transaction), WAL, usable from any thread."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(
        path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
    )
    connection.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
    _enable_wal(connection)
    connection.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    return connection


def _enable_wal(connection: sqlite3.Connection) -> None:
    """Switch to WAL. The switch needs the file to itself and SQLite reports 'locked' at once,
    without its busy handler, while another connection is reading: retry up to the timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class _Wait(Exception):
    """The event loop's connection is in use or the file is busy: run in a worker thread."""


class Connections:
    def __init__(self, path: Path, synchronous: Synchronous) -> None:
        self.path = path
        self.synchronous = synchronous
        self._lock = threading.Lock()  # the waiting connection, used by worker threads
        self._waiting: sqlite3.Connection | None = None
        self._inline_lock = threading.Lock()  # the event loop's connection
        self._inline: sqlite3.Connection | None = None
        self._writes = 0
        self._checkpoint: asyncio.Future[None] | None = None
        self._ending: asyncio.Future[None] | None = None  # a checkpoint ending the WAL: wait
        self._queued: list[Queued] = []
        self._tasks: set[asyncio.Future[None]] = set()  # groups sent to the thread

    def open(self, schema: Iterable[str]) -> None:
        """Connect (blocking: call it in a thread) and run `schema`."""
        with self._lock, self._inline_lock:
            if self._waiting is None:
                self._waiting = connect(
                    self.path, busy_timeout_ms=BUSY_TIMEOUT_MS, synchronous=self.synchronous
                )
            for statement in schema:
                self._waiting.execute(statement)
            if self._inline is None:
                self._inline = connect(self.path, busy_timeout_ms=0, synchronous=self.synchronous)
                self._inline.execute("PRAGMA wal_autocheckpoint = 0")
                # the WAL, once started over, is cut back to this size
                self._inline.execute(f"PRAGMA journal_size_limit = {WAL_FRAMES_MAX * 4096}")

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._checkpoint is not None:
            await asyncio.gather(self._checkpoint, return_exceptions=True)
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._lock, self._inline_lock:
            for connection in (self._inline, self._waiting):
                if connection is not None:
                    connection.close()
            self._inline = self._waiting = None

    async def read(self, fn: Call[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return self._run_inline(fn, *args, **kwargs)
        except _Wait:
            return await self.in_thread(fn, *args, **kwargs)

    async def write(self, fn: Call[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Queue the write; the writes queued in one turn of the loop commit together
        (sqlite_groups.py). Returns once its group is committed, or raises its own error."""
        while self._ending is not None:
            await asyncio.shield(self._ending)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush)

        def call(connection: sqlite3.Connection) -> T:
            return fn(connection, *args, **kwargs)

        self._queued.append((call, future))
        result = await future
        self._after_write()
        return result

    def _flush(self) -> None:
        """Run the writes queued in this turn: on the loop's connection when it is free and the
        file is not busy, else in a worker thread on the connection that waits."""
        if self._ending is not None:  # a checkpoint ends the WAL: no write may overlap it
            self._ending.add_done_callback(lambda _: self._flush())
            return
        queued, self._queued = self._queued, []
        if not queued:  # an earlier flush took them
            return
        run = alone if len(queued) == 1 else run_group  # alone: its own transaction, as ever
        group = Group([call for call, _ in queued])
        try:
            if self.synchronous == "full":
                raise _Wait  # every commit syncs: not on the loop
            self._run_inline(run, group)
        except _Wait:
            task = asyncio.ensure_future(self._in_thread(run, group, queued))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        except Exception as exc:  # the group's BEGIN or COMMIT failed: nothing was committed
            group.outcomes = [Outcome(error=exc)] * len(queued)
        _settle(queued, group.outcomes)

    async def _in_thread(
        self, run: Call[[Group], None], group: Group, queued: list[Queued]
    ) -> None:
        try:
            await self.in_thread(run, group)
        except Exception as exc:
            group.outcomes = [Outcome(error=exc)] * len(queued)
        _settle(queued, group.outcomes)

    async def in_thread(self, fn: Call[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        def locked() -> T:
            with self._lock:
                if self._waiting is None:
                    raise RuntimeError("SqliteStore is not open")
                return fn(self._waiting, *args, **kwargs)

        return await asyncio.to_thread(locked)

    def _run_inline(self, fn: Call[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        connection = self._inline
        if connection is None or not self._inline_lock.acquire(blocking=False):
            raise _Wait
        try:
            return fn(connection, *args, **kwargs)
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                raise _Wait from None
            raise
        finally:
            self._inline_lock.release()

    def _after_write(self) -> None:
        self._writes += 1
        if self._writes % CHECKPOINT_EVERY or self._checkpoint is not None:
            return
        self._checkpoint = asyncio.ensure_future(self._checkpoints())
        self._checkpoint.add_done_callback(self._checkpoint_done)

    async def _checkpoints(self) -> None:
        """A passive checkpoint; when the WAL had grown past WAL_FRAMES_MAX, a second one that
        no write of this process overlaps, so that the WAL starts over."""
        if await self.in_thread(_checkpoint) <= WAL_FRAMES_MAX:
            return
        ending = self._ending = asyncio.get_running_loop().create_future()
        try:
            await self.in_thread(_checkpoint)
        finally:
            self._ending = None
            ending.set_result(None)

    def _checkpoint_done(self, future: asyncio.Future[None]) -> None:
        self._checkpoint = None
        if not future.cancelled() and future.exception() is not None:
            log.warning("WAL checkpoint failed: %s", future.exception())


def _settle(queued: list[Queued], outcomes: list[Outcome]) -> None:
    """Answer each queued write with its outcome: its value, or its error."""
    for (_call, future), outcome in zip(queued, outcomes, strict=True):
        if future.done():  # its caller was cancelled meanwhile
            continue
        if outcome.error is not None:
            future.set_exception(outcome.error)
        else:
            future.set_result(outcome.value)


def _checkpoint(db: sqlite3.Connection) -> int:
    """Copy what it can of the WAL into the database file; the pages the WAL held."""
    _busy, frames, _copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(frames)
