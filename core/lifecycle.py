"""The drain's steps besides dispatch: recover lost claims, poll runs, settle stops, reconcile
the backend's runs with the store, expire jobs past their deadline.

The backend is the truth for what runs. Recovery asks it before a job leaves the active states;
a run is only taken as gone when the backend says it ended or has no such run; and the reconcile
pass stops any live run that no active job holds (its job final, queued or unknown).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import datetime, timedelta

from core.budgets import BUDGET_EXHAUSTED
from core.dispatch import Dispatching
from core.errors import BackendError, ExecutionLost, NotSupported
from core.leads import missed
from core.models import DrainReport, Execution, Job, JobState

log = logging.getLogger("botsched.scheduler")


class Lifecycle(Dispatching):
    async def _recover(self, active: list[Job], now: datetime | None, report: DrainReport) -> None:
        """A claim whose lease ran out (beyond the clock skew allowed) belongs to a dispatcher
        that died: adopt the run it may have started, or retry the job if the backend has none."""
        moment = self._now(now)
        for job in active:
            if job.status is JobState.PROVISIONING and not self._claim_may_live(job, moment):
                report.recovered += 1
                await self._recover_one(job, moment, report)

    async def _recover_one(self, job: Job, now: datetime, report: DrainReport) -> None:
        try:
            ref = await self._find(job)
        except BackendError as exc:  # cannot tell: the job keeps its slot until we can
            log.warning("recovery of job %s: the backend cannot tell: %s", job.id, exc.message)
            return
        if ref is not None:
            await self._adopt(job, ref, now, report)
        else:
            await self._retry(job, now, "dispatcher lost its claim", report)

    async def _poll(self, active: list[Job], now: datetime | None, report: DrainReport) -> None:
        running = [job for job in active if job.status is JobState.RUNNING and job.execution]
        overruns: defaultdict[str, float] = defaultdict(float)  # per tenant: minutes past charges
        for job in running:
            overruns[job.tenant] += self.budgets.overrun(job, self._now(now))
        await asyncio.gather(*(self._poll_one(job, now, report, overruns) for job in running))

    async def _poll_one(
        self, job: Job, now: datetime | None, report: DrainReport, overruns: defaultdict[str, float]
    ) -> None:
        assert job.execution is not None
        report.polled += 1
        try:
            execution = await self.backend.status(job.execution)
        except ExecutionLost as lost:
            await self._retry(job, self._now(now), f"run lost: {lost.message}", report)
            return
        except BackendError as exc:
            await self._status_failed(job, exc, self._now(now), report)
            return
        moment = self._now(now)
        if execution.phase in ("succeeded", "failed"):
            await self._finish(job, execution, moment, report)
        elif self._overran(job, moment):
            await self._stop_overrun(job, moment, report)
        elif self.budgets.overrun(job, moment) and await self.budgets.exhausted(
            job, moment, overruns[job.tenant]
        ):
            await self._stop_spent(job, moment, report)
        elif job.statusErrors:
            await self._try_write(job, report, statusErrors=0)

    async def _status_failed(
        self, job: Job, exc: BackendError, now: datetime, report: DrainReport
    ) -> None:
        """A failing status check is counted on the job and in the metrics, never hidden, and
        does not stop maxRuntimeSeconds from being enforced."""
        failures = job.statusErrors + 1
        log.warning("status of job %s failed (%d in a row): %s", job.id, failures, exc.message)
        self.events["status_errors"] += 1
        error = f"status check failed {failures} times in a row: {exc.message}"
        updated = await self._try_write(job, report, statusErrors=failures, error=error)
        if updated is not None and self._overran(updated, now):
            await self._stop_overrun(updated, now, report)

    async def _stop_overrun(self, job: Job, now: datetime, report: DrainReport) -> None:
        reason = f"exceeded maxRuntimeSeconds={job.maxRuntimeSeconds}"
        await self._begin_stop(
            job, JobState.FAILED, report, reason=reason, error=reason, completedAt=now
        )

    async def _stop_spent(self, job: Job, now: datetime, report: DrainReport) -> None:
        """Stop a bot that ran past its charge when its tenant's budget has nothing left."""
        error = "its tenant's bot-minute budget ran out while it ran past its charge"
        await self._begin_stop(
            job, JobState.FAILED, report, reason=BUDGET_EXHAUSTED, error=error, completedAt=now
        )
        self.events[BUDGET_EXHAUSTED] += 1

    async def _finish(
        self, job: Job, execution: Execution, now: datetime, report: DrainReport
    ) -> None:
        succeeded = execution.phase == "succeeded"
        state = JobState.COMPLETED if succeeded else JobState.FAILED
        fields = {
            "exitCode": execution.exitCode,
            "reason": None if succeeded else execution.reason or "bot failed",
            "completedAt": execution.finishedAt or now,
            "statusErrors": 0,
        }
        if not succeeded:
            fields["error"] = execution.reason or "bot failed"
        if await self._final(job, report, state, **fields):
            setattr(report, state.value, getattr(report, state.value) + 1)

    @staticmethod
    def _overran(job: Job, now: datetime) -> bool:
        if not job.maxRuntimeSeconds or not job.startedAt:
            return False
        return now - job.startedAt > timedelta(seconds=job.maxRuntimeSeconds)

    async def _settle_stopping(self, active: list[Job], report: DrainReport) -> None:
        stopping = [job for job in active if job.status is JobState.STOPPING]
        await asyncio.gather(*(self._settle(job, report) for job in stopping))

    async def _reconcile(self, active: list[Job], report: DrainReport) -> None:
        """Every live run is held by an active job: a queued job adopts its run within the caps,
        and the run of a final or unknown job is stopped."""
        try:
            runs = await self.backend.runs()
        except NotSupported:
            return
        except BackendError as exc:
            log.warning("cannot list the backend's runs: %s", exc.message)
            return
        holders = {job.id for job in active}
        for job_id, ref in runs.items():
            if job_id in holders:
                continue
            job = await self.store.get(job_id)  # it may have become active since `active`
            if job is not None and job.status is JobState.QUEUED:
                await self._adopt_queued(job, ref, report)
            elif job is None or job.status.final:
                await self._stop_orphan(job_id, ref, report)

    async def _expire(self, now: datetime | None, report: DrainReport) -> None:
        """Fail queued jobs past their deadline: `missed` when it is a scheduled job's meeting
        window that has passed (core/leads.py), else `expired`."""
        moment = self._now(now)
        for job in await self.store.expiring(moment, self.settings.dispatch_batch):
            if missed(job, self.settings, moment):
                await self._miss(job, moment, report)
                continue
            error = "deadline passed before the job could start"
            if await self._final(
                job, report, JobState.FAILED, reason="expired", error=error, completedAt=moment
            ):
                report.expired += 1
                self.events["expired"] += 1
