"""The cloudrun backend, driven through the official SDK (google-cloud-run, REST transport,
anonymous credentials, an endpoint override) against a CONTRACT FAKE of the Cloud Run Admin API
v2 (tests/cloudrun_fake.py), not Google: Cloud Run has no emulator. The fake serves real HTTP on a
loopback port, matches every request to a method of the official discovery document, validates
request bodies against its schemas (strictly) and answers with its response shapes; tests play
the platform through it.

The last tests run jobs through the scheduler (`Scheduler` + `drain_once`), not only the class.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ci import in_ci

try:
    import google.cloud.run_v2  # noqa: F401
except ImportError:  # the gcp extra is missing: a failure in CI, a skip elsewhere
    if in_ci():
        raise
    pytest.skip(
        "google-cloud-run is missing: pip install 'bot-scheduler[gcp]'", allow_module_level=True
    )

from google.auth.credentials import AnonymousCredentials
from google.oauth2.credentials import Credentials

from core import runtime
from core.backends.cloud_run import (
    INSTALL,
    MAX_ENV_VALUE,
    CloudRunBackend,
    CloudRunJob,
)
from core.config import Settings
from core.errors import BackendError, ConfigError, ExecutionLost, NotSupported, StartRefused
from core.models import ExecutionRef, JobSpec, JobState
from core.scheduler import Scheduler
from core.stores.memory import MemoryStore
from tests.cloudrun_fake import CloudRunFake, require_spec, serve
from tests.kubernetes.conftest import make_job

ROOT = Path(__file__).resolve().parents[2]
RUN = "run.projects.locations.jobs.run"
GET_JOB = "run.projects.locations.jobs.get"
GET = "run.projects.locations.jobs.executions.get"
LIST = "run.projects.locations.jobs.executions.list"
CANCEL = "run.projects.locations.jobs.executions.cancel"
TOKEN = "ya29.not-a-real-token-5f4e3d2c1b"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[CloudRunFake, str]]:
    require_spec()
    fake = CloudRunFake()
    with serve(fake) as url:
        yield fake, url


@pytest.fixture
def fake(served: tuple[CloudRunFake, str]) -> CloudRunFake:
    served[0].reset()
    return served[0]


@pytest.fixture
def settings() -> Settings:
    return Settings(platform="cloudrun", max_concurrent_jobs=5)


@pytest.fixture
async def backend(
    fake: CloudRunFake, served: tuple[CloudRunFake, str], settings: Settings
) -> AsyncIterator[CloudRunBackend]:
    backend = make_backend(fake, served[1], settings)
    yield backend
    await backend.close()


def make_backend(
    fake: CloudRunFake, url: str, settings: Settings, credentials: Any = None
) -> CloudRunBackend:
    return CloudRunBackend(
        settings,
        CloudRunJob(fake.project, fake.region, "bot-job"),
        credentials=credentials or AnonymousCredentials(),
        client_options={"api_endpoint": url},
    )


def env_of(execution: dict[str, Any]) -> dict[str, str]:
    (container,) = execution["template"]["containers"]
    return {e["name"]: e["value"] for e in container["env"]}


def methods(fake: CloudRunFake) -> list[str]:
    return [call.method for call in fake.calls]


# -- start -----------------------------------------------------------------------------------


async def test_start_runs_the_job_with_the_bots_env(
    fake: CloudRunFake, backend: CloudRunBackend
) -> None:
    job = make_job(maxRuntimeSeconds=5400, recordingMode="gallery_view")
    ref = await backend.start(job)

    assert ref.backend == "cloudrun"
    assert ref.id.startswith(fake.job_name() + "/executions/bot-job-") and ref.id in fake.executions
    assert fake.invalid == [] and methods(fake) == [GET_JOB, LIST, RUN]  # spec-validated
    run = fake.calls[-1]
    assert run.params == {"name": fake.job_name()}
    overrides = run.body["overrides"]
    assert overrides["taskCount"] == 1 and overrides["timeout"] == "5400s"
    (override,) = overrides["containerOverrides"]
    assert "name" not in override and "args" not in override  # the job's only container
    env = {e["name"]: e["value"] for e in override["env"]}
    assert json.loads(env.pop("BOT_CONFIG")) == job.bot_config()
    assert env == {
        "MEETING_URL": job.meetingUrl,
        "BOT_NAME": "Notes Bot",
        "JOB_ID": job.id,
        "RECORDING_MODE": "gallery_view",
    }
    execution = fake.executions[ref.id]
    assert env_of(execution)["LOG_LEVEL"] == "info"  # merged into the job's env
    assert env_of(execution)["JOB_ID"] == job.id
    assert execution["template"]["timeout"] == "5400s" and execution["taskCount"] == 1


async def test_start_does_not_wait_for_the_execution(
    fake: CloudRunFake, backend: CloudRunBackend
) -> None:
    """RunJob's operation ends with the execution; the name comes from its metadata at once."""
    await backend.start(make_job())
    assert "run.projects.locations.operations.get" not in methods(fake)
    assert all(call.query.get("$alt") == "json;enum-encoding=int" for call in fake.calls)


async def test_start_without_max_runtime_sets_twice_the_expected_run(
    fake: CloudRunFake, backend: CloudRunBackend
) -> None:
    """Never the Job's own timeout (10 minutes by default): SCHEDULER_EXPECTED_RUN_SECONDS
    (3600) twice over."""
    ref = await backend.start(make_job(botName="Bot $(HOME)"))
    assert fake.calls[-1].body["overrides"]["timeout"] == "7200s"
    assert fake.executions[ref.id]["template"]["timeout"] == "7200s"
    assert env_of(fake.executions[ref.id])["BOT_NAME"] == "Bot $(HOME)"  # no expansion to escape


async def test_an_env_value_over_cloud_runs_limit_is_refused_first(
    fake: CloudRunFake, backend: CloudRunBackend
) -> None:
    job = make_job(config={"notes": "x" * MAX_ENV_VALUE})
    with pytest.raises(StartRefused, match=r"BOT_CONFIG .* 32768"):
        await backend.start(job)
    assert fake.calls == []


async def test_a_retried_start_adopts_the_live_execution(
    fake: CloudRunFake, backend: CloudRunBackend
) -> None:
    job = make_job()
    first = await backend.start(job)
    fake.set_running(first.id)
    second = await backend.start(job)

    assert second == first and fake.runs() == 1
    assert (await backend.status(second)).phase == "running"


async def test_adoption_prefers_a_live_run_then_the_newest_ended_one(
    fake: CloudRunFake, backend: CloudRunBackend
) -> None:
    job = make_job()
    first = await backend.start(job)
    fake.fail(first.id)
    assert await backend.start(job) == first  # ended: still no second bot
    assert fake.runs() == 1

    jobs_client = backend._api()[0]
    jobs_client.run_job(request=backend.run_request(job))  # a second run, however it came
    (live,) = set(fake.executions) - {first.id}
    assert (await backend.start(job)).id == live and fake.runs() == 2

    fake.succeed(live)
    assert (await backend.start(job)).id == live  # both ended: the newest


async def test_adoption_matches_the_job_id_only(
    fake: CloudRunFake, backend: CloudRunBackend
) -> None:
    a = await backend.start(make_job(id="job-a"))
    b = await backend.start(make_job(id="job-b"))
    assert a != b and fake.runs() == 2
    assert await backend.start(make_job(id="job-a")) == a


async def test_adoption_reads_every_page(fake: CloudRunFake, backend: CloudRunBackend) -> None:
    job = make_job()
    ref = await backend.start(job)
    for n in range(150):  # newer runs of other jobs push ours to the second page
        other = json.loads(json.dumps(fake.executions[ref.id]))
        other["name"] = f"{fake.job_name()}/executions/bot-job-other{n}"
        for var in other["template"]["containers"][0]["env"]:
            if var["name"] == "JOB_ID":
                var["value"] = f"other-{n}"
        fake.executions[other["name"]] = other

    assert await backend.start(job) == ref and fake.runs() == 1
    lists = [call.query for call in fake.calls if call.method == LIST]
    assert lists[-2:] == [
        {"pageSize": "100", "$alt": "json;enum-encoding=int"},
        {"pageSize": "100", "pageToken": "100", "$alt": "json;enum-encoding=int"},
    ]


# -- status ----------------------------------------------------------------------------------


async def test_status_follows_the_execution(fake: CloudRunFake, backend: CloudRunBackend) -> None:
    ref = await backend.start(make_job())
    assert (await backend.status(ref)).phase == "pending"

    fake.set_running(ref.id)
    running = await backend.status(ref)
    assert running.phase == "running" and running.startedAt is not None

    fake.succeed(ref.id)
    done = await backend.status(ref)
    assert (done.phase, done.exitCode, done.reason) == ("succeeded", 0, None)
    assert done.finishedAt is not None and done.startedAt == running.startedAt
    assert type(done.finishedAt) is datetime  # not the SDK's subclass


async def test_status_of_a_failed_execution(fake: CloudRunFake, backend: CloudRunBackend) -> None:
    ref = await backend.start(make_job())
    fake.set_running(ref.id)
    fake.fail(ref.id, message="Task bot-job-x-task0 failed: The container exited with an error.")

    failed = await backend.status(ref)
    assert (failed.phase, failed.exitCode) == ("failed", None)  # an Execution has no exit code
    assert failed.reason == (
        "non zero exit code: Task bot-job-x-task0 failed: The container exited with an error."
    )
    assert failed.finishedAt is not None


async def test_an_unknown_execution_is_lost(fake: CloudRunFake, backend: CloudRunBackend) -> None:
    ref = await backend.start(make_job())
    fake.lose(ref.id)
    with pytest.raises(ExecutionLost, match="404"):
        await backend.status(ref)
    with pytest.raises(ExecutionLost):
        await backend.status(ExecutionRef(backend="cloudrun", id="not/an/execution"))


# -- stop ------------------------------------------------------------------------------------


async def test_stop_cancels_the_execution(fake: CloudRunFake, backend: CloudRunBackend) -> None:
    ref = await backend.start(make_job())
    fake.set_running(ref.id)

    await backend.stop(ref)
    execution = fake.executions[ref.id]
    assert execution["cancelledCount"] == 1 and "runningCount" not in execution
    assert fake.calls[-1].method == CANCEL and fake.invalid == []
    stopped = await backend.status(ref)
    assert stopped.phase == "failed" and stopped.reason == "cancelled: The execution was cancelled."

    await backend.stop(ref)  # ended: Cloud Run refuses (400), which is fine
    fake.lose(ref.id)
    await backend.stop(ref)  # gone (404): fine
    calls = len(fake.calls)
    await backend.stop(ExecutionRef(backend="cloudrun", id="nonsense"))
    assert len(fake.calls) == calls


async def test_stop_of_a_finished_execution_is_fine(
    fake: CloudRunFake, backend: CloudRunBackend
) -> None:
    ref = await backend.start(make_job())
    fake.succeed(ref.id)
    await backend.stop(ref)
    assert (await backend.status(ref)).phase == "succeeded"


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "operation"), [(RUN, "start"), (LIST, "start"), (GET, "status"), (CANCEL, "stop")]
)
@pytest.mark.parametrize("code", [403, 500])
async def test_api_errors_are_backend_errors(
    fake: CloudRunFake,
    served: tuple[CloudRunFake, str],
    settings: Settings,
    method: str,
    operation: str,
    code: int,
) -> None:
    backend = make_backend(fake, served[1], settings, Credentials(token=TOKEN))
    job = make_job()
    ref = await backend.start(job)
    fake.set_running(ref.id)
    if method == RUN:
        job = make_job(id="another-job")
    fake.deny(method) if code == 403 else fake.fail_next(method, code)

    with pytest.raises(BackendError) as caught:
        if operation == "start":
            await backend.start(job)
        else:
            await getattr(backend, operation)(ref)
    error = caught.value
    refused = operation == "start" and code == 403  # permanent: the job fails at once
    assert type(error) is (StartRefused if refused else BackendError)
    assert error.details == {"status": code} and f"HTTP {code}" in error.message
    if code == 403:
        assert "PERMISSION_DENIED" in error.message and "roles/run.developer" in error.message
    else:
        assert "INTERNAL" in error.message
    assert fake.auth_headers[-1] == f"Bearer {TOKEN}"
    assert TOKEN not in f"{error} {error.message} {error.details!r}"
    await backend.close()


async def test_a_missing_job_refuses_the_start_for_good(
    fake: CloudRunFake, served: tuple[CloudRunFake, str], settings: Settings
) -> None:
    backend = CloudRunBackend(
        settings,
        CloudRunJob(fake.project, fake.region, "no-such-job"),
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": served[1]},
    )
    with pytest.raises(StartRefused, match="HTTP 404"):  # not ExecutionLost: misconfigured
        await backend.start(make_job())
    await backend.close()


async def test_an_unreachable_api_is_a_backend_error(settings: Settings) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    backend = CloudRunBackend(
        settings,
        CloudRunJob("p", "r", "j"),
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": f"http://127.0.0.1:{port}"},
    )
    ref = ExecutionRef(backend="cloudrun", id="projects/p/locations/r/jobs/j/executions/j-1")
    for call in (backend.start(make_job()), backend.status(ref), backend.stop(ref)):
        with pytest.raises(BackendError, match="unreachable: ConnectionError"):
            await call
    await backend.close()


# -- failure classes, no platform retries (core/backends/policy.py) ---------------------------


@pytest.mark.parametrize(
    ("code", "status", "refused"),
    [
        (400, "INVALID_ARGUMENT", True),
        (403, "PERMISSION_DENIED", True),
        (404, "NOT_FOUND", True),
        (400, "FAILED_PRECONDITION", False),  # the Job is being updated: it passes
        (409, "ABORTED", False),
        (429, "RESOURCE_EXHAUSTED", False),
        (500, "INTERNAL", False),
        (503, "UNAVAILABLE", False),
    ],
)
async def test_a_start_failure_is_permanent_or_transient_by_its_answer(
    fake: CloudRunFake, backend: CloudRunBackend, code: int, status: str, refused: bool
) -> None:
    """Contract fake: RunJob answers `code` with the gRPC `status` (a Google JSON error)."""
    fake.fail_next(RUN, code, status)
    with pytest.raises(BackendError) as caught:
        await backend.start(make_job())
    assert isinstance(caught.value, StartRefused) is refused
    assert status in caught.value.message and caught.value.details == {"status": code}


async def test_a_job_that_retries_is_refused_before_anything_runs(
    fake: CloudRunFake, backend: CloudRunBackend
) -> None:
    """Cloud Run cannot turn retries off per execution (RunJobRequest.Overrides holds only
    containerOverrides, taskCount and timeout): the Job must say maxRetries 0."""
    fake.jobs[fake.job_name()]["template"]["template"]["maxRetries"] = 3
    with pytest.raises(StartRefused, match=r"retries a failed task 3 times.*--max-retries 0"):
        await backend.start(make_job())
    assert methods(fake) == [GET_JOB] and fake.runs() == 0
    fake.jobs[fake.job_name()]["template"]["template"]["maxRetries"] = 0
    await backend.start(make_job())
    await backend.start(make_job(id="another-job"))
    assert methods(fake).count(GET_JOB) == 2  # read until it passed, then once per backend
    assert fake.runs() == 2


async def test_a_job_that_does_not_say_its_retries_starts_with_a_warning(
    fake: CloudRunFake, backend: CloudRunBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """maxRetries is a oneof member: absent is not 0 (the API's default is 3). The SDK over REST
    tells the two apart: 0 passes silently, absent is logged."""
    await backend.start(make_job())
    assert "maxRetries" not in caplog.text
    del fake.jobs[fake.job_name()]["template"]["template"]["maxRetries"]
    other = make_backend(fake, str(backend._client_options["api_endpoint"]), backend.settings)
    await other.start(make_job(id="another-job"))
    await other.close()
    assert "does not say its maxRetries" in caplog.text


async def test_every_execution_gets_a_timeout_and_no_retries(
    fake: CloudRunFake, backend: CloudRunBackend
) -> None:
    ref = await backend.start(make_job(maxRuntimeSeconds=5400))
    template = fake.executions[ref.id]["template"]
    assert (template["timeout"], template["maxRetries"]) == ("5400s", 0)


# -- find and runs ---------------------------------------------------------------------------


async def test_find_returns_the_ref_start_gave(
    fake: CloudRunFake, backend: CloudRunBackend
) -> None:
    """Contract fake: find lists the job's executions and matches JOB_ID, live or finished."""
    job = make_job()
    other = await backend.start(make_job(id="another-job"))
    ref = await backend.start(job)
    assert await backend.find(job.id) == ref != other
    assert await backend.find("never-started") is None

    fake.succeed(ref.id)
    assert await backend.find(job.id) == ref
    assert fake.runs() == 2 and fake.invalid == []


async def test_runs_lists_live_executions_by_job_id(
    fake: CloudRunFake, served: tuple[CloudRunFake, str], backend: CloudRunBackend
) -> None:
    """Contract fake: runs keeps the live executions keyed by their JOB_ID and leaves out
    ended ones (succeeded, failed, cancelled) and one started by hand (no JOB_ID)."""
    ids = ("pending", "running", "done", "failed", "cancelled")
    refs = {job_id: await backend.start(make_job(id=job_id)) for job_id in ids}
    fake.set_running(refs["running"].id)
    fake.succeed(refs["done"].id)
    fake.fail(refs["failed"].id)
    await backend.stop(refs["cancelled"])
    async with httpx.AsyncClient() as client:  # `gcloud run jobs execute`, no overrides
        response = await client.post(f"{served[1]}/v2/{fake.job_name()}:run", json={})
        response.raise_for_status()
    by_hand = set(fake.executions) - {ref.id for ref in refs.values()}
    fake.set_running(by_hand.pop())

    assert await backend.runs() == {"pending": refs["pending"], "running": refs["running"]}
    assert fake.invalid == []


@pytest.mark.parametrize("code", [403, 404, 500])
async def test_find_and_runs_raise_when_the_api_cannot_answer(
    fake: CloudRunFake, backend: CloudRunBackend, code: int
) -> None:
    """Contract fake answering an error to the list: never "no run", always BackendError."""
    await backend.start(make_job())
    for call in (backend.find(make_job().id), backend.runs()):
        fake.deny(LIST) if code == 403 else fake.fail_next(LIST, code)
        with pytest.raises(BackendError, match=f"HTTP {code}") as caught:
            await call
        assert type(caught.value) is BackendError


# -- logs, configuration, imports ------------------------------------------------------------


async def test_logs_point_to_cloud_logging(backend: CloudRunBackend) -> None:
    ref = ExecutionRef(backend="cloudrun", id="projects/p/locations/r/jobs/j/executions/j-abc12")
    with pytest.raises(NotSupported, match=r'Cloud Logging.*execution_name"="j-abc12"'):
        await backend.logs(ref)


def test_the_job_comes_from_the_settings() -> None:
    env = {"GCP_PROJECT_ID": "my-project", "GCP_REGION": "europe-west1", "GCP_JOB_NAME": "bot-job"}
    settings = Settings.from_env({**env, "PLATFORM": "gcp"})
    target = CloudRunJob.from_settings(settings)
    assert target.name == "projects/my-project/locations/europe-west1/jobs/bot-job"

    with pytest.raises(ConfigError, match="PLATFORM=gcp needs GCP_REGION, GCP_JOB_NAME"):
        CloudRunJob.from_settings(Settings.from_env({"PLATFORM": "gcp", "GCP_PROJECT_ID": "p"}))
    with pytest.raises(ConfigError, match="GCP_JOB_NAME"):
        CloudRunJob.from_settings(Settings.from_env({**env, "GCP_JOB_NAME": "a/b"}))

    backend = CloudRunBackend.from_settings(settings)
    assert backend.name == "cloudrun" and backend.target == target


@pytest.mark.parametrize("platform", ["cloudrun", "gcp"])
def test_the_runtime_builds_it(platform: str) -> None:
    env = {"GCP_PROJECT_ID": "p", "GCP_REGION": "r", "GCP_JOB_NAME": "j", "PLATFORM": platform}
    backend = runtime.build_backend(Settings.from_env(env))
    assert isinstance(backend, CloudRunBackend) and backend.target.name.endswith("/jobs/j")


def test_a_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "google.cloud.run_v2", None)  # import raises ImportError
    env = {"GCP_PROJECT_ID": "p", "GCP_REGION": "r", "GCP_JOB_NAME": "j", "PLATFORM": "cloudrun"}
    with pytest.raises(ConfigError) as caught:
        CloudRunBackend.from_settings(Settings.from_env(env))
    assert INSTALL in caught.value.message and "google-cloud-run" in caught.value.message


# -- through the scheduler -------------------------------------------------------------------


@pytest.fixture
def scheduler(backend: CloudRunBackend, settings: Settings) -> Scheduler:
    return Scheduler(MemoryStore(), backend, settings)


async def submit_and_dispatch(scheduler: Scheduler, fake: CloudRunFake) -> tuple[str, str]:
    spec = JobSpec(meetingUrl="https://meet.example.com/abc", maxRuntimeSeconds=3600)
    job, _ = await scheduler.submit("acme", spec)
    report = await scheduler.drain_once()
    assert report.dispatched == 1
    running = await scheduler.get("acme", job.id)
    assert running.status is JobState.RUNNING and running.execution is not None
    assert running.execution.id in fake.executions
    assert env_of(fake.executions[running.execution.id])["JOB_ID"] == job.id
    return job.id, running.execution.id


async def test_scheduler_runs_a_job_to_completion(scheduler: Scheduler, fake: CloudRunFake) -> None:
    job_id, name = await submit_and_dispatch(scheduler, fake)
    fake.set_running(name)
    await scheduler.drain_once()
    assert (await scheduler.get("acme", job_id)).status is JobState.RUNNING

    fake.succeed(name)
    report = await scheduler.drain_once()
    done = await scheduler.get("acme", job_id)
    assert report.completed == 1 and done.status is JobState.COMPLETED and done.exitCode == 0
    assert fake.runs() == 1 and fake.invalid == []


async def test_scheduler_records_a_failed_run(scheduler: Scheduler, fake: CloudRunFake) -> None:
    job_id, name = await submit_and_dispatch(scheduler, fake)
    fake.set_running(name)
    fake.fail(name, message="boom")

    report = await scheduler.drain_once()
    failed = await scheduler.get("acme", job_id)
    assert report.failed == 1 and failed.status is JobState.FAILED
    assert failed.reason == "non zero exit code: boom"


async def test_scheduler_cancel_cancels_the_execution(
    scheduler: Scheduler, fake: CloudRunFake
) -> None:
    job_id, name = await submit_and_dispatch(scheduler, fake)
    fake.set_running(name)

    cancelled = await scheduler.cancel("acme", job_id)
    assert cancelled.status is JobState.CANCELLED
    assert methods(fake).count(CANCEL) == 1 and fake.executions[name]["cancelledCount"] == 1


async def test_scheduler_recovery_adopts_the_run_a_dead_dispatcher_started(
    scheduler: Scheduler, backend: CloudRunBackend, fake: CloudRunFake
) -> None:
    spec = JobSpec(meetingUrl="https://meet.example.com/abc")
    job, _ = await scheduler.submit("acme", spec)
    now = job.createdAt
    claimed = await scheduler.store.update(
        job.model_copy(
            update={
                "status": JobState.PROVISIONING,
                "attempts": 1,
                "leaseOwner": "dead",
                "leaseUntil": now + timedelta(seconds=1),
            }
        ),
        job.version or "",
    )
    started = await backend.start(claimed)  # the dead dispatcher got this far
    fake.set_running(started.id)

    later = now + timedelta(minutes=30)
    assert (await scheduler.drain_once(later)).recovered == 1
    await scheduler.drain_once(later + timedelta(hours=1))  # past any retry backoff
    running = await scheduler.get("acme", job.id)
    assert running.status is JobState.RUNNING and running.execution == started
    assert fake.runs() == 1  # adopted: no second bot


async def test_scheduler_fails_a_refused_start_at_once_and_retries_a_quota_error(
    scheduler: Scheduler, fake: CloudRunFake
) -> None:
    spec = JobSpec(meetingUrl="https://meet.example.com/abc")
    fake.fail_next(RUN, 429)
    busy, _ = await scheduler.submit("acme", spec)
    report = await scheduler.drain_once()
    retried = await scheduler.get("acme", busy.id)
    assert (report.retried, retried.status, retried.attempts) == (1, JobState.QUEUED, 1)
    fake.fail_next(RUN, 400)
    other = JobSpec(meetingUrl="https://meet.example.com/def")  # another meeting
    bad, _ = await scheduler.submit("acme", other)
    await scheduler.drain_once()
    failed = await scheduler.get("acme", bad.id)
    assert failed.status is JobState.FAILED and failed.attempts == 1
    assert failed.reason and failed.reason.startswith("start refused: Cloud Run start")


# -- the fake holds to the discovery document ------------------------------------------------


def test_the_fake_refuses_what_the_discovery_document_does_not_allow(
    fake: CloudRunFake, served: tuple[CloudRunFake, str]
) -> None:
    url = f"{served[1]}/v2/{fake.job_name()}"
    bad_body = {"overrides": {"containerOverrides": [{"env": [{"name": "A", "valu": "x"}]}]}}
    cases = [
        ("POST", f"{url}:run", bad_body, 400),  # unknown field
        ("POST", f"{url}:run", {"overrides": {"timeout": "an hour"}}, 400),  # not a duration
        ("POST", f"{url}:run", {"overrides": {"taskCount": "1"}}, 400),  # wrong type
        ("GET", f"{url}/executions?filter=x", None, 400),  # no such query parameter
        ("POST", f"{url}:launch", {}, 404),  # no such method
        ("GET", f"{served[1]}/v2/projects/p/jobs/j/executions", None, 404),  # pattern mismatch
    ]
    with httpx.Client() as client:
        for method, target, body, code in cases:
            response = client.request(method, target, json=body)
            assert response.status_code == code, (method, target, response.text)
            assert response.json()["error"]["code"] == code
    assert len(fake.invalid) >= len(cases) and fake.executions == {}


def test_the_run_operation_ends_with_the_execution(
    fake: CloudRunFake, backend: CloudRunBackend
) -> None:
    """What the backend relies on by not waiting: RunJob's operation is done only at the end."""
    operation = backend._api()[0].run_job(request=backend.run_request(make_job()))
    name = operation.metadata.name
    assert not operation.done()  # polls operations.get
    fake.succeed(name)
    assert operation.done() and operation.result(timeout=5).name == name
    assert "run.projects.locations.operations.get" in methods(fake) and fake.invalid == []
