"""On time: how close to its joinAt each bot of a simulated day of meetings starts, with the join
lead the scheduler learns (core/leads.py) beside fixed leads. Simulated time: no real sleeps.

A day of MEETINGS meetings (joinAt between 08:00 and 18:00, most on the hour or the half hour,
each submitted 10 minutes to 6 hours ahead, as a calendar sync would) goes through the real
Scheduler on the memory store. Its backend's starts take a random while (lognormal, clipped:
2-60 s by default), on a simulated clock the driver moves from one event (a submit, a job due, a
run ending) to the next, drains on the polling interval's grid as the timer would. A start "takes"
its latency through a per-task offset of the clock, so parallel starts end at claim + latency
each, as on a platform, and the scheduler measures claim -> running as it does in production.

    .venv/bin/python bench/ontime.py [--meetings 1000] [--seed 7]

Figures: startedAt - joinAt (p50 / p95, seconds; negative is early), how many bots joined late
(after joinAt) and how many jobs were `missed` (not started by joinAt + late tolerance).
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import heapq
import math
import random
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.table import Row, Sample, render
from core.config import Settings
from core.leads import KIND, MISSED, SAMPLES_KEPT
from core.models import Execution, ExecutionRef, Job, JobSpec
from core.records import Record
from core.scheduler import Scheduler
from core.stores.memory import MemoryStore

MEETINGS = 1000
DAY = datetime(2030, 1, 7, tzinfo=UTC)  # a Monday, 00:00
RUN_SECONDS = (60, 300)  # how long a run lasts: short, so few are active at once (cheap)
TOLERANCE = 120.0
END_POLL = 60.0  # how soon a run's end is polled (only frees its slot: the cap is not reached)
FIXED_LEAD = 60.0  # join_lead_seconds' default
LATE_GOAL = 0.05  # of the bots: a lead of the p95 of start latencies aims at 5 % late at most
OFFSET: contextvars.ContextVar[float] = contextvars.ContextVar("offset", default=0.0)


@dataclass(frozen=True)
class Latency:
    """A backend's start latency: lognormal with this median and sigma, clipped to [low, high]."""

    name: str
    median: float
    sigma: float
    low: float
    high: float

    def draw(self, rng: random.Random) -> float:
        value = rng.lognormvariate(math.log(self.median), self.sigma)
        return min(max(value, self.low), self.high)


PROFILES = (
    Latency("2-60 s (median 12 s)", 12.0, 0.7, 2.0, 60.0),
    Latency("10-240 s (median 45 s, cold image pulls)", 45.0, 0.8, 10.0, 240.0),
)


class SimClock:
    """The scheduler's clock: the driver's `now`, plus the offset of the task that reads it
    (a start that took its latency)."""

    def __init__(self) -> None:
        self.now = DAY

    def __call__(self) -> datetime:
        return self.now + timedelta(seconds=OFFSET.get())


class LatentBackend:
    """Starts that take `latency` each (on the simulated clock); runs that end on their own."""

    name = "sim"

    def __init__(self, clock: SimClock, latency: Latency, rng: random.Random) -> None:
        self.clock, self.latency, self.rng = clock, latency, rng
        self.ends: dict[str, datetime] = {}

    async def start(self, job: Job) -> ExecutionRef:
        OFFSET.set(self.latency.draw(self.rng))  # this start's task now reads claim + latency
        self.ends[job.id] = self.clock() + timedelta(seconds=self.rng.uniform(*RUN_SECONDS))
        return ExecutionRef(backend=self.name, id=job.id)

    async def status(self, ref: ExecutionRef) -> Execution:
        ended = self.clock() >= self.ends[ref.id]
        return Execution(phase="succeeded", exitCode=0) if ended else Execution(phase="running")

    async def stop(self, ref: ExecutionRef) -> None:
        self.ends[ref.id] = min(self.ends[ref.id], self.clock())

    async def find(self, job_id: str) -> ExecutionRef | None:
        return ExecutionRef(backend=self.name, id=job_id) if job_id in self.ends else None

    async def runs(self) -> dict[str, ExecutionRef]:
        now = self.clock()
        return {
            j: ExecutionRef(backend=self.name, id=j) for j, end in self.ends.items() if end > now
        }

    async def logs(self, ref: ExecutionRef, tail: int = 200) -> str:
        return ""

    async def close(self) -> None:
        return None


def meetings(rng: random.Random, count: int) -> list[tuple[datetime, datetime]]:
    """(submit time, joinAt) of `count` meetings, by submit time."""
    plan = []
    for _ in range(count):
        minute = rng.choice((0, 30)) if rng.random() < 0.8 else rng.randrange(60)
        join = DAY + timedelta(hours=rng.randrange(8, 18), minutes=minute)
        plan.append((join - timedelta(seconds=rng.uniform(600, 6 * 3600)), join))
    return sorted(plan)


def settings(lead: float | None) -> Settings:
    """The learned lead (None), or a fixed one: min = max = the default lead."""
    fixed = {} if lead is None else {"join_lead_min_seconds": lead, "join_lead_max_seconds": lead}
    return Settings(
        max_concurrent_jobs=500,
        join_lead_seconds=FIXED_LEAD if lead is None else lead,
        late_tolerance_seconds=TOLERANCE,
        polling_interval_ms=5000,
        **fixed,
    )


@dataclass
class Day:
    offsets: Sample  # startedAt - joinAt, seconds
    late: int
    missed: int
    lead: float  # the lead at the end of the day


def tick(moment: datetime, step: float) -> datetime:
    """The first tick of the timer's grid (every `step` seconds from DAY) at or after `moment`."""
    return DAY + timedelta(seconds=math.ceil((moment - DAY).total_seconds() / step) * step)


async def simulate(
    latency: Latency, lead: float | None, count: int, seed: int, warm: bool = False
) -> Day:
    """One day. The timer drains on its grid, but only at the ticks where a job is due or a
    run ends (a run's end is noticed within END_POLL): the others would find nothing to do.
    `warm`: the store holds the samples of the day before (the last SAMPLES_KEPT starts)."""
    rng = random.Random(seed)
    clock, config = SimClock(), settings(lead)
    backend = LatentBackend(clock, latency, random.Random(seed + 1))
    store = MemoryStore()
    if warm:
        yesterday = random.Random(seed + 2)
        samples = [latency.draw(yesterday) for _ in range(SAMPLES_KEPT)]
        await store.put_record(Record(KIND, backend.name, {"samples": samples}), None)
    scheduler = Scheduler(store, backend, config, clock=clock)
    plan, jobs, wakes, ending = meetings(rng, count), list[Job](), list[datetime](), set[str]()
    step = config.polling_interval
    while plan or wakes:
        moment = min(([tick(plan[0][0], step)] if plan else []) + wakes[:1])
        clock.now = moment
        while plan and plan[0][0] <= moment:  # the calendar sync: jobs submitted ahead
            spec = JobSpec(meetingUrl=url(len(jobs)), joinAt=plan.pop(0)[1])
            job, _ = await scheduler.submit("bench", spec)
            jobs.append(job)
            for wake in due_ticks(job, moment, step, config):
                heapq.heappush(wakes, wake)
        if not wakes or wakes[0] > moment:
            continue  # nothing due nor ending at this tick: the timer's drain finds nothing
        while wakes and wakes[0] <= moment:
            heapq.heappop(wakes)
        await scheduler.drain_once()
        for job_id in backend.ends.keys() - ending:  # started now: its end will be polled
            ending.add(job_id)
            heapq.heappush(wakes, tick(backend.ends[job_id], END_POLL))
    return await summary(scheduler, jobs)


def due_ticks(job: Job, moment: datetime, step: float, config: Settings) -> list[datetime]:
    """The ticks at which `job` may become ready: its notBefore, and before it every tick from
    joinAt less the largest lead (a lead learned later starts it earlier than its notBefore)."""
    due = tick(max(job.notBefore, moment), step)
    assert job.joinAt is not None
    first = tick(max(job.joinAt - timedelta(seconds=config.join_lead_max_seconds), moment), step)
    count = max(int((due - first).total_seconds() // step), 0)
    return [first + timedelta(seconds=step * n) for n in range(count)] + [due]


def url(n: int) -> str:
    """A Google Meet URL of its own for meeting `n` (abc-defg-hij: letters only)."""
    letters = "".join(chr(97 + (n // 26**i) % 26) for i in range(10))
    return f"https://meet.google.com/{letters[:3]}-{letters[3:7]}-{letters[7:]}"


async def summary(scheduler: Scheduler, jobs: list[Job]) -> Day:
    offsets, late, missed = Sample(), 0, 0
    for job in jobs:
        stored = await scheduler.store.get(job.id)
        assert stored is not None and stored.joinAt is not None
        if stored.reason == MISSED:
            missed += 1
        elif stored.startedAt is not None:
            offset = (stored.startedAt - stored.joinAt).total_seconds()
            offsets.add(offset)
            late += offset > 0
        else:
            raise AssertionError(f"job {job.id} neither started nor missed: {stored.status}")
    return Day(offsets, late, missed, scheduler.leads.current().seconds)


def describe(day: Day) -> str:
    p50, p95 = day.offsets.median, day.offsets.percentile(0.95)
    return f"{p50:+.0f} / {p95:+.0f} s; late {day.late}, missed {day.missed}"


def rows(count: int = MEETINGS, seed: int = 7) -> list[Row]:
    """Per latency profile: a fixed lead of FIXED_LEAD s (the floor, the default) against the
    lead learned, on the first day (cold: no samples yet) and on any later day (warm). The goal:
    no job missed, and at most LATE_GOAL of the bots late (what a p95 lead aims at)."""
    found = []
    for latency in PROFILES:
        floor = asyncio.run(simulate(latency, FIXED_LEAD, count, seed))
        name = f"{count:,} meetings, starts {latency.name}: startedAt - joinAt p50 / p95"
        if latency is PROFILES[0]:
            none = asyncio.run(simulate(latency, 0.0, count, seed))
            found.append(Row(f"{name}, no lead", "", describe(none), None))
        for warm in (False, True):
            ours = asyncio.run(simulate(latency, None, count, seed, warm))
            day = "any later day" if warm else "first day"
            found.append(
                Row(
                    f"{name}: fixed {FIXED_LEAD:g} s lead (floor) vs learned, {day} "
                    f"(ends at {ours.lead:.0f} s)",
                    describe(floor),
                    describe(ours),
                    ours.late / count if ours.missed == 0 else math.inf,
                    f"none missed, ≤ {LATE_GOAL:.0%} late",
                    lambda late: late <= LATE_GOAL,
                    ratio_text=f"late {floor.late} → {ours.late}",
                )
            )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--meetings", type=int, default=MEETINGS)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    started = time.perf_counter()
    table = render(rows(args.meetings, args.seed))
    print(table)
    print(f"\n({time.perf_counter() - started:.1f} s of real time)", file=sys.stderr)


if __name__ == "__main__":
    main()
