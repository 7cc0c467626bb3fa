"""The local server under uvicorn, in this process: a stalled body is cut with a 408, and a bot
that ends is noticed at once rather than at the next timer tick."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from core.api import create_app
from core.config import Settings
from core.runtime import Runtime
from core.scheduler import Scheduler
from core.stores.memory import MemoryStore
from handlers.local import listen, uvicorn_server
from tests.api.conftest import JOBS, URL
from tests.fakes import FakeBackend


@contextlib.asynccontextmanager
async def serving(settings: Settings, runtime: Runtime | None = None) -> AsyncIterator[int]:
    """The app as `botsched serve` runs it, on a free loopback port; yields the port."""
    app = create_app(settings, runtime, drain_every=settings.polling_interval)
    sock = listen("127.0.0.1", 0)
    server = uvicorn_server(app, settings)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), "the server did not start"
            await asyncio.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        sock.close()


async def fake_runtime(settings: Settings, store: MemoryStore | None = None) -> Runtime:
    store = store or MemoryStore()
    await store.open()
    return Runtime(settings, Scheduler(store, FakeBackend(), settings))


async def test_a_body_that_stops_arriving_gets_408_and_the_connection_is_freed() -> None:
    settings = Settings.from_env(
        {"SCHEDULER_STORE": "memory", "SCHEDULER_BODY_TIMEOUT_SECONDS": "0.5"}
    )
    store = MemoryStore()
    async with serving(settings, await fake_runtime(settings, store)) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            f"POST {JOBS} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            "Content-Length: 100\r\n\r\n"
        )
        writer.write(head.encode() + b'{"meetingUrl": "' + URL.encode())  # half a body
        await writer.drain()
        started = time.monotonic()
        answer = await asyncio.wait_for(reader.read(), timeout=10)  # until the server closes
        elapsed = time.monotonic() - started
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout", answer
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["success"] is False
    assert body["error"] == "request_timeout"
    assert "0.5 s" in body["message"]
    assert 0.4 < elapsed < 5
    assert sum((await store.counts()).values()) == 0


async def test_a_whole_body_sent_slowly_within_the_limit_is_fine() -> None:
    settings = Settings.from_env(
        {"SCHEDULER_STORE": "memory", "SCHEDULER_BODY_TIMEOUT_SECONDS": "2"}
    )
    async with serving(settings, await fake_runtime(settings)) as port:

        async def slowly() -> AsyncIterator[bytes]:
            for part in (b'{"meetingUrl": "', URL.encode(), b'"}'):
                await asyncio.sleep(0.1)
                yield part

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            response = await client.post(JOBS, content=slowly())
    assert response.status_code == 201, response.text


@pytest.mark.skipif(sys.platform != "linux", reason="the process backend's runs, on Linux")
async def test_the_local_server_notices_a_finished_bot_at_once(tmp_path: Path) -> None:
    bot = shlex.join([sys.executable, "-c", "import time; time.sleep(0.3)"])
    settings = Settings.from_env(
        {
            "SCHEDULER_STORE": "memory",
            "SCHEDULER_DATA_DIR": str(tmp_path),
            "SCHEDULER_POLLING_INTERVAL": "60000",  # the timer alone would take a minute
            "BOT_COMMAND": bot,
        }
    )
    async with serving(settings) as port, httpx.AsyncClient() as client:
        url = f"http://127.0.0.1:{port}{JOBS}"
        job = (await client.post(url, json={"meetingUrl": URL})).json()["job"]
        started = time.monotonic()
        status = job["status"]
        while status != "completed" and time.monotonic() - started < 10:
            await asyncio.sleep(0.05)
            status = (await client.get(f"{url}/{job['id']}")).json()["job"]["status"]
    assert status == "completed"
    assert time.monotonic() - started < 5


def test_the_local_server_logs_no_line_per_request_unless_asked() -> None:
    app = create_app(Settings(store="memory"))
    assert uvicorn_server(app, Settings(store="memory")).config.access_log is False
    asked = Settings.from_env({"SCHEDULER_STORE": "memory", "SCHEDULER_ACCESS_LOG": "true"})
    assert uvicorn_server(app, asked).config.access_log is True
