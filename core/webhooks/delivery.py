"""Delivery: from the outbox to the endpoints, at least once, in order per job and endpoint.

`run_once` fans new events out to deliveries, then attempts the due deliveries:

- Fan-out. An event still `due` (core/events.py) gets one delivery record per endpoint that wants
  it (and one to its job's `webhookUrl`), keyed `{endpoint}:{event}`: made with insert-only writes,
  so redoing a fan-out cut short makes no second one. Then the event's mark is cleared. A job's
  events are fanned out in order: one waits while the event before it is not yet.
- Attempts. A delivery is taken by a compare-and-set that counts the attempt and moves its due
  time past the attempt's timeout, the allowed clock skew and a margin for the store calls around
  it (a lease: if this process dies mid-attempt, the delivery comes due again and is sent again
  with the same id; the attempt cut short counts, and is not logged). The body is the event's
  stored text, signed with Standard Webhooks' headers; a 2xx is delivered, anything else (an
  error, a timeout, a redirect, which is never followed) is retried on the schedule, and dead
  after the last one.
  Within an endpoint's deliveries of one job, one is attempted only when the ones before it are
  delivered or dead; a later one due meanwhile waits for the earlier one's next attempt (or less:
  one never attempted goes as soon as the ones before it are done, even when it was put back to
  an earlier one's lease by another deliverer).
- Every attempt is logged as a record (kind "attempt", newest first per endpoint), and an
  endpoint failing for SCHEDULER_WEBHOOK_DISABLE_AFTER_SECONDS is disabled, saying since when.

Attempts run concurrently (SCHEDULER_WEBHOOK_CONCURRENCY), each bounded by its timeout (name
resolution included), so a slow receiver holds one slot for at most that long. A round lasts
until its chains are done; while a slow one runs, the round keeps fanning out new events and
starting the chains that come due (every TOP_UP_SECONDS), so a receiver that hangs delays its own
deliveries only: another endpoint's events go out meanwhile. A round thus lasts at most about two
timeouts past its start. The local server's delivery loop runs beside its drain, so the dispatch
never waits for it; a timer's tick (Scheduler.tick, `botsched drain`) delivers after its drain,
so there the next drain waits for the round. A chain that raises (a store error) is logged and
leaves the others to finish; its delivery comes due again when its lease ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from core.config import Settings
from core.errors import Conflict, NotFound
from core.events import EVENT, event_id, events_prefix
from core.models import to_ms
from core.ports import JobStore
from core.records import Record
from core.webhooks.endpoints import JOB_URLS, WEBHOOK, endpoint_key, wants
from core.webhooks.sender import Sender

log = logging.getLogger("botsched.webhooks")

DELIVERY = "delivery"
ATTEMPT = "attempt"
FAN_OUT_BATCH = 200
LEASE_MARGIN = 5  # seconds for the store calls around a POST, past its timeout and the skew
MS_LIMIT = 10**15
TOP_UP_SECONDS = 0.25  # while a round's chains run: how often it looks for new work
FOLLOWING_SCAN = 8  # keys read to find a delivery's next one (see _own)


class DeliveryReport(BaseModel):
    fannedOut: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    waiting: int = 0


def attempts_prefix(tenant: str, endpoint_id: str) -> str:
    """The key prefix of the tenant's attempts to an endpoint (wh_jobs is every tenant's id)."""
    return f"{endpoint_key(tenant, endpoint_id)}:"


def attempt_key(
    tenant: str, endpoint_id: str, moment_ms: int, delivery_key: str, attempt: int
) -> str:
    """Newest first within the endpoint: the time counts down."""
    event = delivery_key.split(":", 1)[1]
    prefix = attempts_prefix(tenant, endpoint_id)
    return f"{prefix}{MS_LIMIT - moment_ms:015d}:{event}:{attempt:02d}"


class Deliverer:
    def __init__(
        self,
        store: JobStore,
        settings: Settings,
        clock: Callable[[], datetime],
        sender: Sender | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.sender = sender or Sender(settings)
        self._slots = asyncio.Semaphore(settings.webhook_concurrency)

    async def close(self) -> None:
        await self.sender.close()

    async def run_once(self) -> DeliveryReport:
        report = DeliveryReport()
        await self.fan_out(report)
        await self.deliver_due(report)
        return report

    # -- fan-out -----------------------------------------------------------------------------

    async def fan_out(self, report: DeliveryReport) -> None:
        events = await self.store.due_records(EVENT, to_ms(self.clock()), FAN_OUT_BATCH)
        events.sort(key=lambda event: (event.data["jobId"], event.data["seq"]))
        endpoints: dict[str, list[Record]] = {}
        done: set[str] = set()
        for event in events:
            if not await self._previous_done(event, done):
                continue
            tenant = event.data["tenant"]
            if tenant not in endpoints:
                endpoints[tenant] = await self._endpoints(tenant)
            for target in self._targets(event, endpoints[tenant]):
                await self._quietly(self.new_delivery(event, target), None)  # made before: fine
            if await self._quietly(event.but(due=None), event.version) is None:
                continue  # another deliverer fanned it out meanwhile
            done.add(event.key)
            report.fannedOut += 1

    async def _previous_done(self, event: Record, done: set[str]) -> bool:
        seq = event.data["seq"]
        if seq <= 1:
            return True
        previous = event_id(event.data["jobId"], seq - 1)
        if previous in done:
            return True
        record = await self.store.get_record(EVENT, previous)
        return record is None or record.due is None

    async def _endpoints(self, tenant: str) -> list[Record]:
        return await self.store.scan_records(WEBHOOK, endpoint_key(tenant, ""), 100)

    def _targets(self, event: Record, endpoints: list[Record]) -> list[Record]:
        kind = event.data["type"]
        chosen = [e for e in endpoints if e.data.get("url") and wants(e, kind)]
        if event.data.get("webhookUrl"):
            chosen += [e for e in endpoints if e.data["id"] == JOB_URLS and wants(e, kind)]
        return chosen

    def new_delivery(self, event: Record, endpoint: Record) -> Record:
        endpoint_id = endpoint.data["id"]
        data = {
            "endpointId": endpoint_id,
            "tenant": event.data["tenant"],
            "eventId": event.key,
            "jobId": event.data["jobId"],
            "type": event.data["type"],
            "url": event.data.get("webhookUrl") if endpoint_id == JOB_URLS else None,
            "state": "pending",
            "attempts": 0,
        }
        return Record(DELIVERY, f"{endpoint_id}:{event.key}", data, due=to_ms(self.clock()))

    async def _quietly(self, record: Record, version: str | None) -> Record | None:
        """put_record, where another deliverer writing first is normal: None then."""
        try:
            return await self.store.put_record(record, version)
        except (Conflict, NotFound):
            return None

    # -- attempts ----------------------------------------------------------------------------

    async def deliver_due(self, report: DeliveryReport) -> None:
        """Run a chain for each endpoint and job with a due delivery. While this round's chains
        run, every TOP_UP_SECONDS new events are fanned out and the chains that came due are
        started too, so that a receiver that hangs holds up its own chains only; the round
        ends when its first chains have, and the ones started meanwhile, are done."""
        round_ = _Round(report)
        try:
            first = await self._start_chains(round_)
            while first and not all(task.done() for task in first):
                await asyncio.wait(first, timeout=TOP_UP_SECONDS)
                if all(task.done() for task in first) or not await self._top_up(round_):
                    break
            await _finish(round_.tasks)
        except BaseException:  # cancelled (or no chain started): so are the chains
            for task in round_.tasks:
                task.cancel()
            raise

    async def _start_chains(self, round_: _Round) -> list[asyncio.Task[None]]:
        """A task for each chain with a due delivery and none running; returns them."""
        limit = self.settings.webhook_concurrency * 4
        started = []
        for delivery in await self.store.due_records(DELIVERY, to_ms(self.clock()), limit):
            name = f"{delivery.data['endpointId']} {delivery.data['jobId']}"
            if name not in round_.chains or round_.chains[name].done():  # its earliest due one
                task = asyncio.create_task(self._chain(delivery, round_.report), name=delivery.key)
                round_.chains[name] = task
                started.append(task)
        round_.tasks += started
        return started

    async def _top_up(self, round_: _Round) -> bool:
        """Fan out and start the chains due since the round began; False when that failed."""
        try:
            await self.fan_out(round_.report)
            await self._start_chains(round_)
        except Exception:
            log.exception("webhooks: a top-up failed; the round finishes the chains it has")
            return False
        return True

    async def _chain(self, delivery: Record | None, report: DeliveryReport) -> None:
        """Deliver the chain's deliveries in order while they succeed."""
        async with self._slots:
            while delivery is not None:
                delivery = await self._next_in_order(delivery, report)
                if delivery is None or not await self._attempt(delivery, report):
                    return
                delivery = await self._following(delivery)

    async def _next_in_order(self, delivery: Record, report: DeliveryReport) -> Record | None:
        """The chain's first unfinished delivery if it is due now; else push `delivery` back to
        that one's next attempt and return None."""
        chain = _own(delivery, await self.store.scan_records(DELIVERY, _chain(delivery), 1000))
        first = next((d for d in chain if d.data["state"] == "pending"), None)
        if first is None or self._ready(first):
            return first
        assert first.due is not None  # not ready: due later
        if first.key != delivery.key and delivery.due is not None and delivery.due < first.due:
            report.waiting += 1
            await self._quietly(delivery.but(due=first.due), delivery.version)
        return None

    async def _following(self, delivery: Record) -> Record | None:
        """The chain's next delivery, when it may go now (else it comes due by itself)."""
        found = await self.store.scan_records(
            DELIVERY, _chain(delivery), FOLLOWING_SCAN, after=delivery.key
        )
        chain = _own(delivery, found)
        if chain and chain[0].data["state"] == "pending" and self._ready(chain[0]):
            return chain[0]
        return None

    def _ready(self, delivery: Record) -> bool:
        """Whether a pending delivery whose earlier ones are done may be attempted now: when it
        is due, or when it was never attempted (then its due time only waited for an earlier
        one; one being attempted has its attempt counted, so it is never taken twice)."""
        due, attempts = delivery.due, delivery.data["attempts"]
        return due is None or due <= to_ms(self.clock()) or attempts == 0

    async def _attempt(self, delivery: Record, report: DeliveryReport) -> bool:
        """One attempt; True when delivered (or dead), so the chain may go on."""
        now, settings = self.clock(), self.settings
        attempts = delivery.data["attempts"] + 1
        hold = settings.webhook_timeout_seconds + settings.max_clock_skew_seconds + LEASE_MARGIN
        lease = now + timedelta(seconds=hold)
        leased = delivery.but(data={**delivery.data, "attempts": attempts}, due=to_ms(lease))
        taken = await self._quietly(leased, delivery.version)
        if taken is None:
            return False  # another deliverer has it
        endpoint = await self.store.get_record(
            WEBHOOK, endpoint_key(taken.data["tenant"], taken.data["endpointId"])
        )
        event = await self.store.get_record(EVENT, taken.data["eventId"])
        outcome = await self._send(taken, endpoint, event)
        await self._log(taken, attempts, outcome)
        return await self._settle(taken, endpoint, outcome, report)

    async def _send(
        self, delivery: Record, endpoint: Record | None, event: Record | None
    ) -> dict[str, Any]:
        if endpoint is None or event is None:
            return {"error": "endpoint deleted" if event else "event deleted", "final": True}
        if endpoint.data.get("disabled"):
            reason = endpoint.data.get("disabledReason") or "disabled"
            return {"error": f"endpoint disabled: {reason}", "final": True}
        url = delivery.data.get("url") or endpoint.data["url"]
        try:
            return await self.sender.send(url, event.key, event.data["body"], endpoint)
        except Exception as exc:  # signing failed (a sealed secret without its key, ...)
            log.warning("delivery %s not sent: %r", delivery.key, exc)
            return {"error": f"not sent: {type(exc).__name__}: {exc}"[:300]}

    async def _log(self, delivery: Record, attempt: int, outcome: dict[str, Any]) -> None:
        now, sent = self.clock(), delivery.data
        data = {
            "deliveryId": delivery.key,
            "eventId": sent["eventId"],
            "jobId": sent["jobId"],
            "type": sent["type"],
            "attempt": attempt,
            "at": now.isoformat().replace("+00:00", "Z"),
            "status": outcome.get("status"),
            "latencyMs": outcome.get("latencyMs"),
            "error": outcome.get("error"),
        }
        key = attempt_key(sent["tenant"], sent["endpointId"], to_ms(now), delivery.key, attempt)
        await self._quietly(Record(ATTEMPT, key, data), None)

    async def _settle(
        self,
        delivery: Record,
        endpoint: Record | None,
        outcome: dict[str, Any],
        report: DeliveryReport,
    ) -> bool:
        ok = outcome.get("error") is None
        attempts = delivery.data["attempts"]
        schedule = self.settings.webhook_retry_schedule
        dead = not ok and (outcome.get("final") or attempts >= len(schedule))
        data = {**delivery.data, "lastStatus": outcome.get("status")}
        data["lastError"] = outcome.get("error")
        if ok or dead:
            data["state"] = "delivered" if ok else "dead"
            due = None
        else:
            due = to_ms(self.clock()) + int(schedule[attempts] * 1000)
        if await self._quietly(delivery.but(data=data, due=due), delivery.version) is None:
            return False
        if ok:
            report.delivered += 1
        else:
            report.dead += dead
            report.failed += not dead
        if endpoint is not None and not outcome.get("final"):
            await self._health(endpoint, ok)
        return ok or bool(dead)

    async def _health(self, endpoint: Record, ok: bool) -> None:
        """Note a success after failures, or a failure; disable one failing for too long."""
        data, now = dict(endpoint.data), self.clock()
        since = data.get("failingSince")
        if ok and (since is not None or data.get("lastSuccessAt") is None):
            data.update(failingSince=None, lastSuccessAt=_iso(now))
        elif not ok and since is None:
            data["failingSince"] = _iso(now)
        elif not ok and not data.get("disabled") and self._failed_too_long(str(since), now):
            data.update(disabled=True, disabledReason=f"every delivery failed since {since}")
        else:
            return  # nothing new to say
        await self._quietly(endpoint.but(data=data), endpoint.version)  # or another said it

    def _failed_too_long(self, since: str, now: datetime) -> bool:
        failing = now - datetime.fromisoformat(since)
        return failing.total_seconds() >= self.settings.webhook_disable_after_seconds


@dataclass
class _Round:
    report: DeliveryReport
    chains: dict[str, asyncio.Task[None]] = field(default_factory=dict)  # the latest, by chain
    tasks: list[asyncio.Task[None]] = field(default_factory=list)  # every one started


async def _finish(tasks: list[asyncio.Task[None]]) -> None:
    """Wait for the chains; one that raised (a store error) is logged: the others went on, and
    its lease brings its delivery back."""
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for task, outcome in zip(tasks, outcomes, strict=True):
        if isinstance(outcome, Exception):
            log.error("delivering %s failed: %r", task.get_name(), outcome, exc_info=outcome)


def _chain(delivery: Record) -> str:
    """The key prefix of an endpoint's deliveries of one job."""
    return f"{delivery.data['endpointId']}:{events_prefix(delivery.data['jobId'])}"


def _own(delivery: Record, found: list[Record]) -> list[Record]:
    """The deliveries of `found` that are of `delivery`'s job. Event keys escape the `_` of job
    ids, so a prefix holds one job's; but a store may keep deliveries keyed before they did,
    where job `a_b`'s would sit under job `a`'s prefix: one job must never hold up another's
    (wh_jobs is one endpoint id for every tenant)."""
    return [record for record in found if record.data["jobId"] == delivery.data["jobId"]]


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
