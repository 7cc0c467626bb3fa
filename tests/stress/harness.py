"""Stress the scheduler in its production topology and measure its promises from the bots' side.

A run starts real `botsched serve` and `botsched drain` processes on one store (SQLite file,
Azurite table, Firestore emulator collection, PostgreSQL schema, or one in-memory server), with
the process backend running tests/stress/bot.py as the bot. It submits jobs in bursts of
parallel POSTs, injects faults (BOTSCHED_FAULTS, clock skew, external SIGKILLs, every dead
process restarted), waits until every job is final, then reads the bots' own log: how many bots
were alive at once (in all and per tenant), which jobs got two bots, which were lost, which bots
outlived their job.

Used by tests/stress/test_topology.py (small fixed scenarios) and bench/stress.py (big ones).
"""

from __future__ import annotations

import asyncio
import math
import random
import shlex
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.stress.analysis import BotRun, JobView, Result, fill, parse_log, settle_unended
from tests.stress.client import BURST_GAP, Api, Progress
from tests.stress.procs import BOT, ROOT, Fleet, base_env, make_fleet

STORES = ("sqlite", "azure_table", "firestore", "postgres", "memory")


@dataclass(frozen=True)
class Scenario:
    """One stress run: the topology, the load, the faults; fixed by `seed` where it can be."""

    store: str = "sqlite"
    jobs: int = 60
    servers: int = 2
    drainers: int = 3
    cap: int = 4
    per_tenant: int = 0  # 0: no per-tenant cap
    tenants: int = 3
    burst: int = 10  # parallel POSTs at a time
    burst_gap: float = BURST_GAP  # at most this many seconds between bursts
    bot_seconds: str = "0.3-1.2"  # a number, or a uniform `low-high` range
    faults: str = ""  # BOTSCHED_FAULTS for the drain processes
    serve_faults: bool = False  # the serve processes get BOTSCHED_FAULTS too
    kills: int = 0  # external SIGKILLs of random serve/drain processes
    cancels: int = 0  # DELETEs of random jobs during the run (running ones get their bot stopped)
    overruns: int = 0  # jobs whose bot outruns maxRuntimeSeconds (the scheduler stops it)
    clock_skews: tuple[float, ...] = ()  # BOTSCHED_CLOCK_OFFSET_SECONDS of process 0, 1, ...
    seed: int = 1
    timeout: float = 120.0  # seconds for every job to become final
    settle: float = 1.5  # seconds to wait after that, for late bots to show
    stop_grace: float = 2.0  # BOT_STOP_GRACE_SECONDS
    polling_ms: int = 200
    claim_ttl: float = 5.0  # claim and dispatch lease seconds
    extra_env: dict[str, str] = field(default_factory=dict)
    source: Path = ROOT  # the checkout whose scheduler runs (default: this one)

    @property
    def processes(self) -> int:
        return self.servers + self.drainers

    def check(self) -> None:
        if self.store not in STORES:
            raise ValueError(f"store {self.store!r}: choose one of {STORES}")
        if self.servers < 1:
            raise ValueError("a run needs at least one server to submit to")
        if self.store == "memory" and (self.processes != 1 or self.kills or self.faults):
            raise ValueError("the memory store lives in one server: no drainers, kills or faults")
        if max(self.cancels, self.overruns) > self.jobs:
            raise ValueError("more jobs to cancel or to overrun than jobs")

    def tenant_keys(self) -> dict[str, str]:
        return {f"t{index}": f"stress-key-{self.seed}-t{index}" for index in range(self.tenants)}

    def orphan_tolerance(self) -> float:
        """How late after its job's completedAt a bot may end: the stop grace, plus the clock
        skew of whichever process wrote completedAt, plus scheduling slack."""
        return self.stop_grace + max((abs(skew) for skew in self.clock_skews), default=0) + 0.5

    def expected_seconds(self) -> float:
        low, _, high = self.bot_seconds.partition("-")
        mean = (float(low) + float(high or low)) / 2
        waves = math.ceil(self.jobs / max(min(self.cap, self.jobs), 1))
        return waves * (mean + self.polling_ms / 1000) + 2.0


def azure_table_env(connection_string: str) -> dict[str, str]:
    """The settings for a fresh table on an Azurite (or Azure) account."""
    table = "stress" + uuid.uuid4().hex[:12]
    return {"AZURE_STORAGE_CONNECTION_STRING": connection_string, "AZURE_TABLE_NAME": table}


def firestore_env(host: str, project: str) -> dict[str, str]:
    """The settings for a fresh collection on a Firestore emulator."""
    collection = "stress" + uuid.uuid4().hex[:12]
    return {
        "FIRESTORE_EMULATOR_HOST": host,
        "GCP_PROJECT_ID": project,
        "FIRESTORE_COLLECTION": collection,
    }


def postgres_env(url: str) -> dict[str, str]:
    """The settings for a PostgreSQL database (or schema) no other run uses; the processes
    migrate it when they start."""
    return {"DATABASE_URL": url, "SCHEDULER_POSTGRES_MIGRATE": "auto"}


@dataclass(frozen=True)
class Layout:
    """Where a run keeps its files: the shared data dir (store, runs), logs and the bot log."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def bot_log(self) -> Path:
        return self.root / "bots.log"

    def make(self) -> Layout:
        for folder in (self.data, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        return self


def common_env(scenario: Scenario, layout: Layout, store_env: dict[str, str]) -> dict[str, str]:
    keys = ",".join(f"{key}:{tenant}" for tenant, key in scenario.tenant_keys().items())
    env = base_env(scenario.source)
    env.update(
        SCHEDULER_STORE=scenario.store,
        SCHEDULER_DATA_DIR=str(layout.data),
        SCHEDULER_SQLITE_PATH=str(layout.data / "scheduler.db"),
        PLATFORM="process",
        BOT_COMMAND=shlex.join([sys.executable, str(BOT)]),
        BOT_STOP_GRACE_SECONDS=str(scenario.stop_grace),
        STRESS_BOT_LOG=str(layout.bot_log),
        STRESS_BOT_SECONDS=scenario.bot_seconds,
        SCHEDULER_MAX_CONCURRENT_JOBS=str(scenario.cap),
        SCHEDULER_MAX_CONCURRENT_PER_TENANT=str(scenario.per_tenant),
        SCHEDULER_POLLING_INTERVAL=str(scenario.polling_ms),
        SCHEDULER_CLAIM_TTL_SECONDS=str(scenario.claim_ttl),
        SCHEDULER_DISPATCH_LEASE_SECONDS=str(scenario.claim_ttl),
        SCHEDULER_RETRY_BASE_SECONDS="0.2",
        SCHEDULER_RETRY_MAX_SECONDS="2",
        SCHEDULER_MAX_ATTEMPTS="20",
        SCHEDULER_API_KEYS=keys,
    )
    return {**env, **store_env, **scenario.extra_env}


def build_fleet(scenario: Scenario, layout: Layout, store_env: dict[str, str]) -> Fleet:
    common = common_env(scenario, layout, store_env)

    def env_for(index: int, command: str) -> dict[str, str]:
        env = dict(common)
        if scenario.faults and (command == "drain" or scenario.serve_faults):
            env["BOTSCHED_FAULTS"] = scenario.faults
        if index < len(scenario.clock_skews):
            env["BOTSCHED_CLOCK_OFFSET_SECONDS"] = str(scenario.clock_skews[index])
        return env

    return make_fleet(
        scenario.servers, scenario.drainers, env_for, layout.logs, scenario.seed, scenario.source
    )


async def kill_now_and_then(fleet: Fleet, scenario: Scenario, rng: random.Random) -> None:
    """`scenario.kills` SIGKILLs of random processes, spread over the expected run time."""
    spacing = scenario.expected_seconds() / (scenario.kills + 1)
    for _ in range(scenario.kills):
        await asyncio.sleep(spacing * (0.5 + 0.5 * rng.random()))
        fleet.kill_one()


async def cancel_now_and_then(
    api: Api, owner: dict[str, str], scenario: Scenario, rng: random.Random
) -> None:
    """`scenario.cancels` DELETEs of random jobs, spread over the first half of the run."""
    victims = rng.sample(sorted(owner), scenario.cancels)
    spacing = scenario.expected_seconds() / 2 / (scenario.cancels + 1)
    for job_id in victims:
        await asyncio.sleep(spacing * (0.5 + rng.random()))
        await api.cancel(job_id, owner[job_id])


Disruption = Callable[[], Awaitable[None]]


async def run(
    scenario: Scenario,
    workdir: Path,
    store_env: dict[str, str] | None = None,
    progress: Progress | None = None,
    during: Disruption | None = None,
) -> Result:
    """Run `scenario` in `workdir` (store settings from `store_env` for the cloud stores) and
    measure it; `during` runs beside the load from the start (e.g. restarts the database) and
    is cancelled once every job is final. Every process and every bot it started is gone when
    it returns."""
    scenario.check()
    layout = Layout(workdir).make()
    fleet = build_fleet(scenario, layout, store_env or {})
    result = Result(
        scenario.store, scenario.jobs, scenario.processes, scenario.cap, scenario.per_tenant
    )
    started = time.monotonic()
    rng = random.Random(scenario.seed)
    api = Api(fleet.live_servers, scenario.tenant_keys(), rng)
    views: dict[str, JobView] = {}
    try:
        await fleet.start()
        views = await drive(scenario, fleet, api, result, rng, progress, during)
    finally:
        await fleet.stop()
        await api.close()
        runs = finish_bots(layout)
    result.wall_seconds = time.monotonic() - started
    result.kills, result.restarts, result.crashes = fleet.kills, fleet.restarts, fleet.crashes
    fill(result, runs, views, scenario.orphan_tolerance(), time.time())
    result.workdir = str(layout.root)
    (layout.root / "result.txt").write_text(result.report())
    return result


async def drive(
    scenario: Scenario,
    fleet: Fleet,
    api: Api,
    result: Result,
    rng: random.Random,
    progress: Progress | None,
    during: Disruption | None = None,
) -> dict[str, JobView]:
    """Submit, fault, wait for every job to be final, settle; the jobs as the API shows them."""
    deadline = time.monotonic() + scenario.timeout
    tasks = [
        asyncio.create_task(fleet.supervise()),
        asyncio.create_task(kill_now_and_then(fleet, scenario, rng)),
    ]
    if during is not None:
        tasks.append(asyncio.create_task(during()))
    overruns = frozenset(rng.sample(range(scenario.jobs), scenario.overruns))
    try:
        owner = await api.submit_all(
            scenario.jobs, scenario.burst, scenario.seed, overruns, scenario.burst_gap
        )
        tasks.append(asyncio.create_task(cancel_now_and_then(api, owner, scenario, rng)))
        left = max(deadline - time.monotonic(), 0.0)
        result.timed_out = not await api.wait_final(len(owner), left, progress)
        tasks[1].cancel()
        await asyncio.sleep(scenario.settle)
        views = await api.views(owner)
    finally:
        for task in tasks:
            task.cancel()
        ended = await asyncio.gather(*tasks, return_exceptions=True)
    for error in ended:  # the disruption's own failure too (a restart that failed)
        if isinstance(error, Exception):  # not CancelledError: a BaseException
            raise error
    return views


def finish_bots(layout: Layout) -> list[BotRun]:
    """The bot runs of the log; bots still alive are flagged, then killed."""
    runs = parse_log(layout.bot_log)
    settle_unended(runs, BOT, layout.data / "runs")
    return runs


__all__ = [
    "STORES",
    "Result",
    "Scenario",
    "azure_table_env",
    "firestore_env",
    "postgres_env",
    "run",
]
