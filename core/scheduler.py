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

from core.config import Settings
from core.dispatch import DISPATCH_LEASE
from core.errors import Conflict, DuplicateKey, JobFinished, NotFound, ValidationFailed
from core.events import outbox
from core.lifecycle import Lifecycle
from core.models import DrainReport, Job, JobSpec, JobState, Page, utcnow
from core.ports import Backend, JobStore
from core.records import Record
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
        """When a new job may start: now, or its joinAt less the join lead."""
        if job.joinAt is None:
            return job.createdAt
        return job.joinAt - timedelta(seconds=self.settings.join_lead_seconds)

    async def _check_capacity(self, job: Job) -> None:
        """For `onCapacity: reject`: raise when the job could not start now (no free slot)."""
        return None

    async def _insert(self, job: Job, events: list[Record]) -> tuple[Job, bool]:
        """Write the new job with its events: (the job, True); or (the job already holding its
        dedup or idempotency key, False)."""
        try:
            return await self.store.create(job, events), True
        except DuplicateKey as duplicate:
            return duplicate.existing, False

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
        }

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
