"""One signed POST of an event's body: Standard Webhooks headers, no redirects, a hard timeout.

The timeout bounds the whole attempt, the check of where the URL resolves included: the
deliverer's lease (core/webhooks/delivery.py) counts on no attempt outliving it.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from core import __version__
from core.config import Settings
from core.records import Record
from core.webhooks.endpoints import signing_secrets
from core.webhooks.urls import check_resolved, check_webhook_url

if TYPE_CHECKING:
    import httpx

MAX_ERROR = 300


def signature(secrets: list[str], msg_id: str, moment: datetime, body: str) -> str:
    """The `webhook-signature` header: one `v1,...` per secret, space-separated."""
    from standardwebhooks.webhooks import Webhook

    return " ".join(Webhook(secret).sign(msg_id, moment, body) for secret in secrets)


class Sender:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: httpx.AsyncClient | None = None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            timeout = httpx.Timeout(self.settings.webhook_timeout_seconds)
            self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        return self._client

    async def send(self, url: str, msg_id: str, body: str, endpoint: Record) -> dict[str, Any]:
        """{status, latencyMs, error}: error None for a 2xx."""
        allow_private = self.settings.webhook_allow_private
        try:
            check_webhook_url(url, allow_private)
        except ValueError as exc:
            return {"error": f"url: {exc}"[:MAX_ERROR]}
        headers = self.headers(msg_id, body, endpoint)
        started = time.monotonic()
        timeout = self.settings.webhook_timeout_seconds
        try:
            return await asyncio.wait_for(self._post(url, body, headers, started), timeout)
        except TimeoutError:
            return {"error": f"no answer within {timeout:g} s", "latencyMs": _since(started)}

    def headers(self, msg_id: str, body: str, endpoint: Record) -> dict[str, str]:
        """Standard Webhooks' headers for `body`, signed now with each live secret."""
        now = datetime.now(UTC)
        secrets = signing_secrets(endpoint, self.settings, now)
        return {
            "content-type": "application/json",
            "user-agent": f"bot-scheduler/{__version__}",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature(secrets, msg_id, now, body),
        }

    async def _post(
        self, url: str, body: str, headers: dict[str, str], started: float
    ) -> dict[str, Any]:
        try:
            await check_resolved(url, self.settings.webhook_allow_private)
        except ValueError as exc:
            return {"error": f"url: {exc}"[:MAX_ERROR], "latencyMs": _since(started)}
        try:
            response = await self.client().post(url, content=body.encode(), headers=headers)
        except Exception as exc:  # any failure to reach the receiver is an attempt that failed
            return {
                "error": f"{type(exc).__name__}: {exc}"[:MAX_ERROR],
                "latencyMs": _since(started),
            }
        status, error = response.status_code, None
        if 300 <= status < 400:
            error = f"HTTP {status}: redirects are not followed"
        elif not 200 <= status < 300:
            error = f"HTTP {status}"
        return {"status": status, "latencyMs": _since(started), "error": error}


def _since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
