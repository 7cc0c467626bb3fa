"""Each backend's own cap, held by claim-then-verify like the global one (core/dispatch.py).

With PLATFORM listing several backends (core/backends/spill.py), the write that claims a job
records the backend the claim is assigned (`Job.backend`). The verifying read then counts the
active jobs per assigned backend and keeps a claim only if it fits its backend's cap
(SCHEDULER_MAX_CONCURRENT_JOBS_<NAME>) beside every *other* active job, besides fitting the
global and per-tenant caps. A job's assigned backend changes only in a claim, which only a
queued job (one that holds no slot) can take, so the argument of core/dispatch.py holds per
backend: of any set of runs alive at once on one backend, the dispatcher whose verifying read
came last saw all of their claims, each with its backend.

Jobs that became active before claims recorded a backend count on the backend their run is on,
else on the first backend.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from core.backends.spill import SpillBackend
from core.models import Job, JobState
from core.ports import Backend, JobStore

ACTIVE = (JobState.PROVISIONING, JobState.RUNNING, JobState.STOPPING)


class BackendSlots:
    """Free slots under each backend's own cap, given the jobs that hold slots."""

    def __init__(self, spill: SpillBackend, holders: Iterable[Job]) -> None:
        self.spill = spill
        self.load = Counter(spill.counted_on(job) for job in holders)

    def has_room(self, name: str) -> bool:
        cap = self.spill.caps[name]
        return cap is None or self.load[name] < cap

    def fits(self, job: Job) -> bool:
        """Whether an active job (a claim) fits the cap of the backend it counts on."""
        return self.has_room(self.spill.counted_on(job))

    def take(self, job: Job) -> None:
        self.load[self.spill.counted_on(job)] += 1

    def assign(self, job: Job) -> None:
        """A claim of `job` was written with its backend: it takes that backend's slot, and the
        backend's health learns of it (a trial start after a cool-down: spill_health.py)."""
        self.take(job)
        self.spill.health.assigned(self.spill.counted_on(job))

    def choose(self, job: Job) -> str | None:
        """The backend a claim of queued `job` is assigned: the first, in PLATFORM order, with
        room whose starts are succeeding; the backend of its previous claim (its start failed,
        its run was lost, or the claim was put back) only when no other such backend has room.
        When every backend is cooling down, the first with room all the same: never stall
        everything. None: no backend it may go to has room."""
        health = self.spill.health
        roomy = [name for name in self.spill.order if self.has_room(name)]
        usable = [name for name in roomy if health.usable(name)]
        if not any(health.usable(name) for name in self.spill.order):
            usable = roomy
        usable.sort(key=lambda name: name == job.backend)  # stable: the order otherwise kept
        return usable[0] if usable else None


async def backend_stats(
    backend: Backend,
    store: JobStore,
    tenant: str | None,
    counts: dict[JobState, int],
    now: datetime,
) -> list[dict[str, Any]]:
    """Each backend: its name, its cap (null: only the global one applies), the caller's active
    jobs on it (`tenant`'s; every tenant's for None), and whether, until when and after how many
    consecutive failed starts it is cooling down (as this process knows it). One backend is
    told from `counts`, with no read."""
    if not isinstance(backend, SpillBackend):
        return [_entry(backend.name, None, sum(counts.get(state, 0) for state in ACTIVE), 0, None)]
    active = [job for job in await store.active() if tenant is None or job.tenant == tenant]
    load = Counter(backend.counted_on(job) for job in active)
    entries = []
    for name in backend.order:
        left = backend.health.cooling_for(name)
        until = now + timedelta(seconds=left) if left is not None else None
        failures = backend.health.states[name].failures
        entries.append(_entry(name, backend.caps[name], load[name], failures, until))
    return entries


def _entry(
    name: str, cap: int | None, active: int, failures: int, until: datetime | None
) -> dict[str, Any]:
    return {
        "name": name,
        "cap": cap,
        "activeJobs": active,
        "coolingDown": until is not None,
        "coolingDownUntil": until.isoformat() if until is not None else None,
        "consecutiveFailures": failures,
    }
