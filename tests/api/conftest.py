"""API tests drive the real Starlette app in-process through httpx's ASGI transport.

`make_api(**env)` builds Settings from an env mapping, a Scheduler over a MemoryStore and the
FakeBackend, the app, and a client. Every response any test receives is checked: never a 5xx,
never a traceback, always JSON for an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from core.api import create_app
from core.config import Settings
from core.models import Job
from core.runtime import Runtime
from core.scheduler import Scheduler
from core.stores.memory import MemoryStore
from tests.fakes import FakeBackend

KEY_A = "key1234567"
KEY_B = "key7654321"
API_KEYS = f"{KEY_A}:tenantA,{KEY_B}:tenantB"
JOBS = "/api/scheduler/jobs"
# a meeting URL on no known platform: its jobs never share a bot (one bot per meeting is for
# Meet, Zoom, Teams and Webex: tests/scheduling), so tests may submit it again and again
URL = "https://meet.example.com/abc-defg-hij"


@dataclass
class Api:
    client: httpx.AsyncClient
    scheduler: Scheduler
    backend: FakeBackend
    settings: Settings
    responses: list[httpx.Response] = field(default_factory=list)

    @property
    def store(self) -> MemoryStore:
        store = self.scheduler.store
        assert isinstance(store, MemoryStore)
        return store

    async def submit(self, headers: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
        """POST a job (default meeting URL) and return the job from the 201 response."""
        spec.setdefault("meetingUrl", URL)
        response = await self.client.post(JOBS, json=spec, headers=headers)
        assert response.status_code == 201, response.text
        job: dict[str, Any] = response.json()["job"]
        return job

    async def job(self, job_id: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
        response = await self.client.get(f"{JOBS}/{job_id}", headers=headers)
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()["job"]
        return job

    async def stored(self, job_id: str) -> Job:
        job = await self.store.get(job_id)
        assert job is not None
        return job


MakeApi = Callable[..., Awaitable[Api]]


def later(**delta: float) -> str:
    """An ISO time in the future (a joinAt that keeps a job queued)."""
    return (datetime.now(UTC) + timedelta(**delta)).isoformat()


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> str:
    """The response is the JSON error shape with `status`; returns its message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["success"] is False
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["message"], str) and body["message"]
    if code is not None:
        assert body["error"] == code, body
    message: str = body["message"]
    return message


async def _check(response: httpx.Response) -> None:
    await response.aread()
    assert response.status_code < 500, f"{response.request.url}: {response.text}"
    assert "Traceback" not in response.text
    if response.status_code >= 400:
        assert response.json()["success"] is False


@pytest.fixture
async def make_api() -> AsyncIterator[MakeApi]:
    async with contextlib.AsyncExitStack() as stack:

        async def build(
            env: dict[str, str] | None = None,
            headers: dict[str, str] | None = None,
            **app_options: Any,
        ) -> Api:
            settings = Settings.from_env({"SCHEDULER_STORE": "memory", **(env or {})})
            store = MemoryStore()
            await store.open()
            backend = FakeBackend()
            scheduler = Scheduler(store, backend, settings)
            app = create_app(settings, Runtime(settings, scheduler), **app_options)
            responses: list[httpx.Response] = []

            async def record(response: httpx.Response) -> None:
                await _check(response)
                responses.append(response)

            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://test",
                headers=headers,
                event_hooks={"response": [record]},
            )
            await stack.enter_async_context(client)
            stack.push_async_callback(store.close)
            return Api(client, scheduler, backend, settings, responses)

        yield build


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    return await make_api()


@pytest.fixture
async def auth_api(make_api: MakeApi) -> Api:
    """Two tenants; the client sends no key unless a test passes one."""
    return await make_api({"SCHEDULER_API_KEYS": API_KEYS})
