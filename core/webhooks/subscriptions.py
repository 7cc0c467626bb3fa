"""Which tenants have endpoints: so that an event nobody subscribed to is not queued for delivery.

Every event is kept (a job's timeline), but only one that an endpoint may want is marked `due`
for the deliverer: one of a job with its own webhookUrl, or of a tenant with an endpoint that has
a URL. Whether a tenant has one is read from the store at most every TTL_SECONDS per process
(and at once in the process that makes or deletes one), so an endpoint made on another instance
receives the events written from at most TTL_SECONDS after it was made.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

from core.models import Job
from core.ports import JobStore
from core.webhooks.endpoints import MAX_ENDPOINTS, WEBHOOK, endpoint_key

TTL_SECONDS = 10.0
KEPT = 10_000  # tenants remembered


class Subscriptions:
    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._seen: OrderedDict[str, tuple[bool, float]] = OrderedDict()
        self._reading: dict[str, asyncio.Future[bool]] = {}  # one read per tenant at a time

    async def wanted(self, job: Job) -> bool:
        """Whether the job's events may be delivered anywhere."""
        return bool(job.webhookUrl) or await self.any(job.tenant)

    async def any(self, tenant: str) -> bool:
        seen = self._seen.get(tenant)
        now = time.monotonic()
        if seen is not None and now - seen[1] < TTL_SECONDS:
            return seen[0]
        reading = self._reading.get(tenant)
        if reading is None:  # concurrent writes of one tenant's jobs share one read
            reading = self._reading[tenant] = asyncio.ensure_future(self._read(tenant))
            reading.add_done_callback(lambda done: self._done(tenant, done, now))
        return await asyncio.shield(reading)

    async def _read(self, tenant: str) -> bool:
        prefix = endpoint_key(tenant, "")
        endpoints = await self.store.scan_records(WEBHOOK, prefix, MAX_ENDPOINTS + 1)
        return any(record.data.get("url") for record in endpoints)

    def _done(self, tenant: str, reading: asyncio.Future[bool], began: float) -> None:
        """Remember what a read begun at `began` found, unless the tenant's endpoints changed
        meanwhile."""
        if self._reading.get(tenant) is not reading:
            return
        del self._reading[tenant]
        if reading.cancelled() or reading.exception() is not None:
            return
        self._seen[tenant] = (reading.result(), began)
        self._seen.move_to_end(tenant)
        if len(self._seen) > KEPT:
            self._seen.popitem(last=False)

    def changed(self, tenant: str) -> None:
        """This process made or deleted one of the tenant's endpoints: read them again."""
        self._seen.pop(tenant, None)
        self._reading.pop(tenant, None)  # a read begun before the change is not remembered
