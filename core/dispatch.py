"""Dispatch: claim due jobs, verify the caps, start their runs.

The caps hold by claim-then-verify, which needs no lock and no clock: a dispatcher first claims
jobs (queued -> provisioning, a compare-and-set each), then reads the active jobs again and keeps
only the claims that fit both caps beside every *other* active job; the rest it puts back before
anything is started. Of any set of runs alive at once, the dispatcher whose verifying read came
last saw all of their claims (each was written before its own verifying read, and a job stays
active until its run is gone), so it kept no more than the caps allowed. The dispatch lease in
the store only keeps dispatchers from getting in each other's way; one dispatch is in flight per
process, and requests that arrive meanwhile are folded into it.

With PLATFORM listing several backends, each backend's own cap holds the same way: the claim
records the backend it is assigned, and the verifying read counts the active jobs per backend
(core/spill_slots.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

from core.errors import BackendError, Conflict, StartRefused
from core.faults import FAULTS
from core.leads import missed, read_ahead, ready
from core.models import DrainReport, ExecutionRef, Job, JobState
from core.reserved_budget import Budget, ReservedBudget, reserved_budget
from core.spill_slots import BackendSlots
from core.transitions import Transitions
from core.webhooks.bot_status import new_token, token_hash, wants_callback, with_callback

log = logging.getLogger("botsched.scheduler")

DISPATCH_LEASE = "dispatch"
CLAIM_SCAN_LIMIT = 1024  # most queued rows one dispatch reads to find jobs it may start
CLAIM_CHUNK = 128  # claims written concurrently


class Dispatching(Transitions):
    _dispatch_lock: asyncio.Lock
    _dispatch_wanted: bool

    async def dispatch(self, now: datetime | None = None, report: DrainReport | None = None) -> int:
        """Start as many due jobs as the caps allow; returns how many this call started. While
        a dispatch is in flight in this process, a call only asks it to go round once more."""
        report = report if report is not None else DrainReport()
        self._dispatch_wanted = True
        if self._dispatch_lock.locked():
            return 0
        started = 0
        async with self._dispatch_lock:
            while self._dispatch_wanted:
                self._dispatch_wanted = False
                started += await self._dispatch_round(now, report)
        return started

    async def _dispatch_round(self, now: datetime | None, report: DrainReport) -> int:
        moment = self._now(now)
        until = moment + timedelta(seconds=self.settings.dispatch_lease_seconds)
        if not await self.store.acquire_lease(DISPATCH_LEASE, self.owner, until, moment):
            report.dispatchSkipped = True
            return 0
        try:
            claimed_at = time.monotonic()
            claimed = await self._claim(now, report)
            if claimed:
                FAULTS.point("after_claim")
            kept = await self._verify(claimed, report)
        finally:
            await self.store.release_lease(DISPATCH_LEASE, self.owner)
        results = await asyncio.gather(*(self._start(job, claimed_at, report) for job in kept))
        return sum(results)

    async def _claim(self, now: datetime | None, report: DrainReport) -> list[Job]:
        """Move due jobs to provisioning, as many as the caps seem to allow. With several
        backends, each claim is assigned one with room under its own cap (core/spill_slots.py).
        The jobs are chosen in order, taking their slots as they are chosen, and claimed
        CLAIM_CHUNK at a time concurrently (a store may send them in one transaction). A claim
        lost to another writer leaves its slot unused until the next dispatch."""
        moment = self._now(now)
        active = await self.store.active()
        budget, slots = await self._budget(moment, active), self._slots(active)
        until = moment + timedelta(seconds=self.settings.claim_ttl_seconds)
        extra = self.settings.dispatch_batch * bool(budget.per_tenant)
        claimed: list[Job] = []
        chosen: list[tuple[Job, str | None]] = []
        async for job in self._due(moment, budget.free, extra):
            if budget.free <= 0:
                break
            if not budget.fits(job.tenant, job) or _past(job.deadline, moment):
                continue
            backend = slots.choose(job) if slots is not None else None
            if slots is not None and backend is None:
                break  # no backend a job may go to has room
            budget.take(job.tenant)
            if slots is not None:
                slots.assign(job.model_copy(update={"backend": backend}))
            chosen.append((job, backend))
            if len(chosen) >= CLAIM_CHUNK:
                claimed += await self._claim_all(chosen, until, report)
                chosen = []
        return claimed + await self._claim_all(chosen, until, report)

    async def _claim_all(
        self, chosen: list[tuple[Job, str | None]], until: datetime, report: DrainReport
    ) -> list[Job]:
        """Claim the `chosen` jobs concurrently; the claims that were written, in order."""
        owned = await asyncio.gather(
            *(
                self._claim_one(job, until, report, self._bot_token(job), backend)
                for job, backend in chosen
            )
        )
        for (job, _), claim in zip(chosen, owned, strict=True):
            if claim is None:
                self._bot_tokens.pop(job.id, None)
        return [claim for claim in owned if claim is not None]

    async def _budget(self, moment: datetime, active: list[Job]) -> ReservedBudget:
        """Free slots under the caps beside the `active` jobs and the reservations of jobs not
        active yet, which a claim leaves their slots (core/reserved_budget.py)."""
        base = Budget(self.settings, active)
        return await reserved_budget(self.store, self.settings, base, active, moment)

    async def _claim_one(
        self,
        job: Job,
        until: datetime,
        report: DrainReport,
        token: str | None = None,
        backend: str | None = None,
    ) -> Job | None:
        """Claim `job`; with a `token`, the run this claim starts reports its status with it
        (the job keeps its hash: core/webhooks/bot_status.py); with a `backend` (PLATFORM lists
        several), the claim records it as the job's, and among the job's `backends`."""
        fields: dict[str, Any] = {"botTokenHash": token_hash(token)} if token else {}
        if backend is not None:
            backends = job.backends if backend in job.backends else (*job.backends, backend)
            fields.update(backend=backend, backends=backends)
        return await self._try_write(
            job,
            report,
            status=JobState.PROVISIONING,
            attempts=job.attempts + 1,
            leaseOwner=self.owner,
            leaseUntil=until,
            **fields,
        )

    def _bot_token(self, job: Job) -> str | None:
        if not wants_callback(job, self.settings):
            return None
        token = self._bot_tokens[job.id] = new_token()
        return token

    async def _verify(self, claimed: list[Job], report: DrainReport) -> list[Job]:
        """Keep the claims that fit the caps beside every other active job; undo the rest."""
        if not claimed:
            return []
        active = await self.store.active()
        mine = {job.id: job.version for job in claimed}
        unchanged = {job.id for job in active if mine.get(job.id) == job.version}
        others = [job for job in active if job.id not in unchanged]
        budget, slots = Budget(self.settings, others), self._slots(others)
        for job in active:  # cancelled since we claimed it: we start nothing, so it can settle
            if job.id in mine and job.status is JobState.STOPPING and job.execution is None:
                await self._settle(job, report, claim_done=True)
        kept: list[Job] = []
        for job in claimed:
            fits = budget.fits(job.tenant) and (slots is None or slots.fits(job))
            if job.id in unchanged and fits:
                kept.append(job)
                budget.take(job.tenant)
                if slots is not None:
                    slots.take(job)
            elif job.id in unchanged:
                await self._undo(job, report)
        return kept

    async def _undo(self, job: Job, report: DrainReport) -> None:
        """Put a claim back before anything was started for it: it never held a run."""
        self._bot_tokens.pop(job.id, None)
        undone = await self._try_write(
            job,
            report,
            status=JobState.QUEUED,
            attempts=max(job.attempts - 1, 0),
            leaseOwner=None,
            leaseUntil=None,
        )
        if undone is not None:
            report.undone += 1
            self.events["undone"] += 1

    async def _due(self, now: datetime, want: int, extra: int) -> AsyncIterator[Job]:
        """Due jobs, best first, each once: those whose notBefore has come, and scheduled jobs
        the current join lead makes ready (core/leads.py `ready`). A window full of jobs the
        caller skips (tenants at their cap) must not hide the jobs behind it: read on in
        doubling windows, at most CLAIM_SCAN_LIMIT. Jobs claimed meanwhile leave the queue, so
        each window is read from the top and only the jobs not seen yet are yielded."""
        if want <= 0:
            return
        lead = (await self.leads.lead()).seconds
        horizon = read_ahead(now, lead, self.settings)
        window, seen = want + extra, set[str]()
        while True:
            batch = await self.store.due(horizon, window)
            for job in batch:
                if job.id not in seen:
                    seen.add(job.id)
                    if ready(job, lead, now):
                        yield job
            if len(batch) < window or window >= CLAIM_SCAN_LIMIT:
                return
            window = min(window * 2, CLAIM_SCAN_LIMIT)

    async def _start(self, job: Job, claimed_at: float, report: DrainReport) -> int:
        """Start the run of a verified claim, while the claim is young enough that no one can
        take it for a dead dispatcher's before the run shows on the backend. A claim past its
        meeting window fails `missed` instead: nothing was started for it."""
        if time.monotonic() - claimed_at > self.settings.claim_ttl_seconds / 2:
            await self._undo(job, report)
            return 0
        if missed(job, self.settings, self.clock()):
            self._bot_tokens.pop(job.id, None)
            await self._miss(job, self.clock(), report)
            return 0
        token = self._bot_tokens.pop(job.id, None)
        started = with_callback(job, token, self.settings) if token else job
        try:
            ref = await self.backend.start(started)
        except Exception as exc:  # any failure to start is retried, never lost
            return await self._start_failed(job, exc, report)
        FAULTS.point("after_start")
        return await self._record_run(job, ref, report, measured=True)

    async def _record_run(
        self, job: Job, ref: ExecutionRef, report: DrainReport, *, measured: bool = False
    ) -> int:
        """Write `running` with the run. `measured`: `job` is the claim this dispatcher just
        started, so claim -> running is a start latency the join lead learns from."""
        now = self.clock()
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
            await self._lost_claim(job, ref, report)
            return 0
        FAULTS.point("after_running")
        report.dispatched += 1
        self.events["dispatched"] += 1
        if measured:  # the claim's write time is its updatedAt
            await self.leads.record((now - job.updatedAt).total_seconds())
        return 1

    async def _start_failed(self, job: Job, exc: Exception, report: DrainReport) -> int:
        """A start that raised may still have made the run: ask the backend before retrying."""
        message = exc.message if isinstance(exc, BackendError) else type(exc).__name__
        log.warning("start of job %s failed: %s", job.id, message)
        try:
            found = await self._find(job)
        except Exception:  # cannot tell: the claim runs out and recovery asks again
            self.events["start_errors"] += 1
            return 0
        if found is not None:
            return await self._record_run(job, found, report)
        if isinstance(exc, StartRefused):  # retrying cannot succeed: fail now, say why
            error = f"start refused: {message}"
            fields = {"reason": error, "error": error, "completedAt": self.clock()}
            if await self._final(job, report, JobState.FAILED, **fields):
                report.failed += 1
            return 0
        await self._retry(job, self.clock(), f"start failed: {message}", report)
        return 0

    async def _lost_claim(self, job: Job, ref: ExecutionRef, report: DrainReport) -> None:
        """We started a run but the job moved on without us. A job being stopped settles with
        our run stopped; a requeued job adopts the run if the caps allow; a job another
        dispatcher holds finds the run by name; a final or deleted job's run is stopped."""
        current = await self.store.get(job.id)
        if current is not None and current.status is JobState.STOPPING:
            started = current.model_copy(update={"execution": ref})
            await self._settle(started, report, claim_done=True)
        elif current is not None and current.status is JobState.QUEUED:
            await self._adopt_queued(current, ref, report)
        elif current is None or current.status.final:
            await self._stop_orphan(job.id, ref, report)

    async def _adopt_queued(self, job: Job, ref: ExecutionRef, report: DrainReport) -> None:
        """A queued job whose run exists takes it through a claim and the caps' verification,
        like any start; over the caps, the run is stopped instead."""
        until = self.clock() + timedelta(seconds=self.settings.claim_ttl_seconds)
        spill = self._spill
        backend = spill.key_of(ref.backend) if spill is not None else None
        claimed = await self._claim_one(job, until, report, backend=backend)
        if claimed is None:
            return  # someone else moved it: their step, or the next reconcile, handles the run
        if await self._verify([claimed], report):
            await self._record_run(claimed, ref, report)
        else:
            await self._stop_orphan(job.id, ref, report)

    def _slots(self, holders: list[Job]) -> BackendSlots | None:
        """Each backend's free slots beside `holders`; None with one backend."""
        spill = self._spill
        return BackendSlots(spill, holders) if spill is not None else None

    async def _stop_orphan(self, job_id: str, ref: ExecutionRef, report: DrainReport) -> None:
        log.warning("stopping run %s of job %s: no active job holds it", ref.id, job_id)
        try:
            await self.backend.stop(ref)
        except Exception as exc:  # the next reconcile pass tries again
            log.warning("stop of run %s failed: %s", ref.id, type(exc).__name__)
            return
        report.orphans += 1
        self.events["orphans_stopped"] += 1


def _past(moment: datetime | None, now: datetime) -> bool:
    return moment is not None and moment <= now
