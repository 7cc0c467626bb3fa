"""AWS Lambda: one entry point, `handler(event, context)`, for HTTP and for the schedule.

- An EventBridge scheduled event (`"source": "aws.events"`, `"detail-type": "Scheduled Event"`)
  runs `tick` (a drain: recover, poll, expire, dispatch; then webhook deliveries) and returns its
  report as a dict.
- Anything else (API Gateway REST v1, HTTP API v2, a Lambda function URL) goes through mangum to
  the app, which serves it unchanged.

Per container, on first use and never at import: the settings (from the environment), the Runtime,
the app and the mangum adapter. So an import of this module loads neither mangum nor any AWS SDK
(the scheduler needs none), nor the core's models, scheduler and routes: the modules that build
them are imported inside the functions that first need them (core/api.py: a cold start's import
costs about what importing Starlette does).

One event loop per container. mangum runs each request with `asyncio.get_event_loop()` and
`run_until_complete`; the drain runs on that same loop. `asyncio.run` would not do: it makes a new
loop per call and then unsets the current loop, after which mangum's `get_event_loop()` raises, and
anything the Runtime keeps across invocations (its lock, a store's client or connection pool) would
belong to a loop that is closed. The loop is made current again on every invocation, in case other
code changed it in between.

The app serves beyond loopback, so it is built with `exposed=True`: SCHEDULER_API_KEYS must be set
(or SCHEDULER_AUTH_DISABLED=true). A configuration error is not cached and never crashes the
container: an HTTP event gets a 500 JSON error naming it (`"error": "config_error"`), a scheduled
event raises it, so the failed invocation and its message show in CloudWatch.

Lambda's filesystem is read-only outside /tmp, so SCHEDULER_DATA_DIR defaults to /tmp/botsched
here. That SQLite file is per container and lost with it: real use needs a durable store that
every container reaches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.api import create_app
from core.errors import ConfigError

if TYPE_CHECKING:  # imported on first use, never at import time
    from mangum.types import ASGI
    from starlette.applications import Starlette
    from starlette.types import Receive, Scope, Send

    from core.config import Settings
    from core.runtime import Runtime

log = logging.getLogger("botsched.aws")


LambdaEvent = dict[str, Any]
Adapter = Callable[[LambdaEvent, Any], dict[str, Any]]


@dataclass
class Deployment:
    """What one container builds once and keeps between invocations."""

    settings: Settings
    runtime: Runtime
    app: Starlette
    _adapter: Adapter | None = field(default=None, repr=False)

    @property
    def adapter(self) -> Adapter:
        if self._adapter is None:
            self._adapter = _mangum(self.app)
        return self._adapter


_loop: asyncio.AbstractEventLoop | None = None
_deployment: Deployment | None = None


def handler(event: LambdaEvent, context: Any) -> dict[str, Any]:
    """The Lambda entry point (`handlers.aws.handler`)."""
    if is_scheduled(event):
        return handle_schedule(event, context)
    return handle_http(event, context)


def is_scheduled(event: Mapping[str, Any]) -> bool:
    return event.get("source") == "aws.events" and event.get("detail-type") == "Scheduled Event"


def handle_http(event: LambdaEvent, context: Any) -> dict[str, Any]:
    event_loop()
    try:
        adapter = deployment().adapter
    except ConfigError as exc:
        log.error("cannot serve: %s", exc.message)
        adapter = _mangum(config_error_app(exc.message))
    return adapter(event, context)


def handle_schedule(event: LambdaEvent, context: Any) -> dict[str, Any]:
    """One drain; a ConfigError propagates, so the invocation fails visibly in CloudWatch."""
    loop = event_loop()
    runtime = deployment().runtime

    async def drain() -> dict[str, Any]:
        report = await (await runtime.scheduler()).tick()
        return report.model_dump(mode="json")

    report = loop.run_until_complete(drain())
    log.info("drain: %s", report)
    return report


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from `env` (default: os.environ); Lambda defaults fill unset variables."""
    from core.config import SERVERLESS_DEFAULTS, Settings

    return Settings.from_env(env, defaults=SERVERLESS_DEFAULTS)


def deployment() -> Deployment:
    """This container's settings, runtime and app, built on first use. A failure is not cached."""
    global _deployment
    if _deployment is None:
        from core.runtime import Runtime

        settings = settings_from_env()
        runtime = Runtime(settings)
        app = create_app(settings, runtime, exposed=True)
        _deployment = Deployment(settings, runtime, app)
    return _deployment


def event_loop() -> asyncio.AbstractEventLoop:
    """This container's event loop, made the current one (mangum runs requests on it)."""
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    asyncio.set_event_loop(_loop)
    return _loop


def config_error_app(message: str) -> ASGI:
    """An ASGI app that answers every request with the configuration error, as JSON."""

    from core.http import error_response

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        text = f"the scheduler is misconfigured: {message}"
        await error_response(500, "config_error", text)(scope, receive, send)

    return app


def reset() -> None:
    """Forget this container's state: close the store and the loop. For tests."""
    global _deployment, _loop
    built, loop = _deployment, _loop
    _deployment = _loop = None
    if loop is None or loop.is_closed():
        return
    try:
        if built is not None:
            loop.run_until_complete(built.runtime.close())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def _mangum(app: ASGI) -> Adapter:
    from mangum import Mangum

    # lifespan off: the Runtime builds the scheduler on first use; Lambda sends no startup.
    adapter: Adapter = Mangum(app, lifespan="off")
    return adapter
