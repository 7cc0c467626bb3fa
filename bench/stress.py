"""The big stress run per store: the scheduler's promises under load, faults and kills.

For each store, ≥1000 jobs through several `botsched serve` and `botsched drain` processes with
fault injection, clock skew and external SIGKILLs (tests/stress/harness.py), then one table of
what the bots saw: duplicates, lost jobs, orphan bots, the most bots alive at once against the
caps. Azurite, the Firestore emulator and a private PostgreSQL server (with a fresh database)
are started here; a store whose emulator or server cannot start is skipped with the reason.
Exits 1 when a promise was broken, so `make stress` fails then.

    .venv/bin/python bench/stress.py [--store sqlite] [--jobs 1000] [--processes 8] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.azurite_env import AzuriteUnavailable, start_azurite
from tests.gcloud_env import EmulatorUnavailable, start_firestore
from tests.postgres_env import PostgresUnavailable, start_postgres
from tests.stress.client import Progress
from tests.stress.harness import (
    STORES,
    Result,
    Scenario,
    azure_table_env,
    firestore_env,
    postgres_env,
    run,
)

DEFAULT_STORES = ("sqlite", "azure_table", "firestore", "postgres")
FAULTS = "after_claim=0.05,after_start=0.05,after_running=0.05,during_stop=0.3"
PROGRESS_EVERY = 5.0


class Skip(Exception):
    """The store cannot run here (its emulator or SDK is missing)."""


def big_scenario(store: str, jobs: int, processes: int, seed: int) -> Scenario:
    """A third of the processes serve (at least one), the rest drain; the memory store lives
    in one server, without faults or kills."""
    if store == "memory":
        return Scenario(
            store, jobs, servers=1, drainers=0, cap=20, tenants=4, burst=50, seed=seed, timeout=900
        )
    servers = max(1, processes // 3)
    return Scenario(
        store=store,
        jobs=jobs,
        servers=servers,
        drainers=max(processes - servers, 0),
        cap=20,
        per_tenant=8,
        tenants=4,
        burst=50,
        bot_seconds="0.5-2.0",
        faults=FAULTS,
        kills=max(2, processes),
        cancels=jobs // 50,
        overruns=jobs // 50,
        clock_skews=(2.0, -2.0, 1.0, -1.0),
        seed=seed,
        timeout=900.0,
    )


@contextlib.contextmanager
def store_settings(store: str, tmp: Path) -> Iterator[dict[str, str]]:
    """The store's settings, with its emulator running for as long as the block runs."""
    if store in ("sqlite", "memory"):
        yield {}
    elif store == "azure_table":
        with _azurite(tmp) as connection_string:
            yield azure_table_env(connection_string)
    elif store == "firestore":
        with _firestore(tmp) as (host, project):
            yield firestore_env(host, project)
    elif store == "postgres":
        with _postgres() as url:
            yield postgres_env(url)
    else:
        raise Skip(f"unknown store {store!r}")


@contextlib.contextmanager
def _azurite(tmp: Path) -> Iterator[str]:
    if not _installed("azure.data.tables"):
        raise Skip("azure-data-tables is missing: pip install -e '.[azure]'")
    try:
        env = start_azurite(tmp / "azurite")
    except (AzuriteUnavailable, RuntimeError) as exc:
        raise Skip(str(exc)) from None
    try:
        yield env.connection_string
    finally:
        env.stop()


@contextlib.contextmanager
def _firestore(tmp: Path) -> Iterator[tuple[str, str]]:
    if not _installed("google.cloud.firestore_v1"):
        raise Skip("google-cloud-firestore is missing: pip install -e '.[gcp]'")
    try:
        emulator = start_firestore(tmp / "firestore")
    except (EmulatorUnavailable, RuntimeError) as exc:
        raise Skip(str(exc)) from None
    try:
        yield emulator.host, emulator.project
    finally:
        emulator.stop()


@contextlib.contextmanager
def _postgres() -> Iterator[str]:
    """A private server (tests/postgres_env.py) and a fresh database on it, for the run."""
    try:
        env = start_postgres()
    except (PostgresUnavailable, RuntimeError) as exc:
        raise Skip(str(exc)) from None
    try:
        yield env.fresh_database()
    finally:
        env.stop()


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def progress_printer(store: str) -> Progress:
    """One line every PROGRESS_EVERY seconds, and one at the end."""
    started = time.monotonic()
    last = [0.0]

    def show(done: int, total: int) -> None:
        elapsed = time.monotonic() - started
        if elapsed - last[0] >= PROGRESS_EVERY or done >= total:
            last[0] = elapsed
            print(f"  [{store}] {elapsed:5.0f}s  {done}/{total} jobs final", flush=True)

    return show


def table(result: Result) -> str:
    per_tenant = f"{result.max_alive_per_tenant} / {result.per_tenant_cap or '-'}"
    rows = [
        "| jobs | processes | kills | duplicates | lost | orphans "
        "| max bots alive / cap | max per tenant / cap | wall time |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {result.jobs} | {result.processes} | {result.kills} | {len(result.duplicates)} "
        f"| {len(result.lost)} | {len(result.orphans)} | {result.max_alive} / {result.cap} "
        f"| {per_tenant} | {result.wall_seconds:.0f} s |",
    ]
    return "\n".join(rows)


def report(store: str, result: Result) -> None:
    print(f"\n## {store}\n")
    print(table(result))
    print(f"\n{result.summary()}")
    if result.failures:
        print(f"failed jobs by reason: {result.failures}")
    for problem in result.problems():
        print(f"- {problem[:2000]}")
    print(flush=True)


async def bench_store(store: str, args: argparse.Namespace, tmp: Path) -> Result | None:
    scenario = big_scenario(store, args.jobs, args.processes, args.seed)
    if args.source:
        scenario = replace(scenario, source=args.source)
    print(f"\n# {store}: {scenario.jobs} jobs, {scenario.processes} processes", flush=True)
    try:
        with store_settings(store, tmp) as settings:
            return await run(scenario, tmp / store, settings, progress_printer(store))
    except Skip as skip:
        print(f"\n## {store}\n\nskipped: {skip}\n", flush=True)
        return None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", action="append", choices=STORES, help="repeatable")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=8, help="serve + drain processes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--source", type=Path, help="run the scheduler of another checkout")
    parser.add_argument("--workdir", type=Path, help="keep each run's logs here")
    args = parser.parse_args(argv)
    args.source = args.source and args.source.resolve()
    args.workdir = args.workdir and args.workdir.resolve()
    return args


@contextlib.contextmanager
def workdir(kept: Path | None) -> Iterator[Path]:
    """`kept` (created) when given, else a temporary folder removed afterwards."""
    if kept is not None:
        kept.mkdir(parents=True, exist_ok=True)
        yield kept
        return
    with tempfile.TemporaryDirectory(prefix="botsched-stress-") as folder:
        yield Path(folder)


async def bench(args: argparse.Namespace) -> int:
    broken = 0
    with workdir(args.workdir) as folder:
        for store in args.store or DEFAULT_STORES:
            result = await bench_store(store, args, folder)
            if result is not None:
                report(store, result)
                broken += not result.ok
    return 1 if broken else 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(bench(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
