"""A token bucket per API key, in front of `/api` and `/metrics`: 429 with Retry-After past it.

A request with a valid key draws from that key's bucket; one without a valid key (or with auth
off) from its client address's bucket, so guessing keys is limited too. Buckets live in the
process: each server or serverless instance limits on its own. See `Settings.rate_limit`.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from core.config import Settings
from core.errors import RateLimited
from core.http import error_of, key_digest

MAX_BUCKETS = 10_000  # the least recently used bucket goes first past this
LIMITED_PREFIXES = ("/api/", "/metrics")


class TokenBuckets:
    """`rate` tokens a second, at most `burst` saved, per identity."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, identity: str) -> float:
        """Take a token; 0.0 when one was there, else the seconds until one will be."""
        now = self.clock()
        tokens, last = self._buckets.pop(identity, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[identity] = (tokens, now)
        while len(self._buckets) > MAX_BUCKETS:
            self._buckets.popitem(last=False)
        return wait


class RateLimitMiddleware:
    """ASGI middleware: a no-op when the settings' rate for this exposure is 0."""

    def __init__(self, app: ASGIApp, settings: Settings, exposed: bool) -> None:
        self.app = app
        self.settings = settings
        rate = settings.rate_limit(exposed)
        self.buckets = TokenBuckets(rate, settings.rate_limit_burst) if rate > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if self.buckets is None or not path.startswith(LIMITED_PREFIXES):
            await self.app(scope, receive, send)
            return
        wait = self.buckets.take(self.identity(Request(scope)))
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        retry_after = max(1, math.ceil(wait))
        limited = RateLimited(
            f"too many requests; at most {self.buckets.rate:g} a second per API key "
            f"(bursts of {self.buckets.burst}); retry in {retry_after} s",
            retry_after=retry_after,
        )
        await error_of(limited)(scope, receive, send)

    def identity(self, request: Request) -> str:
        digest = key_digest(request)
        settings = self.settings
        if (
            digest is not None
            and settings.auth_enabled
            and (settings.tenant_for_digest(digest) or settings.is_admin_digest(digest))
        ):
            return "key:" + digest
        return "address:" + (request.client.host if request.client else "unknown")
