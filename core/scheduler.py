"""The state machine: every job transition happens here, and only here.

queued -> provisioning -> running -> completed | failed | cancelled

Correctness lives in the store, not in memory: every transition is a compare-and-set on the
version read, so overlapping timers, dead dispatchers and concurrent cancels cannot start a bot
twice or lose a job. See DESIGN.md, "Dispatch, poll, recover".
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

from core.config import Settings
from core.errors import (
    BackendError,
    Conflict,
    DuplicateKey,
    ExecutionLost,
    JobFinished,
    NotFound,
)
from core.models import (
    DrainReport,
    Execution,
    Job,
    JobSpec,
    JobState,
    Page,
    utcnow,
)
from core.ports import Backend, JobStore

log = logging.getLogger("botsched.scheduler")

DISPATCH_LEASE = "dispatch"
CANCEL_ATTEMPTS = 5
CLAIM_SCAN_LIMIT = 1024  # most queued rows one dispatch reads to find jobs it may start


class Scheduler:
    def __init__(
        self,
        store: JobStore,
        backend: Backend,
        settings: Settings,
        *,
        owner: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.backend = backend
        self.settings = settings
        self.owner = owner or f"dispatcher-{uuid.uuid4().hex[:12]}"
        self.clock = clock
        self.events: Counter[str] = Counter()

    # -- client operations -------------------------------------------------------------------

    async def submit(
        self, tenant: str, spec: JobSpec, idempotency_key: str | None = None
    ) -> tuple[Job, bool]:
        """Queue a job. Returns (job, created); a repeated dedup or idempotency key returns the
        job that already holds it, with created False."""
        now = self.clock()
        lead = timedelta(seconds=self.settings.join_lead_seconds)
        job = Job(
            **spec.model_dump(),
            id=str(uuid.uuid4()),
            tenant=tenant,
            idempotencyKey=idempotency_key,
            createdAt=now,
            updatedAt=now,
            notBefore=spec.joinAt - lead if spec.joinAt else now,
        )
        try:
            created = await self.store.create(job)
        except DuplicateKey as duplicate:
            return duplicate.existing, False
        self.events["submitted"] += 1
        return created, True

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
        """Cancel in any state that is not final; a running bot is stopped."""
        for _ in range(CANCEL_ATTEMPTS):
            job = await self.get(tenant, job_id)
            if job.status.final:
                raise JobFinished(f"job {job_id} is already {job.status.value}")
            now = self.clock()
            try:
                cancelled = await self._write(
                    job, status=JobState.CANCELLED, reason="cancelled", completedAt=now
                )
            except Conflict:
                continue
            self.events["cancelled"] += 1
            if job.execution is not None:
                await self._stop_quietly(job)
            return cancelled
        raise Conflict(f"job {job_id} kept changing; try again")

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
        """Recover, poll, expire and dispatch once. Safe to run concurrently from many places."""
        now = now or self.clock()
        report = DrainReport()
        active = await self.store.active()
        await self._recover(active, now, report)
        await self._poll(active, now, report)
        await self._expire(now, report)
        await self.dispatch(now, report)
        return report

    async def dispatch(self, now: datetime | None = None, report: DrainReport | None = None) -> int:
        """Start as many due jobs as capacity allows; returns how many were started."""
        now = now or self.clock()
        report = report if report is not None else DrainReport()
        until = now + timedelta(seconds=self.settings.dispatch_lease_seconds)
        if not await self.store.acquire_lease(DISPATCH_LEASE, self.owner, until, now):
            report.dispatchSkipped = True
            return 0
        try:
            claimed = await self._claim(now, report)
        finally:
            await self.store.release_lease(DISPATCH_LEASE, self.owner)
        results = await asyncio.gather(*(self._start(job, now, report) for job in claimed))
        return sum(results)

    async def _recover(self, active: list[Job], now: datetime, report: DrainReport) -> None:
        """A claim whose lease ran out belongs to a dispatcher that died: retry the job. The
        backend's start adopts a run that the dead dispatcher did start."""
        for job in active:
            if job.status is JobState.PROVISIONING and job.leaseUntil and job.leaseUntil <= now:
                report.recovered += 1
                await self._retry(job, now, "dispatcher lost its claim", report)

    async def _poll(self, active: list[Job], now: datetime, report: DrainReport) -> None:
        running = [job for job in active if job.status is JobState.RUNNING and job.execution]
        await asyncio.gather(*(self._poll_one(job, now, report) for job in running))

    async def _poll_one(self, job: Job, now: datetime, report: DrainReport) -> None:
        assert job.execution is not None
        report.polled += 1
        try:
            execution = await self.backend.status(job.execution)
        except ExecutionLost as lost:
            await self._retry(job, now, f"run lost: {lost.message}", report)
            return
        except BackendError as exc:
            log.warning("status of job %s failed: %s", job.id, exc.message)
            return
        if execution.phase in ("succeeded", "failed"):
            await self._finish(job, execution, now, report)
        elif self._overran(job, now):
            await self._stop_quietly(job)
            reason = f"exceeded maxRuntimeSeconds={job.maxRuntimeSeconds}"
            if await self._try_write(
                job, report, status=JobState.FAILED, reason=reason, error=reason, completedAt=now
            ):
                report.stopped += 1
                self.events["failed"] += 1

    async def _finish(
        self, job: Job, execution: Execution, now: datetime, report: DrainReport
    ) -> None:
        succeeded = execution.phase == "succeeded"
        state = JobState.COMPLETED if succeeded else JobState.FAILED
        fields: dict[str, Any] = {
            "status": state,
            "exitCode": execution.exitCode,
            "reason": None if succeeded else execution.reason or "bot failed",
            "completedAt": execution.finishedAt or now,
        }
        if not succeeded:
            fields["error"] = execution.reason or "bot failed"
        if await self._try_write(job, report, **fields):
            setattr(report, state.value, getattr(report, state.value) + 1)
            self.events[state.value] += 1

    @staticmethod
    def _overran(job: Job, now: datetime) -> bool:
        if not job.maxRuntimeSeconds or not job.startedAt:
            return False
        return now - job.startedAt > timedelta(seconds=job.maxRuntimeSeconds)

    async def _expire(self, now: datetime, report: DrainReport) -> None:
        for job in await self.store.expiring(now, self.settings.dispatch_batch):
            reason = "expired"
            error = "deadline passed before the job could start"
            if await self._try_write(
                job, report, status=JobState.FAILED, reason=reason, error=error, completedAt=now
            ):
                report.expired += 1
                self.events["expired"] += 1

    async def _claim(self, now: datetime, report: DrainReport) -> list[Job]:
        """Under the dispatch lease: move due jobs to provisioning within both caps."""
        active = await self.store.active()
        free = self.settings.max_concurrent_jobs - len(active)
        per_tenant = self.settings.max_concurrent_per_tenant
        load = Counter(job.tenant for job in active)
        until = now + timedelta(seconds=self.settings.claim_ttl_seconds)
        claimed: list[Job] = []
        async for job in self._due(
            now, free, extra=self.settings.dispatch_batch * bool(per_tenant)
        ):
            if len(claimed) >= free:
                break
            if (per_tenant and load[job.tenant] >= per_tenant) or _past(job.deadline, now):
                continue
            owned = await self._try_write(
                job,
                report,
                status=JobState.PROVISIONING,
                attempts=job.attempts + 1,
                leaseOwner=self.owner,
                leaseUntil=until,
            )
            if owned is not None:
                claimed.append(owned)
                load[job.tenant] += 1
        return claimed

    async def _due(self, now: datetime, free: int, extra: int) -> AsyncIterator[Job]:
        """Due jobs, best first. A window full of jobs the caller skips (tenants at their cap)
        must not hide the jobs behind it: read on in doubling windows, at most CLAIM_SCAN_LIMIT."""
        if free <= 0:
            return
        window, seen = free + extra, 0
        while True:
            batch = await self.store.due(now, window)
            for job in batch[seen:]:
                yield job
            seen = len(batch)
            if len(batch) < window or window >= CLAIM_SCAN_LIMIT:
                return
            window = min(window * 2, CLAIM_SCAN_LIMIT)

    async def _start(self, job: Job, now: datetime, report: DrainReport) -> int:
        try:
            ref = await self.backend.start(job)
        except Exception as exc:  # any failure to start is retried, never lost
            message = exc.message if isinstance(exc, BackendError) else type(exc).__name__
            log.warning("start of job %s failed: %s", job.id, message)
            await self._retry(job, now, f"start failed: {message}", report)
            return 0
        try:
            await self._write(
                job,
                status=JobState.RUNNING,
                execution=ref,
                startedAt=now,
                leaseOwner=None,
                leaseUntil=None,
            )
        except Conflict:
            report.conflicts += 1
            return await self._orphan(job.model_copy(update={"execution": ref}), now, report)
        report.dispatched += 1
        self.events["dispatched"] += 1
        return 1

    async def _orphan(self, started: Job, now: datetime, report: DrainReport) -> int:
        """We started a run but lost the job to someone else (a cancel, or a recovery that
        thought us dead). A final job's run is stopped; a requeued job adopts the run, so the
        bot is neither left alone nor started twice. A job claimed anew adopts it on start."""
        current = await self.store.get(started.id)
        if current is None or current.status.final:
            await self._stop_quietly(started)
            return 0
        if current.status is not JobState.QUEUED:
            return 0
        adopted = await self._try_write(
            current,
            report,
            status=JobState.RUNNING,
            execution=started.execution,
            startedAt=now,
            leaseOwner=None,
            leaseUntil=None,
        )
        if adopted is None:
            return await self._orphan(started, now, report)
        report.dispatched += 1
        self.events["dispatched"] += 1
        return 1

    async def _retry(self, job: Job, now: datetime, error: str, report: DrainReport) -> None:
        """Back to the queue with exponential backoff, or failed once attempts are spent."""
        if job.attempts >= self.settings.max_attempts:
            reason = f"gave up after {job.attempts} attempts"
            if await self._try_write(
                job, report, status=JobState.FAILED, reason=reason, error=error, completedAt=now
            ):
                report.failed += 1
                self.events["failed"] += 1
            return
        delay = self.settings.retry_base_seconds * 2 ** max(job.attempts - 1, 0)
        delay = min(delay, self.settings.retry_max_seconds)
        if await self._try_write(
            job,
            report,
            status=JobState.QUEUED,
            error=error,
            execution=None,
            notBefore=now + timedelta(seconds=delay),
            leaseOwner=None,
            leaseUntil=None,
        ):
            report.retried += 1
            self.events["retried"] += 1

    # -- helpers -----------------------------------------------------------------------------

    async def _write(self, job: Job, **changes: Any) -> Job:
        """Compare-and-set `changes` onto `job`; raises Conflict when someone else moved first."""
        assert job.version is not None, "only stored jobs can be updated"
        changes.setdefault("updatedAt", self.clock())
        return await self.store.update(job.model_copy(update=changes), job.version)

    async def _try_write(self, job: Job, report: DrainReport, **changes: Any) -> Job | None:
        """`_write`, where losing the race is normal and silent."""
        try:
            return await self._write(job, **changes)
        except (Conflict, NotFound):
            report.conflicts += 1
            return None

    async def _stop_quietly(self, job: Job) -> None:
        if job.execution is None:
            return
        try:
            await self.backend.stop(job.execution)
        except Exception as exc:  # a stop that fails must not hide the state change
            log.warning("stop of job %s failed: %s", job.id, type(exc).__name__)


def _past(moment: datetime | None, now: datetime) -> bool:
    return moment is not None and moment <= now
