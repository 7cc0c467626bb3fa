"""The azure backend (Container Apps Jobs) against a CONTRACT FAKE of Azure Resource Manager
(tests/aca_fake.py), not real Azure: no Container Apps emulator exists. The official SDK
(azure-mgmt-appcontainers, async, over its real aiohttp transport and HTTPS) is the client; the
fake checks every request's path, method, parameters and api-version against the official
Jobs.json (2026-01-01), validates bodies against its schemas strictly, and shapes its answers like
the spec's examples. Tests play the platform with `fake.set_status`.

The last tests run jobs through the scheduler (`Scheduler` + `drain_once`), not only the class.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.ci import in_ci

if not in_ci():  # in CI, missing fails
    for module in ("azure.mgmt.appcontainers", "azure.identity", "aiohttp"):
        pytest.importorskip(module, reason=f"{module} is missing: pip install -e '.[azure]'")

from azure.core.credentials import AccessToken

from core.backends.azure_container_apps import (
    API_VERSION,
    AzureJob,
    ContainerAppsBackend,
    container_resources,
)
from core.config import Settings
from core.errors import BackendError, ConfigError, ExecutionLost, NotSupported, StartRefused
from core.models import ExecutionRef, Job, JobSpec, JobState
from core.scheduler import Scheduler
from core.stores.memory import MemoryStore
from tests.aca_fake import ContainerAppsFake, Switch, make_certificate, require_spec, serve

ROOT = Path(__file__).resolve().parents[2]
SUBSCRIPTION = "34adfa4f-cedf-4dc0-ba29-b6d1a69ab345"
GROUP = "rg-bots"
JOB = "botsched-bot"
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOi.fake-arm-token.3f9a"

MakeBackend = Callable[..., ContainerAppsBackend]


class FakeCredential:
    """An AsyncTokenCredential handing out a fixed token, as DefaultAzureCredential would."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> FakeCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("aca-tls"))


@pytest.fixture(scope="session")
def server(tls: tuple[Path, Path]) -> Iterator[tuple[Switch, str]]:
    switch = Switch()
    with serve(switch, *tls) as url:
        yield switch, url


@pytest.fixture
def fake(server: tuple[Switch, str]) -> Iterator[ContainerAppsFake]:
    require_spec()
    switch, url = server
    fake = ContainerAppsFake(SUBSCRIPTION, GROUP, JOB, TOKEN)
    fake.base_url = url
    switch.target = fake
    yield fake
    switch.target = None
    assert fake.invalid == []  # every request held to the spec


@pytest.fixture
def settings() -> Settings:
    return Settings(
        platform="azure",
        container_image="registry.test/meet-bot:1.2",
        default_cpu="1",
        default_memory="2Gi",
    )


@pytest.fixture
async def make_backend(
    fake: ContainerAppsFake, settings: Settings, tls: tuple[Path, Path]
) -> AsyncIterator[MakeBackend]:
    backends: list[ContainerAppsBackend] = []

    def make(**options: Any) -> ContainerAppsBackend:
        values: dict[str, Any] = {
            "credential": FakeCredential(),
            "poll_interval": 0,
            "base_url": fake.base_url,
            "connection_verify": str(tls[0]),  # TLS verified, against the test certificate
            "retry_total": 0,  # the SDK's retries would only slow the error tests down
            **options,
        }
        backend = ContainerAppsBackend(settings, AzureJob(SUBSCRIPTION, GROUP, JOB), **values)
        backends.append(backend)
        return backend

    yield make
    for backend in backends:
        await backend.close()


@pytest.fixture
def backend(make_backend: MakeBackend) -> ContainerAppsBackend:
    return make_backend()


def make_job(**fields: Any) -> Job:
    now = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    values: dict[str, Any] = {
        "id": "6f1c2a9e-0d3b-4c5e-8f7a-1b2c3d4e5f60",
        "tenant": "acme",
        "meetingUrl": "https://meet.example.com/abc-defg-hij",
        "botName": "Notes Bot",
        "createdAt": now,
        "updatedAt": now,
        "notBefore": now,
        **fields,
    }
    return Job(**values)


# -- start -----------------------------------------------------------------------------------


async def test_start_runs_an_execution_with_the_bots_env_and_resources(
    fake: ContainerAppsFake, backend: ContainerAppsBackend
) -> None:
    job = make_job(cpu="500m", memory="1Gi", recordingMode="gallery_view", config={"a": "$(X)"})
    ref = await backend.start(job)

    assert ref.backend == "azure" and ref.id in fake.executions and ref.id.startswith(JOB + "-")
    assert fake.invalid == [] and fake.starts == 1  # spec-validated, strictly
    # the Job read once (it does not retry), then the start; the 202 body named it: no polling
    assert fake.calls == ["Jobs_Get", "JobsExecutions_List", "Jobs_Start"]
    assert all(q["api-version"] == API_VERSION == "2026-01-01" for q in fake.queries)
    assert "$filter" not in fake.queries[0]
    (container,) = fake.executions[ref.id]["properties"]["template"]["containers"]
    assert (container["name"], container["image"]) == ("bot", "registry.test/meet-bot:1.2")
    assert container["resources"] == {"cpu": 0.5, "memory": "1Gi"}
    env = fake.env(ref.id)
    assert list(env) == ["BOT_CONFIG", "MEETING_URL", "BOT_NAME", "JOB_ID", "RECORDING_MODE"]
    assert json.loads(env["BOT_CONFIG"]) == job.bot_config()
    assert env["MEETING_URL"] == job.meetingUrl and env["BOT_NAME"] == "Notes Bot"
    assert env["JOB_ID"] == job.id and env["RECORDING_MODE"] == "gallery_view"


async def test_start_uses_the_default_resources_and_a_managed_identity_scope(
    fake: ContainerAppsFake, make_backend: MakeBackend
) -> None:
    credential = FakeCredential()
    ref = await make_backend(credential=credential).start(make_job())

    (container,) = fake.executions[ref.id]["properties"]["template"]["containers"]
    assert container["resources"] == {"cpu": 1.0, "memory": "2Gi"}  # SCHEDULER_DEFAULT_*
    assert credential.scopes[0] == ("https://management.azure.com/.default",)


@pytest.mark.parametrize(
    ("cpu", "memory", "expected"),
    [
        ("250m", "512Mi", (0.25, "0.5Gi")),
        ("0.75", "1536Mi", (0.75, "1.5Gi")),
        ("2", "4Gi", (2.0, "4Gi")),
        ("1", "2G", (1.0, "1.8626Gi")),  # decimal units pass through: the platform decides
    ],
)
def test_quantities_in_container_apps_terms(
    cpu: str, memory: str, expected: tuple[float, str]
) -> None:
    assert container_resources(cpu, memory) == expected


async def test_a_refused_cpu_memory_pair_fails_with_the_platforms_message(
    fake: ContainerAppsFake, backend: ContainerAppsBackend
) -> None:
    with pytest.raises(StartRefused) as caught:  # permanent: retrying cannot help
        await backend.start(make_job(cpu="1", memory="1Gi"))
    assert "HTTP 400 ContainerAppInvalidResourceTotal" in caught.value.message
    assert caught.value.details == {"status": 400}
    assert fake.starts == 0 and fake.invalid == []  # valid by the schema, refused by the platform


async def test_start_polls_the_location_when_the_202_has_no_body(
    fake: ContainerAppsFake, backend: ContainerAppsBackend
) -> None:
    fake.start_body = False  # exactly Job_Start.json's 202: a Location header only
    fake.pending_polls = 2
    ref = await backend.start(make_job())

    assert ref.id in fake.executions and fake.invalid == []
    assert fake.calls[1:] == ["JobsExecutions_List", "Jobs_Start", *["Location"] * 3]


async def test_a_retried_start_adopts_the_running_execution(
    fake: ContainerAppsFake, backend: ContainerAppsBackend
) -> None:
    job = make_job()
    first = await backend.start(job)
    fake.add_execution("some-other-job")
    second = await backend.start(job)

    assert second == first and fake.starts == 1  # no second bot
    assert fake.calls.count("JobsExecutions_List") == 2
    assert (await backend.status(second)).phase == "running"


async def test_start_adopts_the_run_of_a_dispatcher_that_died(
    fake: ContainerAppsFake, backend: ContainerAppsBackend
) -> None:
    job = make_job()
    fake.page_size = 2  # the match is on a later page: nextLink is followed
    for other in ("a", "b", "c"):
        fake.add_execution(other)
    fake.add_execution(job.id, "Failed", started="2025-03-01T11:00:00+00:00")  # older, ended
    live = fake.add_execution(job.id, "Running", started="2025-03-01T10:00:00+00:00")
    fake.add_execution("d")

    ref = await backend.start(job)
    assert ref.id == live and fake.starts == 0 and fake.invalid == []
    assert [q.get("$skiptoken") for q in fake.queries[1:]] == [None, "2", "4"]  # after Jobs_Get


async def test_a_finished_run_is_adopted_not_repeated(
    fake: ContainerAppsFake, backend: ContainerAppsBackend
) -> None:
    """The start's answer was lost and the bot has already finished: its result is the job's."""
    job = make_job()
    fake.add_execution(job.id, "Stopped", started="2025-03-01T11:00:00+00:00")
    newest = fake.add_execution(job.id, "Succeeded", started="2025-03-01T12:00:00+00:00")

    ref = await backend.start(job)
    assert ref.id == newest and fake.starts == 0
    assert (await backend.status(ref)).phase == "succeeded"


# -- status ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "phase", "reason"),
    [
        ("Running", "running", None),
        ("Processing", "running", None),
        ("Succeeded", "succeeded", None),
        ("Failed", "failed", "Failed"),
        ("Stopped", "failed", "stopped"),
        ("Degraded", "running", None),  # no end time yet: it may still conclude
        ("Unknown", "unknown", None),
    ],
)
async def test_status_maps_the_execution_state(
    fake: ContainerAppsFake,
    backend: ContainerAppsBackend,
    state: str,
    phase: str,
    reason: str | None,
) -> None:
    ref = await backend.start(make_job())
    fake.set_status(ref.id, state)

    execution = await backend.status(ref)
    assert (execution.phase, execution.reason) == (phase, reason)
    assert execution.startedAt is not None
    assert execution.exitCode == (0 if state == "Succeeded" else None)
    ended = state in ("Succeeded", "Failed", "Stopped")
    assert (execution.finishedAt is not None) == ended


async def test_a_degraded_execution_that_ended_failed(
    fake: ContainerAppsFake, backend: ContainerAppsBackend
) -> None:
    ref = await backend.start(make_job())
    fake.set_status(ref.id, "Degraded")
    fake.executions[ref.id]["properties"]["endTime"] = "2025-03-01T13:00:00+00:00"

    execution = await backend.status(ref)
    assert (execution.phase, execution.reason) == ("failed", "Degraded")
    assert execution.finishedAt == datetime(2025, 3, 1, 13, 0, tzinfo=UTC)


async def test_an_unknown_execution_is_lost(
    fake: ContainerAppsFake, backend: ContainerAppsBackend
) -> None:
    with pytest.raises(ExecutionLost, match="HTTP 404 ResourceNotFound"):
        await backend.status(ExecutionRef(backend="azure", id="botsched-bot-gone"))
    with pytest.raises(ExecutionLost, match="cannot name"):
        await backend.status(ExecutionRef(backend="azure", id="no/such name"))
    assert fake.calls == ["JobExecution"] and fake.invalid == []


# -- stop and logs ---------------------------------------------------------------------------


async def test_stop_stops_the_execution(
    fake: ContainerAppsFake, backend: ContainerAppsBackend
) -> None:
    ref = await backend.start(make_job())
    await backend.stop(ref)

    assert fake.stops == [ref.id] and fake.calls[-1] == "Jobs_StopExecution"
    assert fake.invalid == []
    stopped = await backend.status(ref)
    assert (stopped.phase, stopped.reason) == ("failed", "stopped")


async def test_stopping_an_ended_or_unknown_execution_is_fine(
    fake: ContainerAppsFake, backend: ContainerAppsBackend
) -> None:
    ref = await backend.start(make_job())
    fake.set_status(ref.id, "Succeeded")
    fake.refuse_stop_when_ended = True  # should Azure answer 400: the run has ended, so fine
    await backend.stop(ref)
    assert fake.calls[-2:] == ["Jobs_StopExecution", "JobExecution"]

    await backend.stop(ExecutionRef(backend="azure", id="botsched-bot-gone"))  # 404
    await backend.stop(ExecutionRef(backend="azure", id="no/such name"))  # not even asked
    assert fake.stops == [ref.id, "botsched-bot-gone"]


async def test_a_refused_stop_of_a_live_execution_fails(
    fake: ContainerAppsFake, backend: ContainerAppsBackend
) -> None:
    ref = await backend.start(make_job())
    fake.fail("Jobs_StopExecution", 409, "Conflict", "an operation is in progress")
    with pytest.raises(BackendError, match="HTTP 409 Conflict: an operation is in progress"):
        await backend.stop(ref)


async def test_logs_are_in_log_analytics(backend: ContainerAppsBackend) -> None:
    with pytest.raises(NotSupported, match="Log Analytics"):
        await backend.logs(ExecutionRef(backend="azure", id="botsched-bot-abc"))


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "status", "code"),
    [
        ("JobsExecutions_List", 500, "InternalServerError"),
        ("Jobs_Start", 500, "InternalServerError"),
        ("Jobs_Start", 403, "AuthorizationFailed"),
        ("JobExecution", 500, "InternalServerError"),
        ("JobExecution", 403, "AuthorizationFailed"),
        ("Jobs_StopExecution", 403, "AuthorizationFailed"),
    ],
)
async def test_sdk_errors_are_backend_errors_without_the_token(
    fake: ContainerAppsFake,
    backend: ContainerAppsBackend,
    operation: str,
    status: int,
    code: str,
) -> None:
    ref = await backend.start(make_job())
    fake.fail(operation, status, code, f"the service said no ({code})")

    with pytest.raises(BackendError) as caught:
        if operation == "JobExecution":
            await backend.status(ref)
        elif operation == "Jobs_StopExecution":
            await backend.stop(ref)
        else:
            await backend.start(make_job(id="another-job"))
    error = caught.value
    refused = operation == "Jobs_Start" and status == 403  # a start that cannot succeed
    assert type(error) is (StartRefused if refused else BackendError)  # never ExecutionLost
    assert f"HTTP {status} {code}: the service said no" in error.message
    assert error.details == {"status": status}
    assert ("jobs/*/action" in error.message) == (status == 403)
    assert TOKEN not in f"{error} {error.message} {error.details!r} {error.__cause__}"


async def test_rejected_credentials_do_not_leak_the_token(
    fake: ContainerAppsFake, backend: ContainerAppsBackend
) -> None:
    fake.tokens = {"the-right-one"}
    with pytest.raises(BackendError) as caught:
        await backend.start(make_job())
    assert "HTTP 401 InvalidAuthenticationToken" in caught.value.message
    assert TOKEN not in f"{caught.value} {caught.value.details!r} {caught.value.__cause__}"


async def test_an_unreachable_api_is_a_backend_error(
    make_backend: MakeBackend, settings: Settings
) -> None:
    backend = make_backend(base_url="https://127.0.0.1:9")  # nothing listens on the discard port
    ref = ExecutionRef(backend="azure", id="botsched-bot-abc")
    for call in (backend.start(make_job()), backend.status(ref), backend.stop(ref)):
        with pytest.raises(BackendError, match="Azure Resource Manager unreachable"):
            await call


# -- failure classes, no platform retries (core/backends/policy.py) ---------------------------


@pytest.mark.parametrize(
    ("status", "code", "refused"),
    [
        (400, "ContainerAppImageRequired", True),
        (403, "AuthorizationFailed", True),
        (404, "ResourceNotFound", True),
        (400, "ContainerAppsJobExecutionQuotaExceeded", False),  # passes as executions end
        (409, "Conflict", False),  # the Job is being updated
        (429, "TooManyRequests", False),
        (500, "InternalServerError", False),
        (503, "ServiceUnavailable", False),
    ],
)
async def test_a_start_failure_is_permanent_or_transient_by_its_answer(
    fake: ContainerAppsFake, backend: ContainerAppsBackend, status: int, code: str, refused: bool
) -> None:
    """Contract fake: Jobs_Start answers `status` with an ARM error body of `code`."""
    fake.fail("Jobs_Start", status, code, "the platform said no")
    with pytest.raises(BackendError) as caught:
        await backend.start(make_job())
    assert isinstance(caught.value, StartRefused) is refused
    assert f"HTTP {status} {code}" in caught.value.message


async def test_a_job_that_retries_a_replica_is_refused_before_anything_runs(
    fake: ContainerAppsFake, backend: ContainerAppsBackend
) -> None:
    """A run cannot set replicaRetryLimit (a JobExecutionTemplate holds containers only): the
    Job must say 0, as infra/azure/main.bicep does."""
    fake.replica_retry_limit = 2
    with pytest.raises(StartRefused, match="retries a failed replica 2 times"):
        await backend.start(make_job())
    assert fake.calls == ["Jobs_Get"] and fake.starts == 0
    fake.replica_retry_limit = 0
    await backend.start(make_job())
    await backend.start(make_job(id="another-job"))
    assert fake.calls.count("Jobs_Get") == 2 and fake.starts == 2  # then once per backend


# -- find and runs ---------------------------------------------------------------------------


async def test_find_returns_the_ref_start_gave(
    fake: ContainerAppsFake, backend: ContainerAppsBackend
) -> None:
    """Contract fake: find reads the job's executions and matches JOB_ID, live or finished."""
    job = make_job()
    fake.add_execution("some-other-job")
    ref = await backend.start(job)
    assert await backend.find(job.id) == ref
    assert await backend.find("never-started") is None

    fake.set_status(ref.id, "Succeeded")
    assert await backend.find(job.id) == ref
    assert fake.starts == 1 and fake.invalid == []


async def test_runs_lists_live_executions_by_job_id(
    fake: ContainerAppsFake, backend: ContainerAppsBackend
) -> None:
    """Contract fake: runs pages through the executions, keeps the live ones keyed by their
    JOB_ID and leaves out ended ones and one started by hand (no JOB_ID)."""
    fake.page_size = 2
    states = {"running": "Running", "processing": "Processing", "degraded": "Degraded"}
    states |= {"done": "Succeeded", "failed": "Failed", "stopped": "Stopped"}
    refs = {job_id: await backend.start(make_job(id=job_id)) for job_id in states}
    for job_id, state in states.items():
        fake.set_status(refs[job_id].id, state)
    fake.add_execution(None, "Running")
    older = fake.add_execution("running", "Running", started="2020-01-01T00:00:00+00:00")

    runs = await backend.runs()
    assert runs == {job_id: refs[job_id] for job_id in ("running", "processing", "degraded")}
    assert runs["running"].id != older  # the newest live one, as a start would adopt
    assert [q.get("$skiptoken") for q in fake.queries[-4:]] == [None, "2", "4", "6"]
    assert fake.invalid == []


@pytest.mark.parametrize(("status", "code"), [(500, "InternalServerError"), (404, "NotFound")])
async def test_find_and_runs_raise_when_the_api_cannot_answer(
    fake: ContainerAppsFake, backend: ContainerAppsBackend, status: int, code: str
) -> None:
    """Contract fake answering an ARM error: never "no run", always BackendError."""
    fake.fail("JobsExecutions_List", status, code, "the service said no", times=2)
    with pytest.raises(BackendError, match=f"HTTP {status} {code}"):
        await backend.find(make_job().id)
    with pytest.raises(BackendError, match=f"HTTP {status} {code}"):
        await backend.runs()


# -- configuration and imports ---------------------------------------------------------------


def test_the_job_comes_from_the_settings() -> None:
    env = {"AZURE_SUBSCRIPTION_ID": SUBSCRIPTION, "AZURE_RESOURCE_GROUP": GROUP}
    with pytest.raises(ConfigError, match=r"PLATFORM=azure needs AZURE_JOB_NAME$"):
        AzureJob.from_settings(Settings.from_env(env))
    full = Settings.from_env({**env, "AZURE_JOB_NAME": JOB, "PLATFORM": "azure"})
    assert AzureJob.from_settings(full) == AzureJob(SUBSCRIPTION, GROUP, JOB)
    backend = ContainerAppsBackend.from_settings(full)
    assert backend.target == AzureJob(SUBSCRIPTION, GROUP, JOB) and backend.name == "azure"


def test_a_missing_sdk_names_the_extra(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "azure.mgmt.appcontainers.aio", None)
    target = AzureJob(SUBSCRIPTION, GROUP, JOB)
    with pytest.raises(ConfigError, match=r"pip install 'bot-scheduler\[azure\]'"):
        ContainerAppsBackend(settings, target)._api()


# -- through the scheduler -------------------------------------------------------------------


@pytest.fixture
def scheduler(backend: ContainerAppsBackend, settings: Settings) -> Scheduler:
    return Scheduler(MemoryStore(), backend, settings)


async def submit_and_dispatch(scheduler: Scheduler, fake: ContainerAppsFake) -> tuple[str, str]:
    spec = JobSpec(meetingUrl="https://meet.example.com/abc", maxRuntimeSeconds=3600)
    job, _ = await scheduler.submit("acme", spec)
    report = await scheduler.drain_once()
    assert report.dispatched == 1
    running = await scheduler.get("acme", job.id)
    assert running.status is JobState.RUNNING and running.execution is not None
    assert running.execution.backend == "azure" and running.execution.id in fake.executions
    assert fake.env(running.execution.id)["JOB_ID"] == job.id
    return job.id, running.execution.id


async def test_scheduler_runs_a_job_to_completion(
    scheduler: Scheduler, fake: ContainerAppsFake
) -> None:
    job_id, name = await submit_and_dispatch(scheduler, fake)
    await scheduler.drain_once()
    assert (await scheduler.get("acme", job_id)).status is JobState.RUNNING

    fake.set_status(name, "Succeeded")
    report = await scheduler.drain_once()
    done = await scheduler.get("acme", job_id)
    assert report.completed == 1 and done.status is JobState.COMPLETED and done.exitCode == 0
    assert fake.starts == 1 and fake.invalid == []


async def test_scheduler_records_a_failed_execution(
    scheduler: Scheduler, fake: ContainerAppsFake
) -> None:
    job_id, name = await submit_and_dispatch(scheduler, fake)
    fake.set_status(name, "Failed")

    report = await scheduler.drain_once()
    failed = await scheduler.get("acme", job_id)
    assert report.failed == 1 and failed.status is JobState.FAILED and failed.reason == "Failed"


async def test_scheduler_cancel_stops_the_execution(
    scheduler: Scheduler, fake: ContainerAppsFake
) -> None:
    job_id, name = await submit_and_dispatch(scheduler, fake)
    cancelled = await scheduler.cancel("acme", job_id)
    assert cancelled.status is JobState.CANCELLED
    assert fake.stops == [name] and fake.executions[name]["properties"]["status"] == "Stopped"
