"""The podman backend on REAL containers: Podman's Docker-compatible service (started by the
session fixture in tests/conftest.py) running the busybox test bot (tests/podman_env.py).

Jobs go through the API and `drain_once`, not only the backend class. The test bot reads its
config from stdin and obeys `test_exit_code`, `test_sleep` and `test_oom` in the job's config.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from core.api import create_app
from core.backends.engine import Endpoint
from core.backends.podman import LABEL_JOB, LABEL_TENANT, PREFIX, PodmanBackend
from core.config import Settings
from core.errors import BackendError, StartRefused
from core.models import ExecutionRef, Job, JobSpec, JobState
from core.runtime import Runtime
from core.scheduler import Scheduler
from core.stores.memory import MemoryStore
from tests.podman_env import PodmanEnv, import_test_image
from tests.specs import serve_in_thread

pytestmark = pytest.mark.podman

DEADLINE = 60.0


def podman_variables(podman: PodmanEnv, tmp: Path) -> dict[str, str]:
    """The settings of a scheduler whose bots run on the test's Podman, small and quick."""
    return {
        "PLATFORM": "podman",
        "DOCKER_HOST": podman.docker_host,
        "SCHEDULER_CONTAINER_IMAGE": podman.bot_image,
        "SCHEDULER_DATA_DIR": str(tmp / "data"),
        "RECORDINGS_PATH": str(tmp / "recordings"),
        "SCHEDULER_DEFAULT_MEMORY": "64Mi",
        "SCHEDULER_DEFAULT_CPU": "0.5",
        "BOT_STOP_GRACE_SECONDS": "3",
    }


def settings_for(podman: PodmanEnv, tmp: Path, **extra: str) -> Settings:
    return Settings.from_env({**podman_variables(podman, tmp), **extra})


class Harness:
    """The app and its scheduler on one runtime, driven the way a timer would drive them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime = Runtime(settings)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(settings, self.runtime)),
            base_url="http://test",
        )

    async def scheduler(self) -> Scheduler:
        return await self.runtime.scheduler()

    async def submit(self, **config: Any) -> str:
        body = {"meetingUrl": "https://meet.google.com/abc-defg-hij", "config": config}
        response = await self.client.post("/api/scheduler/jobs", json=body)
        assert response.status_code == 201, response.text
        job_id: str = response.json()["job"]["id"]
        return job_id

    async def job(self, job_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/api/scheduler/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()["job"]
        return job

    async def drain_until(self, job_id: str, *states: str) -> dict[str, Any]:
        scheduler = await self.scheduler()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while loop.time() < deadline:
            await scheduler.drain_once()
            job = await self.job(job_id)
            if job["status"] in states:
                return job
            await asyncio.sleep(0.2)
        raise AssertionError(f"job {job_id} never reached {states}: {await self.job(job_id)}")

    async def logs(self, job_id: str) -> str:
        response = await self.client.get(f"/api/scheduler/jobs/{job_id}/logs")
        assert response.status_code == 200, response.text
        logs: str = response.json()["logs"]
        return logs

    async def close(self) -> None:
        await self.client.aclose()
        await self.runtime.close()


@pytest.fixture
async def harness(podman: PodmanEnv, tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(settings_for(podman, tmp_path))
    yield h
    await h.close()


def engine(podman: PodmanEnv) -> httpx.Client:
    transport = httpx.HTTPTransport(uds=str(podman.socket))
    return httpx.Client(transport=transport, base_url="http://engine/v1.41", timeout=30)


def containers_of(podman: PodmanEnv, job_id: str) -> list[dict[str, Any]]:
    filters = json.dumps({"label": [f"{LABEL_JOB}={job_id}"]})
    with engine(podman) as client:
        response = client.get("/containers/json", params={"all": 1, "filters": filters})
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()
    return found


async def test_a_bot_that_exits_0_completes_and_gets_its_config(
    harness: Harness, podman: PodmanEnv
) -> None:
    job_id = await harness.submit(test_exit_code=0)
    job = await harness.drain_until(job_id, "completed", "failed")
    assert job["status"] == "completed" and job["exitCode"] == 0
    logs = await harness.logs(job_id)
    stdin_line = next(line for line in logs.splitlines() if line.startswith("stdin: "))
    config = json.loads(stdin_line.removeprefix("stdin: "))
    assert config["meeting_url"] == "https://meet.google.com/abc-defg-hij"
    assert config["bot_uuid"] == job_id
    assert f"JOB_ID={job_id}" in logs and "MEETING_URL=https://meet.google.com" in logs
    assert f"BOT_CONFIG_BOT_UUID={job_id}" in logs
    # The finished container is removed once its logs are kept; the logs are still served.
    assert containers_of(podman, job_id) == []


async def test_a_bot_that_exits_3_fails_with_exit_code_3(harness: Harness) -> None:
    job_id = await harness.submit(test_exit_code=3)
    job = await harness.drain_until(job_id, "completed", "failed")
    assert job["status"] == "failed" and job["exitCode"] == 3
    assert job["reason"] == "exit code 3"


async def test_cancel_stops_the_running_container(harness: Harness, podman: PodmanEnv) -> None:
    job_id = await harness.submit(test_sleep=60)
    await harness.drain_until(job_id, "running")
    await _wait_for_log(harness, job_id, "sleeping")
    response = await harness.client.delete(f"/api/scheduler/jobs/{job_id}")
    assert response.status_code == 200 and response.json()["job"]["status"] == "cancelled"
    # stopped: exited, or already removed once its logs and exit state were kept
    assert all(c["State"] == "exited" for c in containers_of(podman, job_id))
    assert "got TERM" in await harness.logs(job_id)


async def test_labels_limits_and_recordings_mount(harness: Harness, podman: PodmanEnv) -> None:
    job_id = await harness.submit(test_sleep=30)
    await harness.drain_until(job_id, "running")
    with engine(podman) as client:
        info = client.get(f"/containers/{PREFIX}{job_id}/json").json()
    assert info["Config"]["Labels"][LABEL_JOB] == job_id
    assert info["Config"]["Labels"][LABEL_TENANT] == "default"
    assert info["HostConfig"]["Memory"] == 64 * 2**20
    assert info["HostConfig"]["NanoCpus"] == 500_000_000
    recordings = str(harness.settings.recordings_path.absolute())
    mounts = {(m["Source"], m["Destination"]) for m in info["Mounts"]}
    assert (recordings, harness.settings.recordings_container_path) in mounts
    await harness.client.delete(f"/api/scheduler/jobs/{job_id}")


async def test_a_second_start_adopts_and_never_duplicates(
    harness: Harness, podman: PodmanEnv
) -> None:
    job_id = await harness.submit(test_sleep=2)
    scheduler = await harness.scheduler()
    stored = await scheduler.store.get(job_id)
    assert stored is not None
    backend = scheduler.backend
    refs = await asyncio.gather(*(backend.start(stored) for _ in range(4)))
    assert len({ref.id for ref in refs}) == 1
    assert len(containers_of(podman, job_id)) == 1
    # The scheduler's own dispatch then adopts that container too.
    job = await harness.drain_until(job_id, "completed", "failed")
    assert job["status"] == "completed"
    assert (await harness.logs(job_id)).count("stdin: ") == 1


async def test_a_scheduler_restart_mid_run_follows_the_container(
    podman: PodmanEnv, tmp_path: Path
) -> None:
    settings = settings_for(podman, tmp_path)
    first = Harness(settings)
    job_id = await first.submit(test_sleep=3)
    await first.drain_until(job_id, "running")
    await first.close()  # the scheduler goes away; the container does not

    second = Harness(settings)
    try:
        job = await second.drain_until(job_id, "completed", "failed")
        assert job["status"] == "completed" and job["attempts"] == 1
        assert (await second.logs(job_id)).count("stdin: ") == 1
    finally:
        await second.close()


async def test_a_bot_killed_by_the_memory_limit_fails(harness: Harness) -> None:
    job_id = await harness.submit(test_oom=1)
    job = await harness.drain_until(job_id, "completed", "failed")
    assert job["status"] == "failed"
    assert job["exitCode"] == 137 or "OOM" in job["reason"]


async def test_no_engine_answering_names_what_was_tried(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "PLATFORM": "podman",
            "CONTAINER_ENGINE": "podman",
            "AUTO_DETECT_ENGINE": "false",
            "DOCKER_HOST": f"unix://{tmp_path}/nothing-here.sock",
            "SCHEDULER_DATA_DIR": str(tmp_path),
        }
    )
    backend = PodmanBackend(settings)
    scheduler_job = await _a_job(settings)
    with pytest.raises(BackendError, match=r"nothing-here\.sock"):
        await backend.start(scheduler_job)
    await backend.close()


async def test_the_engine_socket_is_detected_from_xdg_runtime_dir(
    podman: PodmanEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "podman").mkdir()
    (tmp_path / "podman" / "podman.sock").symlink_to(podman.socket)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    settings = Settings.from_env(
        {
            "PLATFORM": "podman",
            "SCHEDULER_DATA_DIR": str(tmp_path),
            "SCHEDULER_CONTAINER_IMAGE": podman.bot_image,
            "RECORDINGS_PATH": str(tmp_path / "rec"),
        }
    )
    backend = PodmanBackend(settings)
    job = await _a_job(settings)
    ref = await backend.start(job)
    assert ref.id == PREFIX + job.id
    await backend.stop(ref)
    await backend.close()


async def _a_job(settings: Settings) -> Job:
    scheduler = Scheduler(MemoryStore(), PodmanBackend(settings), settings)
    job, _ = await scheduler.submit("t1", JobSpec(meetingUrl="https://meet.example/x"))
    assert job.status is JobState.QUEUED
    return job


async def _wait_for_log(harness: Harness, job_id: str, text: str) -> None:
    for _ in range(100):
        if text in await harness.logs(job_id):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{text!r} never appeared in the logs of {job_id}")


# -- find and runs: what the scheduler reads before a retry and in its reconcile pass ------------


@pytest.fixture
async def backend(podman: PodmanEnv, tmp_path: Path) -> AsyncIterator[PodmanBackend]:
    backend = PodmanBackend(settings_for(podman, tmp_path))
    yield backend
    await backend.close()


def a_job(**config: Any) -> Job:
    now = datetime.now(UTC)
    return Job(id=f"job-{uuid.uuid4().hex[:12]}", tenant="t1", meetingUrl="https://meet.example/x",
               config=config, createdAt=now, updatedAt=now, notBefore=now)  # fmt: skip


def wait_until_exited(podman: PodmanEnv, name: str) -> None:
    deadline = time.monotonic() + DEADLINE
    with engine(podman) as client:
        while time.monotonic() < deadline:
            if client.get(f"/containers/{name}/json").json()["State"]["Status"] == "exited":
                return
            time.sleep(0.2)
    raise AssertionError(f"container {name} never exited")


def run_foreign_container(podman: PodmanEnv, name: str, labels: dict[str, str]) -> None:
    """A running container that the backend did not start: same image, other labels."""
    body = {"Image": podman.bot_image, "Entrypoint": ["sleep"], "Cmd": ["30"], "Labels": labels}
    with engine(podman) as client:
        created = client.post("/containers/create", params={"name": name}, json=body)
        assert created.status_code == 201, created.text
        started = client.post(f"/containers/{name}/start")
        assert started.status_code in (204, 304), started.text


async def test_find_returns_the_ref_start_gave_live_or_finished(
    backend: PodmanBackend, podman: PodmanEnv
) -> None:
    """REAL Podman: find inspects the container named after the job, and once a finished
    container was kept and removed, finds its kept result."""
    job = a_job(test_exit_code=0)
    ref = await backend.start(job)
    assert await backend.find(job.id) == ref
    assert await backend.find(f"never-started-{uuid.uuid4().hex[:8]}") is None

    deadline = time.monotonic() + DEADLINE
    while (await backend.status(ref)).phase != "succeeded":
        assert time.monotonic() < deadline, "the bot never finished"
        await asyncio.sleep(0.2)
    assert containers_of(podman, job.id) == []  # kept and removed: found all the same
    assert await backend.find(job.id) == ref


async def test_runs_lists_live_containers_by_job_id_only(
    backend: PodmanBackend, podman: PodmanEnv
) -> None:
    """REAL Podman: runs lists a live container by its job id and leaves out a finished one, a
    stopped one and a running one carrying another label (even under a name like ours)."""
    live, done, stopped = a_job(test_sleep=30), a_job(test_exit_code=0), a_job(test_sleep=30)
    live_ref = await backend.start(live)
    done_ref = await backend.start(done)
    await backend.stop(await backend.start(stopped))
    foreign = f"job-{uuid.uuid4().hex[:12]}"
    run_foreign_container(podman, PREFIX + foreign, {"io.example.job": foreign})
    try:
        wait_until_exited(podman, done_ref.id)
        runs = await backend.runs()
        assert runs[live.id] == live_ref
        assert {done.id, stopped.id, foreign}.isdisjoint(runs)
        assert all(
            ref == ExecutionRef(backend="podman", id=PREFIX + key) for key, ref in runs.items()
        )
    finally:
        await backend.stop(live_ref)
        with engine(podman) as client:
            client.delete(f"/containers/{PREFIX}{foreign}", params={"force": 1})
    assert live.id not in await backend.runs()


async def test_find_and_runs_raise_when_the_engine_cannot_answer(tmp_path: Path) -> None:
    """A STAND-IN engine (uvicorn on loopback) that answers 500 to everything, and no engine at
    all: find must raise BackendError, never answer None ("no run"), and so must runs."""

    async def broken(request: Request) -> JSONResponse:
        return JSONResponse({"message": "database is locked"}, status_code=500)

    app = Starlette(routes=[Route("/{path:path}", broken, methods=["GET"])])
    settings = Settings.from_env({"PLATFORM": "podman", "SCHEDULER_DATA_DIR": str(tmp_path)})
    with serve_in_thread(app) as url:
        port = int(url.rsplit(":", 1)[1])
        backend = PodmanBackend(settings, Endpoint("podman", host="127.0.0.1", port=port))
        with pytest.raises(BackendError, match="database is locked"):
            await backend.find("job-1")
        with pytest.raises(BackendError, match="database is locked"):
            await backend.runs()
        await backend.close()
    nowhere = Settings.from_env(
        {
            "PLATFORM": "podman",
            "AUTO_DETECT_ENGINE": "false",
            "DOCKER_HOST": f"unix://{tmp_path}/nothing-here.sock",
            "SCHEDULER_DATA_DIR": str(tmp_path),
        }
    )
    backend = PodmanBackend(nowhere)
    with pytest.raises(BackendError, match=r"nothing-here\.sock"):
        await backend.find("job-1")
    await backend.close()


# -- failure classes (core/backends/policy.py) --------------------------------------------------

BROKEN_IMAGE = "localhost/botsched-broken-bot:latest"


@pytest.fixture(scope="module")
def broken_image(podman: PodmanEnv, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An image whose command does not exist in it: REAL Podman cannot start it, ever."""
    tar = tmp_path_factory.mktemp("broken") / "broken.tar"
    import_test_image(podman.env, tar, BROKEN_IMAGE, cmd="/no/such/bot")
    return BROKEN_IMAGE


async def test_an_image_without_its_command_is_refused_and_leaves_nothing(
    podman: PodmanEnv, tmp_path: Path, broken_image: str
) -> None:
    """REAL Podman answers the start 500 "OCI runtime attempted to invoke a command that was
    not found": StartRefused, and the container is removed, so `find` sees no run."""
    settings = settings_for(podman, tmp_path, SCHEDULER_CONTAINER_IMAGE=broken_image)
    backend = PodmanBackend(settings)
    job = a_job()
    with pytest.raises(StartRefused, match="not found"):
        await backend.start(job)
    assert containers_of(podman, job.id) == [] and await backend.find(job.id) is None
    await backend.close()


async def test_the_scheduler_fails_a_refused_start_at_once(
    podman: PodmanEnv, tmp_path: Path, broken_image: str
) -> None:
    harness = Harness(settings_for(podman, tmp_path, SCHEDULER_CONTAINER_IMAGE=broken_image))
    try:
        job_id = await harness.submit()
        job = await harness.drain_until(job_id, "failed")
        assert job["attempts"] == 1 and job["reason"].startswith("start refused: start of")
    finally:
        await harness.close()


@pytest.mark.parametrize(
    ("image", "refused"),
    [
        ("localhost/UPPER:1", True),  # Podman: 500 "repository name must be lowercase"
        ("localhost/no-such-bot:1", False),  # not here; its registry refuses the connection
    ],
)
async def test_an_image_is_refused_for_good_or_retried_by_what_podman_says(
    podman: PodmanEnv, tmp_path: Path, image: str, refused: bool
) -> None:
    """REAL Podman, offline: a reference it cannot parse can never start; an image it cannot
    pull because the registry does not answer may start once the registry is back."""
    backend = PodmanBackend(settings_for(podman, tmp_path, SCHEDULER_CONTAINER_IMAGE=image))
    with pytest.raises(BackendError) as caught:
        await backend.start(a_job())
    await backend.close()
    assert isinstance(caught.value, StartRefused) is refused
