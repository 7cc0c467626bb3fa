"""The Azure Functions app, invoked the way the Python worker does it.

The Functions host cannot be installed offline, so the tests do the worker's part: import
`function_app.py` from the repository root, index `app.get_functions()` (once, as the worker
does: the library refuses a second call on the same app), and call each function's user function
with real `azure.functions.HttpRequest` and `TimerRequest` objects, awaited on one event loop per
test (the worker's loop runs every invocation of an instance). Jobs run on the process backend
with the demo bot; the tests that keep jobs run on SQLite and on the Azure Table store over a
private Azurite (tests/azurite_env.py).
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import typing
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func
import pytest
from azure.functions.decorators.function_app import Function
from azure.functions.timer import TimerRequest, TimerRequestConverter

from core.config import variable_names
from core.errors import ConfigError
from handlers import azure
from tests.azurite_env import AzuriteEnv

ROOT = Path(__file__).resolve().parents[2]
BASE_URL = "http://localhost:7071"  # `func start`'s default; the host passes the full URL
KEY = "azure-test-key-1"
AUTH = {"x-api-key": KEY}
JOBS = "/api/scheduler/jobs"
MEETING = "https://meet.example.com/abc-defg-hij"
SCHEDULE_SETTINGS = (azure.DRAIN_SCHEDULE_SETTING, azure.POLL_SCHEDULE_SETTING)
SETTINGS_VARIABLES = tuple(variable_names())
STORE_NAMES = ["sqlite", "azure_table"]
FINAL = ("completed", "failed", "cancelled")


# -- the worker's side: load, index, invoke --------------------------------------------------


def load_function_app() -> ModuleType:
    """Import function_app.py from the repository root, as the worker does (by file)."""
    spec = importlib.util.spec_from_file_location("function_app", ROOT / "function_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Indexed:
    """The functions the worker would index, found by their trigger bindings."""

    all: list[Function]
    http: Function
    drain: Function
    poll: Function


def trigger_of(function: Function) -> dict[str, Any]:
    bindings: list[dict[str, Any]] = json.loads(function.get_function_json())["bindings"]
    triggers = [b for b in bindings if b["type"].endswith("Trigger")]
    assert len(triggers) == 1, bindings
    return triggers[0]


@pytest.fixture(scope="module")
def indexed() -> Indexed:
    functions = load_function_app().app.get_functions()
    http = [f for f in functions if trigger_of(f)["type"] == "httpTrigger"]
    timers = {
        trigger_of(f)["schedule"]: f for f in functions if trigger_of(f)["type"] == "timerTrigger"
    }
    assert len(http) == 1 and len(timers) == 2, [f.get_function_name() for f in functions]
    return Indexed(
        functions,
        http[0],
        timers[f"%{azure.DRAIN_SCHEDULE_SETTING}%"],
        timers[f"%{azure.POLL_SCHEDULE_SETTING}%"],
    )


class Context(func.Context):
    """What the worker passes as `context` (azure_functions_worker.bindings.Context's fields)."""

    def __init__(self, function_name: str) -> None:
        self._function_name = function_name
        self._invocation_id = str(uuid.uuid4())
        self._local = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return str(ROOT)

    @property
    def trace_context(self) -> Any:
        return None

    @property
    def retry_context(self) -> Any:
        return None


async def invoke(function: Function, *args: Any) -> Any:
    result = function.get_user_function()(*args)
    return await result if inspect.isawaitable(result) else result


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    mimetype: str
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


class Client:
    """Calls the HTTP function as the host does for `GET|POST|... {BASE_URL}{path}`."""

    def __init__(self, function: Function) -> None:
        self.function = function

    async def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Reply:
        raw = b"" if body is None else json.dumps(body).encode()
        all_headers = {"host": "localhost:7071", **(headers or {})}
        if body is not None:
            all_headers["content-type"] = "application/json"
        url = BASE_URL + path
        parts = urlsplit(url)
        request = func.HttpRequest(
            method=method,
            url=url,
            headers=all_headers,
            params=dict(parse_qsl(parts.query)),
            route_params={"route": parts.path.lstrip("/")},  # `{*route}`, as the host fills it
            body=raw,
        )
        response = await invoke(
            self.function, request, Context(self.function.get_function_name() or "")
        )
        assert isinstance(response, func.HttpResponse)
        return Reply(
            response.status_code,
            {k.lower(): v for k, v in response.headers.items()},
            response.mimetype,
            response.get_body().decode(),
        )

    async def submit(self, **spec: Any) -> dict[str, Any]:
        spec.setdefault("meetingUrl", MEETING)
        reply = await self.request("POST", JOBS, spec, AUTH)
        assert reply.status == 201, reply
        job: dict[str, Any] = reply.json()["job"]
        return job

    async def job(self, job_id: str) -> dict[str, Any]:
        reply = await self.request("GET", f"{JOBS}/{job_id}", headers=AUTH)
        assert reply.status == 200, reply
        job: dict[str, Any] = reply.json()["job"]
        return job


async def tick(timer: Function, past_due: bool = False) -> None:
    """One timer invocation. The worker refuses a return value from a function without an
    output binding, so it must return None."""
    assert await invoke(timer, TimerRequest(past_due=past_due)) is None


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
async def instance(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Path]:
    """A cold instance per test: app settings in the environment, nothing built yet."""
    for name in SETTINGS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    bot = f"env DEMO_BOT_SECONDS=0.2 {shlex.quote(sys.executable)} -m core.demo_bot"
    monkeypatch.setenv("SCHEDULER_STORE", "sqlite")
    monkeypatch.setenv("SCHEDULER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SCHEDULER_API_KEYS", f"{KEY}:tenantA")
    monkeypatch.setenv("PLATFORM", "process")
    monkeypatch.setenv("BOT_COMMAND", bot)
    for setting, schedule in azure.DEFAULT_SCHEDULES.items():
        monkeypatch.setenv(setting, schedule)
    await azure.reset()
    yield tmp_path
    await azure.reset()


@pytest.fixture(params=STORE_NAMES)
def store(request: pytest.FixtureRequest, instance: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """SCHEDULER_STORE for this test; azure_table on a fresh table of a private Azurite."""
    name: str = request.param
    if name == "azure_table":
        env: AzuriteEnv = request.getfixturevalue("azurite")
        monkeypatch.setenv("SCHEDULER_STORE", "azure_table")
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", env.connection_string)
        monkeypatch.setenv("AZURE_TABLE_NAME", "t" + uuid.uuid4().hex[:12])
    return name


@pytest.fixture
def client(indexed: Indexed) -> Client:
    return Client(indexed.http)


async def wait_for(
    client: Client, job_id: str, timer: Function, states: tuple[str, ...], limit: float = 30.0
) -> dict[str, Any]:
    """Invoke `timer` until the job is in one of `states` (at most `limit` seconds); the job."""
    deadline = time.monotonic() + limit
    while True:
        await tick(timer)
        job = await client.job(job_id)
        if job["status"] in states:
            return job
        assert time.monotonic() < deadline, f"job still {job['status']} after {limit}s"
        await asyncio.sleep(0.05)


# -- import, metadata, host.json -------------------------------------------------------------


def test_import_loads_no_cloud_sdk_builds_nothing_and_indexes_without_settings() -> None:
    # Measured against what the interpreter loaded before (a namespace package's .pth file may
    # load `google` at startup). azure.functions itself is fine; no other azure.* SDK is.
    code = (
        "import sys, json, importlib.util\n"
        "before = set(sys.modules)\n"
        "spec = importlib.util.spec_from_file_location('function_app', 'function_app.py')\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "names = [f.get_function_name() for f in module.app.get_functions()]\n"
        "import handlers.azure as azure\n"
        "print(json.dumps({'names': names, 'built': azure._deployment is not None,\n"
        "  'loaded': sorted(m for m in set(sys.modules) - before if m.startswith(('azure.',\n"
        "    'aiohttp', 'google', 'grpc', 'core.stores.', 'core.backends.', 'mangum'))\n"
        "    and not m.startswith('azure.functions'))}))\n"
    )
    # No settings at all: indexing must not need them (a build at import time would raise).
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARIABLES + SCHEDULE_SETTINGS}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == {
        "names": ["api", "drain", "poll"],
        "built": False,
        "loaded": [],
    }


def test_host_json_serves_the_app_at_its_own_paths() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"]["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    assert host["extensionBundle"]["version"].startswith("[4.")
    assert host["extensions"]["http"]["routePrefix"] == ""


def host_routes(route_prefix: str, route: str, path: str) -> bool:
    """Whether the host routes `path` to a function on `route` (a `{*name}` catch-all, as
    AsgiFunctionApp registers) under `route_prefix`. The app then sees the whole URL path."""
    template = "/".join(part for part in (route_prefix.strip("/"), route.strip("/")) if part)
    literal, star, _ = template.partition("{*")
    assert star, template
    return (path.lstrip("/") + "/").startswith(literal)


def test_route_prefix_reaches_every_route_of_the_app(indexed: Indexed) -> None:
    prefix = json.loads((ROOT / "host.json").read_text())["extensions"]["http"]["routePrefix"]
    route = trigger_of(indexed.http)["route"]
    paths = ["/", "/health", "/docs", "/openapi.json", "/metrics", JOBS, f"{JOBS}/x/logs"]
    assert all(host_routes(prefix, route, path) for path in paths)
    # The default prefix "api" would still pass /api/scheduler/... (the app sees the full URL
    # path) but never call the function for /health, / or /docs.
    assert host_routes("api", route, JOBS) and not host_routes("api", route, "/health")


def test_function_metadata(indexed: Indexed) -> None:
    names = [f.get_function_name() for f in indexed.all]
    assert len(names) == len(set(names)) == 3
    assert {indexed.http.get_function_name(), indexed.drain.get_function_name()} == {"api", "drain"}
    assert indexed.poll.get_function_name() == "poll"

    http = trigger_of(indexed.http)
    assert http["authLevel"] == "ANONYMOUS"  # the API keys do the auth
    assert http["route"] == "/{*route}"
    assert {"GET", "POST", "DELETE"} <= set(http["methods"])

    for function, setting in ((indexed.drain, "drain"), (indexed.poll, "poll")):
        user = function.get_user_function()
        # coroutines run on the worker's one event loop; plain functions in its thread pool
        assert inspect.iscoroutinefunction(user), setting
        # the worker resolves annotations with typing.get_type_hints and checks the trigger's
        hints = typing.get_type_hints(user)
        assert TimerRequestConverter.check_input_type_annotation(hints["timer"])
        assert trigger_of(function)["name"] == "timer"
    assert inspect.iscoroutinefunction(indexed.http.get_user_function())


NCRONTAB_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")


def test_timer_schedules_resolve_from_app_settings(indexed: Indexed) -> None:
    settings = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
    bicep = (ROOT / "infra" / "azure" / "main.bicep").read_text()
    for function, setting in (
        (indexed.drain, azure.DRAIN_SCHEDULE_SETTING),
        (indexed.poll, azure.POLL_SCHEDULE_SETTING),
    ):
        schedule = trigger_of(function)["schedule"]
        assert schedule == f"%{setting}%"  # resolved by the host from the app setting
        value = settings[setting]
        assert value == azure.DEFAULT_SCHEDULES[setting]
        fields = value.split()
        assert len(fields) == 6, f"{setting}: NCRONTAB has six fields, seconds first"
        assert all(NCRONTAB_FIELD.match(field) for field in fields), value
        # the deployment defines the setting too, or the function would not be indexed
        assert re.search(rf"name: '{setting}', value: '[^']+'", bicep), setting
    assert settings["FUNCTIONS_WORKER_RUNTIME"] == "python"


def test_funcignore_keeps_what_the_worker_needs() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".funcignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {"local.settings.json", ".venv", "tests"} <= ignored
    assert not ignored & {"core", "handlers", "function_app.py", "host.json", "requirements.txt"}


# -- HTTP --------------------------------------------------------------------------------------


@pytest.mark.usefixtures("store")
async def test_submit_get_and_list_through_the_http_function(
    client: Client, indexed: Indexed
) -> None:
    reply = await client.request("POST", JOBS, {"meetingUrl": MEETING, "priority": 7}, AUTH)
    assert reply.status == 201
    assert reply.mimetype == "application/json"
    body = reply.json()
    assert body["success"] is True
    job = body["job"]
    assert (job["meetingUrl"], job["priority"]) == (MEETING, 7)
    uuid.UUID(job["id"])

    got = await client.request("GET", f"{JOBS}/{job['id']}", headers=AUTH)
    assert got.status == 200
    assert got.json()["job"]["id"] == job["id"]

    listed = await client.request("GET", f"{JOBS}?limit=5", headers=AUTH)
    assert listed.status == 200
    assert [item["id"] for item in listed.json()["jobs"]] == [job["id"]]

    missing = await client.request("GET", f"{JOBS}/{uuid.uuid4()}", headers=AUTH)
    assert (missing.status, missing.json()["error"]) == (404, "not_found")
    await wait_for(client, job["id"], indexed.poll, FINAL)  # leave no bot running


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "not-the-key-at-all"}])
async def test_without_a_valid_api_key_401(client: Client, headers: dict[str, str]) -> None:
    for method, path, body in (("POST", JOBS, {"meetingUrl": MEETING}), ("GET", JOBS, None)):
        reply = await client.request(method, path, body, headers)
        assert reply.status == 401
        assert reply.headers["www-authenticate"] == "Bearer"
        assert (reply.json()["success"], reply.json()["error"]) == (False, "unauthorized")


@pytest.mark.usefixtures("store")
async def test_root_routes_and_the_seed_meetings_route(client: Client, indexed: Indexed) -> None:
    health = await client.request("GET", "/health")
    assert (health.status, health.json()["status"]) == (200, "healthy")
    info = await client.request("GET", "/")
    assert info.json()["endpoints"]["submitJob"] == f"POST {JOBS}"
    meeting = {"meeting_url": MEETING, "bot_name": "Azure Bot"}
    bearer = {"authorization": f"Bearer {KEY}"}
    reply = await client.request("POST", "/api/scheduler/meetings", meeting, bearer)
    assert reply.status == 201, reply
    assert reply.json()["job"]["botName"] == "Azure Bot"
    await wait_for(client, reply.json()["job"]["id"], indexed.poll, FINAL)
    unknown = await client.request("GET", "/api/api/scheduler/jobs", headers=AUTH)
    assert unknown.status == 404


# -- the timers --------------------------------------------------------------------------------


@pytest.mark.usefixtures("store")
async def test_a_job_submitted_over_http_is_dispatched_by_the_drain_timer_and_polled_to_its_end(
    client: Client, indexed: Indexed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCHEDULER_JOIN_LEAD_SECONDS", "0")
    join_at = datetime.now(UTC) + timedelta(seconds=4)
    job = await client.submit(joinAt=join_at.isoformat())
    # not due yet, so the dispatch that follows a submit leaves it queued
    assert (await client.job(job["id"]))["status"] == "queued"

    started = await wait_for(client, job["id"], indexed.drain, ("running", *FINAL))
    assert started["status"] in ("running", "completed"), started
    assert datetime.fromisoformat(started["startedAt"]) >= join_at

    done = await wait_for(client, job["id"], indexed.poll, FINAL)
    assert done["status"] == "completed", done
    assert (done["exitCode"], done["attempts"]) == (0, 1)

    stats = (await client.request("GET", "/api/scheduler/stats", headers=AUTH)).json()
    assert (stats["completedJobs"], stats["queueSize"], stats["runningJobs"]) == (1, 0, 0)


@pytest.mark.usefixtures("store")
async def test_warm_instance_keeps_one_runtime_across_http_and_timer_invocations(
    client: Client, indexed: Indexed
) -> None:
    await tick(indexed.drain)  # a timer first: it builds the instance without any HTTP call
    built = azure._deployment
    assert built is not None
    scheduler = await built.runtime.scheduler()

    job = await client.submit()
    # the submit dispatched it at once (inside the HTTP invocation), no timer needed
    assert (await client.job(job["id"]))["status"] in ("running", "completed")
    done = await wait_for(client, job["id"], indexed.poll, FINAL)
    assert done["status"] == "completed"

    second = await client.submit()
    await wait_for(client, second["id"], indexed.drain, FINAL)
    assert azure._deployment is built
    assert await built.runtime.scheduler() is scheduler
    assert indexed.http.get_user_function() is not None
    assert azure.app.startup_task_done  # the ASGI lifespan ran once, on the first HTTP call


@pytest.mark.usefixtures("store")
async def test_concurrent_invocations_on_a_cold_instance_build_one_runtime(
    client: Client, indexed: Indexed
) -> None:
    # the worker runs the invocations of one instance concurrently on its loop
    first, second, *_ = await asyncio.gather(
        client.submit(), client.submit(), tick(indexed.drain), tick(indexed.poll)
    )
    built = azure._deployment
    assert built is not None
    for job in (first, second):
        assert (await wait_for(client, job["id"], indexed.poll, FINAL))["status"] == "completed"
    assert azure._deployment is built


async def test_past_due_timer_still_drains_and_says_so(
    indexed: Indexed, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    job = await client.submit()
    with caplog.at_level(logging.INFO, logger="botsched.azure"):
        await tick(indexed.poll, past_due=True)
    assert "past due" in caplog.text
    assert (await wait_for(client, job["id"], indexed.poll, FINAL))["status"] == "completed"


async def test_lifespan_builds_and_closes_nothing_even_when_misconfigured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SCHEDULER_API_KEYS")
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    for message in ({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}):
        inbox.put_nowait(message)
    await azure.asgi({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert azure._deployment is None


# -- configuration -----------------------------------------------------------------------------


async def test_missing_api_keys_is_a_json_500_for_http_and_raises_for_the_timers(
    client: Client, indexed: Indexed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SCHEDULER_API_KEYS")
    for path in (JOBS, "/health", "/"):
        reply = await client.request("GET", path, headers=AUTH)
        assert reply.status == 500
        assert reply.mimetype == "application/json"
        body = reply.json()
        assert (body["success"], body["error"]) == (False, "config_error")
        assert "SCHEDULER_API_KEYS" in body["message"]
    for timer in (indexed.drain, indexed.poll):
        with pytest.raises(ConfigError, match="SCHEDULER_API_KEYS"):
            await tick(timer)
    assert azure._deployment is None  # not cached: each invocation reports it again

    monkeypatch.setenv("SCHEDULER_API_KEYS", KEY)
    assert (await client.request("GET", JOBS, headers=AUTH)).status == 200


async def test_unknown_store_is_a_json_500_for_http_and_raises_for_the_timers(
    client: Client, indexed: Indexed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCHEDULER_STORE", "cosmos")
    reply = await client.request("GET", JOBS, headers=AUTH)
    assert (reply.status, reply.json()["error"]) == (500, "config_error")
    assert "SCHEDULER_STORE" in reply.json()["message"]
    with pytest.raises(ConfigError, match="SCHEDULER_STORE"):
        await tick(indexed.drain)


def test_data_dir_defaults_to_tmp() -> None:
    assert str(azure.settings_from_env({}).data_dir) == "/tmp/botsched"
    assert str(azure.settings_from_env({"SCHEDULER_DATA_DIR": " "}).data_dir) == "/tmp/botsched"
    assert str(azure.settings_from_env({"SCHEDULER_DATA_DIR": "/home/data"}).data_dir) == (
        "/home/data"
    )
