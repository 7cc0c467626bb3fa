"""The drain loop's wake-ups (core/loops.py): a store that notifies (core/ports.py Notifying)
starts a dispatch between drains without moving the next drain; a backend whose bot ended
starts a drain; a wake-up source or a drain that fails never ends the loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

from core.loops import NOTIFIED_GAP_SECONDS, drain_forever, wait_for_work
from core.models import DrainReport
from core.ports import Notifying
from core.scheduler import Scheduler


class NotifyingStore:
    """A store that is notified when the test says so (or whose wait fails, `broken`)."""

    def __init__(self, broken: bool = False) -> None:
        self.event = asyncio.Event()
        self.broken = broken

    async def wait_notified(self, seconds: float) -> bool:
        if self.broken:
            raise RuntimeError("the listener is broken")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.event.wait()
        notified = self.event.is_set()
        self.event.clear()
        return notified


class PlainStore:
    """A store with no wake-ups (memory, sqlite, ...)."""


class EndingBackend:
    def __init__(self) -> None:
        self.ended = asyncio.Event()

    async def wait_ended(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.ended.wait()
        ended = self.ended.is_set()
        self.ended.clear()
        return ended


class FakeScheduler:
    def __init__(self, store: object, backend: object, failing: bool = False) -> None:
        self.store, self.backend, self.failing = store, backend, failing
        self.drains = 0
        self.dispatches = 0

    async def drain_once(self) -> DrainReport:
        self.drains += 1
        if self.failing:
            raise ConnectionError("the store is down")
        return DrainReport()

    async def dispatch(self, now: Any = None, report: DrainReport | None = None) -> int:
        self.dispatches += 1
        if report is not None:
            report.dispatched += 1
        return 1


@contextlib.asynccontextmanager
async def looping(fake: FakeScheduler, every: float, **kwargs: Any) -> AsyncIterator[None]:
    task = asyncio.create_task(drain_forever(cast(Scheduler, fake), every, **kwargs))
    try:
        await asyncio.sleep(0.05)  # its first drain
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_only_a_store_with_wait_notified_counts_as_notifying() -> None:
    assert isinstance(NotifyingStore(), Notifying)
    assert not isinstance(PlainStore(), Notifying)


async def test_a_notification_dispatches_at_once_without_a_drain() -> None:
    store = NotifyingStore()
    fake = FakeScheduler(store, object())
    reports: list[DrainReport] = []
    async with looping(fake, 30.0, on_report=reports.append):
        await asyncio.sleep(NOTIFIED_GAP_SECONDS)  # the first drain is long enough ago
        assert (fake.drains, fake.dispatches) == (1, 0)
        store.event.set()
        await asyncio.sleep(0.2)
        assert (fake.drains, fake.dispatches) == (1, 1)
    assert [report.dispatched for report in reports] == [0, 1]


async def test_a_stream_of_notifications_neither_floods_nor_puts_off_the_drain() -> None:
    """A notification every 0.05 s for 2.5 s, a 2 s interval: a dispatch every
    NOTIFIED_GAP_SECONDS at most (not one per notification, in every process of a deployment),
    and the drains (which poll, recover and reconcile) still on the interval."""
    store = NotifyingStore()
    fake = FakeScheduler(store, object())
    async with looping(fake, 2.0):
        for _ in range(48):
            store.event.set()
            await asyncio.sleep(0.05)
    assert fake.drains == 2, fake.drains
    most = 2.5 / NOTIFIED_GAP_SECONDS
    assert 2 <= fake.dispatches <= most, fake.dispatches


async def test_a_bot_that_ended_starts_a_drain_before_the_store_is_asked() -> None:
    store, backend = NotifyingStore(), EndingBackend()
    fake = FakeScheduler(store, backend)
    async with looping(fake, 30.0):
        backend.ended.set()
        store.event.set()
        await asyncio.sleep(0.3)
        assert fake.drains == 2  # the drain dispatches too
    assert await wait_for_work(cast(Scheduler, fake), 0.05) is None


async def test_a_failing_wake_up_source_and_failing_drains_never_end_the_loop() -> None:
    fake = FakeScheduler(NotifyingStore(broken=True), object(), failing=True)
    async with looping(fake, 0.2):
        await asyncio.sleep(0.5)
    assert 2 <= fake.drains <= 4  # on the interval: the broken source neither spun nor stopped it
    assert fake.dispatches == 0


async def test_without_a_wake_up_source_the_loop_sleeps_the_interval() -> None:
    fake = FakeScheduler(PlainStore(), object())
    assert await wait_for_work(cast(Scheduler, fake), 0.05) is None
    async with looping(fake, 0.2):
        await asyncio.sleep(0.5)
    assert 2 <= fake.drains <= 4
