"""Benchmarks that print a table (no assertions: these machines are shared and noisy).

1. `due(k)` on the SQLite store as the queue grows: with the queue index the cost per call should
   stay flat (compare the ratio column), not grow with the queue.
2. Submit + drain throughput through the scheduler on each store with a no-op backend.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import Settings
from core.models import ExecutionRef, Job, JobSpec, JobState, utcnow
from core.scheduler import Scheduler
from core.stores.memory import MemoryStore
from core.stores.sqlite import SqliteStore
from tests.fakes import FakeBackend


def make_job(n: int) -> Job:
    now = utcnow()
    return Job(
        meetingUrl=f"https://meet.example/{n}",
        priority=n % 10,
        id=str(uuid.uuid4()),
        tenant="bench",
        createdAt=now + timedelta(microseconds=n),
        updatedAt=now,
        notBefore=now,
    )


async def due_cost(path: Path, sizes: list[int], k: int = 10, calls: int = 200) -> None:
    store = SqliteStore(path)
    await store.open()
    print(f"\n## SQLite due({k}) by queue size ({calls} calls each)\n")
    print("| queued jobs | µs per due() | ratio to smallest |")
    print("|---:|---:|---:|")
    count, base = 0, 0.0
    for size in sizes:
        while count < size:
            await store.create(make_job(count))
            count += 1
        started = time.perf_counter()
        for _ in range(calls):
            await store.due(utcnow(), k)
        per_call = (time.perf_counter() - started) / calls * 1e6
        base = base or per_call
        print(f"| {size} | {per_call:.0f} | {per_call / base:.2f} |")
    await store.close()


class NoopBackend(FakeBackend):
    async def start(self, job: Job) -> ExecutionRef:
        ref = await super().start(job)
        self.finish(job.id)
        return ref


async def throughput(name: str, store: MemoryStore | SqliteStore, jobs: int) -> tuple[float, float]:
    await store.open()
    settings = Settings(max_concurrent_jobs=50)
    scheduler = Scheduler(store, NoopBackend(), settings)
    spec = JobSpec(meetingUrl="https://meet.example/x")
    started = time.perf_counter()
    for _ in range(jobs):
        await scheduler.submit("bench", spec)
    submitted = time.perf_counter() - started
    started = time.perf_counter()
    while (await store.counts())[JobState.QUEUED] > 0:
        await scheduler.drain_once()
    await scheduler.drain_once()
    drained = time.perf_counter() - started
    await store.close()
    return jobs / submitted, jobs / drained


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        await due_cost(Path(tmp) / "due.db", [1_000, 10_000, 50_000])
        jobs = 2_000
        print(f"\n## Submit and drain {jobs} jobs (cap 50, no-op backend)\n")
        print("| store | submits/s | jobs drained/s |")
        print("|---|---:|---:|")
        for name, store in [
            ("memory", MemoryStore()),
            ("sqlite", SqliteStore(Path(tmp) / "tp.db")),
        ]:
            submits, drains = await throughput(name, store, jobs)
            print(f"| {name} | {submits:.0f} | {drains:.0f} |")


if __name__ == "__main__":
    asyncio.run(main())
