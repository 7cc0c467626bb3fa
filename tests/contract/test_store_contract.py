"""The JobStore contract, run against every store (see the `store` fixture in conftest)."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import AsyncIterator
from datetime import timedelta, timezone
from pathlib import Path

import pytest

from core.errors import Conflict, DuplicateKey, NotFound
from core.models import ExecutionRef, Job, JobState
from core.ports import JobStore
from core.stores.sqlite import ACTIVE_SQL, DUE_SQL, EXPIRING_SQL, SqliteStore, list_sql
from tests.contract.conftest import BASE, STORES, MakeJob, every_store

NOW = BASE + timedelta(hours=1)


def ids(jobs: list[Job]) -> list[str]:
    return [job.id for job in jobs]


async def create_all(store: JobStore, jobs: list[Job]) -> list[Job]:
    return [await store.create(job) for job in jobs]


# -- create / get --


async def test_create_get_round_trip(store: JobStore, make_job: MakeJob) -> None:
    plus_two = timezone(timedelta(hours=2))
    job = make_job(
        botName="Note Taker",
        email="someone@example.com",
        recordingMode="gallery_view",
        priority=42,
        config={"nested": {"list": [1, 2.5, "x", None, True]}, "flag": False},
        joinAt=BASE + timedelta(minutes=5),
        deadline=(BASE + timedelta(minutes=30)).astimezone(plus_two),
        maxRuntimeSeconds=3600,
        dedupKey="dedup-1",
        cpu="2",
        memory="4Gi",
        metadata={"team": "sales", "ticket": "42"},
        status=JobState.RUNNING,
        idempotencyKey="idem-1",
        attempts=2,
        error="previous failure",
        reason="retrying",
        exitCode=3,
        execution=ExecutionRef(backend="docker", id="bot-123"),
        startedAt=BASE + timedelta(seconds=61, microseconds=456789),
        completedAt=None,
        leaseOwner="worker-a",
        leaseUntil=BASE + timedelta(seconds=120),
    )
    created = await store.create(job)
    assert created.version is not None
    assert created.model_dump(exclude={"version"}) == job.model_dump(exclude={"version"})

    loaded = await store.get(job.id)
    assert loaded is not None
    assert loaded == created
    assert loaded.deadline == job.deadline
    assert loaded.startedAt == BASE + timedelta(seconds=61, microseconds=456789)
    assert loaded.execution == ExecutionRef(backend="docker", id="bot-123")
    assert loaded.config == {"nested": {"list": [1, 2.5, "x", None, True]}, "flag": False}
    assert loaded.status is JobState.RUNNING


async def test_get_missing_is_none(store: JobStore) -> None:
    assert await store.get("no-such-job") is None


async def test_callers_cannot_mutate_stored_jobs(store: JobStore, make_job: MakeJob) -> None:
    job = make_job(config={"a": {"b": 1}})
    created = await store.create(job)
    job.config["a"]["b"] = 2
    created.config["a"]["b"] = 3
    created.status = JobState.FAILED
    loaded = await store.get(job.id)
    assert loaded is not None
    loaded.config["a"]["b"] = 4
    again = await store.get(job.id)
    assert again is not None
    assert again.config == {"a": {"b": 1}}
    assert again.status is JobState.QUEUED


# -- list --


async def test_list_newest_first_filtered_by_tenant_and_status(
    store: JobStore, make_job: MakeJob
) -> None:
    t1 = [
        make_job(offset=10),
        make_job(offset=30, status=JobState.RUNNING),
        make_job(offset=20),
        make_job(offset=30),  # same createdAt as the second: ordered by id desc
        make_job(offset=5, status=JobState.RUNNING),
    ]
    t2 = [make_job(tenant="t2", offset=25), make_job(tenant="t2", offset=1)]
    await create_all(store, t1 + t2)

    def newest_first(jobs: list[Job]) -> list[str]:
        return ids(sorted(jobs, key=lambda job: (job.createdAt, job.id), reverse=True))

    page = await store.list_jobs("t1")
    assert ids(page.jobs) == newest_first(t1)
    assert page.nextCursor is None

    running = await store.list_jobs("t1", status=JobState.RUNNING)
    assert ids(running.jobs) == newest_first([t1[1], t1[4]])

    everyone = await store.list_jobs(None)
    assert ids(everyone.jobs) == newest_first(t1 + t2)

    queued_everywhere = await store.list_jobs(None, status=JobState.QUEUED)
    assert ids(queued_everywhere.jobs) == newest_first([t1[0], t1[2], t1[3], *t2])

    assert (await store.list_jobs("t3")).jobs == []


@pytest.mark.parametrize("tenant", ["t1", None])
@pytest.mark.parametrize("limit", [1, 2, 3, 9])
async def test_list_paging_covers_every_job_once(
    store: JobStore, make_job: MakeJob, tenant: str | None, limit: int
) -> None:
    jobs = [make_job(offset=offset) for offset in (0, 1, 1, 1, 2, 3, 3, 4, 5)]
    others = [make_job(tenant="t2", offset=offset) for offset in (1, 3)]
    await create_all(store, jobs + others)
    expected = jobs if tenant else jobs + others
    expected_ids = ids(sorted(expected, key=lambda job: (job.createdAt, job.id), reverse=True))

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await store.list_jobs(tenant, limit=limit, cursor=cursor)
        assert len(page.jobs) <= limit
        seen += ids(page.jobs)
        pages += 1
        cursor = page.nextCursor
        if cursor is None:
            break
        assert pages <= len(expected_ids)
    assert seen == expected_ids
    assert pages == -(-len(expected_ids) // limit)  # no empty trailing page


async def test_list_paging_with_status(store: JobStore, make_job: MakeJob) -> None:
    running = [make_job(offset=i, status=JobState.RUNNING) for i in range(5)]
    await create_all(store, running + [make_job(offset=i) for i in range(5)])
    first = await store.list_jobs("t1", status=JobState.RUNNING, limit=3)
    assert first.nextCursor is not None
    second = await store.list_jobs("t1", status=JobState.RUNNING, limit=3, cursor=first.nextCursor)
    assert second.nextCursor is None
    assert ids(first.jobs) + ids(second.jobs) == ids(running[::-1])


# -- due / expiring / active / counts --


async def test_due_order_filters_and_limit(store: JobStore, make_job: MakeJob) -> None:
    low_old = make_job(priority=1, offset=-50)
    high_new = make_job(priority=9, offset=100)
    mid_created_10 = make_job(priority=5, offset=10)
    mid_join_early = make_job(priority=5, offset=20, joinAt=BASE + timedelta(seconds=5))
    mid_join_late = make_job(priority=5, offset=0, joinAt=BASE + timedelta(seconds=15))
    tie_a = make_job(id="a" * 32, priority=5, offset=12)
    tie_b = make_job(id="b" * 32, priority=5, offset=12)
    top_but_later = make_job(priority=100, notBefore=NOW + timedelta(seconds=1))
    ready_exactly_now = make_job(priority=0, notBefore=NOW)
    running = make_job(priority=100, status=JobState.RUNNING)
    provisioning = make_job(priority=100, status=JobState.PROVISIONING)
    completed = make_job(priority=100, status=JobState.COMPLETED)
    cancelled = make_job(priority=100, status=JobState.CANCELLED)
    other_tenant = make_job(tenant="t2", priority=7)
    jobs = [
        tie_b, low_old, completed, high_new, mid_join_late, top_but_later, running, tie_a,
        mid_created_10, provisioning, ready_exactly_now, cancelled, mid_join_early, other_tenant,
    ]  # fmt: skip
    await create_all(store, jobs)

    expected = [
        high_new, other_tenant, mid_join_early, mid_created_10, tie_a, tie_b, mid_join_late,
        low_old, ready_exactly_now,
    ]  # fmt: skip
    assert ids(await store.due(NOW, 100)) == ids(expected)
    assert ids(await store.due(NOW, 3)) == ids(expected[:3])
    assert ids(await store.due(NOW, 1)) == ids(expected[:1])
    later = await store.due(NOW + timedelta(seconds=1), 1)
    assert ids(later) == [top_but_later.id]
    assert await store.due(BASE - timedelta(days=1), 10) == []


async def test_due_sees_updates(store: JobStore, make_job: MakeJob) -> None:
    first = await store.create(make_job(priority=9))
    second = await store.create(make_job(priority=1))
    assert first.version is not None
    first.status = JobState.PROVISIONING
    await store.update(first, first.version)
    assert ids(await store.due(NOW, 10)) == [second.id]
    assert second.version is not None
    second.notBefore = NOW + timedelta(minutes=1)
    await store.update(second, second.version)
    assert await store.due(NOW, 10) == []


async def test_expiring(store: JobStore, make_job: MakeJob) -> None:
    late = make_job(deadline=NOW - timedelta(seconds=1))
    earliest = make_job(deadline=NOW - timedelta(minutes=10))
    exactly_now = make_job(deadline=NOW)
    in_future = make_job(deadline=NOW + timedelta(seconds=1))
    no_deadline = make_job()
    running_late = make_job(deadline=NOW - timedelta(minutes=20), status=JobState.RUNNING)
    failed_late = make_job(deadline=NOW - timedelta(minutes=20), status=JobState.FAILED)
    other_tenant = make_job(tenant="t2", deadline=NOW - timedelta(minutes=5))
    jobs = [late, earliest, exactly_now, in_future, no_deadline, running_late, failed_late]
    await create_all(store, [*jobs, other_tenant])

    expected = [earliest, other_tenant, late, exactly_now]
    assert ids(await store.expiring(NOW, 100)) == ids(expected)
    assert ids(await store.expiring(NOW, 2)) == ids(expected[:2])
    assert await store.expiring(BASE - timedelta(days=1), 100) == []


async def test_active(store: JobStore, make_job: MakeJob) -> None:
    assert await store.active() == []
    active = [
        make_job(status=JobState.PROVISIONING),
        make_job(status=JobState.RUNNING),
        make_job(tenant="t2", status=JobState.RUNNING),
    ]
    idle = [make_job(status=state) for state in JobState if not state.active]
    await create_all(store, active + idle)
    assert sorted(ids(await store.active())) == sorted(ids(active))


async def test_counts_per_tenant_and_global(store: JobStore, make_job: MakeJob) -> None:
    zero = dict.fromkeys(JobState, 0)
    assert await store.counts() == zero
    await create_all(
        store,
        [
            make_job(),
            make_job(),
            make_job(status=JobState.RUNNING),
            make_job(tenant="t2", status=JobState.FAILED),
            make_job(tenant="t2"),
        ],
    )
    assert await store.counts("t1") == {**zero, JobState.QUEUED: 2, JobState.RUNNING: 1}
    assert await store.counts("t2") == {**zero, JobState.QUEUED: 1, JobState.FAILED: 1}
    assert await store.counts() == {
        **zero,
        JobState.QUEUED: 3,
        JobState.RUNNING: 1,
        JobState.FAILED: 1,
    }
    assert await store.counts("nobody") == zero


# -- compare-and-set --


async def test_update_compare_and_set(store: JobStore, make_job: MakeJob) -> None:
    created = await store.create(make_job())
    first_version = created.version
    assert first_version is not None

    created.status = JobState.PROVISIONING
    created.execution = ExecutionRef(backend="process", id="pid-1")
    updated = await store.update(created, first_version)
    assert updated.version is not None
    assert updated.version != first_version
    assert updated.status is JobState.PROVISIONING

    loaded = await store.get(created.id)
    assert loaded == updated
    assert loaded.execution == ExecutionRef(backend="process", id="pid-1")

    stale = loaded.model_copy(update={"status": JobState.CANCELLED})
    with pytest.raises(Conflict):
        await store.update(stale, first_version)
    with pytest.raises(Conflict):
        await store.update(stale, "not-a-version")
    after = await store.get(created.id)
    assert after == updated

    again = await store.update(updated.model_copy(update={"attempts": 1}), updated.version)
    assert again.version not in (first_version, updated.version)
    assert (await store.get(created.id)) == again


async def test_update_missing_job_raises_not_found(store: JobStore, make_job: MakeJob) -> None:
    with pytest.raises(NotFound):
        await store.update(make_job(), "1")


async def test_concurrent_updates_exactly_one_wins(store: JobStore, make_job: MakeJob) -> None:
    created = await store.create(make_job())
    version = created.version
    assert version is not None
    contenders = [
        created.model_copy(update={"status": JobState.PROVISIONING, "reason": "a"}),
        created.model_copy(update={"status": JobState.CANCELLED, "reason": "b"}),
    ]
    results = await asyncio.gather(
        *(store.update(job, version) for job in contenders), return_exceptions=True
    )
    winners = [result for result in results if isinstance(result, Job)]
    assert len(winners) == 1
    assert sum(isinstance(result, Conflict) for result in results) == 1
    assert await store.get(created.id) == winners[0]


# -- dedup and idempotency keys --


@pytest.mark.parametrize("field", ["dedupKey", "idempotencyKey"])
async def test_key_is_unique_per_tenant_and_atomic(
    store: JobStore, make_job: MakeJob, field: str
) -> None:
    jobs = [make_job(offset=i, **{field: "same-key"}) for i in range(20)]
    results = await asyncio.gather(*(store.create(job) for job in jobs), return_exceptions=True)
    winners = [result for result in results if isinstance(result, Job)]
    duplicates = [result for result in results if isinstance(result, DuplicateKey)]
    assert len(winners) == 1
    assert len(duplicates) == 19
    assert {duplicate.existing.id for duplicate in duplicates} == {winners[0].id}
    assert all(duplicate.existing == winners[0] for duplicate in duplicates)
    assert sum((await store.counts("t1")).values()) == 1

    elsewhere = await store.create(make_job(tenant="t2", **{field: "same-key"}))
    assert elsewhere.tenant == "t2"
    assert await store.create(make_job(**{field: "another-key"}))
    assert sum((await store.counts()).values()) == 3


async def test_jobs_without_keys_never_collide(store: JobStore, make_job: MakeJob) -> None:
    await create_all(store, [make_job() for _ in range(5)])
    assert (await store.counts("t1"))[JobState.QUEUED] == 5


async def test_duplicate_id_is_refused(store: JobStore, make_job: MakeJob) -> None:
    job = await store.create(make_job())
    with pytest.raises(Conflict):
        await store.create(make_job(id=job.id, priority=1))
    assert await store.get(job.id) == job


# -- leases --


# the stores whose leases keep the caller's time; Postgres keeps the database's (its own lease
# tests: tests/contract/test_postgres.py)
CALLER_CLOCK_STORES = [name for name in STORES if name != "postgres"]


@pytest.fixture(params=CALLER_CLOCK_STORES)
async def caller_clock_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[JobStore]:
    async with every_store(request, tmp_path) as built:
        yield built


async def test_leases(caller_clock_store: JobStore) -> None:
    store = caller_clock_store

    def at(seconds: int) -> timedelta:
        return timedelta(seconds=seconds)

    assert await store.acquire_lease("dispatch", "a", until=BASE + at(30), now=BASE)
    assert not await store.acquire_lease("dispatch", "b", until=BASE + at(60), now=BASE + at(10))
    assert await store.acquire_lease("other", "b", until=BASE + at(60), now=BASE + at(10))
    # the owner renews; the renewal extends the lease
    assert await store.acquire_lease("dispatch", "a", until=BASE + at(40), now=BASE + at(10))
    assert not await store.acquire_lease("dispatch", "b", until=BASE + at(90), now=BASE + at(35))
    # expired (until <= now): anyone may take it
    assert await store.acquire_lease("dispatch", "b", until=BASE + at(90), now=BASE + at(40))
    assert not await store.acquire_lease("dispatch", "a", until=BASE + at(99), now=BASE + at(41))
    # a release by someone else does nothing
    await store.release_lease("dispatch", "a")
    assert not await store.acquire_lease("dispatch", "c", until=BASE + at(99), now=BASE + at(42))
    await store.release_lease("dispatch", "b")
    assert await store.acquire_lease("dispatch", "c", until=BASE + at(99), now=BASE + at(42))
    await store.release_lease("never-taken", "c")


async def test_lease_race_has_one_winner(store: JobStore) -> None:
    results = await asyncio.gather(
        *(store.acquire_lease("dispatch", f"owner-{i}", until=NOW, now=BASE) for i in range(10))
    )
    assert results.count(True) == 1


# -- sqlite only --


async def test_sqlite_cas_across_instances(tmp_path: Path, make_job: MakeJob) -> None:
    path = tmp_path / "shared.db"
    first, second = SqliteStore(path), SqliteStore(path)
    await asyncio.gather(first.open(), second.open())
    try:
        job = await first.create(make_job())
        for round_ in range(20):
            seen = await second.get(job.id)
            assert seen is not None and seen.version is not None
            results = await asyncio.gather(
                first.update(
                    seen.model_copy(update={"attempts": round_, "reason": "1"}), seen.version
                ),
                second.update(
                    seen.model_copy(update={"attempts": round_, "reason": "2"}), seen.version
                ),
                return_exceptions=True,
            )
            winners = [result for result in results if isinstance(result, Job)]
            assert len(winners) == 1, results
            assert sum(isinstance(result, Conflict) for result in results) == 1
            assert await first.get(job.id) == winners[0]
            job = winners[0]

        keyed = [make_job(dedupKey="shared") for _ in range(10)]
        created = await asyncio.gather(
            *((first if i % 2 else second).create(job) for i, job in enumerate(keyed)),
            return_exceptions=True,
        )
        assert sum(isinstance(result, Job) for result in created) == 1
        assert sum(isinstance(result, DuplicateKey) for result in created) == 9
    finally:
        await first.close()
        await second.close()


_ROOT = Path(__file__).resolve().parents[2]
_INCREMENT = """
import asyncio, sys
from core.errors import Conflict
from core.stores.sqlite import SqliteStore

async def main(path: str, job_id: str, times: int) -> None:
    store = SqliteStore(path)
    await store.open()
    done = 0
    while done < times:
        job = await store.get(job_id)
        assert job is not None and job.version is not None
        try:
            await store.update(job.model_copy(update={"attempts": job.attempts + 1}), job.version)
        except Conflict:
            continue
        done += 1
    await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def test_sqlite_cas_across_processes(tmp_path: Path, make_job: MakeJob) -> None:
    """Processes incrementing one counter by compare-and-set, retrying on Conflict: no lost
    update, no 'database is locked'."""
    path = tmp_path / "processes.db"
    store = SqliteStore(path)
    await store.open()
    job = await store.create(make_job())
    processes, times = 4, 25
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _INCREMENT, str(path), job.id, str(times),
            cwd=_ROOT, stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(processes)
    ]  # fmt: skip
    for child in children:
        _, stderr = await asyncio.wait_for(child.communicate(), timeout=60)
        assert child.returncode == 0, stderr.decode()
    final = await store.get(job.id)
    await store.close()
    assert final is not None
    assert final.attempts == processes * times
    assert final.version == str(1 + processes * times)


def _plan(path: Path, sql: str, params: tuple[object, ...]) -> list[str]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
    connection.close()
    return [str(row[-1]) for row in rows]


async def test_sqlite_query_plans_use_indexes(tmp_path: Path, make_job: MakeJob) -> None:
    path = tmp_path / "plan.db"
    store = SqliteStore(path)
    await store.open()
    try:
        states = list(JobState)
        await create_all(
            store,
            [make_job(offset=i, priority=i % 7, status=states[i % len(states)]) for i in range(60)],
        )
    finally:
        await store.close()

    due = _plan(path, DUE_SQL, (0, 10))
    assert any("USING INDEX jobs_queue" in detail for detail in due), due
    assert not any("TEMP B-TREE" in detail for detail in due), due

    expiring = _plan(path, EXPIRING_SQL, (0, 10))
    assert any("USING INDEX jobs_deadline" in detail for detail in expiring), expiring
    assert not any("TEMP B-TREE" in detail for detail in expiring), expiring

    active = _plan(path, ACTIVE_SQL, ())
    assert any("USING INDEX jobs_holding" in detail for detail in active), active

    for tenant in ("t1", None):
        for status in (JobState.QUEUED, None):
            sql, params = list_sql(tenant, status, None)
            listing = _plan(path, sql, (*params, 10))
            assert any("USING INDEX" in detail for detail in listing), listing
            assert not any("TEMP B-TREE" in detail for detail in listing), listing
