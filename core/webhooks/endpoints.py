"""A tenant's webhook endpoints, kept as records of kind "webhook" keyed `{tenant}:{id}`.

An endpoint has a URL, an event filter (empty: every event), its signing secrets and its health.
The secret is shown once, when the endpoint is made or its secret rotated; rotation keeps the old
secret valid for SCHEDULER_WEBHOOK_SECRET_OVERLAP_SECONDS, and deliveries meanwhile carry a
signature by each (Standard Webhooks allows several, space-separated). The endpoint `wh_jobs`
has no URL: its secret signs the deliveries to the jobs' own `webhookUrl`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from core.config import Settings
from core.errors import Conflict, NotFound, ValidationFailed
from core.events import FILTER_TYPES
from core.models import to_ms
from core.ports import JobStore
from core.records import Record, key_part
from core.webhooks import secrets
from core.webhooks.urls import check_resolved, check_webhook_url

WEBHOOK = "webhook"
JOB_URLS = "wh_jobs"
MAX_ENDPOINTS = 20
WRITE_TRIES = 5
ENDPOINT_ID = re.compile(r"[A-Za-z0-9_]{1,64}")  # `wh_` + 32 hex digits, or wh_jobs


def endpoint_key(tenant: str, endpoint_id: str) -> str:
    """`{tenant}:{id}`, the tenant with no `:` of its own (a tenant's prefix is no other's)."""
    return f"{key_part(tenant)}:{endpoint_id}"


def view(record: Record, now_ms: int) -> dict[str, Any]:
    """An endpoint as the API shows it: never its secrets, only how many sign deliveries now."""
    data = record.data
    shown = ("id", "url", "events", "description", "createdAt", "disabled", "disabledReason")
    return {name: data.get(name) for name in shown} | {
        "failingSince": data.get("failingSince"),
        "lastSuccessAt": data.get("lastSuccessAt"),
        "secrets": len(_live(data.get("secrets", []), now_ms)),
    }


def wants(record: Record, event_type: str) -> bool:
    events = record.data.get("events") or []
    family = event_type.split(".", 1)[0] + ".*"
    wanted = not events or event_type in events or family in events
    return wanted and not record.data.get("disabled")


def signing_secrets(record: Record, settings: Settings, now: datetime) -> list[str]:
    """The secrets deliveries are signed with now: the newest, and older ones still in their
    overlap."""
    live = _live(record.data.get("secrets", []), to_ms(now))
    return [secrets.unseal(s["sealed"], settings.secrets_key) for s in live]


def _live(kept: list[dict[str, Any]], now_ms: int) -> list[dict[str, Any]]:
    return [s for s in kept if s.get("expiresMs") is None or s["expiresMs"] > now_ms]


def check_events(events: Any) -> list[str]:
    if events is None:
        return []
    if not isinstance(events, list) or len(events) > len(FILTER_TYPES):
        raise ValidationFailed(f"events: a list of at most {len(FILTER_TYPES)} event types")
    unknown = [e for e in events if e not in FILTER_TYPES]
    if unknown:
        raise ValidationFailed(
            f"events: unknown type {str(unknown[0])[:60]!r}; choose from {', '.join(FILTER_TYPES)}"
        )
    return sorted(set(events), key=FILTER_TYPES.index)


class Endpoints:
    def __init__(
        self,
        store: JobStore,
        settings: Settings,
        clock: Callable[[], datetime],
        on_change: Callable[[str], None] | None = None,
    ):
        self.store = store
        self.settings = settings
        self.clock = clock
        self.on_change = on_change or (lambda tenant: None)  # a tenant's endpoints changed

    async def check_url(self, url: Any) -> str:
        if not isinstance(url, str):
            raise ValidationFailed("url: an https URL is required", fields=["url"])
        try:
            check_webhook_url(url, self.settings.webhook_allow_private)
            await check_resolved(url, self.settings.webhook_allow_private)
        except ValueError as exc:
            raise ValidationFailed(f"url: {exc}", fields=["url"]) from None
        return url

    async def create(
        self, tenant: str, url: str | None, events: list[str], description: str | None
    ) -> tuple[dict[str, Any], str]:
        """A new endpoint (None url: the job-URL secret holder) and its secret, shown once."""
        if url is not None and await self._urls(tenant) >= MAX_ENDPOINTS:
            raise Conflict(f"a tenant has at most {MAX_ENDPOINTS} endpoints: delete one first")
        endpoint_id = JOB_URLS if url is None else f"wh_{uuid.uuid4().hex}"
        secret, now = secrets.new_secret(), _iso(self.clock())
        data = {
            "id": endpoint_id,
            "tenant": tenant,
            "url": url,
            "events": events,
            "description": description,
            "createdAt": now,
            "disabled": False,
            "disabledReason": None,
            "secrets": [self._sealed(secret, now)],
        }
        record = Record(WEBHOOK, endpoint_key(tenant, endpoint_id), data)
        try:
            stored = await self.store.put_record(record, None)
            self.on_change(tenant)
        except Conflict:
            raise Conflict(
                f"{endpoint_id} exists; rotate its secret: POST /api/scheduler/webhooks/"
                f"{endpoint_id}/rotate"
            ) from None
        return self.view(stored), secret

    def view(self, record: Record) -> dict[str, Any]:
        return view(record, to_ms(self.clock()))

    async def list(self, tenant: str) -> list[Record]:
        return await self.store.scan_records(WEBHOOK, endpoint_key(tenant, ""), MAX_ENDPOINTS + 1)

    async def _urls(self, tenant: str) -> int:
        """The tenant's endpoints with a URL (wh_jobs is not one of the MAX_ENDPOINTS)."""
        return sum(record.data.get("url") is not None for record in await self.list(tenant))

    async def get(self, tenant: str, endpoint_id: str) -> Record:
        if not ENDPOINT_ID.fullmatch(endpoint_id):
            raise NotFound(f"webhook {endpoint_id[:80]} not found")
        record = await self.store.get_record(WEBHOOK, endpoint_key(tenant, endpoint_id))
        if record is None:
            raise NotFound(f"webhook {endpoint_id} not found")
        return record

    async def delete(self, tenant: str, endpoint_id: str) -> None:
        record = await self.get(tenant, endpoint_id)
        await self.store.delete_record(WEBHOOK, record.key)
        self.on_change(tenant)

    async def change(self, tenant: str, endpoint_id: str, **fields: Any) -> dict[str, Any]:
        """Set url, events, description or enabled (a disabled endpoint comes back healthy)."""
        updated = await self._update(tenant, endpoint_id, lambda data: _changed(data, fields))
        self.on_change(tenant)
        return self.view(updated)

    async def rotate(self, tenant: str, endpoint_id: str) -> tuple[dict[str, Any], str]:
        """A new secret, shown once; the ones before it stay valid for the overlap."""
        secret, now = secrets.new_secret(), self.clock()
        until = to_ms(now) + int(self.settings.webhook_secret_overlap_seconds * 1000)

        def rotated(data: dict[str, Any]) -> dict[str, Any]:
            older = [{**s, "expiresMs": s.get("expiresMs") or until} for s in data["secrets"]]
            kept = _live(older, to_ms(now))[:2]
            return {**data, "secrets": [self._sealed(secret, _iso(now)), *kept]}

        return self.view(await self._update(tenant, endpoint_id, rotated)), secret

    async def _update(
        self, tenant: str, endpoint_id: str, change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> Record:
        for _ in range(WRITE_TRIES):
            record = await self.get(tenant, endpoint_id)
            try:
                return await self.store.put_record(
                    record.but(data=change(record.data)), record.version
                )
            except Conflict:
                continue
        raise Conflict(f"webhook {endpoint_id} kept changing; try again")

    def _sealed(self, secret: str, now: str) -> dict[str, Any]:
        return {"sealed": secrets.seal(secret, self.settings.secrets_key), "createdAt": now}


def _changed(data: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    data = {**data, **{name: value for name, value in fields.items() if name != "enabled"}}
    if fields.get("enabled") is True:
        data.update(disabled=False, disabledReason=None, failingSince=None)
    elif fields.get("enabled") is False:
        data.update(disabled=True, disabledReason="disabled by its owner")
    return data


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
