"""Meeting time: when a scheduled job is dispatched, and when it is too late to start it.

A job with `joinAt` is dispatched `lead` seconds before it, the lead learned per backend from how
long its starts take: the p95 of the last SAMPLES_KEPT start latencies (claim -> `running`
written), plus `join_lead_margin_seconds`, kept within [join_lead_min_seconds,
join_lead_max_seconds]; `join_lead_seconds` until MIN_SAMPLES starts were measured.

The samples are a record (core/records.py) of kind `lead` keyed by the backend's name, shared by
every instance draining the store and updated by compare-and-set (the samples of one instance's
starts that come together are written together; a write that loses WRITE_TRIES races to other
instances is dropped, which only thins the sample). Each instance keeps a copy it reads again at
most every REFRESH_SECONDS, so a submit reads the store only when its copy is stale.

A scheduled job that has not started by joinAt + `late_tolerance_seconds` is past its meeting:
it fails with reason `missed` instead of starting (a deadline of its own that comes first still
fails it `expired`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from core.config import Settings
from core.errors import Conflict, NotFound
from core.models import Job
from core.ports import RecordStore
from core.records import Record, key_part

KIND = "lead"
SAMPLES_KEPT = 50  # the newest start latencies kept per backend
MIN_SAMPLES = 5  # fewer than this: the configured join_lead_seconds
REFRESH_SECONDS = 30.0  # how stale an instance's copy of the samples may get
WRITE_TRIES = 2  # compare-and-set attempts of one write of samples
MISSED = "missed"  # the reason of a job that could not start within its meeting's window
log = logging.getLogger("botsched.scheduler")


@dataclass(frozen=True)
class Lead:
    """The join lead of a backend and what it was learned from."""

    seconds: float
    p95: float | None  # of the start latencies; None before any was measured
    samples: int


def p95(values: Sequence[float]) -> float:
    """The nearest-rank 95th percentile of `values` (not empty)."""
    ordered = sorted(values)
    return ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)]


def learned_lead(samples: Sequence[float], settings: Settings) -> Lead:
    """The lead `samples` (start latencies, seconds) give under `settings`."""
    if not samples:
        return Lead(settings.join_lead_seconds, None, 0)
    high = p95(samples)
    if len(samples) < MIN_SAMPLES:
        return Lead(settings.join_lead_seconds, high, len(samples))
    lead = high + settings.join_lead_margin_seconds
    low, top = settings.join_lead_min_seconds, settings.join_lead_max_seconds
    return Lead(min(max(lead, low), max(low, top)), high, len(samples))


def read_ahead(now: datetime, lead: float, settings: Settings) -> datetime:
    """How far the dispatcher reads the queue: a scheduled job was queued due at joinAt less
    the lead of its submit, never less than the smallest lead, so any job that `lead` (grown
    since) makes ready is due by now + (lead - smallest lead)."""
    smallest = min(settings.join_lead_min_seconds, settings.join_lead_seconds)
    return now + timedelta(seconds=max(lead - smallest, 0.0))


def ready(job: Job, lead: float, now: datetime) -> bool:
    """Whether the queued `job` may start now: its notBefore has come, or its joinAt is within
    the current `lead` (learned since its submit: a lead frozen at submit would start a job
    submitted before the backend was measured late)."""
    if job.notBefore <= now:
        return True
    return job.joinAt is not None and job.joinAt - timedelta(seconds=lead) <= now


def start_by(job: Job, settings: Settings) -> datetime | None:
    """The last moment a scheduled job may start: joinAt + late_tolerance_seconds; None for a
    job without joinAt (it has no meeting window)."""
    if job.joinAt is None:
        return None
    return job.joinAt + timedelta(seconds=settings.late_tolerance_seconds)


def missed(job: Job, settings: Settings, now: datetime) -> bool:
    """Whether `job`'s meeting window has passed: it must not start any more."""
    window = start_by(job, settings)
    return window is not None and window <= now


def effective_deadline(job: Job, settings: Settings, before: Job | None = None) -> datetime | None:
    """The deadline to store with a new (or rescheduled) job, so that the expiry pass fails it
    on time even while it waits behind the caps: its own deadline, or for a scheduled job the
    end of its meeting window when that comes first. `before`: the job as it was before its
    joinAt changed; a deadline that was only the end of its old window is not kept."""
    deadline = job.deadline
    if before is not None and deadline is not None and deadline == start_by(before, settings):
        deadline = None
    window = start_by(job, settings)
    if window is None or (deadline is not None and deadline <= window):
        return deadline
    return window


def samples_of(record: Record | None) -> list[float]:
    """The latencies a lead record holds (anything that is not one is left out)."""
    values = (record.data.get("samples") if record else None) or []
    if not isinstance(values, list):
        return []
    return [float(v) for v in values if isinstance(v, int | float) and 0 <= v < math.inf]


class Leads:
    """One backend's learned lead: a cached copy of its samples, and the writes that add one."""

    def __init__(
        self,
        store: RecordStore,
        settings: Settings,
        backend: str,
        *,
        refresh_seconds: float = REFRESH_SECONDS,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.settings = settings
        self.key = key_part(backend or "backend")
        self.refresh_seconds = refresh_seconds
        self._timer = timer
        self._samples: list[float] = []
        self._read_at: float | None = None
        self._pending: list[float] = []  # samples waiting for the write in flight
        self._writing = False

    def current(self) -> Lead:
        """The lead from this instance's copy, however old (never reads the store)."""
        return learned_lead(self._samples, self.settings)

    async def lead(self) -> Lead:
        """The lead, reading the samples again when this instance's copy is stale."""
        if self._read_at is None or self._timer() - self._read_at >= self.refresh_seconds:
            await self.refresh()
        return self.current()

    async def refresh(self) -> None:
        """Read the samples again; a store that cannot answer leaves the copy as it was."""
        self._read_at = self._timer()
        try:
            self._samples = samples_of(await self.store.get_record(KIND, self.key))
        except Exception:
            log.warning("cannot read the learned join lead; keeping %s", self.current())

    async def record(self, seconds: float) -> None:
        """Add a start latency. Samples recorded while this instance writes are written
        together next, so a burst of starts is one or two writes. Never raises."""
        self._pending.append(round(max(seconds, 0.0), 3))
        if self._writing:
            return
        self._writing = True
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._write(batch)
        finally:
            self._writing = False

    async def _write(self, batch: list[float]) -> None:
        """Compare-and-set the samples with `batch` added; a race lost twice drops the batch."""
        for _ in range(WRITE_TRIES):
            try:
                written = await self._append(batch)
            except (Conflict, NotFound):
                continue  # another instance wrote meanwhile: read its samples and try again
            except Exception:
                log.warning("cannot record start latencies for the join lead", exc_info=True)
                return
            self._samples, self._read_at = samples_of(written), self._timer()
            return

    async def _append(self, batch: list[float]) -> Record:
        current = await self.store.get_record(KIND, self.key)
        data = {"samples": [*samples_of(current), *batch][-SAMPLES_KEPT:]}
        if current is None:
            return await self.store.put_record(Record(KIND, self.key, data), None)
        return await self.store.put_record(current.but(data=data), current.version)
