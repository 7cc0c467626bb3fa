"""Firestore store behaviour beyond the contract, on a real Firestore emulator: the queries it
runs, the documents it keeps, versions, escaped ids, configuration, lazy imports, and schedulers
racing on one collection."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings
from core.errors import ConfigError, Conflict, DuplicateKey, PayloadTooLarge
from core.models import Job, JobState
from core.scheduler import Scheduler
from core.stores import firestore_docs as fd
from core.stores.firestore import FirestoreStore
from core.stores.memory import MemoryStore
from tests.contract.conftest import BASE, fresh_collection, make_job
from tests.gcloud_env import FirestoreEmulator
from tests.unit.conftest import Clock, settings
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
VERSION = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")


async def opened(emulator: FirestoreEmulator, collection: str | None = None) -> FirestoreStore:
    store = FirestoreStore(
        emulator.project, collection=collection or fresh_collection(), emulator_host=emulator.host
    )
    await store.open()
    return store


@pytest.fixture
async def store(firestore_emulator: FirestoreEmulator) -> AsyncIterator[FirestoreStore]:
    built = await opened(firestore_emulator)
    try:
        yield built
    finally:
        await built.close()


async def document(store: FirestoreStore, job_id: str) -> dict[str, Any]:
    snapshot = await store.client.collection(store.collection).document(fd.part(job_id)).get()
    assert snapshot.exists
    fields: dict[str, Any] | None = snapshot.to_dict()
    assert fields is not None
    return fields


async def key_ids(store: FirestoreStore) -> list[str]:
    keys = store.client.collection(store.collection + fd.KEYS_SUFFIX)
    return [snapshot.id async for snapshot in keys.stream()]


async def create_many(store: FirestoreStore, jobs: list[Job]) -> None:
    for start in range(0, len(jobs), 25):
        await asyncio.gather(*(store.create(job) for job in jobs[start : start + 25]))


async def reference_of(jobs: list[Job]) -> MemoryStore:
    reference = MemoryStore()
    for job in jobs:
        await reference.create(job)
    return reference


# -- queries: one ordered, limited query each --


@pytest.fixture
def offline(firestore_emulator: FirestoreEmulator) -> FirestoreStore:
    """A store whose client only builds queries (it never sends one). The emulator fixture is
    there for its skip-or-fail rule when the SDK is missing."""
    store = FirestoreStore("demo-botsched", emulator_host="127.0.0.1:1")
    store._client = store._connect()
    return store


def test_due_is_one_ordered_limited_query_on_queue_key(offline: FirestoreStore) -> None:
    store = offline
    structured = store.due_query(7)._to_protobuf()
    assert [order.field.field_path for order in structured.order_by] == ["queue_key"]
    assert structured.limit == 7
    condition = structured.where.field_filter
    assert condition.field.field_path == "queue_key"
    assert condition.value.string_value == ""
    assert not structured.where.composite_filter.filters


def needed_index(query: Any) -> tuple[frozenset[str], tuple[tuple[str, str], ...]]:
    """The composite index a query needs: its equality fields (any order, ascending), then its
    order (the implicit `__name__` left out)."""
    structured = query._to_protobuf()
    conditions = [f.field_filter for f in structured.where.composite_filter.filters] or [
        structured.where.field_filter
    ]
    equal = frozenset(c.field.field_path for c in conditions if c.op.name == "EQUAL")
    order = tuple((o.field.field_path, o.direction.name) for o in structured.order_by)
    return equal, order


# core/events.py, core/webhooks/, core/leads.py, core/meetings.py, core/reservations.py,
# core/desired.py
RECORD_KINDS = (
    "event",
    "webhook",
    "delivery",
    "attempt",
    "lead",
    "meeting",
    "reservation",
    "external",
)


def test_the_index_file_serves_every_query(offline: FirestoreStore) -> None:
    definition = json.loads((ROOT / "infra" / "gcp" / "firestore.indexes.json").read_text())
    shipped = set()
    for index in definition["indexes"]:
        assert index["collectionGroup"] == fd.DEFAULT_COLLECTION
        assert index["queryScope"] == "COLLECTION"
        fields = [(f["fieldPath"], f["order"]) for f in index["fields"]]
        equal = {path for path, order in fields if order == "ASCENDING"}
        for split in range(len(fields) + 1):  # equality prefix, then the order
            if {path for path, _ in fields[:split]} <= equal:
                prefix = frozenset(path for path, _ in fields[:split])
                shipped.add((prefix, tuple(fields[split:])))
    overrides = {
        (o["collectionGroup"], o["fieldPath"]): o["indexes"] for o in definition["fieldOverrides"]
    }
    records = [f"{fd.DEFAULT_COLLECTION}_rec_{kind}" for kind in RECORD_KINDS]
    exempt = {(group, field): [] for group in records for field in ("data", "write")}
    assert overrides == {(fd.DEFAULT_COLLECTION, "data"): [], **exempt}

    store = offline
    queries = [store.expiring_query(NOW, 5)] + [
        store.list_query(tenant, status, after)
        for tenant in ("t1", None)
        for status in (JobState.QUEUED, None)
        for after in (None, (1, "x"))
    ]
    for query in queries:
        equal, order = needed_index(query)
        assert (equal, order) in shipped, (equal, order)
    # due: one range filter and the order on the same field: the automatic single-field index
    assert needed_index(store.due_query(5)) == (frozenset(), (("queue_key", "ASCENDING"),))


async def test_due_reads_one_page_of_k_documents(store: FirestoreStore) -> None:
    queued = [make_job(priority=n % 7, offset=n) for n in range(200)]
    later = [make_job(priority=0, offset=n, notBefore=NOW + timedelta(hours=1)) for n in range(20)]
    others = [make_job(priority=100, status=state) for state in JobState if state.final]
    await create_many(store, queued + later + others)
    reference = await reference_of(queued + later + others)
    for limit in (1, 5, 20):
        store.reads = store.queries = 0
        due = await store.due(NOW, limit)
        assert [job.id for job in due] == [job.id for job in await reference.due(NOW, limit)]
        assert (store.queries, store.reads) == (1, limit)


async def test_due_skips_jobs_not_due_yet_page_by_page(store: FirestoreStore) -> None:
    """Queued jobs that outrank the due ones but are not due yet cost a read each."""
    later = [make_job(priority=100, notBefore=NOW + timedelta(seconds=n + 1)) for n in range(12)]
    ready = [make_job(priority=5, offset=n) for n in range(10)]
    await create_many(store, later + ready)
    store.reads = store.queries = 0
    due = await store.due(NOW, 5)
    assert [job.id for job in due] == [job.id for job in ready[:5]]
    # pages of 5 after one another: 5 later, 5 later, 2 later + 3 ready, then 5 ready (2 needed)
    assert (store.queries, store.reads) == (4, 20)
    store.reads = store.queries = 0
    assert [job.id for job in await store.due(NOW, 100)] == [job.id for job in ready]
    assert (store.queries, store.reads) == (1, 22)


async def test_expiring_active_and_counts_read_only_what_they_return(
    store: FirestoreStore,
) -> None:
    expired = [make_job(deadline=NOW - timedelta(minutes=n)) for n in range(1, 8)]
    running = [make_job(status=JobState.RUNNING, deadline=NOW - timedelta(hours=1))]
    idle = [make_job(offset=n) for n in range(30)]
    await create_many(store, expired + running + idle)
    store.reads = store.queries = 0
    assert [job.id for job in await store.expiring(NOW, 3)] == [job.id for job in expired[::-1][:3]]
    assert (store.queries, store.reads) == (1, 3)
    store.reads = store.queries = 0
    assert [job.id for job in await store.active()] == [running[0].id]
    assert (store.queries, store.reads) == (1, 1)
    store.reads = store.queries = 0
    counts = await store.counts("t1")
    assert counts[JobState.QUEUED] == 37 and counts[JobState.RUNNING] == 1
    assert (store.queries, store.reads) == (0, 0)  # aggregations: no document is read


async def test_queue_fields_exist_only_while_queued(store: FirestoreStore) -> None:
    job = await store.create(make_job(priority=7, deadline=NOW, dedupKey="k"))
    fields = await document(store, job.id)
    assert fields["queue_key"] == f"093|{BASE.timestamp() * 1000:015.0f}|{job.id}"
    assert fields["deadline_queued_ms"] == int(NOW.timestamp() * 1000)
    assert {fields["state"], fields["tenant"], fields["id"]} == {"queued", "t1", job.id}
    assert job.version is not None
    running = await store.update(job.model_copy(update={"status": JobState.RUNNING}), job.version)
    fields = await document(store, job.id)
    assert "queue_key" not in fields and "deadline_queued_ms" not in fields
    assert fields["state"] == "running"
    assert running.version is not None
    back = running.model_copy(update={"status": JobState.QUEUED, "deadline": None})
    await store.update(back, running.version)
    fields = await document(store, job.id)
    assert "queue_key" in fields and "deadline_queued_ms" not in fields


# -- versions --


async def test_version_is_the_update_time_and_round_trips(store: FirestoreStore) -> None:
    created = await store.create(make_job())
    assert created.version is not None and VERSION.match(created.version)
    snapshot = await store.client.collection(store.collection).document(created.id).get()
    assert fd.version(snapshot.update_time) == created.version
    stamp = fd.timestamp(created.version)
    assert stamp is not None and fd.version(stamp) == created.version
    loaded = await store.get(created.id)
    assert loaded is not None and loaded.version == created.version

    # the same instant written with fewer digits names the same version
    short = created.version.rstrip("0Z").rstrip(".") + "Z"
    updated = await store.update(created.model_copy(update={"attempts": 1}), short)
    assert updated.version is not None and updated.version > created.version
    with pytest.raises(Conflict):
        await store.update(updated.model_copy(update={"attempts": 2}), created.version)

    # a write that changes nothing keeps the update time (Firestore's rule), so it keeps the
    # version: a no-op cannot be told from not writing at all
    same = await store.update(updated, updated.version)
    assert same.version == updated.version


async def test_a_create_retried_after_it_was_applied_succeeds(store: FirestoreStore) -> None:
    """What the client does after an UNAVAILABLE answer to a commit that was in fact applied."""
    job = make_job(dedupKey="once")
    first = await store.create(job)
    assert await store.create(job) == first
    with pytest.raises(Conflict):
        await store.create(job.model_copy(update={"priority": 9}))


# -- ids and keys --


@pytest.mark.parametrize("job_id", ["a/b", ".", "..", "__id__", "x" * 600, "ü/é|%2F"])
async def test_any_job_id_is_a_document_id(store: FirestoreStore, job_id: str) -> None:
    job = await store.create(make_job(id=job_id, tenant="t/1", dedupKey="k/../x"))
    assert await store.get(job_id) == job
    assert [j.id for j in await store.due(NOW, 10)] == [job_id]
    with pytest.raises(DuplicateKey) as raised:
        await store.create(make_job(tenant="t/1", dedupKey="k/../x"))
    assert raised.value.existing == job
    [key_id] = await key_ids(store)
    assert "/" not in key_id and key_id.count("|") == 2


async def test_ids_differing_only_in_escaped_characters_stay_apart(store: FirestoreStore) -> None:
    ids = ["a/b", "a%2Fb", "a_b", "a%5Fb", "a.b", "a%2Eb"]
    for job_id in ids:
        await store.create(make_job(id=job_id))
    for job_id in ids:
        loaded = await store.get(job_id)
        assert loaded is not None and loaded.id == job_id


async def test_update_moves_keys_atomically(store: FirestoreStore) -> None:
    first = await store.create(make_job(dedupKey="one"))
    second = await store.create(make_job(dedupKey="two", idempotencyKey="i"))
    assert second.version is not None
    with pytest.raises(DuplicateKey) as raised:
        await store.update(second.model_copy(update={"dedupKey": "one"}), second.version)
    assert raised.value.existing == first
    assert await store.get(second.id) == second
    moved = await store.update(
        second.model_copy(update={"dedupKey": "three", "idempotencyKey": None}), second.version
    )
    assert moved.dedupKey == "three"
    assert sorted(await key_ids(store)) == ["t1|dedupKey|one", "t1|dedupKey|three"]
    assert (await store.create(make_job(dedupKey="two"))).dedupKey == "two"
    assert (await store.create(make_job(idempotencyKey="i"))).idempotencyKey == "i"
    with pytest.raises(DuplicateKey):
        await store.create(make_job(dedupKey="three"))


async def test_a_job_over_the_limit_is_refused(store: FirestoreStore) -> None:
    with pytest.raises(PayloadTooLarge):
        await store.create(make_job(config={"pad": "x" * fd.MAX_DATA_BYTES}))
    assert await store.counts() == dict.fromkeys(JobState, 0)
    big = await store.create(make_job(config={"pad": "x" * (fd.MAX_DATA_BYTES - 1000)}))
    assert await store.get(big.id) == big


# -- two store instances on one collection, as two processes would have --


async def test_compare_and_set_and_leases_across_instances(
    firestore_emulator: FirestoreEmulator,
) -> None:
    collection = fresh_collection()
    first, second = (
        await opened(firestore_emulator, collection),
        await opened(firestore_emulator, collection),
    )
    try:
        job = await first.create(make_job())
        for round_ in range(10):
            seen = await second.get(job.id)
            assert seen is not None and seen.version is not None
            results = await asyncio.gather(
                *(
                    store.update(seen.model_copy(update={"attempts": round_, "reason": name}), v)
                    for store, name, v in ((first, "1", seen.version), (second, "2", seen.version))
                ),
                return_exceptions=True,
            )
            winners = [result for result in results if isinstance(result, Job)]
            assert len(winners) == 1, results
            assert sum(isinstance(result, Conflict) for result in results) == 1
            job = winners[0]
            assert await first.get(job.id) == job == await second.get(job.id)

        stores = [first, second] * 5
        taken = await asyncio.gather(
            *(s.acquire_lease("dispatch", f"o{n}", NOW, BASE) for n, s in enumerate(stores))
        )
        assert taken.count(True) == 1
    finally:
        await first.close()
        await second.close()


async def test_the_emulator_reset_deletes_every_document(
    store: FirestoreStore, firestore_emulator: FirestoreEmulator
) -> None:
    job = await store.create(make_job(dedupKey="k"))
    assert await store.acquire_lease("dispatch", "a", NOW, BASE)
    await asyncio.to_thread(firestore_emulator.reset)
    assert await store.get(job.id) is None
    assert await key_ids(store) == []
    assert await store.acquire_lease("dispatch", "b", NOW, BASE)


# -- configuration and imports --


def test_from_settings_reads_the_variables() -> None:
    store = FirestoreStore.from_settings(Settings.from_env({}))
    assert (store.project, store.database, store.collection) == (
        None,
        "(default)",
        "botsched_jobs",
    )
    assert store.emulator_host is None
    env = {
        "GCP_PROJECT_ID": "my-project",
        "FIRESTORE_DATABASE": "jobs-db",
        "FIRESTORE_COLLECTION": "bots",
        "FIRESTORE_EMULATOR_HOST": "127.0.0.1:8085",
    }
    store = FirestoreStore.from_settings(Settings.from_env(env))
    assert (store.project, store.database, store.collection, store.emulator_host) == (
        "my-project",
        "jobs-db",
        "bots",
        "127.0.0.1:8085",
    )
    for bad in ("a/b", "__jobs__", "", "1jobs"):
        with pytest.raises(ConfigError, match="FIRESTORE_COLLECTION"):
            FirestoreStore(collection=bad)


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_importing_the_store_loads_no_google_module() -> None:
    """Nothing of google.*, grpc or proto is imported (a namespace-package .pth file, such as
    functions-framework's, may create empty `google` and `google.cloud` modules at startup:
    those were there before)."""
    result = run_python(
        "import sys\n"
        "before = set(sys.modules)\n"
        "import core.stores.firestore\n"
        "store = core.stores.firestore.FirestoreStore('p')\n"
        "roots = ('google', 'grpc', 'proto')\n"
        "loaded = [m for m in set(sys.modules) - before if m.split('.')[0] in roots]\n"
        "assert not loaded, loaded\n"
        "assert not [m for m in sys.modules if m.startswith(('grpc', 'google.cloud.'))]\n"
    )
    assert result.returncode == 0, result.stderr


def test_a_missing_sdk_names_the_extra() -> None:
    result = run_python(
        "import asyncio, sys\n"
        "sys.modules['google.cloud.firestore_v1'] = None\n"
        "from core.errors import ConfigError\n"
        "from core.stores.firestore import FirestoreStore\n"
        "try:\n"
        "    asyncio.run(FirestoreStore('p').open())\n"
        "except ConfigError as exc:\n"
        "    print(exc.message)\n"
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'bot-scheduler[gcp]'" in result.stdout


# -- schedulers racing on one collection --


async def test_schedulers_on_two_instances_start_each_job_once_under_the_cap(
    firestore_emulator: FirestoreEmulator,
) -> None:
    collection = fresh_collection()
    stores = [await opened(firestore_emulator, collection) for _ in range(2)]
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
    finally:
        for each in stores:
            await each.close()
