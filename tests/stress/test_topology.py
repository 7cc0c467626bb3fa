"""The scheduler's promises in its production topology, measured from the bots' side.

Real `botsched serve` and `botsched drain` processes on a real store, the process backend
running tests/stress/bot.py, faults and kills injected (tests/stress/harness.py). Each test
asserts: no job got two bots, no job was lost, no bot outlived its job, and never more bots
alive at once than the global and per-tenant caps allow.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from core.stores.postgres_connections import POOL_WAIT_SECONDS
from tests.azurite_env import AzuriteEnv
from tests.gcloud_env import FirestoreEmulator
from tests.postgres_env import PostgresEnv
from tests.stress.analysis import parse_log
from tests.stress.harness import (
    Result,
    Scenario,
    azure_table_env,
    firestore_env,
    postgres_env,
    run,
)

pytestmark = pytest.mark.stress

FAULTS = "after_claim=0.05,after_start=0.05,after_running=0.05,during_stop=0.3"
# two servers and three drainers on one store, faults, two kills, clocks 2 s ahead and behind,
# bots stopped by cancels and by maxRuntimeSeconds
TOPOLOGY = Scenario(
    jobs=60,
    servers=2,
    drainers=3,
    cap=4,
    per_tenant=2,
    tenants=3,
    burst=24,
    bot_seconds="0.2-0.6",
    faults=FAULTS,
    kills=2,
    cancels=4,
    overruns=3,
    clock_skews=(2.0, 0.0, -2.0),  # serve0 ahead, serve1 on time, drain0 behind
    seed=20250301,
    timeout=60.0,
)


def check(result: Result) -> None:
    """No duplicate, nothing lost, no orphan, both caps kept; else the Result in words."""
    broken = {
        "duplicate bots": bool(result.duplicates),
        "lost jobs": bool(result.lost),
        "orphan bots": bool(result.orphans),
        "cap exceeded": result.cap_exceeded,
        "per-tenant cap exceeded": result.per_tenant_cap_exceeded,
    }
    failed = [name for name, bad in broken.items() if bad]
    details = "\n".join([result.summary(), *result.problems()])
    assert not failed, f"{', '.join(failed)}\n{details}"


async def test_a_run_where_nothing_can_go_wrong_is_clean(tmp_path: Path) -> None:
    """Cap above the job count and no faults: a problem here is the harness's own."""
    scenario = Scenario(jobs=12, servers=1, drainers=1, cap=12, bot_seconds="0.3", seed=3)
    result = await run(scenario, tmp_path)
    check(result)
    assert (result.bots, result.statuses) == (12, {"completed": 12}), result.summary()
    assert not result.crashes, result.crashes[0]


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_one_server_keeps_its_cap_under_a_burst_of_posts(tmp_path: Path, store: str) -> None:
    """30 parallel POSTs to one `botsched serve` with cap 3: each POST's dispatch races the
    others and the timer's in the one process."""
    scenario = Scenario(
        store=store, jobs=30, servers=1, drainers=0, cap=3, burst=30, bot_seconds="0.7-1.0"
    )
    check(await run(scenario, tmp_path))


async def test_servers_and_drainers_on_sqlite(tmp_path: Path) -> None:
    check(await run(replace(TOPOLOGY, store="sqlite"), tmp_path))


async def test_servers_and_drainers_on_azure_table(tmp_path: Path, azurite: AzuriteEnv) -> None:
    scenario = replace(TOPOLOGY, store="azure_table", jobs=30)
    check(await run(scenario, tmp_path, azure_table_env(azurite.connection_string)))


async def test_servers_and_drainers_on_firestore(
    tmp_path: Path, firestore_emulator: FirestoreEmulator
) -> None:
    scenario = replace(TOPOLOGY, store="firestore", jobs=30)
    store_env = firestore_env(firestore_emulator.host, firestore_emulator.project)
    check(await run(scenario, tmp_path, store_env))


async def test_servers_and_drainers_on_postgres(tmp_path: Path, postgres: PostgresEnv) -> None:
    scenario = replace(TOPOLOGY, store="postgres", jobs=30)
    check(await run(scenario, tmp_path, postgres_env(postgres.fresh_url())))


# submits spread over a few seconds (bursts of 4, up to 0.4 s apart), so that the restart comes
# while they run; no kills nor faults: every process that dies here died of the restart
THROUGH_A_RESTART = replace(
    TOPOLOGY,
    store="postgres",
    jobs=40,
    drainers=2,
    burst=4,
    burst_gap=0.4,
    faults="",
    kills=0,
    clock_skews=(),
    cancels=3,
    overruns=2,
)
DOWN_SECONDS = POOL_WAIT_SECONDS + 2  # longer than a call waits for a connection: calls fail
LISTENING = (
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
    "AND query = 'LISTEN botsched_jobs'"
)


async def until(condition: Callable[[], bool], seconds: float) -> bool:
    """Whether `condition` came true within `seconds` (checked every 0.05 s)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_servers_and_drainers_on_postgres_through_a_server_restart(
    tmp_path: Path, postgres: PostgresEnv
) -> None:
    """Two servers and two drainers on one database; once bots run and while submits go on,
    the server stops (`pg_ctl stop -m fast`: every connection dropped) and starts again
    DOWN_SECONDS later. Calls fail meanwhile (a submit answers 500, which the harness retries
    with its Idempotency-Key; a drain logs its failure); then the pools and the listening
    connections come back by themselves: no process dies or restarts, and the promises hold,
    measured from the bots."""
    scenario = THROUGH_A_RESTART
    app = "restart-" + uuid.uuid4().hex[:8]
    schema = postgres.fresh_schema()
    url = postgres.url(options=f"-c search_path={schema}", application_name=app)
    seen: dict[str, Any] = {}

    def listening() -> int:
        return int(postgres.execute(LISTENING, (app,))[0][0])

    async def restart_once_bots_run() -> None:
        # every process up (listening: past its start-up, which fails fast on a database that
        # is down) and bots running: the restart drops live connections only
        await until(lambda: listening() >= scenario.processes, scenario.timeout)
        await until(lambda: len(parse_log(tmp_path / "bots.log")) >= 4, scenario.timeout)
        seen["listening before"] = listening()
        seen["jobs before"] = postgres.execute(f"SELECT count(*) FROM {schema}.jobs")[0][0]
        seen["restart seconds"] = await asyncio.to_thread(postgres.restart, DOWN_SECONDS)
        back = time.monotonic()
        await until(lambda: listening() >= scenario.processes, 30.0)
        seen["listening after"] = listening()
        seen["listening again within"] = time.monotonic() - back

    result = await run(scenario, tmp_path, postgres_env(url), during=restart_once_bots_run)
    check(result)
    assert not result.crashes and result.restarts == 0, result.summary()
    assert 0 < seen["jobs before"] < scenario.jobs, seen  # the restart came amid the submits
    # every process's listening connection came back, while the jobs still ran
    assert seen.get("listening before") == seen.get("listening after") == scenario.processes, seen
    # only the cancels and the overruns end otherwise: the outage failed no job
    expected = scenario.jobs - scenario.cancels - scenario.overruns
    assert result.statuses.get("completed", 0) >= expected, result.summary()
