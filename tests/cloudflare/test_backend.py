"""The Cloudflare Containers backend over a stand-in Durable Object namespace (CPython): the
stand-in answers the JSON protocol of infra/cloudflare/src/bot-container.ts, not the real one."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from core.backends.cloudflare import CloudflareContainersBackend, execution_from
from core.errors import BackendError, ConfigError, ExecutionLost, NotSupported, StartRefused
from core.models import ExecutionRef, Job


class FakeResponse:
    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self._text = body if isinstance(body, str) else json.dumps(body)

    async def text(self) -> str:
        return self._text


class FakeStub:
    def __init__(self, namespace: FakeNamespace, name: str) -> None:
        self.namespace = namespace
        self.name = name

    async def fetch(self, url: str, **options: Any) -> FakeResponse:
        body = json.loads(options["body"]) if "body" in options else None
        self.namespace.calls.append((self.name, options["method"], url, body))
        run = self.namespace.runs.get(self.name)
        path = url.removeprefix("https://bot")
        if path == "/start":
            if self.namespace.start_answer is not None:
                return FakeResponse(*self.namespace.start_answer)
            if run is None:
                self.namespace.runs[self.name] = run = {"phase": "running", "env": body["env"]}
            return FakeResponse(200, run)
        if path == "/status":
            if self.namespace.status_error is not None:
                return FakeResponse(self.namespace.status_error, "Durable Object reset")
            return FakeResponse(404, {}) if run is None else FakeResponse(200, run)
        if path == "/stop":
            return FakeResponse(self.namespace.stop_status, run or {})
        return FakeResponse(404, {})


class FakeNamespace:
    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str, Any]] = []
        self.stop_status = 200
        self.status_error: int | None = None
        self.start_answer: tuple[int, Any] | None = None  # what /start answers instead

    def idFromName(self, name: str) -> str:  # the binding's JS name
        return name

    def get(self, object_id: str) -> FakeStub:
        return FakeStub(self, object_id)


@pytest.fixture
def namespace() -> FakeNamespace:
    return FakeNamespace()


def _job() -> Job:
    now = datetime.now(UTC)
    return Job(id="job-1", tenant="t1", meetingUrl="https://meet.example.com/x", botName="B",
               createdAt=now, updatedAt=now, notBefore=now)  # fmt: skip


async def test_start_is_one_container_per_job_with_the_bot_env(namespace: FakeNamespace) -> None:
    backend = CloudflareContainersBackend(namespace)
    ref = await backend.start(_job())
    again = await backend.start(_job())  # a retried start adopts the run
    assert ref == again == ExecutionRef(backend="cloudflare", id="job-1")
    assert len(namespace.runs) == 1
    env = namespace.runs["job-1"]["env"]
    assert env["JOB_ID"] == "job-1"
    assert env["MEETING_URL"] == "https://meet.example.com/x"
    assert json.loads(env["BOT_CONFIG"])["bot_uuid"] == "job-1"
    assert namespace.calls[0][1:3] == ("POST", "https://bot/start")


async def test_status_stop_and_lost(namespace: FakeNamespace) -> None:
    backend = CloudflareContainersBackend(namespace)
    ref = await backend.start(_job())
    assert (await backend.status(ref)).phase == "running"
    namespace.runs["job-1"].update(phase="failed", exitCode=2, reason="crash",
                                   finishedAt="2026-01-01T00:00:00Z")  # fmt: skip
    status = await backend.status(ref)
    assert (status.phase, status.exitCode, status.reason) == ("failed", 2, "crash")
    assert status.finishedAt is not None and status.finishedAt.year == 2026
    await backend.stop(ref)
    await backend.stop(ExecutionRef(backend="cloudflare", id="unknown"))  # not an error
    with pytest.raises(ExecutionLost):
        await backend.status(ExecutionRef(backend="cloudflare", id="unknown"))
    with pytest.raises(NotSupported):
        await backend.logs(ref)


async def test_errors_are_backend_errors(namespace: FakeNamespace) -> None:
    backend = CloudflareContainersBackend(namespace)
    namespace.stop_status = 500
    with pytest.raises(BackendError):
        await backend.stop(ExecutionRef(backend="cloudflare", id="job-1"))


async def test_find_returns_the_ref_start_gave(namespace: FakeNamespace) -> None:
    """Stand-in binding: find asks the job's Durable Object for its status."""
    backend = CloudflareContainersBackend(namespace)
    assert await backend.find("job-1") is None  # never started: the object answers 404
    ref = await backend.start(_job())
    assert await backend.find("job-1") == ref
    namespace.runs["job-1"].update(phase="succeeded", exitCode=0)
    assert await backend.find("job-1") == ref  # finished runs are found too
    assert namespace.calls[-1][1:3] == ("GET", "https://bot/status")


async def test_find_raises_when_the_object_cannot_answer(namespace: FakeNamespace) -> None:
    """Stand-in binding answering 500: never "no run", always BackendError."""
    backend = CloudflareContainersBackend(namespace)
    namespace.status_error = 500
    with pytest.raises(BackendError, match="Durable Object reset"):
        await backend.find("job-1")


async def test_runs_cannot_be_listed(namespace: FakeNamespace) -> None:
    backend = CloudflareContainersBackend(namespace)
    await backend.start(_job())
    with pytest.raises(NotSupported, match="cannot list their runs"):
        await backend.runs()


def test_execution_from_tolerates_odd_bodies() -> None:
    assert execution_from({"phase": "weird"}).phase == "unknown"
    assert execution_from({"phase": "running", "startedAt": 0}).startedAt is not None


def test_needs_the_binding() -> None:
    from core.config import Settings

    with pytest.raises(ConfigError, match="BOTS"):
        CloudflareContainersBackend.from_settings(Settings())


@pytest.mark.parametrize(
    ("status", "refused"),
    [(400, True), (403, True), (404, True), (422, True), (429, False), (500, False), (502, False)],
)
async def test_a_start_failure_is_permanent_or_transient_by_its_answer(
    namespace: FakeNamespace, status: int, refused: bool
) -> None:
    """Stand-in binding: /start answers `status` (bot-container.ts answers 502 start_failed when
    the container would not start; 404 no_route when the binding is not our class)."""
    namespace.start_answer = (status, {"error": "start_failed", "reason": "no"})
    with pytest.raises(BackendError) as caught:
        await CloudflareContainersBackend(namespace).start(_job())
    assert isinstance(caught.value, StartRefused) is refused
    assert caught.value.details == {"status": status}


async def test_a_fetch_that_throws_is_transient(namespace: FakeNamespace) -> None:
    class Throwing(FakeNamespace):
        def get(self, object_id: str) -> FakeStub:
            stub = FakeStub(self, object_id)

            async def fetch(url: str, **options: Any) -> FakeResponse:
                raise RuntimeError("Error: Durable Object reset because its code was updated")

            stub.fetch = fetch  # type: ignore[method-assign]
            return stub

    with pytest.raises(BackendError) as caught:
        await CloudflareContainersBackend(Throwing()).start(_job())
    assert type(caught.value) is BackendError
