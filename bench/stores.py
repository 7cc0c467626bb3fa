"""The stores on their own: `due(10)` as the queue grows, and the drain on Azurite against the
rate of the SDK's own conditional updates. Azurite and the Firestore emulator are started by the
tests' helpers (tests/azurite_env.py, tests/gcloud_env.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.backend import RecordingBackend
from bench.table import Sample
from core.config import Settings
from core.models import Job, utcnow
from core.ports import JobStore
from core.scheduler import Scheduler
from core.stores.sqlite import SqliteStore
from tests.azurite_env import start_azurite
from tests.gcloud_env import start_firestore

DUE_LIMIT = 10
SMALL_QUEUE = 100


def due_job(n: int) -> Job:
    """A queued job, due since a minute ago, of one of ten priorities."""
    now = utcnow() - timedelta(minutes=1)
    return Job(
        id=str(uuid.uuid4()),
        tenant="bench",
        meetingUrl="https://meet.example.com/bench",
        priority=n % 10,
        createdAt=now + timedelta(microseconds=n),
        updatedAt=now,
        notBefore=now,
    )


async def fill(store: JobStore, jobs: int, concurrency: int = 32) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with gate:
            await store.create(due_job(n))

    await asyncio.gather(*(one(n) for n in range(jobs)))


async def due_costs(
    small: JobStore, big: JobStore, rounds: int = 5, calls: int = 30
) -> tuple[Sample, Sample]:
    """µs per `due(10)` on each store, interleaved round by round."""
    costs = Sample(), Sample()
    for _ in range(rounds):
        for store, sample in zip((small, big), costs, strict=True):
            started = time.perf_counter()
            for _ in range(calls):
                found = await store.due(utcnow(), DUE_LIMIT)
                assert len(found) == DUE_LIMIT
            sample.add((time.perf_counter() - started) / calls * 1e6)
    return costs


async def drain_rate(store: JobStore, jobs: int, filler: JobStore | None = None) -> float:
    """Jobs dispatched a second by `drain_once` (one scheduler, caps wide open), from a queue
    of `jobs` due jobs to all of them started. The jobs are submitted through `filler` (another
    store on the same table: another process) or, by default, through `store` itself (one
    process serving the submits and running the timers)."""
    await fill(filler or store, jobs)
    settings = Settings(max_concurrent_jobs=jobs)
    scheduler = Scheduler(store, RecordingBackend(), settings)
    started, dispatched = time.perf_counter(), 0
    while dispatched < jobs:
        dispatched += (await scheduler.drain_once()).dispatched
    return jobs / (time.perf_counter() - started)


async def raw_update_rate(table: Any, updates: int) -> float:
    """Conditional updates (If-Match the entity's ETag) a second by the same SDK, one after
    another: the floor under any store that writes through it."""
    from azure.core import MatchConditions
    from azure.data.tables import UpdateMode

    etags = []
    for n in range(updates):
        created = await table.create_entity({"PartitionKey": "raw", "RowKey": f"r{n}", "n": 0})
        etags.append(created["etag"])
    started = time.perf_counter()
    for n, etag in enumerate(etags):
        await table.update_entity(
            {"PartitionKey": "raw", "RowKey": f"r{n}", "n": 1},
            mode=UpdateMode.REPLACE,
            etag=etag,
            match_condition=MatchConditions.IfNotModified,
        )
    return updates / (time.perf_counter() - started)


async def sqlite_due(tmp: Path, big: int) -> tuple[Sample, Sample]:
    small_store, big_store = SqliteStore(tmp / "small.db"), SqliteStore(tmp / "big.db")
    return await _due_pair(small_store, big_store, big)


async def _due_pair(
    small: JobStore, big: JobStore, jobs: int, keep_open: bool = False
) -> tuple[Sample, Sample]:
    await small.open()
    await big.open()
    try:
        await fill(small, SMALL_QUEUE)
        await fill(big, jobs)
        return await due_costs(small, big)
    finally:
        if not keep_open:
            await small.close()
            await big.close()


async def first_rows_cost(table: Any, calls: int = 30) -> float:
    """µs for the SDK to read the first DUE_LIMIT rows of the queue index: what Azurite itself
    costs for the query that `due` starts with."""
    query = "PartitionKey eq 'jobs' and RowKey ge 'q|' and RowKey lt 'q}'"
    started = time.perf_counter()
    for _ in range(calls):
        async for page in table.query_entities(query, results_per_page=DUE_LIMIT).by_page():
            assert len([row async for row in page]) == DUE_LIMIT
            break
    return (time.perf_counter() - started) / calls * 1e6


async def azurite(tmp: Path, big: int, drain_jobs: int, rounds: int) -> dict[str, Sample]:
    """due(10) with SMALL_QUEUE and `big` queued, and the SDK's own query of the first rows of
    the queue index in the same tables; the drain's jobs a second and the raw conditional
    updates a second, interleaved `rounds` times."""
    from core.stores.azure_table import AzureTableStore

    env = start_azurite(tmp)

    def table(name: str | None = None) -> AzureTableStore:
        return AzureTableStore(name or "t" + uuid.uuid4().hex[:12], env.connection_string)

    try:
        found = await _azurite_due(table(), table(), big)
        found["drained"], found["raw"], found["drained_cold"] = Sample(), Sample(), Sample()
        for _ in range(rounds):
            store, fresh = table(), table()
            other = table(fresh.table_name)  # another process's store on fresh's table
            for opened in (store, fresh, other):
                await opened.open()
            try:
                found["raw"].add(await raw_update_rate(store.client, drain_jobs))
                found["drained"].add(await drain_rate(store, drain_jobs))
                found["drained_cold"].add(await drain_rate(fresh, drain_jobs, filler=other))
            finally:
                for opened in (store, fresh, other):
                    await opened.close()
        return found
    finally:
        env.stop()


async def _azurite_due(small: Any, big: Any, jobs: int) -> dict[str, Sample]:
    small_cost, big_cost = await _due_pair(small, big, jobs, keep_open=True)
    found = {"small": small_cost, "big": big_cost, "query_small": Sample(), "query_big": Sample()}
    try:
        for _ in range(5):
            found["query_small"].add(await first_rows_cost(small.client))
            found["query_big"].add(await first_rows_cost(big.client))
    finally:
        await small.close()
        await big.close()
    return found


async def firestore(tmp: Path, big: int) -> dict[str, Sample]:
    """due(10) with SMALL_QUEUE and `big` queued, and the SDK's own ordered, limited query that
    `due` makes, run by itself on the same collections."""
    from core.stores.firestore import FirestoreStore

    emulator = start_firestore(tmp)

    def store() -> FirestoreStore:
        collection = "c" + uuid.uuid4().hex[:12]
        return FirestoreStore(emulator.project, collection=collection, emulator_host=emulator.host)

    try:
        small, big_store = store(), store()
        small_cost, big_cost = await _due_pair(small, big_store, big, keep_open=True)
        found = {
            "small": small_cost,
            "big": big_cost,
            "query_small": Sample(),
            "query_big": Sample(),
        }
        for _ in range(5):
            found["query_small"].add(await query_cost(small.due_query(DUE_LIMIT)))
            found["query_big"].add(await query_cost(big_store.due_query(DUE_LIMIT)))
        await small.close()
        await big_store.close()
        return found
    finally:
        emulator.stop()


async def query_cost(query: Any, calls: int = 30) -> float:
    """µs for the Firestore SDK to run `query` (the documents streamed to the end)."""
    started = time.perf_counter()
    for _ in range(calls):
        assert len([snapshot async for snapshot in query.stream()]) == DUE_LIMIT
    return (time.perf_counter() - started) / calls * 1e6
