"""Per-tenant bot-minute budgets: what a tenant may spend per UTC day and per UTC month.

A tenant's budget is the record of kind `budget` for it (the admin API), else its entry in
SCHEDULER_BUDGETS, else that setting's `*` entry; none: the tenant is not counted at all.

**Admission.** A job is charged its expected minutes (its maxRuntimeSeconds, else
SCHEDULER_EXPECTED_RUN_SECONDS) on the day and the month of its start (joinAt, else its
submit), by an entry of each period's ledger chain (core/budget_ledger.py) written in the job's
own create. A job that would take a chain past its limit is refused (BudgetExceeded, 402). As
the chains serialize their writers, concurrent submits never charge more than the limit.

**Settlement.** The write that ends a job (core/transitions.py `_final`), or that puts it back in
the queue after a run, replaces its charge with the minutes its run spent (startedAt to
completedAt, on the day and month the run started), by entries written in that same write: a
job is settled exactly once. A run whose minutes were counted is marked in `budgetCharge`.

**Run time.** A running job is within budget while it runs no longer than it was charged. Past
that, it spends what is left: when the charged minutes of its tenant's period and the minutes by
which its running jobs overran their charges pass the limit, a tenant whose policy is `stop` has
its overrunning jobs stopped (reason `budget_exhausted`); with `finish` they run on, and what
they spend is charged when they end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from core.budget_ledger import KIND as LEDGER
from core.budget_ledger import Head, Ledger, entry_key
from core.budget_policy import DEFAULT, Period, Policy
from core.errors import BudgetExceeded
from core.models import Job
from core.ports import JobStore
from core.records import Record
from core.reservations import slot_part

KIND = "budget"
POLICY_TTL = 5.0  # seconds a process keeps a tenant's budget
BUDGET_EXHAUSTED = "budget_exhausted"
PERIODS: tuple[Period, ...] = ("day", "month")


def period_id(period: Period, moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("d%Y%m%d") if period == "day" else moment.strftime("m%Y%m")


def period_end(period: Period, moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day + timedelta(days=1)
    first = day.replace(day=1)
    return (first + timedelta(days=32)).replace(day=1)


def chain(tenant: str, period: Period, moment: datetime) -> str:
    return f"{slot_part(tenant)}:{period_id(period, moment)}:"


def minutes(seconds: float) -> float:
    return round(seconds / 60, 4)


class Budgets:
    """The budgets of one scheduler: policies (cached POLICY_TTL), charges and settlements."""

    def __init__(
        self,
        store: JobStore,
        configured: Mapping[str, Policy],
        expected_run_seconds: float,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.configured = configured
        self.expected_run_seconds = expected_run_seconds
        self.clock = clock
        self.ledger = Ledger(store)
        self._cache: dict[str, tuple[float, Policy | None]] = {}

    # -- policies ------------------------------------------------------------------------------

    async def policy(self, tenant: str) -> Policy | None:
        cached = self._cache.get(tenant)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        record = await self.store.get_record(KIND, slot_part(tenant))
        found = Policy.model_validate(record.data["policy"]) if record else None
        found = found or self.configured.get(tenant) or self.configured.get(DEFAULT)
        self._cache[tenant] = (time.monotonic() + POLICY_TTL, found)
        return found

    async def set_policy(self, tenant: str, policy: Policy | None) -> None:
        """Store `tenant`'s budget (None: delete it, so the settings' applies again)."""
        key = slot_part(tenant)
        current = await self.store.get_record(KIND, key)
        if policy is None:
            await self.store.delete_record(KIND, key)
        else:
            data = {"tenant": tenant, "policy": policy.model_dump()}
            record = current.but(data=data) if current else Record(KIND, key, data)
            await self.store.put_record(record, current.version if current else None)
        self._cache.pop(tenant, None)

    async def stored_tenants(self) -> list[str]:
        """The tenants with a budget record, in key order (at most 1,000)."""
        records = await self.store.scan_records(KIND, "", 1000)
        return [str(record.data.get("tenant", record.key)) for record in records]

    # -- admission -----------------------------------------------------------------------------

    def expected(self, job: Job) -> float:
        return minutes(job.maxRuntimeSeconds or self.expected_run_seconds)

    async def charge(self, job: Job) -> list[Record]:
        """The ledger entries that charge new `job` (setting its `budgetCharge`); none when its
        tenant has no budget. Raises BudgetExceeded when a period has not enough left."""
        policy = await self.policy(job.tenant)
        if policy is None:
            job.budgetCharge = None
            return []
        need, start = self.expected(job), job.joinAt or job.createdAt
        limited = policy.day is not None or policy.month is not None
        over = await self.running_overruns(job.tenant) if limited else 0.0
        entries = []
        for period in PERIODS:
            head = await self.ledger.head(chain(job.tenant, period, start))
            limit = policy.limit(period)
            if limit is not None and head.charged + over + need > limit + 1e-6:
                used = replace(head, charged=head.charged + over)
                raise self._exceeded(period, limit, used, need, start)
            entries.append(head.entry(job.id, need, 0.0))
        job.budgetCharge = {"minutes": need, **{p: period_id(p, start) for p in PERIODS}}
        return entries

    async def running_overruns(self, tenant: str) -> float:
        """Minutes by which `tenant`'s running bots have run past their charges: spent, but not
        in the ledger until they end, so admission counts them too."""
        now, active = self.clock(), await self.store.active()
        return sum(self.overrun(job, now) for job in active if job.tenant == tenant)

    async def taken_entry(self, job: Job) -> Record | None:
        """A ledger record that exists (the head of the day `job` would be charged on), or None:
        a create carrying it can only fail, with DuplicateKey first when `job` repeats a key
        (the store contract), so it finds the job holding the key and writes nothing."""
        head = await self.ledger.head(chain(job.tenant, "day", job.joinAt or job.createdAt))
        return Record(LEDGER, entry_key(head.chain, head.seq)) if head.seq else None

    def _exceeded(
        self, period: Period, limit: float, head: Head, need: float, start: datetime
    ) -> BudgetExceeded:
        left = max(round(limit - head.charged, 4), 0.0)
        resets = period_end(period, start)
        wait = max(math.ceil((resets - self.clock()).total_seconds()), 1)
        return BudgetExceeded(
            f"the tenant's {'daily' if period == 'day' else 'monthly'} bot-minute budget has "
            f"{left:g} of {limit:g} minutes left; "
            f"this job is expected to take {need:g} (maxRuntimeSeconds, else "
            "SCHEDULER_EXPECTED_RUN_SECONDS)",
            period=period,
            limitMinutes=limit,
            remainingMinutes=left,
            requiredMinutes=need,
            resetsAt=resets.isoformat().replace("+00:00", "Z"),
            retryAfter=wait,
        )

    # -- settlement ----------------------------------------------------------------------------

    async def settle(self, job: Job, ended: datetime, *, final: bool) -> tuple[list[Record], Any]:
        """The entries that replace `job`'s charge by what its run spent (from startedAt to
        `ended`), and the job's new `budgetCharge`. `final`: the job ends, its charge is given
        back; else it goes back to the queue keeping its charge, its run counted."""
        charge, run = job.budgetCharge, self._uncounted_run(job)
        if charge is None and (run is None or await self.policy(job.tenant) is None):
            return [], charge
        moves: dict[str, list[float]] = {}
        if charge is not None and final:
            for period in PERIODS:
                key = f"{slot_part(job.tenant)}:{charge[period]}:"
                moves.setdefault(key, [0.0, 0.0])[0] -= float(charge["minutes"])
        if run is not None:
            spent = minutes(max((ended - run).total_seconds(), 0.0))
            for period in PERIODS:
                move = moves.setdefault(chain(job.tenant, period, run), [0.0, 0.0])
                move[0] += spent
                move[1] += spent
        entries = []
        for key, (charged, spent) in moves.items():
            if abs(charged) > 1e-9 or abs(spent) > 1e-9:
                entries.append((await self.ledger.head(key)).entry(job.id, charged, spent))
        if run is None:
            return entries, charge
        base = charge or {"minutes": 0.0, **{p: period_id(p, run) for p in PERIODS}}
        return entries, {**base, "counted": _iso(run)}

    @staticmethod
    def _uncounted_run(job: Job) -> datetime | None:
        """The start of `job`'s run when its minutes are not in the ledger yet."""
        if job.startedAt is None:
            return None
        counted = (job.budgetCharge or {}).get("counted")
        return None if counted == _iso(job.startedAt) else job.startedAt

    # -- run time ------------------------------------------------------------------------------

    def overrun(self, job: Job, now: datetime) -> float:
        """Minutes by which running `job` has run past its charge (0 when it has not)."""
        run = self._uncounted_run(job)
        if run is None:
            return 0.0
        charged = float((job.budgetCharge or {}).get("minutes", 0.0))
        return max(minutes((now - run).total_seconds()) - charged, 0.0)

    async def exhausted(self, job: Job, now: datetime, overruns: float) -> bool:
        """Whether overrunning `job` is to be stopped: its tenant's policy is `stop` and the
        charged minutes of a period of its run, with `overruns` (of all the tenant's running
        jobs), pass the limit."""
        run = self._uncounted_run(job)
        policy = await self.policy(job.tenant)
        if run is None or policy is None or policy.onExhausted != "stop":
            return False
        for period in PERIODS:
            limit = policy.limit(period)
            if limit is None:
                continue
            head = await self.ledger.head(chain(job.tenant, period, run))
            if head.charged + overruns > limit + 1e-6:
                return True
        return False

    # -- use -----------------------------------------------------------------------------------

    async def usage(self, tenant: str) -> dict[str, Any]:
        """`tenant`'s budget and, for the current day and month, what is charged and left."""
        now, policy = self.clock(), await self.policy(tenant)
        answer: dict[str, Any] = {
            "tenant": tenant,
            "budget": policy.model_dump() if policy else None,
        }
        for period in PERIODS:
            head = await self.ledger.head(chain(tenant, period, now))
            answer[period] = _use(period, now, head, policy.limit(period) if policy else None)
        return answer


def _use(period: Period, now: datetime, head: Head, limit: float | None) -> dict[str, Any]:
    left = None if limit is None else max(round(limit - head.charged, 4), 0.0)
    return {
        "period": now.astimezone(UTC).strftime("%Y-%m-%d" if period == "day" else "%Y-%m"),
        "limitMinutes": limit,
        "chargedMinutes": head.charged,
        "spentMinutes": head.spent,
        "heldMinutes": round(head.charged - head.spent, 4),
        "remainingMinutes": left,
        "resetsAt": _iso(period_end(period, now)),
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
