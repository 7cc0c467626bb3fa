"""`botsched events` and `botsched webhooks ...` against the real app, in-process (memory store,
FakeBackend): a whole session, with deliveries to a local endpoint."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from core import cli
from core.api import create_app
from core.config import Settings
from core.runtime import Runtime
from core.scheduler import Scheduler
from core.stores.memory import MemoryStore
from tests.fakes import FakeBackend
from tests.unit.test_cli_webhooks import use_http


class Receiver:
    """A local endpoint that answers 204 to every POST and keeps the event types."""

    def __init__(self) -> None:
        self.types: list[str] = []
        types = self.types

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                types.append(json.loads(body)["type"])
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.close()


class AppTransport(httpx.BaseTransport):
    """The app in-process for a synchronous client: each request runs on an event loop of its
    own thread (the scheduler's too: `call`)."""

    def __init__(self, app: Any) -> None:
        self.asgi = httpx.ASGITransport(app=app)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, work: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout=30)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def send() -> httpx.Response:
            copy = httpx.Request(
                request.method, request.url, headers=request.headers, content=request.read()
            )
            response = await self.asgi.handle_async_request(copy)
            body = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=body)

        response: httpx.Response = self.call(send())
        return response

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


App = tuple[AppTransport, Scheduler]


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    env = {"SCHEDULER_STORE": "memory", "SCHEDULER_WEBHOOK_ALLOW_PRIVATE": "true"}
    settings = Settings.from_env(env)
    scheduler = Scheduler(MemoryStore(), FakeBackend(), settings)
    transport = AppTransport(create_app(settings, Runtime(settings, scheduler)))
    with httpx.Client(base_url="http://sched.test", transport=transport) as http:
        use_http(monkeypatch, http)
        yield transport, scheduler
        transport.call(scheduler.deliverer.close())


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    cli.main(list(argv))
    out: str = capsys.readouterr().out
    return out


def test_a_session_against_the_app(
    app: App, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    transport, scheduler = app
    created = json.loads(run(capsys, "webhooks", "create", receiver.url, "--event", "job.queued"))
    hook_id = created["webhook"]["id"]
    assert created["secret"].startswith("whsec_")
    listed = run(capsys, "webhooks", "list").splitlines()
    assert listed[1].split() == [hook_id, "enabled", "job.queued", receiver.url]
    assert json.loads(run(capsys, "webhooks", "get", hook_id))["url"] == receiver.url

    job = json.loads(run(capsys, "submit", "--meeting-url", "https://meet.google.com/a-b-c"))
    transport.call(scheduler.deliverer.run_once())
    assert receiver.types == ["job.queued"]
    timeline = run(capsys, "events", job["id"]).splitlines()
    assert timeline[1].split()[1:3] == ["job.queued", "queued"]
    event_id = f"evt_{job['id']}_000001"

    rows = run(capsys, "webhooks", "deliveries", hook_id).splitlines()
    assert rows[1].split()[1:] == ["job.queued", event_id, "1", "204", rows[1].split()[5], "-"]
    assert json.loads(run(capsys, "webhooks", "disable", hook_id))["disabled"] is True
    with pytest.raises(SystemExit):
        cli.main(["webhooks", "replay", hook_id, event_id])  # disabled: 409
    assert "enable it first" in capsys.readouterr().err
    assert json.loads(run(capsys, "webhooks", "enable", hook_id))["disabled"] is False
    replayed = json.loads(run(capsys, "webhooks", "replay", hook_id, event_id))
    assert replayed["eventId"] == event_id
    transport.call(scheduler.deliverer.run_once())
    assert receiver.types == ["job.queued", "job.queued"]

    assert json.loads(run(capsys, "webhooks", "rotate", hook_id))["webhook"]["secrets"] == 2
    assert json.loads(run(capsys, "webhooks", "job-secret"))["webhook"]["id"] == "wh_jobs"
    assert run(capsys, "webhooks", "delete", hook_id) == f"deleted webhook {hook_id}\n"
    assert run(capsys, "webhooks", "list").split()[4:5] == ["wh_jobs"]


def test_submit_webhook_url_reaches_the_job(
    app: App, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    transport, scheduler = app
    run(capsys, "webhooks", "job-secret")  # signs the deliveries to jobs' own URLs
    argv = ["submit", "--meeting-url", "https://meet.google.com/a-b-c"]
    job = json.loads(run(capsys, *argv, "--webhook-url", receiver.url))
    assert job["webhookUrl"] == receiver.url
    transport.call(scheduler.deliverer.run_once())
    assert receiver.types[:1] == ["job.queued"]
    rows = run(capsys, "webhooks", "deliveries", "wh_jobs").splitlines()
    assert rows[-1].split()[1:5] == ["job.queued", f"evt_{job['id']}_000001", "1", "204"]
