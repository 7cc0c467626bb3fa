"""The PostgreSQL store beside SQLite, measured in the same run: submits through HTTP (against the
echo floor, as bench/http_bench.py measures the other stores), `due(10)` as the queue grows, what
the NOTIFY costs a write, and a drain by 4 replicas.

The server is a private one (tests/postgres_env.py), with fsync on and synchronous_commit off: a
commit is in the WAL before it is answered and flushed a moment later, as with SQLite's
synchronous=NORMAL, which the SQLite store runs with. Client and server share the machine's cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

from bench import drainer, http_bench, servers, stores
from bench.table import Row, Sample, at_most, ratio_of
from core.ports import JobStore
from core.stores.postgres import PostgresStore
from core.stores.sqlite import SqliteStore
from tests.postgres_env import PostgresEnv, start_postgres

BENCH_SETTINGS = {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "off"}
DUE_BIG = 10_000
DRAIN_JOBS = 400
REPLICAS = 4
READY_SECONDS = 3.0  # for the replicas to start, open and warm up before their common start
CREATES = 200  # creates per round, of each kind
REQ = "POST /api/scheduler/jobs (req/s, wrk -t1 -c32)"


@contextlib.contextmanager
def server() -> Iterator[PostgresEnv]:
    env = start_postgres(settings=BENCH_SETTINGS)
    try:
        yield env
    finally:
        env.stop()


def rows(rounds: int, seconds: float) -> list[Row]:
    with server() as env, tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        found = http_rows(env, tmp, rounds, seconds)
        found += asyncio.run(store_rows(env, tmp))
        return found


def http_rows(env: PostgresEnv, tmp: Path, rounds: int, seconds: float) -> list[Row]:
    """The floor, SQLite and PostgreSQL servers, run after run in turn."""
    entries = [
        http_bench.Contender("floor", servers.FLOOR_APP),
        http_bench.Contender(
            "sqlite", servers.OUR_APP, servers.scheduler_env("sqlite", tmp / "sqlite")
        ),
        http_bench.Contender(
            "postgres",
            servers.OUR_APP,
            servers.scheduler_env("postgres", tmp / "postgres", DATABASE_URL=env.fresh_database()),
        ),
    ]
    rates, rss = http_bench.measure(entries, rounds, seconds)
    floor = rates["floor"]
    found = [
        Row(
            f"{REQ}, {label} store{note}",
            floor.text(),
            rates[name].text(),
            ratio_of(rates[name], floor),
        )
        for name, label, note in (
            ("sqlite", "SQLite", " (this run)"),
            ("postgres", "PostgreSQL", ""),
        )
    ]
    text = f"{rss['floor']:.1f} MiB", f"{rss['postgres']:.1f} MiB"
    found.append(
        Row("RSS of an idle server, postgres store", *text, rss["postgres"] / rss["floor"])
    )
    return found


async def store_rows(env: PostgresEnv, tmp: Path) -> list[Row]:
    found = await due_rows(env, tmp)
    later, now = await create_costs(env.fresh_url())
    name = "PostgreSQL `create`: a job due now (a NOTIFY, one process listening) ÷ one due later"
    found.append(Row(f"{name} (µs)", later.text(), now.text(), ratio_of(now, later)))
    for replicas in (1, REPLICAS):
        sqlite, pg = await asyncio.to_thread(drain_rates, tmp, env.fresh_url, replicas)
        processes = f"{replicas} replica process{'es' if replicas > 1 else ''}"
        name = f"drain of {DRAIN_JOBS} due jobs by {processes} (jobs dispatched/s)"
        found.append(
            Row(
                f"{name}: SQLite (floor) vs PostgreSQL",
                sqlite.text(),
                pg.text(),
                ratio_of(pg, sqlite),
            )
        )
    return found


async def due_rows(env: PostgresEnv, tmp: Path) -> list[Row]:
    """`due(10)` with SMALL_QUEUE and DUE_BIG jobs queued, on SQLite and on PostgreSQL."""
    postgres = [PostgresStore(env.fresh_url(), migrate=True) for _ in range(2)]
    sqlite = [SqliteStore(tmp / "due-small.db"), SqliteStore(tmp / "due-big.db")]
    found = []
    for name, (small_store, big_store) in (("SQLite", sqlite), ("PostgreSQL", postgres)):
        small, big = await stores._due_pair(small_store, big_store, DUE_BIG)
        label = f"`due(10)`, {name} (µs; {stores.SMALL_QUEUE} → {DUE_BIG:,} queued)"
        found.append(Row(label, small.text(), big.text(), ratio_of(big, small), *at_most(1.3)))
    return found


async def create_costs(url: str, rounds: int = 5) -> tuple[Sample, Sample]:
    """µs per `create` of a job due in a day (its trigger sends nothing) and of a job due now
    (the trigger's NOTIFY, delivered to a listening connection), interleaved round by round."""
    writer, listener = PostgresStore(url, migrate=True), PostgresStore(url, migrate=True)
    await writer.open()
    await listener.open()
    listening = asyncio.create_task(_listen(listener))
    later, now = Sample(), Sample()
    try:
        for n in range(rounds):
            for sample, delay in ((later, timedelta(days=1)), (now, timedelta(0))):
                sample.add(await _create_cost(writer, n, delay))
    finally:
        listening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listening
        await writer.close()
        await listener.close()
    return later, now


async def _listen(store: PostgresStore) -> None:
    while True:
        await store.wait_notified(10.0)


async def _create_cost(store: JobStore, round_: int, delay: timedelta) -> float:
    jobs = []
    for n in range(CREATES):
        job = stores.due_job(round_ * CREATES + n)
        moment = job.createdAt + delay
        jobs.append(job.duplicate(notBefore=moment, joinAt=moment if delay else None))
    started = time.perf_counter()
    for job in jobs:
        await store.create(job)
    return (time.perf_counter() - started) / CREATES * 1e6


def drain_rates(
    tmp: Path, fresh_url: Callable[[], str], replicas: int, rounds: int = 3
) -> tuple[Sample, Sample]:
    """Jobs dispatched a second by `replicas` processes draining one store (bench/drainer.py),
    SQLite then PostgreSQL, round by round, each round on a fresh file or database."""
    sqlite, pg = Sample(), Sample()
    for n in range(rounds):
        sqlite.add(drain_rate("sqlite", str(tmp / f"drain-{replicas}-{n}.db"), replicas))
        pg.add(drain_rate("postgres", fresh_url(), replicas))
    return sqlite, pg


def drain_rate(kind: str, where: str, replicas: int, jobs: int = DRAIN_JOBS) -> float:
    """From `jobs` due jobs queued to the last of them started, `replicas` processes draining
    together from one moment on, each as fast as it can (with several: the worst case of
    contention, which replicas on a timer or a notification only approach)."""
    asyncio.run(_fill(drainer.store_of(kind, where), jobs))
    go_at = time.time() + READY_SECONDS
    command = [sys.executable, "-m", "bench.drainer", kind, where, repr(go_at)]
    procs = [
        subprocess.Popen(command, cwd=servers.ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(replicas)
    ]
    found = [json.loads(proc.communicate(timeout=300)[0]) for proc in procs]
    if (
        sum(one["dispatched"] for one in found) != jobs
        or max(one["ready"] for one in found) > go_at
    ):
        raise RuntimeError(f"the {kind} drain went wrong: {found}")
    return jobs / (max(one["last"] for one in found) - go_at)


async def _fill(store: JobStore, jobs: int) -> None:
    await store.open()
    try:
        await stores.fill(store, jobs)
    finally:
        await store.close()
