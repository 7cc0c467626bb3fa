"""Group commit for the Azure Table store: concurrent job writes share entity group transactions.

Every job write is already one transaction in the "jobs" partition (core/stores/azure_table.py).
A transaction of many operations costs the service little more than one of a few, so writes
that are in flight at the same moment (the claims of a dispatch, the `running` writes of its
starts, concurrent submits) are sent together: one transaction holds as many whole writes as
fit MAX_GROUP_OPS operations and MAX_GROUP_BYTES of payload, and never two writes that touch the
same row (a transaction may hold a row once). At most IN_FLIGHT groups are in flight (the client
builds one while the service answers another); writes that arrive meanwhile form the next ones,
so a lone write waits for nothing but a turn of the event loop.

A transaction is all or nothing. When a group of several writes is refused (one of them lost a
race, or took a taken key), nothing of it was written, and each of its writes is sent again on
its own, where the refusal reaches its own writer exactly as it would have without grouping. Any
other failure (the service could not be reached, the answer was lost) reaches every writer of the
group as it is: as for a lone write, what was committed is unknown to them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.stores import azure_index as ix

MAX_GROUP_OPS = 64  # beyond ~60 operations a transaction costs Azurite more per operation
MAX_GROUP_BYTES = 1 << 20  # well under the 4 MiB a transaction's body may hold
IN_FLIGHT = 3

Submit = Callable[[list[ix.Op]], Awaitable[list[Mapping[str, Any]]]]


class _Alone(Exception):
    """The group was refused as a whole: send this write on its own."""


@dataclass
class _Write:
    ops: list[ix.Op]
    rows: frozenset[str]
    size: int
    done: asyncio.Future[list[Mapping[str, Any]]] = field(repr=False)


def _size(ops: list[ix.Op]) -> int:
    """About how many bytes the operations take in a transaction's body."""
    return sum(
        100 + sum(len(value) for value in entity.values() if isinstance(value, str))
        for _, entity, _ in ops
    )


class GroupCommit:
    def __init__(self, submit: Submit, refused: tuple[type[Exception], ...]) -> None:
        self._submit = submit
        self._refused = refused  # errors of a transaction the service refused: nothing written
        self._queue: list[_Write] = []
        self._flushers: set[asyncio.Task[None]] = set()
        self.transactions = 0  # transactions sent for grouped writes: for tests and tuning

    async def submit(self, ops: list[ix.Op]) -> list[Mapping[str, Any]]:
        """Commit `ops` (one write) atomically, within a group or on its own; the results of
        its own operations, in order. Raises what a lone transaction of `ops` would raise."""
        size = _size(ops)
        if len(ops) > MAX_GROUP_OPS or size > MAX_GROUP_BYTES:
            return await self._submit(ops)
        write = _Write(ops, frozenset(row["RowKey"] for _, row, _ in ops), size, _future())
        self._queue.append(write)
        if len(self._flushers) < IN_FLIGHT:
            flusher = asyncio.create_task(self._flush())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        try:
            return await asyncio.shield(write.done)
        except _Alone:
            return await self._submit(ops)

    async def _flush(self) -> None:
        try:
            await asyncio.sleep(0)  # the writes made in this turn of the event loop join in
            while self._queue:
                group = self._take()
                self.transactions += 1
                await self._commit(group)
        except BaseException as exc:  # cancelled: no write may wait for a group never sent
            for write in self._queue:
                _settle(write, exc)
            self._queue.clear()
            raise
        finally:  # no await since the queue was seen empty: a later write starts a flusher
            flusher = asyncio.current_task()
            if flusher is not None:
                self._flushers.discard(flusher)

    def _take(self) -> list[_Write]:
        """The next group: writes in order of arrival until one does not fit; a write whose rows
        are in the group already waits for the next one."""
        group: list[_Write] = []
        rest: list[_Write] = []
        ops = size = 0
        rows: set[str] = set()
        full = False
        for write in self._queue:
            full = (
                full or ops + len(write.ops) > MAX_GROUP_OPS or size + write.size > MAX_GROUP_BYTES
            )
            if full or not rows.isdisjoint(write.rows):
                rest.append(write)
                continue
            group.append(write)
            ops, size = ops + len(write.ops), size + write.size
            rows |= write.rows
        self._queue = rest
        return group

    async def _commit(self, group: list[_Write]) -> None:
        try:
            results = await self._submit([op for write in group for op in write.ops])
        except self._refused as exc:
            for write in group:
                _settle(write, exc if len(group) == 1 else _Alone())
            return
        except Exception as exc:
            for write in group:
                _settle(write, exc)
            return
        except BaseException as exc:
            for write in group:
                _settle(write, exc)
            raise
        start = 0
        for write in group:
            end = start + len(write.ops)
            if not write.done.done():
                write.done.set_result(results[start:end])
            start = end


def _future() -> asyncio.Future[list[Mapping[str, Any]]]:
    done: asyncio.Future[list[Mapping[str, Any]]] = asyncio.get_running_loop().create_future()
    done.add_done_callback(_retrieved)  # a writer cancelled meanwhile leaves no warning behind
    return done


def _retrieved(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()


def _settle(write: _Write, exc: BaseException) -> None:
    if not write.done.done():
        write.done.set_exception(exc)
