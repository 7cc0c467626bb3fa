"""What the API offers of webhooks: endpoints, their delivery log, replay, and a job's events."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from core.config import Settings
from core.errors import Conflict, NotFound, ValidationFailed
from core.events import EVENT, events_prefix, timeline
from core.ports import JobStore
from core.records import KEY_CHARS, Record
from core.webhooks.delivery import ATTEMPT, DELIVERY, Deliverer, attempts_prefix
from core.webhooks.endpoints import Endpoints

MAX_EVENTS = 1000
CURSOR = re.compile(rf"[{KEY_CHARS}]{{1,200}}")


class Webhooks(Endpoints):
    def __init__(
        self,
        store: JobStore,
        settings: Settings,
        clock: Callable[[], datetime],
        deliverer: Deliverer,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(store, settings, clock, on_change)
        self.deliverer = deliverer

    async def events(self, job_id: str) -> list[dict[str, Any]]:
        """A job's events in order (the caller has checked the job is the tenant's)."""
        return timeline(await self.store.scan_records(EVENT, events_prefix(job_id), MAX_EVENTS))

    async def attempts(
        self, tenant: str, endpoint_id: str, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The tenant's delivery attempts to the endpoint, newest first, paged by the last key
        seen."""
        await self.get(tenant, endpoint_id)
        prefix = attempts_prefix(tenant, endpoint_id)
        if cursor is not None and not (CURSOR.fullmatch(cursor) and cursor.startswith(prefix)):
            raise ValidationFailed("cursor: not one this endpoint's listing gave")
        found = await self.store.scan_records(ATTEMPT, prefix, limit + 1, cursor)
        page = found[:limit]
        more = page[-1].key if len(found) > limit else None
        return [record.data for record in page], more

    async def replay(self, tenant: str, endpoint_id: str, event_id: str) -> dict[str, Any]:
        """Send the event to the endpoint again, with its id, as a fresh set of attempts."""
        endpoint = await self.get(tenant, endpoint_id)
        if endpoint.data.get("disabled"):
            raise Conflict(
                f"webhook {endpoint_id} is disabled: enable it first (PATCH "
                f'/api/scheduler/webhooks/{endpoint_id} with {{"enabled": true}})'
            )
        event = await self.store.get_record(EVENT, event_id) if _plain(event_id) else None
        if event is None or event.data["tenant"] != tenant:
            raise NotFound(f"event {event_id[:120]} not found")
        if endpoint.data.get("url") is None and not event.data.get("webhookUrl"):
            raise ValidationFailed(f"event {event_id} has no job webhookUrl to send it to")
        key = f"{endpoint_id}:{event_id}"
        for _ in range(5):
            delivery = await self.store.get_record(DELIVERY, key)
            fresh = self.deliverer.new_delivery(event, endpoint)
            try:
                if delivery is None:
                    stored = await self.store.put_record(fresh, None)
                else:
                    again = delivery.but(data={**fresh.data, "replays": _replays(delivery)})
                    stored = await self.store.put_record(again.but(due=fresh.due), delivery.version)
            except (Conflict, NotFound):
                continue
            return _delivery_view(stored)
        raise Conflict("the delivery kept changing; try again")


def _plain(text: str) -> bool:
    try:
        Record(EVENT, text)
    except ValueError:
        return False
    return True


def _replays(delivery: Record) -> int:
    return int(delivery.data.get("replays", 0)) + 1


def _delivery_view(record: Record) -> dict[str, Any]:
    shown = ("endpointId", "eventId", "jobId", "type", "state", "attempts")
    view = {name: record.data.get(name) for name in shown}
    view["replays"] = int(record.data.get("replays", 0))
    view["nextAttemptMs"] = record.due
    return view


__all__ = ["Webhooks"]
