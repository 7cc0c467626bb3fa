"""Per-backend caps in the production topology, measured from the bots' side.

REAL parts throughout: two `botsched serve` processes on one SQLite file with
`PLATFORM=process,podman`, a cap of their own for each backend and a global cap below their sum;
the process backend runs tests/stress/bot.py (which logs its own start and end), Podman
(tests/podman_env.py) runs the busybox test bot in containers, whose start and death times are
read back from the engine's own event log (`podman events`). Jobs are submitted in parallel
bursts to both servers. The measure: never more bots alive at once on a backend than its cap,
nor in all than the global cap; no job with two bots (on one backend or across both); every job
completed by exactly one bot.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from core.backends.podman import PREFIX
from tests.podman_env import PodmanEnv
from tests.stress.analysis import BotRun, duplicates, max_alive, orphans
from tests.stress.client import JOBS, Api
from tests.stress.harness import Layout, Scenario, build_fleet, finish_bots

pytestmark = [pytest.mark.stress, pytest.mark.podman]

CAPS = {"process": 2, "podman": 2}
GLOBAL_CAP = 3
JOB_COUNT = 24
BURST = 8
BOT_SECONDS = 1
TIMEOUT = 120.0
EVENTS_SECONDS = 15.0


def spill_scenario(podman: PodmanEnv, recordings: Path, platform: str) -> Scenario:
    extra = {
        "PLATFORM": platform,
        "SCHEDULER_MAX_CONCURRENT_JOBS_PROCESS": str(CAPS["process"]),
        "SCHEDULER_MAX_CONCURRENT_JOBS_PODMAN": str(CAPS["podman"]),
        "DOCKER_HOST": podman.docker_host,
        "SCHEDULER_CONTAINER_IMAGE": podman.bot_image,
        "RECORDINGS_PATH": str(recordings),
        "SCHEDULER_DEFAULT_MEMORY": "64Mi",
        "SCHEDULER_DEFAULT_CPU": "0.5",
    }
    return Scenario(
        jobs=JOB_COUNT,
        servers=2,
        drainers=0,
        cap=GLOBAL_CAP,
        tenants=2,
        burst=BURST,
        bot_seconds=str(BOT_SECONDS),
        seed=20250611,
        claim_ttl=30.0,  # a container's start may take seconds on the test machines' storage
        extra_env=extra,
    )


async def submit_all(api: Api, tenants: list[str]) -> dict[str, str]:
    """JOB_COUNT jobs in parallel bursts, each for a meeting of its own; job id -> tenant. Both
    bots sleep BOT_SECONDS: the stress bot by `stress_seconds`, the container's by `test_sleep`."""
    owner: dict[str, str] = {}
    config = {"stress_seconds": str(BOT_SECONDS), "test_sleep": BOT_SECONDS}
    for first in range(0, JOB_COUNT, BURST):
        picked = [tenants[index % len(tenants)] for index in range(first, first + BURST)]
        bodies = [
            {"meetingUrl": f"https://meet.example.com/spill-{uuid.uuid4().hex}", "config": config}
            for _ in picked
        ]
        answers = await asyncio.gather(
            *(
                api.call("POST", JOBS, tenant, json=body)
                for tenant, body in zip(picked, bodies, strict=True)
            )
        )
        owner.update(
            (answer["job"]["id"], tenant) for answer, tenant in zip(answers, picked, strict=True)
        )
    return owner


async def container_runs(
    podman: PodmanEnv, since: float, jobs: set[str], ran: set[str]
) -> list[BotRun]:
    """Each container of `jobs` the engine started, from its `start` to its `died` event; read
    again (up to EVENTS_SECONDS) until the engine's log shows the containers of `ran` (the jobs
    whose run the API says is on Podman) ended."""
    deadline = time.monotonic() + EVENTS_SECONDS
    while True:
        runs = read_events(podman, since, jobs)
        if ran <= {run.job_id for run in runs if run.end is not None}:
            return runs
        if time.monotonic() > deadline:
            return runs
        await asyncio.sleep(0.5)


def read_events(podman: PodmanEnv, since: float, jobs: set[str]) -> list[BotRun]:
    listed = podman.podman(
        "events",
        *("--since", str(int(since) - 1), "--until", str(int(time.time()) + 1)),
        *("--filter", "type=container", "--format", "json"),
    ).stdout
    runs: dict[str, BotRun] = {}
    for line in listed.splitlines():
        event: dict[str, Any] = json.loads(line)
        job_id = str(event.get("Name", "")).removeprefix(PREFIX)
        if job_id not in jobs:
            continue
        moment = _epoch(event["Time"])
        if event["Status"] == "start":
            runs[event["ID"]] = BotRun(job_id, 0, moment)
        elif event["Status"] == "died" and event["ID"] in runs:
            runs[event["ID"]].end = moment
    return sorted(runs.values(), key=lambda run: run.start)


def _epoch(stamp: str) -> float:
    """The engine's RFC 3339 time (nanoseconds) as epoch seconds."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(whole + "+00:00").timestamp()
    return seconds + float(f"0.{fraction or 0}")


@pytest.mark.parametrize("platform", ["process,podman", "podman,process"])
async def test_two_servers_hold_each_backend_s_cap_and_the_global_one(
    podman: PodmanEnv, tmp_path: Path, platform: str
) -> None:
    """The first backend fills to its own cap, the next takes what the global cap leaves: each
    order makes a different backend's cap the one reached."""
    scenario = spill_scenario(podman, tmp_path / "recordings", platform)
    layout = Layout(tmp_path / "run").make()
    fleet = build_fleet(scenario, layout, {})
    api = Api(fleet.live_servers, scenario.tenant_keys(), random.Random(scenario.seed))
    since = time.time()
    try:
        await fleet.start()
        owner = await submit_all(api, list(scenario.tenant_keys()))
        assert await api.wait_final(len(owner), TIMEOUT, None), "not every job became final"
        await asyncio.sleep(scenario.settle)
        views = await api.views(owner)
        ran = {
            job["id"]
            for tenant in scenario.tenant_keys()
            for job in await api.list_tenant(tenant)
            if job["id"] in owner and (job.get("execution") or {}).get("backend") == "podman"
        }
    finally:
        await fleet.stop()
        await api.close()
    local = finish_bots(layout)
    containers = await container_runs(podman, since, set(owner), ran)
    everything = local + containers
    end = time.time()
    alive = {
        "process": max_alive(local, end),
        "podman": max_alive(containers, end),
        "all": max_alive(everything, end),
    }
    summary = f"alive at most: {alive}; bots: {len(local)} local, {len(containers)} containers"
    assert alive["process"] <= CAPS["process"] and alive["podman"] <= CAPS["podman"], summary
    assert alive["all"] <= GLOBAL_CAP, summary
    assert duplicates(everything) == [], summary
    assert Counter(view.status for view in views.values()) == {"completed": JOB_COUNT}, summary
    assert {run.job_id for run in everything} == set(owner), summary  # one bot each
    assert not orphans(everything, views, scenario.orphan_tolerance()), summary
    assert local and containers, summary  # the jobs did spill over
    first = platform.split(",")[0]
    assert (alive["all"], alive[first]) == (GLOBAL_CAP, CAPS[first]), summary  # caps reached
    assert not fleet.crashes, fleet.crashes[0]
