"""Replicas on one PostgreSQL database wake each other (LISTEN/NOTIFY), measured from the bots.

Real `botsched serve` processes on one database, the process backend running tests/stress/bot.py
(which writes when it started), a polling interval of 60 s: every start measured here comes
from a notification, since no timer ticks during a test. Each scenario is one where the replica
that made the job startable cannot start it, and no bot of the starting replica ends (the other
thing that wakes a drain loop), so without the NOTIFY the job would wait for the next tick.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.postgres_env import PostgresEnv
from tests.stress.analysis import parse_log
from tests.stress.harness import Layout, Scenario, common_env, finish_bots, postgres_env
from tests.stress.procs import Fleet, Proc, make_fleet, wait_ready

pytestmark = pytest.mark.stress

POLLING_MS = 60_000  # no replica's timer ticks during a test
WOKEN_WITHIN = 2.0  # seconds from the write to the bot's own start line
LONG_BOT = "60"  # a bot that runs through the whole test (its end would wake its parent)
SCENARIO = Scenario(store="postgres", tenants=1, polling_ms=POLLING_MS, stop_grace=2.0)
JOBS = "/api/scheduler/jobs"


@asynccontextmanager
async def replicas(
    tmp_path: Path, postgres: PostgresEnv, caps: tuple[int, ...]
) -> AsyncIterator[tuple[Fleet, Layout]]:
    """One `botsched serve` per cap (SCHEDULER_MAX_CONCURRENT_JOBS), on one fresh schema, all
    healthy; stopped, and their bots killed, at the end."""
    layout = Layout(tmp_path).make()
    common = common_env(SCENARIO, layout, postgres_env(postgres.fresh_url()))

    def env_for(index: int, command: str) -> dict[str, str]:
        return {**common, "SCHEDULER_MAX_CONCURRENT_JOBS": str(caps[index])}

    fleet = make_fleet(len(caps), 0, env_for, layout.logs, seed=1)
    try:
        await fleet.start()
        yield fleet, layout
    finally:
        await fleet.stop()
        finish_bots(layout)


async def submit(server: Proc, bot_seconds: str) -> str:
    (key,) = SCENARIO.tenant_keys().values()
    body = {
        "meetingUrl": "https://meet.example.com/wake-up",
        "config": {"stress_seconds": bot_seconds},
    }
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        response = await http.post(JOBS, json=body, headers={"X-API-Key": key})
    assert response.status_code == 201, response.text
    job_id: str = response.json()["job"]["id"]
    return job_id


async def cancel(server: Proc, job_id: str) -> dict[str, Any]:
    (key,) = SCENARIO.tenant_keys().values()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        response = await http.delete(f"{JOBS}/{job_id}", headers={"X-API-Key": key})
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()["job"]
    return job


async def bot_start(layout: Layout, job_id: str, seconds: float = 15.0) -> float | None:
    """When the job's bot wrote its start line (epoch seconds); None if it did not start."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        starts = [run.start for run in parse_log(layout.bot_log) if run.job_id == job_id]
        if starts:
            return starts[0]
        await asyncio.sleep(0.05)
    return None


async def started_within(layout: Layout, job_id: str, since: float, what: str) -> None:
    started = await bot_start(layout, job_id)
    assert started is not None, f"{what}: the bot never started ({layout.root})"
    assert started - since < WOKEN_WITHIN, (
        f"{what}: the bot started {started - since:.1f}s after the write, not at once: a "
        f"polling interval of {POLLING_MS / 1000:.0f}s started it, no notification"
    )


async def restart(proc: Proc) -> None:
    """SIGTERM, then the same command again: the bots it started run on, its children no more."""
    await asyncio.to_thread(proc.terminate, 5.0)
    proc.start()
    await wait_ready(proc)


async def test_a_job_submitted_to_a_full_replica_starts_at_once_on_another(
    tmp_path: Path, postgres: PostgresEnv
) -> None:
    """Replica A allows one bot (as during a rolling change of the cap), replica B two. A runs a
    bot; a job submitted to A stays queued there (A is at its cap), and only B may start it:
    the insert's NOTIFY wakes B's drain loop, so the bot starts within WOKEN_WITHIN seconds."""
    async with replicas(tmp_path, postgres, caps=(1, 2)) as (fleet, layout):
        a, _ = fleet.servers
        running = await submit(a, LONG_BOT)
        assert await bot_start(layout, running) is not None
        submitted_at = time.time()
        waiting = await submit(a, "0.5")
        await started_within(layout, waiting, submitted_at, "a job submitted to a full replica")


async def test_a_slot_freed_by_a_cancel_starts_the_next_job_at_once(
    tmp_path: Path, postgres: PostgresEnv
) -> None:
    """Two replicas, one slot: a bot runs, a second job waits. Both replicas restart (a
    rolling update: the bot runs on, no replica's child any more), then a cancel of the running
    job frees the slot. The cancel starts nothing, and no child of a replica ended: only the
    NOTIFY of the job's final write wakes a drain loop to start the waiting job."""
    async with replicas(tmp_path, postgres, caps=(1, 1)) as (fleet, layout):
        a, b = fleet.servers
        running = await submit(a, LONG_BOT)
        assert await bot_start(layout, running) is not None
        waiting = await submit(b, "0.5")
        for proc in (a, b):
            await restart(proc)
        assert await bot_start(layout, waiting, seconds=1.0) is None  # the slot is taken
        cancelled_at = time.time()
        assert (await cancel(b, running))["status"] == "cancelled"
        await started_within(layout, waiting, cancelled_at, "a slot freed by a cancel")
