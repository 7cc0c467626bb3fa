"""Whether a tenant has endpoints (core/webhooks/subscriptions.py), on the memory store: read at
most once at a time per tenant, remembered for TTL_SECONDS, and forgotten when this process
changes the tenant's endpoints, even while a read is under way."""

from __future__ import annotations

import asyncio
from typing import Any

from core.records import Record
from core.stores.memory import MemoryStore
from core.webhooks.endpoints import WEBHOOK, endpoint_key
from core.webhooks.subscriptions import Subscriptions


class SlowScans(MemoryStore):
    """Counts the scans of webhook records; each waits for `gate` when one is set."""

    def __init__(self) -> None:
        super().__init__()
        self.scans = 0
        self.gate: asyncio.Event | None = None

    async def scan_records(
        self, kind: str, prefix: str, limit: int, after: Any = None
    ) -> list[Record]:
        self.scans += 1
        if self.gate is not None:
            await self.gate.wait()
        return await super().scan_records(kind, prefix, limit, after)


async def endpoint(store: MemoryStore, tenant: str) -> None:
    record = Record(WEBHOOK, endpoint_key(tenant, "e1"), {"url": "https://hooks.example.com/x"})
    await store.put_record(record, None)


async def test_concurrent_questions_share_one_read() -> None:
    store = SlowScans()
    await endpoint(store, "t1")
    subscriptions = Subscriptions(store)
    store.gate = asyncio.Event()
    asked = [asyncio.ensure_future(subscriptions.any("t1")) for _ in range(20)]
    await asyncio.sleep(0.01)
    store.gate.set()
    assert await asyncio.gather(*asked) == [True] * 20
    assert store.scans == 1
    assert await subscriptions.any("t1") and store.scans == 1  # remembered
    assert not await subscriptions.any("t2") and store.scans == 2  # another tenant: its own


async def held_read(store: SlowScans, subscriptions: Subscriptions) -> asyncio.Future[bool]:
    """Whether t1 has endpoints, asked while the store holds its scan until `gate` is set."""
    store.gate = asyncio.Event()
    asked = asyncio.ensure_future(subscriptions.any("t1"))
    await asyncio.sleep(0.01)
    return asked


async def test_a_change_during_a_read_is_not_forgotten() -> None:
    store = SlowScans()
    subscriptions = Subscriptions(store)
    before = await held_read(store, subscriptions)
    await endpoint(store, "t1")
    subscriptions.changed("t1")  # this process made an endpoint while the read was running
    assert store.gate is not None
    store.gate.set()
    await before  # answers those who asked before the change
    assert await subscriptions.any("t1") is True  # but is not remembered: read again
    assert store.scans == 2


async def test_a_failed_read_is_not_remembered() -> None:
    store = SlowScans()
    subscriptions = Subscriptions(store)
    asked = await held_read(store, subscriptions)
    store.gate = None
    for reading in list(subscriptions._reading.values()):
        reading.cancel()
    await asyncio.gather(asked, return_exceptions=True)
    assert await subscriptions.any("t1") is False and store.scans == 2
