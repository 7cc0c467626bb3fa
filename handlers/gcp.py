"""Google Cloud Functions (2nd gen): two functions from one source, each deployed on its own.

- `api`: an HTTP function (`@functions_framework.aio.http`) that serves the app unchanged, every
  path and method. functions-framework (3.10+) sees the `aio` decorator when it loads `main.py`
  and serves the function with Starlette on uvicorn (gunicorn's UvicornWorker), no flag needed.
  An `aio` HTTP function takes a Starlette Request and returns a Response; here the "response" is
  the app itself (`ServeApp`), which the framework's route awaits with the request's own scope,
  receive and send. The app is built with `exposed=True`: SCHEDULER_API_KEYS must be set (or
  SCHEDULER_AUTH_DISABLED=true) for this function. The framework answers `/robots.txt` and
  `/favicon.ico` (404) itself.
- `drain`: a CloudEvent function (`@functions_framework.aio.cloud_event`) for the Pub/Sub message
  Cloud Scheduler publishes on a schedule (Eventarc delivers it as a
  `google.cloud.pubsub.topic.v1.messagePublished` CloudEvent). Every event is one tick: it runs
  `tick` (recover, poll, expire, dispatch, then due webhook deliveries); the message's data is
  not read. Cloud Scheduler fires at most once a minute, so SCHEDULER_TICK_WINDOW_SECONDS
  (default 0: one drain per tick) lets one tick keep draining every SCHEDULER_POLLING_INTERVAL
  for that many seconds, to notice finished runs (and start the next job) sooner. Keep it below
  the schedule's period and the function's timeout. Overlapping ticks are safe (DESIGN.md,
  "Dispatch, poll, recover").

`main.py`, at the source root, imports both; `--entry-point` picks one per deployment. Nothing is
built at import: the settings (from the environment) and the Runtime are built on the first
invocation, the app on the first HTTP call (so the tick needs no SCHEDULER_API_KEYS), and all are
kept for the warm instance. So importing this module loads functions-framework but no store or
backend SDK (no grpc), nor the core's models, scheduler and routes (imported inside the
functions that first need them: core/api.py), and a missing setting never stops the instance
from starting. A
configuration error is not cached: an HTTP call gets a 500 JSON error naming it
(`"error": "config_error"`), a tick raises it, so it shows as a failed invocation in Cloud Logging.

Event loop. Each instance runs one uvicorn worker (functions-framework's default, WORKERS=1) with
one event loop, and both functions are coroutines, so the Runtime's lock and whatever the store and
backend keep across invocations (a gRPC channel, an HTTP client) live on that loop for the
instance's life. Nothing here may use `asyncio.run`. The framework's app has no lifespan, so the
app's lifespan never runs: the Runtime builds on first use, and nothing is closed when the
instance ends.

Each HTTP response's last body message is held until the app call returns, so the response
includes the dispatch that follows a submit (Starlette runs that background task inside the
call), as on Lambda and Azure: with the default CPU allocation, Cloud Run throttles an instance's
CPU once it has answered, which would stall a dispatch still running after the response.

The deployed source is read-only, so SCHEDULER_DATA_DIR defaults to /tmp/botsched here. That
SQLite file is per instance and lost with it: real use needs Firestore (SCHEDULER_STORE=firestore).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import functions_framework.aio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.api import create_app
from core.errors import ConfigError

if TYPE_CHECKING:  # a dependency of functions-framework, which loads it; ours on first use
    from cloudevents.http.event import CloudEvent
    from starlette.applications import Starlette

    from core.config import Settings
    from core.models import DrainReport
    from core.runtime import Runtime

log = logging.getLogger("botsched.gcp")

# Seconds one tick keeps draining (every SCHEDULER_POLLING_INTERVAL); 0: one drain per tick.
TICK_WINDOW_VARIABLE = "SCHEDULER_TICK_WINDOW_SECONDS"
# Keys of the framework's route match, not the request's: the app matches the path itself.
_ROUTE_KEYS = ("path_params", "endpoint", "route")


@dataclass
class Deployment:
    """What one instance builds on its first invocation and keeps between invocations. The app
    only on the first HTTP call: the tick needs no API keys."""

    settings: Settings
    runtime: Runtime
    _app: Starlette | None = field(default=None, repr=False)

    @property
    def app(self) -> Starlette:
        """The app, built once (a ConfigError, e.g. no API keys, is not cached)."""
        if self._app is None:
            self._app = create_app(self.settings, self.runtime, exposed=True)
        return self._app


_deployment: Deployment | None = None


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from `env` (default: os.environ); the Cloud Functions defaults fill unset
    variables."""
    from core.config import SERVERLESS_DEFAULTS, Settings

    return Settings.from_env(env, defaults=SERVERLESS_DEFAULTS)


def deployment() -> Deployment:
    """This instance's settings and runtime, built on first use. A failure is not cached."""
    global _deployment
    if _deployment is None:
        from core.runtime import Runtime

        settings = settings_from_env()
        _deployment = Deployment(settings, Runtime(settings))
    return _deployment


def http_app() -> Starlette:
    """The app of this instance's deployment. When it cannot be built (no API keys), the whole
    deployment is forgotten, so the next call reads the environment again."""
    global _deployment
    built = deployment()
    try:
        return built.app
    except ConfigError:
        if _deployment is built:
            _deployment = None
        raise


def tick_window(env: Mapping[str, str] | None = None) -> float:
    """SCHEDULER_TICK_WINDOW_SECONDS: a number >= 0 (unset or empty: 0)."""
    env = os.environ if env is None else env
    raw = env.get(TICK_WINDOW_VARIABLE, "").strip()
    try:
        window = float(raw or 0)
    except ValueError:
        window = -1.0
    if not window >= 0:  # also NaN
        raise ConfigError(f"{TICK_WINDOW_VARIABLE}: must be a number of seconds >= 0, not {raw!r}")
    return window


class ServeApp(Response):
    """The app as the HTTP function's response: the framework's route awaits a response with the
    request's scope, receive and send, so the app serves the request itself."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__()  # its own status, headers and body are never sent
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope = {key: value for key, value in scope.items() if key not in _ROUTE_KEYS}
        started = False
        last: Message | None = None

        async def send_holding_last(message: Message) -> None:
            nonlocal started, last
            if message["type"] == "http.response.start":
                started = True
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                last = message  # sent when the app returns: after its background tasks
                return
            await send(message)

        try:
            await self.app(scope, receive, send_holding_last)
        except Exception:
            if not started:
                raise  # nothing sent: the framework answers 500
            # The app sent its error response, then re-raised for the server to log.
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
        finally:
            if last is not None:
                await send(last)


@functions_framework.aio.http
async def api(request: Request) -> Response:
    """The HTTP function (`--entry-point api`): the app, or a 500 naming a configuration error."""
    try:
        app = http_app()
    except ConfigError as exc:
        from core.http import error_response

        log.error("cannot serve: %s", exc.message)
        return error_response(500, "config_error", f"the scheduler is misconfigured: {exc.message}")
    return ServeApp(app)


@functions_framework.aio.cloud_event
async def drain(event: CloudEvent) -> None:
    """The tick (`--entry-point drain`, triggered by the Pub/Sub topic Cloud Scheduler publishes
    to). A ConfigError or a failed drain propagates: the invocation fails visibly (500)."""
    log.debug("tick %s from %s", event["id"], event["source"])
    await run_tick()


async def run_tick() -> list[DrainReport]:
    """One drain, or drains every polling interval for SCHEDULER_TICK_WINDOW_SECONDS."""
    window = tick_window()
    built = deployment()
    scheduler = await built.runtime.scheduler()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + window
    every = built.settings.polling_interval
    reports = []
    while True:
        report = await scheduler.tick()
        reports.append(report)
        if (
            report.dispatched
            or report.completed
            or report.failed
            or report.retried
            or report.expired
        ):
            log.info("drain: %s", report.model_dump(exclude_defaults=True))
        if loop.time() + every > deadline:
            return reports
        await asyncio.sleep(every)


class CloudLoggingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """One JSON object per line on stdout, which Cloud Logging reads as a structured entry with
    its severity (a plain line would have none); the message includes any traceback."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    def format(self, record: logging.LogRecord) -> str:
        entry = {"severity": record.levelname, "message": super().format(record)}
        entry["logger"] = record.name
        return json.dumps(entry)


def log_to_cloud_logging(level: int = logging.INFO) -> None:
    """Send the scheduler's logs (the `botsched` loggers, INFO and up) to Cloud Logging; called by
    main.py. The framework configures no logging, so without it only warnings would show, as
    plain text. Records still propagate to the root logger's handlers, if any."""
    logger = logging.getLogger("botsched")
    if not any(isinstance(handler, CloudLoggingHandler) for handler in logger.handlers):
        logger.addHandler(CloudLoggingHandler())
    logger.setLevel(level)


async def reset() -> None:
    """Forget this instance's state and close its store and backend. For tests."""
    global _deployment
    built, _deployment = _deployment, None
    if built is not None:
        await built.runtime.close()
