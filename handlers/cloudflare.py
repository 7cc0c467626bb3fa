"""Cloudflare Python Workers: the Worker entry (`main` in wrangler.toml).

`Default` is a `WorkerEntrypoint` (the workers SDK). `fetch` serves the same Starlette app as every
other platform through the SDK's ASGI bridge (`asgi.fetch(app, request, env)`); `scheduled` (the
cron triggers in wrangler.toml) runs one `tick`: recover, poll, expire and dispatch, then the
webhook deliveries that are due.

Settings come from the Worker's bindings (`[vars]` and secrets, which are strings), never from
`os.environ`. Cloudflare defaults fill what is unset: SCHEDULER_STORE=d1 and PLATFORM=cloudflare,
i.e. the D1 store on the `DB` binding and the Cloudflare Containers backend on the `BOTS` Durable
Object binding. Another store or backend named in the settings is built as everywhere else.

Per isolate, on first use: the settings, the runtime and the app. The SDK's bridge runs the app's
lifespan around every request, and the app closes its runtime on lifespan shutdown; the bindings
hold nothing to release, so this runtime's `close` keeps the scheduler for the next request
(handlers/cloudflare_runtime.py). The modules that build them are imported on that first use,
not at import (core/api.py: a cold start's import costs about what importing Starlette does).

The app serves beyond loopback, so it is built with `exposed=True`: SCHEDULER_API_KEYS must be set
(`wrangler secret put SCHEDULER_API_KEYS`) or SCHEDULER_AUTH_DISABLED=true. A configuration error
is not cached: a request gets a 500 JSON error naming it, a scheduled run raises it (it shows in
`wrangler tail` and the dashboard).

Only modules that run under Pyodide are imported on this path (starlette, pydantic, the core); the
workers SDK exists only inside the Workers runtime, so outside it (CPython tests, type checks) a
small stand-in base class takes `WorkerEntrypoint`'s place and `fetch` is not available.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.api import create_app
from core.errors import ConfigError

if TYPE_CHECKING:  # imported on first use, never at import time
    from starlette.applications import Starlette
    from starlette.types import Receive, Scope, Send

    from core.config import Settings
    from handlers.cloudflare_runtime import WorkerRuntime


class _Entrypoint:
    """`WorkerEntrypoint`'s shape, for CPython (tests, type checks): it is not a Worker there."""

    def __init__(self, ctx: Any, env: Any) -> None:
        self.ctx = ctx
        self.env = env


if TYPE_CHECKING:
    WorkerEntrypoint = _Entrypoint
else:
    try:
        from workers import WorkerEntrypoint  # the workers SDK: only inside the Workers runtime
    except ImportError:
        WorkerEntrypoint = _Entrypoint


log = logging.getLogger("botsched.cloudflare")

CLOUDFLARE_DEFAULTS = {"SCHEDULER_STORE": "d1", "PLATFORM": "cloudflare"}
D1_BINDING = "DB"
CONTAINERS_BINDING = "BOTS"


def bindings_as_env(env: Any) -> dict[str, str]:
    """The Worker's string-like bindings that name a setting, as an env mapping."""
    from core.config import variable_names

    found: dict[str, str] = {}
    for name in variable_names():
        value = getattr(env, name, None)
        if isinstance(value, bool):
            found[name] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            found[name] = str(value)
    return found


def settings_from_bindings(env: Any) -> Settings:
    from core.config import Settings

    return Settings.from_env(bindings_as_env(env), defaults=CLOUDFLARE_DEFAULTS)


@dataclass
class Deployment:
    settings: Settings
    runtime: WorkerRuntime
    app: Starlette


_deployment: Deployment | None = None


def deployment(env: Any) -> Deployment:
    """This isolate's settings, runtime and app, built on first use. A failure is not cached."""
    global _deployment
    if _deployment is None:
        from handlers.cloudflare_runtime import WorkerRuntime

        settings = settings_from_bindings(env)
        runtime = WorkerRuntime(settings, env)
        app = create_app(settings, runtime, exposed=True)
        _deployment = Deployment(settings, runtime, app)
    return _deployment


def reset() -> None:
    """Forget this isolate's deployment. For tests."""
    global _deployment
    _deployment = None


def config_error_app(message: str) -> Any:
    from core.http import error_response

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        text = f"the scheduler is misconfigured: {message}"
        await error_response(500, "config_error", text)(scope, receive, send)

    return app


async def drain(env: Any) -> dict[str, Any]:
    """One drain (recover, poll, expire, dispatch); its report as JSON-ready dict."""
    scheduler = await deployment(env).runtime.scheduler()
    report = await scheduler.tick()
    result: dict[str, Any] = report.model_dump(mode="json")
    log.info("drain: %s", result)
    return result


class Default(WorkerEntrypoint):
    """The Worker: HTTP through the ASGI bridge, cron triggers run the drain."""

    async def fetch(self, request: Any) -> Any:
        import asgi  # type: ignore[import-not-found]  # the workers SDK's ASGI bridge

        try:
            app: Any = deployment(self.env).app
        except ConfigError as exc:
            log.error("cannot serve: %s", exc.message)
            app = config_error_app(exc.message)
        return await asgi.fetch(app, request, self.env)

    async def scheduled(self, controller: Any = None, *args: Any) -> None:
        # (controller) or (controller, env, ctx): self.env is the SDK-wrapped env either way
        await drain(self.env)
