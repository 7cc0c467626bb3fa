"""handlers/gcp.py in this process: what it loads at import, its configuration errors, the tick
window, how `ServeApp` passes a request to the app, and the Cloud Logging lines. The framework's
own ASGI app wraps the functions here, as it does when it serves main.py."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from functions_framework.aio import create_asgi_app_from_module
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message

from core.errors import ConfigError
from handlers import gcp
from tests.gcp.ff_env import ROOT, clean_env, kill_bots, tick_request

KEY = "gcf-unit-key-0001"
AUTH = {"Authorization": f"Bearer {KEY}"}
JOBS = "/api/scheduler/jobs"
SDK_PREFIXES = (
    "grpc",
    "google.cloud.firestore",
    "google.cloud.firestore_v1",
    "google.cloud.run",
    "google.cloud.run_v2",
    "google.api_core",
    "google.auth",
    "mangum",
    "azure",
)


@pytest.fixture
def environ(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Replace the environment's scheduler and framework variables with the given ones."""
    kept = clean_env()
    for name in list(os.environ):
        if name not in kept:
            monkeypatch.delenv(name)
    # the framework writes these into os.environ when it builds its app: restored afterwards
    monkeypatch.setenv("FUNCTION_TARGET", "")
    monkeypatch.setenv("FUNCTION_SIGNATURE_TYPE", "")

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


@pytest.fixture(autouse=True)
async def fresh_deployment() -> AsyncIterator[None]:
    await gcp.reset()
    yield
    await gcp.reset()


@pytest.fixture
def sqlite_env(environ: Callable[..., None], tmp_path: Path) -> Iterator[Path]:
    bot = ["env", "DEMO_BOT_SECONDS=0.2", sys.executable, "-m", "core.demo_bot"]
    environ(
        SCHEDULER_STORE="sqlite",
        SCHEDULER_DATA_DIR=str(tmp_path),
        SCHEDULER_API_KEYS=KEY,
        SCHEDULER_POLLING_INTERVAL="100",
        PLATFORM="process",
        BOT_COMMAND=shlex.join(bot),
    )
    yield tmp_path
    kill_bots(tmp_path)


def framework_client(target: str) -> httpx.AsyncClient:
    """The framework's ASGI app for `target`, as `functions-framework --target` builds it."""
    app = create_asgi_app_from_module(target, str(ROOT / "main.py"), None, gcp, None)  # type: ignore[no-untyped-call]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gcf")


# -- import ------------------------------------------------------------------------------------


def test_import_loads_no_cloud_sdk_and_builds_nothing() -> None:
    code = (
        "import sys, json; import main; import handlers.gcp as gcp; print(json.dumps({"
        f"'loaded': sorted(m for m in sys.modules if m.startswith({SDK_PREFIXES!r})), "
        "'framework': 'functions_framework.aio' in sys.modules, "
        "'built': gcp._deployment is not None}))"
    )
    # No SCHEDULER_API_KEYS: a build at import time would raise here.
    env = {**clean_env(), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == {"loaded": [], "framework": True, "built": False}


def test_the_framework_finds_core_and_handlers_in_the_source_root(tmp_path: Path) -> None:
    """functions-framework appends main.py's directory to sys.path and loads main.py from it;
    `core` and `handlers` must resolve to this repository, not to an installed package."""
    code = (
        "import json, sys; from functions_framework import _function_registry as r; "
        f"module, spec = r.load_function_module({str(ROOT / 'main.py')!r}); "
        "spec.loader.exec_module(module); "
        "print(json.dumps([sys.modules[m].__file__ for m in ('core', 'handlers', 'handlers.gcp')]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=clean_env(), capture_output=True,
        text=True, check=True,
    )  # fmt: skip
    for path in json.loads(out.stdout):
        assert Path(path).resolve().is_relative_to(ROOT), path


# -- settings ----------------------------------------------------------------------------------


def test_settings_default_the_data_dir_to_tmp() -> None:
    assert gcp.settings_from_env({}).data_dir == Path("/tmp/botsched")
    assert gcp.settings_from_env({"SCHEDULER_DATA_DIR": " "}).data_dir == Path("/tmp/botsched")
    assert gcp.settings_from_env({"SCHEDULER_DATA_DIR": "/data"}).data_dir == Path("/data")


@pytest.mark.parametrize(("raw", "seconds"), [("", 0.0), ("0", 0.0), (" 45 ", 45.0), ("2.5", 2.5)])
def test_tick_window(raw: str, seconds: float) -> None:
    assert gcp.tick_window({gcp.TICK_WINDOW_VARIABLE: raw}) == seconds
    assert gcp.tick_window({}) == 0.0


@pytest.mark.parametrize("raw", ["-1", "soon", "nan"])
def test_a_bad_tick_window_is_a_config_error(raw: str) -> None:
    with pytest.raises(ConfigError, match=gcp.TICK_WINDOW_VARIABLE):
        gcp.tick_window({gcp.TICK_WINDOW_VARIABLE: raw})


# -- configuration errors ----------------------------------------------------------------------


async def test_without_api_keys_http_gets_a_500_naming_the_problem_and_it_is_not_cached(
    environ: Callable[..., None], tmp_path: Path
) -> None:
    environ(SCHEDULER_STORE="memory", SCHEDULER_DATA_DIR=str(tmp_path))
    async with framework_client("api") as client:
        response = await client.get("/health")
        assert response.status_code == 500
        body = response.json()
        assert body["error"] == "config_error"
        assert "SCHEDULER_API_KEYS" in body["message"]
        environ(SCHEDULER_API_KEYS=KEY)  # fixed: the next request builds the app
        assert (await client.get("/health")).status_code == 200


async def test_a_tick_with_a_config_error_fails_visibly(
    environ: Callable[..., None], tmp_path: Path
) -> None:
    environ(SCHEDULER_STORE="no-such-store", SCHEDULER_API_KEYS=KEY)
    headers, body = tick_request()
    async with framework_client("drain") as client:
        response = await client.post("/", headers=headers, json=body)
    assert response.status_code == 500
    assert response.headers["x-google-status"] == "crash"


# -- the app through the framework, in this process ---------------------------------------------


async def test_submit_through_the_framework_app_then_one_tick_window_completes_it(
    sqlite_env: Path, environ: Callable[..., None]
) -> None:
    environ(**{gcp.TICK_WINDOW_VARIABLE: "3"})
    async with framework_client("api") as client:
        created = await client.post(
            JOBS, json={"meetingUrl": "https://meet.example/x"}, headers=AUTH
        )
        assert created.status_code == 201
        job_id = created.json()["job"]["id"]
        reports = await gcp.run_tick()
        job = (await client.get(f"{JOBS}/{job_id}", headers=AUTH)).json()["job"]
    assert job["status"] == "completed"
    assert 2 <= len(reports) <= 31  # one drain per 0.1 s for 3 s, stopped before overrunning
    assert sum(report.completed for report in reports) == 1


async def test_without_a_window_a_tick_is_one_drain(sqlite_env: Path) -> None:
    assert len(await gcp.run_tick()) == 1


async def test_the_framework_wraps_the_app_once_per_instance(sqlite_env: Path) -> None:
    async with framework_client("api") as client:
        for _ in range(3):
            assert (await client.get("/health")).status_code == 200
    built = gcp.deployment()
    app = built.app
    async with framework_client("api") as client:
        assert (await client.get("/")).status_code == 200
    assert gcp.deployment() is built
    assert built.app is app


async def test_a_tick_needs_no_api_keys(environ: Callable[..., None], tmp_path: Path) -> None:
    environ(SCHEDULER_STORE="sqlite", SCHEDULER_DATA_DIR=str(tmp_path), PLATFORM="process")
    headers, body = tick_request()
    async with framework_client("drain") as client:
        response = await client.post("/", headers=headers, json=body)
    assert response.status_code == 200, response.text
    assert gcp.deployment()._app is None  # the app (and its API key check) is never built


# -- ServeApp ----------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.sent.append(message)


async def receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def http_scope(path: str = "/x") -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "headers": [], "server": ("gcf", 80), "client": ("127.0.0.1", 1),
        "path_params": {"path": path[1:]}, "endpoint": object(), "route": object(),
    }  # fmt: skip


async def test_serve_app_sends_the_last_body_after_the_background_task() -> None:
    events: list[str] = []

    async def later() -> None:
        await asyncio.sleep(0.01)
        events.append("background done")

    async def endpoint(request: Request) -> Response:
        assert request.path_params == {}  # the framework's route match does not leak in
        return JSONResponse({"ok": True}, background=BackgroundTask(later))

    send = Recorder()

    async def recording_send(message: Message) -> None:
        events.append(message["type"])
        await send(message)

    app = Starlette(routes=[Route("/x", endpoint)])
    await gcp.ServeApp(app)(http_scope(), receive, recording_send)
    assert events == ["http.response.start", "background done", "http.response.body"]
    assert json.loads(send.sent[-1]["body"]) == {"ok": True}


async def test_serve_app_logs_an_error_raised_after_the_response(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def endpoint(request: Request) -> Response:
        raise RuntimeError("boom")

    app = Starlette(routes=[Route("/x", endpoint)])  # answers 500, then re-raises
    send = Recorder()
    with caplog.at_level(logging.ERROR, logger="botsched.gcp"):
        await gcp.ServeApp(app)(http_scope(), receive, send)
    assert send.sent[0]["status"] == 500
    assert send.sent[-1]["type"] == "http.response.body"
    assert "GET /x failed" in caplog.text


async def test_serve_app_reraises_when_nothing_was_sent() -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("before any response")

    send = Recorder()
    with pytest.raises(RuntimeError, match="before any response"):
        await gcp.ServeApp(broken)(http_scope(), receive, send)
    assert send.sent == []


# -- logging -----------------------------------------------------------------------------------


def test_cloud_logging_lines_are_json_with_a_severity() -> None:
    handler = gcp.CloudLoggingHandler()
    handler.stream = io.StringIO()
    record = logging.LogRecord("botsched.gcp", logging.WARNING, __file__, 1, "x=%s", (1,), None)
    handler.emit(record)
    entry = json.loads(handler.stream.getvalue())
    assert entry == {"severity": "WARNING", "message": "x=1", "logger": "botsched.gcp"}


def test_log_to_cloud_logging_adds_one_handler() -> None:
    logger = logging.getLogger("botsched")
    handlers, level = list(logger.handlers), logger.level
    try:
        gcp.log_to_cloud_logging()
        gcp.log_to_cloud_logging()
        ours = [h for h in logger.handlers if isinstance(h, gcp.CloudLoggingHandler)]
        assert len(ours) == 1
        assert logger.level == logging.INFO
        assert logger.propagate
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)
