"""Azure Functions, Python v2 programming model: `app` holds three functions.

- `api`: an `AsgiFunctionApp` HTTP function on the catch-all route `/{*route}` serving the app
  unchanged. Auth level ANONYMOUS: the API keys do the auth, and the app is built with
  `exposed=True`, so SCHEDULER_API_KEYS must be set (or SCHEDULER_AUTH_DISABLED=true). host.json
  sets `routePrefix` to "", so every route the app has (`/health`, `/`, `/docs`, `/metrics`, not
  only `/api/scheduler/...`) reaches the function at its own path.
- `drain` and `poll`: timer triggers on the schedules named by the app settings
  SCHEDULER_DRAIN_SCHEDULE and SCHEDULER_POLL_SCHEDULE (`%NAME%`: the host resolves them when it
  indexes the functions, so both settings must exist). Each runs `tick` (a drain: recover, poll,
  expire, dispatch; then the webhook deliveries that are due). `poll` is the same call on its
  own, usually shorter, period: a finished run frees capacity, and dispatching right then
  starts the next job without waiting for `drain`.
  Overlapping drains are safe (DESIGN.md, "Dispatch, poll, recover").

`function_app.py`, beside host.json, imports `app` from here; the worker indexes it at import.
Nothing else happens at import: the settings (from the app settings, i.e. the environment), the
Runtime and the Starlette app are built on the first invocation of any function and kept for the
warm instance. So importing this module loads no store or backend SDK, nor the core's models,
scheduler and routes (imported inside the functions that first need them: core/api.py), and a
missing setting never stops the functions from being indexed. A configuration error is not
cached: an HTTP call gets a 500 JSON error naming it (`"error": "config_error"`), a timer
invocation raises it, so it shows as a failed invocation in Application Insights.

Event loop. The Python worker runs every `async def` function on its one event loop, and a plain
`def` in a thread pool. All three functions are coroutines, so the Runtime's lock and whatever the
store and backend keep across invocations (an HTTP client, a connection pool) live on that one
loop for the instance's whole life. A timer must not use `asyncio.run`: it would build the
scheduler on a new loop, closed when the invocation ends, which the next HTTP call would then use.
A timer returns None: the worker rejects a return value from a function without an output binding.

ASGI lifespan. `AsgiFunctionApp` sends `lifespan.startup` on the first HTTP invocation only (timers
never see it) and `lifespan.shutdown` only from its `__del__`, through `asyncio.run` on a new loop.
Neither can build or close what lives on the worker's loop, so the app given to it answers the
lifespan itself: startup builds nothing (the Runtime is lazy) and cannot fail, shutdown closes
nothing (the instance's process ends, and its connections with it).

Each HTTP response is sent when the app call returns, so it includes the dispatch that follows a
submit (Starlette runs that background task inside the call), as on Lambda.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import azure.functions as func

from core.api import create_app
from core.errors import ConfigError

if TYPE_CHECKING:  # imported on first use, never at import time
    from starlette.applications import Starlette
    from starlette.types import Receive, Scope, Send

    from core.config import Settings
    from core.models import DrainReport
    from core.runtime import Runtime

log = logging.getLogger("botsched.azure")

# The app settings that hold the timers' NCRONTAB schedules (six fields, seconds first). The host
# has no default for a `%NAME%` it cannot resolve: the settings must exist. These are the values
# local.settings.json.example and infra/azure/main.bicep set.
DRAIN_SCHEDULE_SETTING = "SCHEDULER_DRAIN_SCHEDULE"
POLL_SCHEDULE_SETTING = "SCHEDULER_POLL_SCHEDULE"
DEFAULT_SCHEDULES = {
    DRAIN_SCHEDULE_SETTING: "*/30 * * * * *",  # every 30 seconds
    POLL_SCHEDULE_SETTING: "*/15 * * * * *",  # every 15 seconds
}


@dataclass
class Deployment:
    """What one instance builds on its first invocation and keeps between invocations."""

    settings: Settings
    runtime: Runtime
    app: Starlette


_deployment: Deployment | None = None


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from `env` (default: os.environ, where the app settings are); the Azure defaults
    fill unset variables."""
    from core.config import SERVERLESS_DEFAULTS, Settings

    return Settings.from_env(env, defaults=SERVERLESS_DEFAULTS)


def deployment() -> Deployment:
    """This instance's settings, runtime and app, built on first use. A failure is not cached."""
    global _deployment
    if _deployment is None:
        from core.runtime import Runtime

        settings = settings_from_env()
        runtime = Runtime(settings)
        app = create_app(settings, runtime, exposed=True)
        _deployment = Deployment(settings, runtime, app)
    return _deployment


async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI app AsgiFunctionApp serves: the lifespan answered here, requests passed to the
    Starlette app, or, while the configuration is invalid, a JSON 500 naming the problem."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    try:
        app = deployment().app
    except ConfigError as exc:
        from core.http import error_response

        log.error("cannot serve: %s", exc.message)
        text = f"the scheduler is misconfigured: {exc.message}"
        await error_response(500, "config_error", text)(scope, receive, send)
        return
    await app(scope, receive, send)


async def _lifespan(receive: Receive, send: Send) -> None:
    """Startup builds nothing and shutdown closes nothing (see the module's docstring)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def run_drain(function: str, timer: func.TimerRequest) -> DrainReport:
    """One `tick` for the timer function `function`. A ConfigError or a failed drain
    propagates: the invocation fails visibly, and the next tick tries again."""
    if timer.past_due:
        log.warning("%s: the timer is past due (the host was down or busy); draining now", function)
    scheduler = await deployment().runtime.scheduler()
    report = await scheduler.tick()
    if report.dispatched or report.completed or report.failed or report.retried or report.expired:
        log.info("%s: %s", function, report.model_dump(exclude_defaults=True))
    return report


async def reset() -> None:
    """Forget this instance's state and close its store and backend. For tests."""
    global _deployment
    built, _deployment = _deployment, None
    if built is not None:
        await built.runtime.close()


app = func.AsgiFunctionApp(app=asgi, http_auth_level=func.AuthLevel.ANONYMOUS, function_name="api")


@app.function_name(name="drain")
@app.timer_trigger(arg_name="timer", schedule=f"%{DRAIN_SCHEDULE_SETTING}%")
async def drain(timer: func.TimerRequest) -> None:
    """Recover, poll, expire and dispatch, on SCHEDULER_DRAIN_SCHEDULE."""
    await run_drain("drain", timer)


@app.function_name(name="poll")
@app.timer_trigger(arg_name="timer", schedule=f"%{POLL_SCHEDULE_SETTING}%")
async def poll(timer: func.TimerRequest) -> None:
    """Follow running jobs to their end (and start the next), on SCHEDULER_POLL_SCHEDULE."""
    await run_drain("poll", timer)
