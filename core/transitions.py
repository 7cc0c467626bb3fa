"""What every step of the scheduler shares: compare-and-set writes, retries and stopping runs.

A job holds a slot of the concurrency caps while it is active (provisioning, running, stopping):
from the claim that may start its run until the backend confirms the run gone. Leaving the active
states is therefore only ever done by a step that knows no run exists: the run ended, the backend
says it has none, or the claim was undone before any start. See "How it schedules" in the README.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from core.backends.spill import SpillBackend
from core.budget_ledger import RACES
from core.budgets import Budgets
from core.config import Settings
from core.errors import BackendError, Conflict, ExecutionLost, NotFound
from core.events import outbox
from core.faults import FAULTS
from core.leads import MISSED, Leads, missed, start_by
from core.models import DrainReport, ExecutionRef, Job, JobState
from core.ports import Backend, JobStore
from core.records import Record
from core.reservations import freed
from core.webhooks.subscriptions import Subscriptions

log = logging.getLogger("botsched.scheduler")
REBASES = 5  # writes retried on a job whose only change meanwhile was its bot's report
_BOT_FIELDS = {"botStatus", "botStatusAt", "eventSeq", "updatedAt", "version"}


def only_bot_reported(read: Job, current: Job) -> bool:
    """Whether `current` differs from the job as `read` in its bot's report alone."""
    if (current.botStatus, current.botStatusAt) == (read.botStatus, read.botStatusAt):
        return False
    return current.model_dump(exclude=_BOT_FIELDS) == read.model_dump(exclude=_BOT_FIELDS)


class Transitions:
    def __init__(
        self,
        store: JobStore,
        backend: Backend,
        settings: Settings,
        owner: str,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.backend = backend
        self.settings = settings
        self.owner = owner
        self.clock = clock
        self.events: Counter[str] = Counter()
        self.outbox_written = asyncio.Event()  # set when a write made events: wakes delivery
        self.subscriptions = Subscriptions(store)
        self._bot_tokens: dict[str, str] = {}  # job id -> the token its claim's bot is given
        self.leads = Leads(store, settings, backend.name)  # the learned join lead (core/leads.py)
        self.budgets = Budgets(store, settings.budgets, settings.expected_run_seconds, clock)

    def _now(self, now: datetime | None) -> datetime:
        """A fresh reading for each step, unless the caller fixed the time (tests)."""
        return now or self.clock()

    def _claim_may_live(self, job: Job, now: datetime) -> bool:
        """Whether the dispatcher holding `job`'s claim may still be starting its run, allowing
        for clocks that differ by up to max_clock_skew_seconds."""
        if job.leaseUntil is None:
            return False
        return now < job.leaseUntil + timedelta(seconds=self.settings.max_clock_skew_seconds)

    # -- writes ------------------------------------------------------------------------------

    async def _write(self, job: Job, *, slots: Sequence[Record] = (), **changes: Any) -> Job:
        """Compare-and-set `changes` onto `job`, with the events they make (core/events.py) and
        `slots` (new records: core/moves.py) in the same write; raises Conflict when someone
        else moved first (or a slot is taken). A write that only recorded the bot's own report
        (its status) is no move of the job's: `changes` go onto the job as it is now instead."""
        for _ in range(REBASES):
            try:
                return await self._write_once(job, slots=slots, **changes)
            except Conflict:
                current = await self.store.get(job.id)
                if current is None or not only_bot_reported(job, current):
                    raise
                job = current
        raise Conflict(f"job {job.id} was changed concurrently", id=job.id)

    async def _write_once(self, job: Job, *, slots: Sequence[Record] = (), **changes: Any) -> Job:
        assert job.version is not None, "only stored jobs can be updated"
        changes.setdefault("updatedAt", self.clock())
        new = job.model_copy(update=changes)
        new, events = outbox(job, new, changes["updatedAt"], await self.subscriptions.wanted(new))
        written = await self.store.update(new, job.version, [*events, *slots])
        if events:
            self.outbox_written.set()
        return written

    async def _try_write(self, job: Job, report: DrainReport, **changes: Any) -> Job | None:
        """`_write`, where losing the race is normal and silent."""
        try:
            return await self._write(job, **changes)
        except (Conflict, NotFound):
            report.conflicts += 1
            return None

    async def _final(self, job: Job, report: DrainReport, state: JobState, **fields: Any) -> bool:
        changes = {"outcome": None, "leaseOwner": None, "leaseUntil": None, **fields}
        written = await self._settling_write(job, report, state, final=True, **changes)
        if written is not None:
            self.events[state.value] += 1
            if job.joinAt is not None:
                freed(self.store)  # its reserved slots: free for this process's next submit
        return written is not None

    async def _settling_write(
        self, job: Job, report: DrainReport, state: JobState, *, final: bool, **changes: Any
    ) -> Job | None:
        """`_try_write` of `state` with the ledger entries that settle the job's bot-minutes
        (core/budgets.py) in the same write: `final`, the job ends; else it is queued again
        after a run. A write that lost only a ledger chain's head to another is tried again."""
        for _ in range(RACES):
            ended = changes.get("completedAt") or self.clock()
            entries, charge = await self.budgets.settle(job, ended, final=final)
            budget = {"budgetCharge": charge} if charge is not job.budgetCharge else {}
            try:
                written = await self._write(job, slots=entries, status=state, **changes, **budget)
            except (Conflict, NotFound):
                if entries and await self.budgets.ledger.moved(entries):
                    continue
                break
            self.budgets.ledger.wrote(entries)
            return written
        report.conflicts += 1
        return None

    async def _retry(self, job: Job, now: datetime, error: str, report: DrainReport) -> None:
        """Back to the queue with exponential backoff, or failed once attempts are spent, or
        `missed` once its meeting window has passed. Only for a job the backend has no run for:
        a queued job holds no slot."""
        if missed(job, self.settings, now):
            await self._miss(job, now, report, error)
            return
        if job.attempts >= self.settings.max_attempts:
            reason = f"gave up after {job.attempts} attempts"
            if await self._final(
                job, report, JobState.FAILED, reason=reason, error=error, completedAt=now
            ):
                report.failed += 1
            return
        delay = self._backoff(job, now)
        if await self._settling_write(
            job,
            report,
            JobState.QUEUED,
            final=False,
            error=error,
            execution=None,
            notBefore=now + timedelta(seconds=delay),
            leaseOwner=None,
            leaseUntil=None,
        ):
            report.retried += 1
            self.events["retried"] += 1

    def _backoff(self, job: Job, now: datetime) -> float:
        """Seconds before a retry: exponential, and for a scheduled job at most half the time
        left in its meeting window, so that the retry still comes within it."""
        delay: float = self.settings.retry_base_seconds * 2 ** max(job.attempts - 1, 0)
        delay = min(delay, self.settings.retry_max_seconds)
        window = start_by(job, self.settings)
        if window is not None:
            delay = min(delay, max((window - now).total_seconds() / 2, 0.0))
        return delay

    async def _miss(self, job: Job, now: datetime, report: DrainReport, error: str = "") -> bool:
        """Fail a job whose meeting window has passed before it could start (reason `missed`).
        Only for a job the backend has no run for, as `_retry`."""
        window = start_by(job, self.settings)
        when = window.isoformat() if window else "its window"
        late = f"not started by joinAt + {self.settings.late_tolerance_seconds:g}s ({when})"
        fields = {"reason": MISSED, "error": f"{late}: {error}" if error else late}
        if not await self._final(job, report, JobState.FAILED, completedAt=now, **fields):
            return False
        report.failed += 1
        self.events[MISSED] += 1
        return True

    async def _adopt(self, job: Job, ref: ExecutionRef, now: datetime, report: DrainReport) -> bool:
        """An active job takes the run the backend has for it: it held its slot all along."""
        adopted = await self._try_write(
            job,
            report,
            status=JobState.RUNNING,
            execution=ref,
            startedAt=job.startedAt or now,
            leaseOwner=None,
            leaseUntil=None,
        )
        return adopted is not None

    async def _find(self, job: Job) -> ExecutionRef | None:
        """The run the backend has for `job` (live or finished), found by the name its start
        gives it. With several backends, asked on every backend a claim of the job was assigned
        (all of them when none was recorded), so that a retry never starts a second bot on
        another backend while the first may still be starting. Raises BackendError when the
        backend, or any one asked, cannot tell."""
        spill = self._spill
        if spill is None:
            return await self.backend.find(job.id)
        return await spill.find_in(job.id, job.backends)

    @property
    def _spill(self) -> SpillBackend | None:
        """The backend, when PLATFORM lists several (core/backends/spill.py)."""
        backend = self.backend
        return backend if isinstance(backend, SpillBackend) else None

    # -- stopping ----------------------------------------------------------------------------

    async def _begin_stop(
        self, job: Job, outcome: JobState, report: DrainReport, **fields: Any
    ) -> Job | None:
        """Move an active job to `stopping`: it keeps its slot until its run is gone, then
        `_settle` writes `outcome`. A job with no claim alive and no run takes it at once."""
        stopping = await self._try_write(
            job, report, status=JobState.STOPPING, outcome=outcome, **fields
        )
        if stopping is None:
            return None
        return await self._settle(stopping, report)

    async def _settle(self, job: Job, report: DrainReport, *, claim_done: bool = False) -> Job:
        """Stop a `stopping` job's run; once the backend confirms it gone, write the outcome.
        Whatever fails leaves the job in `stopping` (still holding its slot) for the next drain.
        `claim_done`: the caller is the claim's dispatcher and starts nothing more for it."""
        if not claim_done and self._claim_may_live(job, self.clock()):
            return job  # its dispatcher may be starting the run; it settles the job itself
        try:
            ref = job.execution or await self._find(job)
            if ref is not None and not await self._stopped(ref):
                return job
        except BackendError as exc:
            log.warning("stop of job %s failed: %s", job.id, exc.message)
            self.events["stop_errors"] += 1
            return job
        if await self._final(job, report, job.outcome or JobState.CANCELLED):
            report.stopped += 1
        current = await self.store.get(job.id)
        return current or job

    async def _stopped(self, ref: ExecutionRef) -> bool:
        """Stop the run, then ask whether it is gone (ended, or unknown to the backend)."""
        await self.backend.stop(ref)
        FAULTS.point("during_stop")
        try:
            execution = await self.backend.status(ref)
        except ExecutionLost:
            return True
        return execution.phase in ("succeeded", "failed")
