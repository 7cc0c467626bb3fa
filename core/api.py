"""The app every platform serves: `create_app`.

Importing this module costs next to nothing, on purpose: a serverless instance imports its
handler, and so this, at every cold start, before it can answer anything. The routes, the models
(pydantic builds their validators when their classes are created), the scheduler and the store
are imported by the first `create_app`, which a serverless handler makes on its first request;
the OpenAPI document and the docs page are built on their own first request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from core.config import Settings
    from core.runtime import Runtime


def create_app(
    settings: Settings,
    runtime: Runtime | None = None,
    *,
    drain_every: float | None = None,
    exposed: bool | None = None,
) -> Starlette:
    """The app (core/routes.py). `drain_every` runs `drain_once` in the background on that
    interval (the local server's timer); `exposed` says whether it serves beyond loopback
    (default: from HOST)."""
    from core.routes import build_app

    return build_app(settings, runtime, drain_every=drain_every, exposed=exposed)


__all__ = ["create_app"]
