"""The state machine: every job transition happens in the scheduler's modules, and only there.

queued -> provisioning -> running -> (stopping ->) completed | failed | cancelled

Correctness lives in the store and the backend, not in memory: every transition is a
compare-and-set on the version read, the caps hold by claim-then-verify (core/dispatch.py), and a
job leaves the active states only once the backend confirms its run gone (core/transitions.py,
core/lifecycle.py). See "How it schedules" in the README.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from core.capacity import check_capacity
from core.config import Settings
from core.desired import (
    ATTEMPTS,
    EXTERNAL,
    NotQueued,
    Outcome,
    backoff,
    changes,
    record_key,
    same,
    same_meeting,
)
from core.dispatch import DISPATCH_LEASE
from core.errors import Conflict, JobFinished, NotFound, ValidationFailed
from core.events import outbox
from core.leads import effective_deadline
from core.lifecycle import Lifecycle
from core.meetings import insert_job
from core.models import DrainReport, Job, JobSpec, JobState, Page, utcnow
from core.moves import move_job, moves_slots
from core.ports import Backend, JobStore
from core.records import Record
from core.spill_slots import backend_stats
from core.values import new_job_id
from core.webhooks.bot_status import BotReport, check_report, report_fields
from core.webhooks.delivery import Deliverer
from core.webhooks.endpoints import JOB_URLS
from core.webhooks.service import Webhooks

CANCEL_ATTEMPTS = 5
log = logging.getLogger("botsched.scheduler")
__all__ = ["DISPATCH_LEASE", "Scheduler"]


class Scheduler(Lifecycle):
    """One per process, shared by its timers and its requests."""

    def __init__(
        self,
        store: JobStore,
        backend: Backend,
        settings: Settings,
        *,
        owner: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        owner = owner or f"dispatcher-{uuid.uuid4().hex[:12]}"
        super().__init__(store, backend, settings, owner, clock)
        self._dispatch_lock = asyncio.Lock()
        self._dispatch_wanted = False
        self._drain_lock = asyncio.Lock()
        self.deliverer = Deliverer(store, settings, clock)
        self.webhooks = Webhooks(store, settings, clock, self.deliverer, self.subscriptions.changed)

    # -- client operations -------------------------------------------------------------------

    async def submit(
        self,
        tenant: str,
        spec: JobSpec,
        idempotency_key: str | None = None,
        *,
        job_id: str | None = None,
        external_key: str | None = None,
    ) -> tuple[Job, bool]:
        """Queue a job. Returns (job, created); a repeated dedup or idempotency key returns the
        job that already holds it, with created False. `job_id` (default: a new UUID) must not be
        in use: the store raises Conflict."""
        now = self.clock()
        job = Job.from_spec(
            spec,
            id=job_id or new_job_id(),
            tenant=tenant,
            idempotencyKey=idempotency_key,
            externalKey=external_key,
            createdAt=now,
            updatedAt=now,
            notBefore=now,
        )
        job.notBefore = await self._not_before(job)
        job.deadline = effective_deadline(job, self.settings)
        if spec.webhookUrl is not None:
            await self._check_job_secret(tenant)
        if spec.onCapacity == "reject":
            await self._check_capacity(job)
        job, events = outbox(None, job, now, await self.subscriptions.wanted(job))
        created, new = await self._insert(job, events)
        if new:
            self.events["submitted"] += 1
            self.outbox_written.set()
        return created, new

    async def _not_before(self, job: Job) -> datetime:
        """When a new job may start: now, or its joinAt less the join lead learned for this
        backend (core/leads.py), now when that is past."""
        if job.joinAt is None:
            return job.createdAt
        lead = await self.leads.lead()
        return max(job.joinAt - timedelta(seconds=lead.seconds), job.createdAt)

    async def _check_capacity(self, job: Job) -> None:
        """For `onCapacity: reject`: raise when the job could not start now (no free slot)."""
        await check_capacity(self.store, self.settings, job, self.clock())

    async def _insert(self, job: Job, events: list[Record]) -> tuple[Job, bool]:
        """Write the new job with its events, its meeting slots and its reservations, all in one
        atomic write (core/meetings.py): (the job, True); or (the job already holding its dedup
        or idempotency key, or its meeting, False). Sets the job's meetingKey. Raises Overbooked
        when its window is full and overbooking is "reject"."""
        return await insert_job(self.store, self.settings, job, events, self.budgets)

    async def _check_job_secret(self, tenant: str) -> None:
        try:
            await self.webhooks.get(tenant, JOB_URLS)
        except NotFound:
            raise ValidationFailed(
                "webhookUrl: create the secret its deliveries are signed with first: "
                "POST /api/scheduler/webhooks/job-secret",
                fields=["webhookUrl"],
            ) from None

    async def get(self, tenant: str | None, job_id: str) -> Job:
        """The job, if `tenant` may see it (None: any tenant). Another tenant's job is a 404."""
        job = await self.store.get(job_id)
        if job is None or (tenant is not None and job.tenant != tenant):
            raise NotFound(f"job {job_id} not found")
        return job

    async def list_jobs(
        self,
        tenant: str | None,
        status: JobState | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        return await self.store.list_jobs(tenant, status, limit, cursor)

    async def cancel(self, tenant: str | None, job_id: str) -> Job:
        """Cancel in any state that is not final. A queued job is cancelled at once; an active
        one goes through `stopping` (its run is stopped, found by name when none is recorded
        yet) and reads `cancelled` once the backend confirms the run gone."""
        report = DrainReport()
        for _ in range(CANCEL_ATTEMPTS):
            job = await self.get(tenant, job_id)
            if job.status.final:
                raise JobFinished(f"job {job_id} is already {job.status.value}")
            if job.status is JobState.STOPPING:
                return await self._settle(job, report)
            now = self.clock()
            fields = {"reason": "cancelled", "completedAt": now}
            if job.status is JobState.QUEUED:
                if await self._final(job, report, JobState.CANCELLED, **fields):
                    return await self.get(tenant, job_id)
                continue
            stopping = await self._begin_stop(job, JobState.CANCELLED, report, **fields)
            if stopping is not None:
                return stopping
        raise Conflict(f"job {job_id} kept changing; try again")

    async def job_events(self, tenant: str | None, job_id: str) -> list[dict[str, Any]]:
        """The job's timeline: every event written for it, in order."""
        job = await self.get(tenant, job_id)
        return await self.webhooks.events(job.id)

    async def report_bot_status(self, body: BotReport, token: str | None) -> Job:
        """Record what a job's bot says of itself (core/webhooks/bot_status.py)."""
        for _ in range(CANCEL_ATTEMPTS):
            job = check_report(await self.store.get(body.data.bot_id), token)
            try:
                return await self._write(job, **report_fields(body, self.clock()))
            except Conflict:
                continue
        raise Conflict(f"job {body.data.bot_id} kept changing; try again")

    async def logs(self, tenant: str | None, job_id: str, tail: int = 200) -> str:
        job = await self.get(tenant, job_id)
        if job.execution is None:
            raise NotFound(f"job {job_id} has not started a run yet, so it has no logs")
        return await self.backend.logs(job.execution, tail)

    async def stats(self, tenant: str | None = None) -> dict[str, Any]:
        counts = await self.store.counts(tenant)
        lead = await self.leads.lead()
        return {
            "queueSize": counts[JobState.QUEUED],
            "provisioningJobs": counts[JobState.PROVISIONING],
            "runningJobs": counts[JobState.RUNNING],
            "stoppingJobs": counts[JobState.STOPPING],
            "completedJobs": counts[JobState.COMPLETED],
            "failedJobs": counts[JobState.FAILED],
            "cancelledJobs": counts[JobState.CANCELLED],
            "totalJobs": sum(counts.values()),
            "maxConcurrentJobs": self.settings.max_concurrent_jobs,
            "maxConcurrentJobsPerTenant": self.settings.max_concurrent_per_tenant or None,
            "platform": self.backend.name,
            "backends": await backend_stats(self.backend, self.store, tenant, counts, self.clock()),
            "joinLeadSeconds": round(lead.seconds, 3),
            "startLatencyP95Seconds": None if lead.p95 is None else round(lead.p95, 3),
            "startLatencySamples": lead.samples,
        }

    async def reschedule(self, tenant: str | None, job_id: str, fields: dict[str, Any]) -> Job:
        """Change a queued job's `fields` (validated: core/intake.py), a compare-and-set retried
        on conflicts; a new joinAt moves notBefore. NotQueued once the job left the queue."""
        for attempt in range(ATTEMPTS):
            job = await self.get(tenant, job_id)
            try:
                return await self._change_queued(job, fields)
            except Conflict:
                await backoff(attempt)
        raise Conflict(f"job {job_id} kept changing; try again")

    async def _change_queued(self, job: Job, fields: dict[str, Any]) -> Job:
        """One write of the fields that differ (no write when none does): `job.rescheduled`."""
        if job.status is not JobState.QUEUED:
            raise NotQueued(job)
        update = {k: value for k, value in fields.items() if not same(getattr(job, k), value)}
        if not update:
            return job
        if update.get("webhookUrl") is not None:
            await self._check_job_secret(job.tenant)
        if "joinAt" in update:
            update["notBefore"] = await self._not_before(job.model_copy(update=update))
        if "joinAt" in update or "deadline" in update:
            moved = job.model_copy(update=update)
            update["deadline"] = effective_deadline(moved, self.settings, before=job)
            update = {k: value for k, value in update.items() if not same(getattr(job, k), value)}
            if not update:  # e.g. a deadline cleared that was only its window's end
                return job
        if moves_slots(update):  # its slots follow it, in the same write (core/moves.py)
            moved = job.model_copy(update=update)
            return await move_job(
                self.store,
                self.settings,
                job,
                moved,
                self.clock(),
                lambda slots: self._write(job, slots=slots, **update),
            )
        return await self._write(job, **update)

    async def put_by_key(
        self, tenant: str, key: str, spec: JobSpec | None, *, cancelled: bool = False
    ) -> Outcome:
        """Make the job of `key` what `spec` says (`cancelled`: cancel it; spec unused).
        No job for the key: create it. Queued: change what differs (a new meetingUrl replaces
        it). Started: cancel it, or keep it (a moved joinAt is NotQueued: a running bot is not
        moved). Ended: a new job when it was cancelled or joinAt moved; else it stays."""
        record_id = record_key(tenant, key)
        for attempt in range(ATTEMPTS):
            record = await self.store.get_record(EXTERNAL, record_id)
            job = await self.store.get(record.data["jobId"]) if record else None
            try:
                if cancelled:
                    return await self._cancel_by_key(key, job)
                assert spec is not None, "a desired state that is not cancelled has a spec"
                if record is None or job is None:
                    job_id = record.data["jobId"] if record else None
                    return await self._create_by_key(tenant, key, spec, record, job_id)
                return await self._apply_by_key(key, job, spec, record)
            except Conflict:  # another write for the key came first: look again
                await backoff(attempt)
        raise Conflict(f"the job of key {key} kept changing; try again")

    async def _cancel_by_key(self, key: str, job: Job | None) -> Outcome:
        if job is None:
            raise NotFound(f"no job for external key {key}")
        if job.status.final:
            return Outcome(job)
        try:
            return Outcome(await self.cancel(job.tenant, job.id))
        except JobFinished:
            return Outcome(await self.get(job.tenant, job.id))

    async def _create_by_key(
        self, tenant: str, key: str, spec: JobSpec, record: Record | None, job_id: str | None
    ) -> Outcome:
        """Name a new job in the key's record (inserted, or moved from the job it named: a
        compare-and-set), then submit it under that id. A crash between the two leaves a record
        naming no job, which the next PUT of the key creates."""
        if job_id is None:
            job_id = new_job_id()
            data = {"jobId": job_id, "tenant": tenant, "externalKey": key}
            if record is None:
                await self.store.put_record(Record(EXTERNAL, record_key(tenant, key), data), None)
            else:
                await self.store.put_record(record.but(data=data), record.version)
        job, created = await self.submit(tenant, spec, job_id=job_id, external_key=key)
        return Outcome(job, created=created, duplicate=not created)

    async def _apply_by_key(self, key: str, job: Job, spec: JobSpec, record: Record) -> Outcome:
        tenant = job.tenant
        if job.status.final:
            if job.status is JobState.CANCELLED or not same(job.joinAt, spec.joinAt):
                return await self._create_by_key(tenant, key, spec, record, None)
            return Outcome(job)  # that occurrence has run: a repeated PUT changes nothing
        if job.status is JobState.QUEUED and not same_meeting(job, spec):
            fields = {"reason": "replaced", "completedAt": self.clock()}
            if not await self._final(job, DrainReport(), JobState.CANCELLED, **fields):
                raise Conflict(f"job {job.id} was changed concurrently")
            return await self._create_by_key(tenant, key, spec, record, None)
        if job.status is JobState.QUEUED:
            return Outcome(await self._change_queued(job, changes(job, spec)))
        if not same(job.joinAt, spec.joinAt):
            raise NotQueued(job, "a started bot is not moved (cancel it, or PUT cancelled)")
        return Outcome(job, not_applied=list(changes(job, spec)))

    # -- the drain ---------------------------------------------------------------------------

    async def drain_once(self, now: datetime | None = None) -> DrainReport:
        """Recover, poll, settle stops, reconcile, expire and dispatch once. One drain runs at a
        time in a process (timers that overlap wait their turn); any number of processes may
        drain the same store at once. Each step reads the clock afresh unless `now` is given."""
        async with self._drain_lock:
            report = DrainReport()
            active = await self.store.active()
            await self._recover(active, now, report)
            await self._poll(active, now, report)
            await self._settle_stopping(active, report)
            await self._reconcile(active, report)
            await self._expire(now, report)
            await self.dispatch(now, report)
            return report

    async def tick(self) -> DrainReport:
        """What a timer does: one drain, then the webhook deliveries that are due (after the
        dispatch, which never waits for them). A delivery failure is logged, never raised."""
        report = await self.drain_once()
        try:
            delivered = await self.deliverer.run_once()
        except Exception:
            log.exception("webhook delivery failed; the next tick tries again")
        else:
            report.webhooks = delivered.model_dump(exclude_defaults=True)
        return report
