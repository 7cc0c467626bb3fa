"""The in-process store's indexes (due, waiting, deadlines, counts) agree with a plain scan of
its jobs, whatever order writes come in and whichever way the clock given to `due` moves."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from core.models import Job, JobState
from core.stores.memory import MemoryStore
from core.stores.sorted_keys import SortedKeys

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _job(rng: random.Random, n: int) -> Job:
    moment = T0 + timedelta(seconds=rng.randint(-50, 50))
    deadline = moment + timedelta(seconds=rng.randint(1, 80)) if rng.random() < 0.5 else None
    return Job(
        id=f"job-{n:04d}",
        tenant=rng.choice(["a", "b"]),
        meetingUrl="https://meet.example.com/x",
        priority=rng.randint(0, 3),
        createdAt=moment,
        updatedAt=moment,
        notBefore=moment,
        deadline=deadline,
    )


def _expected_due(jobs: list[Job], now: datetime, limit: int) -> list[str]:
    queued = [job for job in jobs if job.status is JobState.QUEUED and job.notBefore <= now]
    queued.sort(key=lambda job: (-job.priority, job.sort_time, job.id))
    return [job.id for job in queued[:limit]]


def _expected_expiring(jobs: list[Job], now: datetime, limit: int) -> list[str]:
    expired = [
        job
        for job in jobs
        if job.status is JobState.QUEUED and job.deadline is not None and job.deadline <= now
    ]
    expired.sort(key=lambda job: (job.deadline, job.id))
    return [job.id for job in expired[:limit]]


async def test_indexes_match_a_scan_as_jobs_change_and_time_moves_both_ways() -> None:
    rng = random.Random(11)
    store = MemoryStore()
    for n in range(300):
        await store.create(_job(rng, n))
    for _ in range(400):
        now = T0 + timedelta(seconds=rng.randint(-60, 60))
        jobs = [job for job in [await store.get(f"job-{n:04d}") for n in range(300)] if job]
        limit = rng.randint(1, 40)
        assert [job.id for job in await store.due(now, limit)] == _expected_due(jobs, now, limit)
        expiring = [job.id for job in await store.expiring(now, limit)]
        assert expiring == _expected_expiring(jobs, now, limit)
        for tenant in ("a", "b", None):
            counts = await store.counts(tenant)
            for state in JobState:
                owned = [j for j in jobs if tenant is None or j.tenant == tenant]
                assert counts[state] == sum(job.status is state for job in owned)
        job = rng.choice(jobs)
        if job.version is not None:
            status = rng.choice([JobState.QUEUED, JobState.PROVISIONING, JobState.CANCELLED])
            later = job.notBefore + timedelta(seconds=rng.randint(-20, 20))
            changed = job.model_copy(update={"status": status, "notBefore": later})
            await store.update(changed, job.version)


def test_sorted_keys_stay_sorted_through_adds_and_removes() -> None:
    rng = random.Random(5)
    keys = SortedKeys()
    reference: list[str] = []
    for _ in range(5000):
        if reference and rng.random() < 0.45:
            key = rng.choice(reference)
            reference.remove(key)
            keys.remove(key)
        else:
            key = f"{rng.randint(0, 20):02d}{rng.random()}"
            reference.append(key)
            keys.add(key)
    assert list(keys) == sorted(reference)
    assert len(keys) == len(reference)
    assert keys.first() == min(reference)


def test_sorted_keys_added_in_order_mixed_with_others_stay_sorted() -> None:
    """Keys after every other one (times that only grow) take the append path; chunks still
    split, and keys added before them or removed keep the order."""
    rng = random.Random(7)
    keys = SortedKeys()
    reference: list[str] = []
    for n in range(3000):
        last = rng.random() < 0.8  # after every key so far
        key = f"{n:06d}" if last else f"{rng.randint(0, n):06d}~{rng.random()}"
        reference.append(key)
        keys.add(key)
        if rng.random() < 0.1:
            gone = rng.choice(reference)
            reference.remove(gone)
            keys.remove(gone)
    assert list(keys) == sorted(reference)
    assert list(keys.iter_from("001500")) == [k for k in sorted(reference) if k >= "001500"]
