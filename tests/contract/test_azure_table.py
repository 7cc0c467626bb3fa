"""Azure Table store behaviour beyond the contract, on a real Azurite: index reads, stale index
rows, typed columns, large jobs, configuration, lazy imports, and schedulers racing on one table."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings
from core.errors import ConfigError, DuplicateKey, PayloadTooLarge
from core.models import Job, JobState
from core.scheduler import Scheduler
from core.stores import azure_index as ix
from core.stores.azure_table import AzureTableStore
from core.stores.memory import MemoryStore
from tests.azurite_env import ACCOUNT, ACCOUNT_KEY, AzuriteEnv
from tests.contract.conftest import BASE, MakeJob, fresh_table, make_job
from tests.unit.conftest import Clock, at, settings
from tests.unit.test_scheduler_concurrency import (
    CAP,
    JOBS,
    CountingBackend,
    assert_exactly_once_under_cap,
    race,
    submit_all,
)

ROOT = Path(__file__).resolve().parents[2]
NOW = BASE + timedelta(hours=1)
FAR = datetime(2100, 1, 1, tzinfo=UTC)  # epoch ms far beyond 2**31


async def opened(azurite: AzuriteEnv, table: str | None = None) -> AzureTableStore:
    store = AzureTableStore(table or fresh_table(), connection_string=azurite.connection_string)
    await store.open()
    return store


@pytest.fixture
async def store(azurite: AzuriteEnv) -> AsyncIterator[AzureTableStore]:
    built = await opened(azurite)
    try:
        yield built
    finally:
        await built.close()


async def rows(store: AzureTableStore, prefix: str = "") -> list[Any]:
    """The rows of the jobs partition whose RowKey starts with `prefix` (all without one)."""
    query = f"PartitionKey eq '{ix.JOBS}'"
    query += f" and {ix.prefix_range(prefix)}" if prefix else ""
    return [row async for row in store.client.query_entities(query)]


async def put_row(store: AzureTableStore, row_key: str, **properties: Any) -> None:
    """Write an index row behind the store's back, as an interrupted or foreign write would."""
    await store.client.upsert_entity({"PartitionKey": ix.JOBS, "RowKey": row_key, **properties})


async def create_many(store: AzureTableStore, jobs: list[Job]) -> None:
    for start in range(0, len(jobs), 25):
        await asyncio.gather(*(store.create(job) for job in jobs[start : start + 25]))


# -- the indexes read O(k) --


async def test_due_reads_o_k_entities(store: AzureTableStore) -> None:
    queued = [make_job(priority=n % 7, offset=n) for n in range(200)]
    later = [make_job(priority=100, notBefore=NOW + timedelta(hours=1)) for _ in range(20)]
    await create_many(store, queued + later)
    reference = MemoryStore()
    for job in queued + later:
        await reference.create(job)

    for limit in (1, 5, 20):
        store.reads = 0
        due = await store.due(NOW, limit)
        assert [job.id for job in due] == [job.id for job in await reference.due(NOW, limit)]
        assert store.reads <= 2 * limit  # `limit` index rows and `limit` job rows
    store.reads = 0
    assert len(await store.expiring(NOW, 5)) == 0
    assert store.reads == 0


async def test_stale_index_rows_are_skipped_and_deleted(store: AzureTableStore) -> None:
    best = await store.create(make_job(priority=9, deadline=NOW - timedelta(minutes=1)))
    second = await store.create(make_job(priority=5))
    done = await store.create(make_job(priority=100, status=JobState.COMPLETED))
    ghost = make_job(priority=100)  # never stored
    moved = best.model_copy(update={"priority": 50})  # best's row as if it had priority 50
    for stale in (done, ghost, moved):
        await put_row(store, ix.queue_key(stale), jobId=stale.id, notBeforeMs=ix.int64(0))
    await put_row(store, ix.deadline_key(0, done.id), jobId=done.id)
    await put_row(store, ix.active_key(ghost.id), jobId=ghost.id)
    await put_row(store, ix.list_key(None, 0, ghost.id), jobId=ghost.id, createdMs=ix.int64(0))

    store.reads = 0
    assert [job.id for job in await store.due(NOW, 2)] == [best.id, second.id]
    assert store.dropped == 3
    assert store.reads <= 2 * (2 + 3)
    assert [row["jobId"] for row in await rows(store, "q|")] == [best.id, second.id]

    assert [job.id for job in await store.expiring(NOW, 10)] == [best.id]
    assert await store.active() == []
    page = await store.list_jobs(None)
    assert {job.id for job in page.jobs} == {best.id, second.id, done.id}
    assert store.dropped == 6
    assert len(await rows(store, "d|")) == 1
    assert await rows(store, "a|") == []
    assert len(await rows(store, ix.list_prefix(None))) == 3


async def test_stale_row_rewritten_after_it_was_read_survives(store: AzureTableStore) -> None:
    ghost = make_job()
    await put_row(store, ix.queue_key(ghost), jobId=ghost.id, notBeforeMs=ix.int64(0))
    [read] = await rows(store, "q|")
    await put_row(store, ix.queue_key(ghost), jobId=ghost.id, notBeforeMs=ix.int64(1))
    await store._drop(read)  # conditioned on the ETag it was read with
    assert len(await rows(store, "q|")) == 1 and store.dropped == 0


async def test_update_survives_index_rows_deleted_from_outside(store: AzureTableStore) -> None:
    job = await store.create(make_job(deadline=NOW))
    for row in await rows(store, "q|") + await rows(store, "d|"):
        await store.client.delete_entity(ix.JOBS, row["RowKey"])
    assert job.version is not None
    claimed = job.model_copy(update={"status": JobState.PROVISIONING})
    updated = await store.update(claimed, job.version)
    assert updated.status is JobState.PROVISIONING
    assert [j.id for j in await store.active()] == [job.id]


async def test_index_rows_follow_the_state(store: AzureTableStore, make_job: MakeJob) -> None:
    job = await store.create(make_job(deadline=NOW, dedupKey="k"))
    assert {r["RowKey"][:2] for r in await rows(store)} == {"j|", "k|", "q|", "d|", "l|"}
    assert job.version is not None
    running = await store.update(job.model_copy(update={"status": JobState.RUNNING}), job.version)
    prefixes = [r["RowKey"][:2] for r in await rows(store)]
    assert sorted(prefixes) == ["a|", "j|", "k|", "l|", "l|"]
    listed = await rows(store, ix.list_prefix("t1"))
    assert [r["state"] for r in listed] == ["open"]  # queued or active: core/stores/azure_lists.py
    assert running.version is not None
    await store.update(running.model_copy(update={"status": JobState.COMPLETED}), running.version)
    assert sorted(r["RowKey"][:2] for r in await rows(store)) == ["j|", "k|", "l|", "l|"]
    assert [r["state"] for r in await rows(store, ix.list_prefix(None))] == ["completed"]


async def test_update_moves_keys_atomically(store: AzureTableStore) -> None:
    first = await store.create(make_job(dedupKey="one"))
    second = await store.create(make_job(dedupKey="two"))
    assert second.version is not None
    with pytest.raises(DuplicateKey) as raised:
        await store.update(second.model_copy(update={"dedupKey": "one"}), second.version)
    assert raised.value.existing == first
    assert await store.get(second.id) == second
    moved = await store.update(second.model_copy(update={"dedupKey": "three"}), second.version)
    assert moved.dedupKey == "three"
    assert (await store.create(make_job(dedupKey="two"))).dedupKey == "two"
    with pytest.raises(DuplicateKey):
        await store.create(make_job(dedupKey="three"))


# -- typed columns and large jobs --


async def test_times_are_int64_columns(store: AzureTableStore) -> None:
    job = await store.create(make_job(joinAt=FAR, deadline=FAR + timedelta(hours=1)))
    entity = await store.client.get_entity(ix.JOBS, ix.job_key(job.id))
    for column in ("sortMs", "notBeforeMs", "createdMs", "updatedMs", "deadlineMs"):
        value = entity[column]
        assert value.edm_type == "Edm.Int64", column
    assert entity["sortMs"].value == entity["deadlineMs"].value - 3_600_000 > 2**31
    [queue_row] = await rows(store, "q|")
    assert queue_row["notBeforeMs"].edm_type == "Edm.Int64"
    assert await store.acquire_lease("dispatch", "a", until=FAR, now=NOW)
    lease = await store.client.get_entity(ix.LEASES, "dispatch")
    assert lease["untilMs"].edm_type == "Edm.Int64" and lease["untilMs"].value > 2**31
    assert await store.due(FAR, 10) == [await store.get(job.id)]


def units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def padded(total_units: int, pad: str = "x", **fields: Any) -> Job:
    """A job whose JSON is exactly `total_units` UTF-16 units long (`pad` is 1 or 2 units)."""
    job = make_job(config={"pad": ""}, **fields)
    missing = total_units - units(job.model_dump_json(exclude={"version"}))
    assert missing >= 0 and missing % units(pad) == 0
    job.config["pad"] = pad * (missing // units(pad))
    assert units(job.model_dump_json(exclude={"version"})) == total_units
    return job


@pytest.mark.parametrize(
    ("total", "pad", "chunks"),
    [
        (ix.CHUNK_UNITS, "x", 1),
        (ix.CHUNK_UNITS + 1, "x", 2),
        (100_000, "é", 4),
        (ix.MAX_CHUNKS * ix.CHUNK_UNITS, "x", ix.MAX_CHUNKS),
    ],
)
async def test_large_jobs_are_split_across_properties(
    store: AzureTableStore, total: int, pad: str, chunks: int
) -> None:
    job = padded(total, pad)
    created = await store.create(job)
    entity = await store.client.get_entity(ix.JOBS, ix.job_key(job.id))
    assert entity["chunks"] == chunks
    assert all(units(entity[ix.data_name(n)]) <= ix.CHUNK_UNITS for n in range(chunks))
    assert await store.get(job.id) == created
    assert created.config == job.config


async def test_a_surrogate_pair_on_a_chunk_boundary_stays_whole(store: AzureTableStore) -> None:
    job = make_job(config={"pad": ""})
    text = job.model_dump_json(exclude={"version"})
    start = text.index('"pad":""') + len('"pad":"')  # all ASCII so far: characters are units
    before = ix.CHUNK_UNITS - 1 - start  # the emoji's first unit is the chunk's last one
    job.config["pad"] = "x" * before + "\U0001f600" + "y" * 10
    created = await store.create(job)
    entity = await store.client.get_entity(ix.JOBS, ix.job_key(job.id))
    assert entity["chunks"] == 2
    assert units(entity["data"]) == ix.CHUNK_UNITS - 1 and entity["data"].endswith("x")
    assert entity["data1"].startswith("\U0001f600y")
    assert await store.get(job.id) == created


async def test_a_job_over_the_limit_is_refused(store: AzureTableStore) -> None:
    with pytest.raises(PayloadTooLarge):
        await store.create(padded(ix.MAX_CHUNKS * ix.CHUNK_UNITS + 1))
    assert await rows(store) == []
    small = await store.create(make_job())
    assert small.version is not None
    grown = padded(ix.MAX_CHUNKS * ix.CHUNK_UNITS + 1, id=small.id)
    with pytest.raises(PayloadTooLarge):
        await store.update(grown, small.version)
    assert await store.get(small.id) == small


# -- configuration and imports --


def azure_settings(**env: str) -> Settings:
    return Settings.from_env(env)


def test_from_settings_reads_the_variables() -> None:
    env = {"AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true"}
    assert AzureTableStore.from_settings(azure_settings(**env)).table_name == "botschedjobs"
    named = AzureTableStore.from_settings(azure_settings(**env, AZURE_TABLE_NAME="othertable"))
    assert named.table_name == "othertable"
    with pytest.raises(ConfigError, match="AZURE_STORAGE_CONNECTION_STRING"):
        AzureTableStore.from_settings(azure_settings())
    with pytest.raises(ConfigError, match="AZURE_TABLE_NAME"):
        azure_settings(**env, AZURE_TABLE_NAME="no-dashes")


async def test_account_url_with_a_sas_token(azurite: AzuriteEnv) -> None:
    from azure.core.credentials import AzureNamedKeyCredential
    from azure.data.tables import AccountSasPermissions, ResourceTypes, generate_account_sas

    sas = generate_account_sas(
        AzureNamedKeyCredential(ACCOUNT, ACCOUNT_KEY),
        resource_types=ResourceTypes(service=True, container=True, object=True),
        permission=AccountSasPermissions(
            read=True, write=True, delete=True, list=True, add=True, update=True
        ),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    store = AzureTableStore.from_settings(
        azure_settings(
            AZURE_STORAGE_ACCOUNT_URL=f"{azurite.endpoint}?{sas}", AZURE_TABLE_NAME="sas1"
        )
    )
    await store.open()
    try:
        job = await store.create(make_job())
        assert await store.get(job.id) == job
    finally:
        await store.close()


async def test_account_url_without_sas_uses_a_managed_identity() -> None:
    from azure.identity.aio import DefaultAzureCredential

    store = AzureTableStore(account_url="https://acct.table.core.windows.net")
    store._service = store._connect()  # no request is made until the first call
    assert isinstance(store._own_credential, DefaultAzureCredential)
    await store.close()
    assert store._own_credential is None


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_a_missing_sdk_names_the_extra() -> None:
    result = run_python(
        "import asyncio, sys\n"
        "sys.modules['azure.data.tables'] = None\n"
        "from core.errors import ConfigError\n"
        "from core.stores.azure_table import AzureTableStore\n"
        "store = AzureTableStore(connection_string='UseDevelopmentStorage=true')\n"
        "try:\n"
        "    asyncio.run(store.open())\n"
        "except ConfigError as exc:\n"
        "    print(exc.message)\n"
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'bot-scheduler[azure]'" in result.stdout


# -- schedulers racing on one table --


async def test_schedulers_on_one_table_start_each_job_once_under_the_cap(
    azurite: AzuriteEnv,
) -> None:
    """Six schedulers over two store instances on one table (as two processes would have)."""
    table = fresh_table()
    stores = [await opened(azurite, table), await opened(azurite, table)]
    try:
        clock = Clock()
        backend = CountingBackend(start_delay=0.01)
        config = settings(max_concurrent_jobs=CAP)
        schedulers = [
            Scheduler(stores[n % 2], backend, config, owner=f"process-{n % 2}-{n}", clock=clock)
            for n in range(6)
        ]
        jobs = await submit_all(schedulers[1], clock)

        await race(schedulers, list(stores), backend, clock)

        assert_exactly_once_under_cap(backend, jobs)
        assert sum(backend.calls.values()) == JOBS
        for job in jobs:
            stored = await stores[0].get(job.id)
            assert stored is not None and stored.status is JobState.COMPLETED
        assert await stores[1].due(at(1000), 10) == []
        assert await stores[0].active() == []
    finally:
        for store in stores:
            await store.close()
