"""The claim's budget with the reservations (core/reservations.py) of jobs not active yet.

`ReservedBudget` counts, beside the active jobs (core/dispatch.py Budget), for each bucket from
now on, the live reservations of jobs not active yet. A job whose reservation holds the current
bucket may take a slot like any job: its own. Any other job takes one only if, in every bucket its
run may cover (from now, its maxRuntimeSeconds or `expected_run_seconds`, at most MAX_BUCKETS),

    active + claimed this round + reserved (not active, not itself) < the cap

and the same for its tenant under the per-tenant cap. So no job is claimed into a slot that a
reservation existing at its claim needs within its expected run. A run that outlasts its expected
length, or one claimed before the reservation was made, may still hold such a slot: the scheduled
job then waits for a free one (the caps themselves always hold: core/dispatch.py verifies them).

The view is one scan per bucket (MAX_BUCKETS of them) and one read per job they name, kept
VIEW_TTL seconds per store in a process; a reservation made in the process clears it. A job that
ended within VIEW_TTL may still be counted (a slot stays held a little longer), one reserved by
another process within VIEW_TTL not yet (as if it had been made after the claim).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from core.config import Settings
from core.models import Job
from core.ports import JobStore
from core.records import Record
from core.reservations import (
    KIND,
    MAX_BUCKETS,
    SCAN_EXTRA,
    bucket_of,
    bucket_start,
    holds,
    store_state,
)

VIEW_TTL = 2.0  # seconds a process keeps its view of the reservations


class Budget:
    """Free slots under the global and the per-tenant cap, given the jobs that hold slots."""

    def __init__(self, settings: Settings, holders: Iterable[Job]) -> None:
        load = Counter(job.tenant for job in holders)
        self.free = settings.max_concurrent_jobs - sum(load.values())
        self.per_tenant = settings.max_concurrent_per_tenant
        self.load = load

    def fits(self, tenant: str) -> bool:
        if self.free <= 0:
            return False
        return not self.per_tenant or self.load[tenant] < self.per_tenant

    def take(self, tenant: str) -> None:
        self.free -= 1
        self.load[tenant] += 1


@dataclass(frozen=True)
class Reserved:
    """(jobId, tenant) of the live reservations of each bucket from `first` on."""

    first: int
    buckets: list[list[tuple[str, str]]]


async def reserved_view(store: JobStore, settings: Settings, now: datetime) -> Reserved:
    """The live reservations of the MAX_BUCKETS buckets from now: one scan per bucket, and one
    read per job they name; kept VIEW_TTL seconds per store."""
    first = bucket_of(now.timestamp(), settings)
    state = store_state(store)
    if state.view is not None and state.view[0] > time.monotonic() and state.view[1] == first:
        kept: Reserved = state.view[2]
        return kept
    limit = settings.max_concurrent_jobs + SCAN_EXTRA
    scans = await asyncio.gather(
        *(
            store.scan_records(KIND, f"res:{bucket_start(index, settings)}:", limit)
            for index in range(first, first + MAX_BUCKETS)
        )
    )
    ids = sorted({record.data.get("jobId") or "" for scan in scans for record in scan} - {""})
    jobs = dict(zip(ids, await asyncio.gather(*(store.get(i) for i in ids)), strict=True))
    view = Reserved(first, [_holders_of(scan, jobs) for scan in scans])
    state.view = (time.monotonic() + VIEW_TTL, first, view)
    return view


def _holders_of(scan: list[Record], jobs: dict[str, Job | None]) -> list[tuple[str, str]]:
    """(jobId, tenant) of the slots in `scan` their jobs still hold."""
    held = [r for r in scan if holds(jobs.get(r.data.get("jobId") or ""), r)]
    return [(r.data["jobId"], r.data.get("tenant", "")) for r in held]


class ReservedBudget:
    """The claim's budget: `base` (the active jobs') with the reservations (module docstring)."""

    def __init__(
        self,
        base: Budget,
        reserved: Reserved,
        active: Iterable[str],
        settings: Settings,
        now: datetime,
    ) -> None:
        skip = set(active)
        self.base = base
        self.per_tenant = base.per_tenant
        self._buckets = [[entry for entry in b if entry[0] not in skip] for b in reserved.buckets]
        self._first = reserved.first
        self._settings = settings
        self._now = now.timestamp()
        self._taking: str | None = None

    @property
    def free(self) -> int:
        return self.base.free

    def fits(self, tenant: str, job: Job | None = None) -> bool:
        """Whether `job` (of `tenant`) may be claimed now; a `take` after a True takes the slot
        (its reservation's, when it has one for the current bucket)."""
        self._taking = None
        if not self.base.fits(tenant):
            return False
        if job is None:
            return True
        if self._buckets and any(entry[0] == job.id for entry in self._buckets[0]):
            self._taking = job.id  # its own reservation: its slot
            return True
        return self._leaves_reservations(tenant, job)

    def take(self, tenant: str) -> None:
        self.base.take(tenant)
        if self._taking is not None:
            self._buckets = [[e for e in b if e[0] != self._taking] for b in self._buckets]
            self._taking = None

    def _leaves_reservations(self, tenant: str, job: Job) -> bool:
        """Whether a slot is left for every reservation over `job`'s expected run."""
        end = self._now + (job.maxRuntimeSeconds or self._settings.expected_run_seconds)
        span = math.ceil(end / self._settings.reservation_bucket_seconds) - self._first
        others = [[e[1] for e in b if e[0] != job.id] for b in self._buckets[: max(span, 1)]]
        if self.base.free - max((len(b) for b in others), default=0) <= 0:
            return False
        if not self.per_tenant:
            return True
        own = max((b.count(tenant) for b in others), default=0)
        return self.base.load[tenant] + own < self.per_tenant


async def reserved_budget(
    store: JobStore, settings: Settings, base: Budget, active: Sequence[Job], now: datetime
) -> ReservedBudget:
    """`base` (the active jobs' budget) with the reservations from `now` on."""
    reserved = await reserved_view(store, settings, now)
    return ReservedBudget(base, reserved, (job.id for job in active), settings, now)
