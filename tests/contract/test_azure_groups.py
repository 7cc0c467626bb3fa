"""The Azure Table store's group commit, stamped index rows and open list rows, on a real
Azurite: concurrent writes share transactions and each keeps its own compare-and-set; a reader
that holds the job a queue or active row was written with needs no point read, and one that does
not reads it; list rows that do not tell queued and active jobs apart still list and count each
state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from core.errors import Conflict, DuplicateKey
from core.models import Job, JobState
from core.stores import azure_index as ix
from core.stores.azure_table import AzureTableStore
from tests.azurite_env import AzuriteEnv
from tests.contract.conftest import BASE, fresh_table, make_job
from tests.contract.test_azure_table import rows

NOW = BASE + timedelta(hours=1)


@pytest.fixture
async def pair(azurite: AzuriteEnv) -> AsyncIterator[tuple[AzureTableStore, AzureTableStore]]:
    """Two stores on one table, as two processes have."""
    table = fresh_table()
    stores = [AzureTableStore(table, connection_string=azurite.connection_string) for _ in "ab"]
    for store in stores:
        await store.open()
    try:
        yield stores[0], stores[1]
    finally:
        for store in stores:
            await store.close()


def transactions(store: AzureTableStore) -> int:
    assert store._group is not None
    return store._group.transactions


async def created(store: AzureTableStore, count: int, **fields: object) -> list[Job]:
    jobs = [make_job(offset=n, **fields) for n in range(count)]
    return list(await asyncio.gather(*(store.create(job) for job in jobs)))


def moved(job: Job, **changes: object) -> Job:
    return job.model_copy(update={"updatedAt": job.updatedAt + timedelta(seconds=1), **changes})


async def test_concurrent_writes_share_transactions_and_each_keeps_its_condition(
    pair: tuple[AzureTableStore, AzureTableStore],
) -> None:
    store, other = pair
    before = transactions(store)
    jobs = await created(store, 20)
    assert transactions(store) - before < 20 / 2  # creates grouped: 3 rows each, 64 a group
    stale = await other.get(jobs[3].id)
    assert stale is not None
    await other.update(moved(stale, priority=77), stale.version or "")
    claims = [moved(job, status=JobState.PROVISIONING, attempts=1) for job in jobs]
    outcome = await asyncio.gather(
        *(store.update(claim, job.version or "") for claim, job in zip(claims, jobs, strict=True)),
        return_exceptions=True,
    )
    assert isinstance(outcome[3], Conflict)  # lost to the other store's write, alone
    assert all(isinstance(job, Job) for n, job in enumerate(outcome) if n != 3)
    for n, job in enumerate(jobs):
        stored = await other.get(job.id)
        assert stored is not None
        expected = (JobState.QUEUED, 77) if n == 3 else (JobState.PROVISIONING, job.priority)
        assert (stored.status, stored.priority) == expected


async def test_concurrent_creates_with_one_key_create_one_job(
    pair: tuple[AzureTableStore, AzureTableStore],
) -> None:
    store, _ = pair
    jobs = [make_job(offset=n, dedupKey="same") for n in range(6)]
    outcome = await asyncio.gather(*(store.create(job) for job in jobs), return_exceptions=True)
    made = [job for job in outcome if isinstance(job, Job)]
    refused = [error for error in outcome if isinstance(error, DuplicateKey)]
    assert len(made) == 1 and len(refused) == 5
    assert all(error.existing.id == made[0].id for error in refused)


async def test_due_and_active_read_no_job_row_this_store_wrote_last(
    pair: tuple[AzureTableStore, AzureTableStore],
) -> None:
    store, _ = pair
    jobs = await created(store, 12)
    store.reads = 0
    due = await store.due(NOW, 12)
    assert {job.id for job in due} == {job.id for job in jobs}
    assert store.reads == 12  # the index rows alone
    running = [moved(job, status=JobState.RUNNING, attempts=1) for job in jobs[:4]]
    await asyncio.gather(
        *(store.update(r, j.version or "") for r, j in zip(running, jobs, strict=False))
    )
    store.reads = 0
    active = await store.active()
    assert sorted(job.id for job in active) == sorted(job.id for job in running)
    assert all(job.status is JobState.RUNNING for job in active)
    assert store.reads == 4


async def test_a_job_another_store_changed_is_read_again(
    pair: tuple[AzureTableStore, AzureTableStore],
) -> None:
    store, other = pair
    jobs = await created(store, 3)
    theirs = await other.get(jobs[1].id)
    assert theirs is not None
    changed = await other.update(moved(theirs, metadata={"by": "other"}), theirs.version or "")
    due = {job.id: job for job in await store.due(NOW, 3)}
    assert due[jobs[1].id].metadata == {"by": "other"}
    assert due[jobs[1].id].version == changed.version  # so a write of it can succeed
    claim = moved(due[jobs[1].id], status=JobState.PROVISIONING, attempts=1)
    await store.update(claim, changed.version or "")
    mine = await store.get(jobs[1].id)
    assert mine is not None
    stopping = await other.update(moved(mine, status=JobState.STOPPING), mine.version or "")
    active = await store.active()
    assert [(job.id, job.status, job.version) for job in active] == [
        (jobs[1].id, JobState.STOPPING, stopping.version)
    ]


async def pages(
    store: AzureTableStore, tenant: str | None, status: JobState, limit: int
) -> list[Job]:
    """Every job a listing returns, following its cursors."""
    found: list[Job] = []
    cursor = None
    for _ in range(50):
        page = await store.list_jobs(tenant, status, limit, cursor)
        found += page.jobs
        if page.nextCursor is None:
            return found
        cursor = page.nextCursor
    raise AssertionError("the listing never ended")


async def test_open_list_rows_still_list_and_count_every_state(
    pair: tuple[AzureTableStore, AzureTableStore],
) -> None:
    store, other = pair
    mine = await created(store, 7)
    await created(store, 2, tenant="t2")
    states = [JobState.RUNNING, JobState.RUNNING, JobState.PROVISIONING, JobState.COMPLETED]
    for job, state in zip(mine, states, strict=False):
        await store.update(moved(job, status=state), job.version or "")
    expected = {JobState.QUEUED: 3, JobState.RUNNING: 2, JobState.PROVISIONING: 1}
    expected[JobState.COMPLETED] = 1
    for reader in (store, other):  # the other reads every job row: nothing of it is stamped
        counts = await reader.counts("t1")
        assert {state: n for state, n in counts.items() if n} == expected
        assert (await reader.counts(None))[JobState.QUEUED] == 5
        running = await pages(reader, "t1", JobState.RUNNING, 1)
        newest_first = sorted(mine[:2], key=lambda job: job.createdAt, reverse=True)
        assert [job.id for job in running] == [job.id for job in newest_first]
        queued = await pages(reader, "t1", JobState.QUEUED, 2)
        assert sorted(job.id for job in queued) == sorted(job.id for job in mine[4:])
        assert [job.id for job in await pages(reader, None, JobState.COMPLETED, 5)] == [mine[3].id]
        assert await pages(reader, "t2", JobState.RUNNING, 5) == []


async def test_list_rows_naming_an_active_state_read_as_open(
    pair: tuple[AzureTableStore, AzureTableStore],
) -> None:
    store, _ = pair
    jobs = await created(store, 3)
    await store.update(moved(jobs[0], status=JobState.RUNNING), jobs[0].version or "")
    for prefix in (ix.list_prefix("t1"), ix.list_prefix(None)):  # as a store before "open" wrote
        for row in await rows(store, prefix):
            if row["jobId"] == jobs[0].id:
                await store.client.upsert_entity({**row, "state": "running"})
    counts = await store.counts("t1")
    assert (counts[JobState.QUEUED], counts[JobState.RUNNING]) == (2, 1)
    assert len(await pages(store, "t1", JobState.QUEUED, 10)) == 2
