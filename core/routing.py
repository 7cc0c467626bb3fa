"""Routing details of the app: one route per path whatever its methods (so that a 405 lists
them all in Allow), the 405 itself, and query parameters given once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.errors import ValidationFailed
from core.http import on_http_error

Endpoint = Callable[[Request], Awaitable[Response]]


async def on_method_not_allowed(request: Request, exc: Exception) -> Response:
    """405 as JSON, with the Allow header the route gave."""
    response = await on_http_error(request, exc)
    allow = getattr(exc, "headers", None) or {}
    if "Allow" in allow:
        response.headers["Allow"] = allow["Allow"]
    return response


def query_once(request: Request, *names: str) -> None:
    """Each of these query parameters at most once, and not empty (the cursor may be)."""
    for name in names:
        values = request.query_params.getlist(name)
        if len(values) > 1:
            raise ValidationFailed(f"{name}: give it at most once")
        if values == [""] and name != "cursor":
            raise ValidationFailed(f"{name}: must not be empty")


def method_route(path: str, **handlers: Endpoint) -> Route:
    """A route serving each method with its handler (HEAD with GET's)."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return Route(path, endpoint, methods=list(handlers))
