"""Which tenants have endpoints: so that an event nobody subscribed to is not queued for delivery.

Every event is kept (a job's timeline), but only one that an endpoint may want is marked `due`
for the deliverer: one of a job with its own webhookUrl, or of a tenant with an endpoint that has
a URL. Whether a tenant has one is read from the store at most every TTL_SECONDS per process
(and at once in the process that makes or deletes one), so an endpoint made on another instance
receives the events written from at most TTL_SECONDS after it was made.
"""

from __future__ import annotations

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

    async def wanted(self, job: Job) -> bool:
        """Whether the job's events may be delivered anywhere."""
        return bool(job.webhookUrl) or await self.any(job.tenant)

    async def any(self, tenant: str) -> bool:
        seen = self._seen.get(tenant)
        now = time.monotonic()
        if seen is not None and now - seen[1] < TTL_SECONDS:
            return seen[0]
        prefix = endpoint_key(tenant, "")
        endpoints = await self.store.scan_records(WEBHOOK, prefix, MAX_ENDPOINTS + 1)
        found = any(record.data.get("url") for record in endpoints)
        self._seen[tenant] = (found, now)
        self._seen.move_to_end(tenant)
        if len(self._seen) > KEPT:
            self._seen.popitem(last=False)
        return found

    def changed(self, tenant: str) -> None:
        """This process made or deleted one of the tenant's endpoints: read them again."""
        self._seen.pop(tenant, None)
