"""Spill-over on REAL backends: `PLATFORM=process,podman`, the process backend running local
processes and Podman's Docker-compatible service (tests/podman_env.py) running containers, both
running the same test bot (tests/podman_env.py BOT_SCRIPT: reads its config from stdin, obeys
`test_sleep`, says "got TERM" when stopped). Jobs go through the API and `drain_once`.

Failures are real: the process backend's runs directory is a file, so it cannot create a run
(BackendError "Not a directory"). Where a test injects a fault, it says so: a subclass of the real
backend that calls the real method, then raises.
"""

from __future__ import annotations

import asyncio
import shlex
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.api import create_app
from core.backends.podman import PREFIX, PodmanBackend
from core.backends.process import ProcessBackend
from core.backends.spill import SpillBackend
from core.config import Settings
from core.errors import BackendError
from core.models import ExecutionRef, Job
from core.runtime import Runtime, build_store
from core.scheduler import Scheduler
from tests.podman.test_podman_backend import DEADLINE, Harness, containers_of, podman_variables
from tests.podman_env import BOT_SCRIPT, PodmanEnv

pytestmark = pytest.mark.podman


def spill_settings(podman: PodmanEnv, tmp: Path, **extra: str) -> Settings:
    bot = tmp / "bot.sh"  # the containers' test bot, as a local program for the process backend
    bot.write_bytes(BOT_SCRIPT)
    bot.chmod(0o755)
    env = {
        **podman_variables(podman, tmp),
        "PLATFORM": "process,podman",
        "BOT_COMMAND": shlex.quote(str(bot)),
        "SCHEDULER_RETRY_BASE_SECONDS": "0",
        "SCHEDULER_MAX_ATTEMPTS": "5",
        **extra,
    }
    (tmp / "data").mkdir(parents=True, exist_ok=True)
    return Settings.from_env(env)


class SpillHarness(Harness):
    """tests/podman's harness, on a scheduler the test may build itself."""

    def __init__(self, settings: Settings, scheduler: Scheduler | None = None) -> None:
        self.settings = settings
        self.runtime = Runtime(settings, scheduler)
        app = create_app(settings, self.runtime)
        transport = httpx.ASGITransport(app=app)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://test")

    async def submit(self, **config: Any) -> str:
        """A job for a meeting of its own (one bot per meeting: tests/podman's are one)."""
        meeting = f"https://meet.example.com/spill-{uuid.uuid4().hex[:12]}"
        body = {"meetingUrl": meeting, "config": config}
        response = await self.client.post("/api/scheduler/jobs", json=body)
        assert response.status_code == 201, response.text
        job_id: str = response.json()["job"]["id"]
        return job_id

    async def stats(self) -> dict[str, dict[str, Any]]:
        response = await self.client.get("/api/scheduler/stats")
        assert response.status_code == 200, response.text
        return {entry["name"]: entry for entry in response.json()["stats"]["backends"]}

    async def wait_for_log(self, job_id: str, text: str) -> str:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            logs = await self.logs(job_id)
            if text in logs:
                return logs
            await asyncio.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared in the logs of {job_id}")


async def harness_on(settings: Settings, process: ProcessBackend) -> SpillHarness:
    """A harness whose composite has `process` as its first backend and the real Podman one."""
    podman = PodmanBackend(settings.model_copy(update={"platform": "podman"}))
    backend = SpillBackend({"process": process, "podman": podman}, settings)
    store = build_store(settings)
    await store.open()
    return SpillHarness(settings, Scheduler(store, backend, settings))


def process_child(settings: Settings, cls: type[ProcessBackend] = ProcessBackend) -> Any:
    return cls.from_settings(settings.model_copy(update={"platform": "process"}))


def run_dir(settings: Settings, job_id: str) -> Path:
    return settings.data_dir / "runs" / job_id


@pytest.fixture
async def spill(podman: PodmanEnv, tmp_path: Path) -> AsyncIterator[SpillHarness]:
    harness = SpillHarness(
        spill_settings(podman, tmp_path, SCHEDULER_MAX_CONCURRENT_JOBS_PROCESS="1")
    )
    yield harness
    await harness.close()


async def test_a_job_over_the_first_backend_s_cap_runs_on_the_second_and_is_reached_there(
    spill: SpillHarness, podman: PodmanEnv
) -> None:
    """REAL process backend (cap 1) and REAL Podman: the second job's bot is a container; the
    job says so, and its status, logs and cancel reach the backend that holds each run."""
    first = await spill.submit(test_sleep=60)
    local = await spill.drain_until(first, "running")
    second = await spill.submit(test_sleep=60)
    container = await spill.drain_until(second, "running")
    assert local["execution"]["backend"] == "process" and local["backend"] == "process"
    assert container["execution"] == {"backend": "podman", "id": PREFIX + second}
    assert (container["backend"], container["backends"]) == ("podman", ["podman"])
    assert run_dir(spill.settings, first).is_dir() and not run_dir(spill.settings, second).exists()
    assert containers_of(podman, first) == [] and len(containers_of(podman, second)) == 1

    assert "stdin: " in await spill.wait_for_log(first, "sleeping")  # from the local process
    assert f"JOB_ID={second}" in await spill.wait_for_log(second, "sleeping")  # the container's
    await spill.drain_until(first, "running")  # the status checks of both answer `running`
    await spill.drain_until(second, "running")
    stats = await spill.stats()
    assert (stats["process"]["cap"], stats["process"]["activeJobs"]) == (1, 1)
    assert (stats["podman"]["cap"], stats["podman"]["activeJobs"]) == (None, 1)

    for job_id in (first, second):
        response = await spill.client.delete(f"/api/scheduler/jobs/{job_id}")
        assert response.status_code == 200 and response.json()["job"]["status"] == "cancelled"
        assert "got TERM" in await spill.logs(job_id)
    assert all(c["State"] == "exited" for c in containers_of(podman, second))
    assert (run_dir(spill.settings, first) / "exit").read_text().strip() == "143"


class CountedProcess(ProcessBackend):
    """The REAL process backend; only counts the calls to its start."""

    attempts = 0

    async def start(self, job: Job) -> ExecutionRef:
        CountedProcess.attempts += 1
        return await super().start(job)


async def test_a_failing_first_backend_spills_cools_down_and_is_tried_again(
    podman: PodmanEnv, tmp_path: Path
) -> None:
    """REAL failure: the process backend's runs directory is a file, so each of its starts
    fails. Jobs spill to REAL Podman; after SCHEDULER_BACKEND_FAILURES=2 failures the process
    backend is not tried during the cool-down; once it is over and the directory is back, one
    start is tried there, succeeds, and the process backend takes jobs again."""
    settings = spill_settings(
        podman, tmp_path, SCHEDULER_BACKEND_FAILURES="2", SCHEDULER_BACKEND_COOLDOWN_SECONDS="4"
    )
    CountedProcess.attempts = 0
    spill = await harness_on(settings, process_child(settings, CountedProcess))
    runs = settings.data_dir / "runs"
    runs.write_text("not a directory")
    try:
        placed = []
        for _ in range(4):
            job_id = await spill.submit(test_sleep=0)
            placed.append(await spill.drain_until(job_id, "completed"))
        assert CountedProcess.attempts == 2  # then skipped: cooling down
        assert [job["execution"]["backend"] for job in placed] == ["podman"] * 4
        assert [job["backends"] for job in placed[:2]] == [["process", "podman"]] * 2
        assert [job["backends"] for job in placed[2:]] == [["podman"]] * 2
        assert "cannot create the run directory" in placed[0]["error"]
        cooling = (await spill.stats())["process"]
        assert cooling["coolingDown"] and cooling["consecutiveFailures"] == 2

        runs.unlink()  # the backend is fixed; it is tried again once the cool-down is over
        await asyncio.sleep(4.2)
        again = await spill.submit(test_sleep=0)
        done = await spill.drain_until(again, "completed")
        assert done["execution"]["backend"] == "process" and CountedProcess.attempts == 3
        assert (await spill.stats())["process"]["consecutiveFailures"] == 0
        assert "stdin: " in await spill.logs(again)
    finally:
        await spill.close()


class MadeButRaised(ProcessBackend):
    """FAULT INJECTION around the REAL process backend: its start makes the run, then raises as
    if the answer was lost; while `blind`, its find cannot tell either."""

    blind = False

    async def start(self, job: Job) -> ExecutionRef:
        await super().start(job)
        raise BackendError("fault injection: the run was made, the answer lost")

    async def find(self, job_id: str) -> ExecutionRef | None:
        if self.blind:
            raise BackendError("fault injection: cannot tell")
        return await super().find(job_id)


@pytest.mark.parametrize("blind", [False, True])
async def test_a_start_that_made_its_run_and_raised_never_gets_a_second_bot(
    podman: PodmanEnv, tmp_path: Path, blind: bool
) -> None:
    """The first start made the bot and raised. The job adopts that run (at once, or once the
    backend can tell again: meanwhile it keeps its claim through recovery); REAL Podman, the
    backend it would spill to, never sees a container for it: `podman ps -a` and its runs()."""
    settings = spill_settings(
        podman,
        tmp_path,
        SCHEDULER_CLAIM_TTL_SECONDS="2",
        SCHEDULER_MAX_CLOCK_SKEW_SECONDS="0",
    )
    process = process_child(settings, MadeButRaised)
    process.blind = blind
    spill = await harness_on(settings, process)
    try:
        job_id = await spill.submit(test_sleep=5)
        if blind:
            scheduler = await spill.scheduler()
            until = time.monotonic() + 5  # two claim leases: recovery asked and could not tell
            while time.monotonic() < until:
                await scheduler.drain_once()
                assert (await spill.job(job_id))["status"] == "provisioning"
                await asyncio.sleep(0.2)
            process.blind = False
        job = await spill.drain_until(job_id, "running")
        assert job["execution"] == {"backend": "process", "id": job_id}
        assert job["backends"] == ["process"] and job["attempts"] == 1
        job = await spill.drain_until(job_id, "completed")
        assert (await spill.logs(job_id)).count("stdin: ") == 1
        listed = podman.podman("ps", "-a", "--filter", f"label=io.botsched.job={job_id}", "-q")
        assert listed.stdout.strip() == ""
        scheduler = await spill.scheduler()
        assert isinstance(scheduler.backend, SpillBackend)
        assert job_id not in await scheduler.backend.children["podman"].runs()
    finally:
        await spill.close()
