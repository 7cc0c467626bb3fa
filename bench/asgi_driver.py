"""Drive an ASGI app in-process, without a server: the app's own cost per request."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.types import ASGIApp, Message

SUBMIT_PATH = "/api/scheduler/jobs"


def submit_body(hours_ahead: float = 24 * 365) -> bytes:
    """The job every benchmark submits: a joinAt far ahead, so that nothing is started."""
    join_at = datetime.now(UTC) + timedelta(hours=hours_ahead)
    return json.dumps(
        {
            "meetingUrl": "https://meet.example.com/bench",  # no platform: never deduplicated
            "botName": "Bench Bot",
            "priority": 5,
            "joinAt": join_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "metadata": {"team": "bench"},
        }
    ).encode()


async def request(
    app: ASGIApp,
    method: str,
    path: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
) -> tuple[int, bytes]:
    """One request through the app; (status, body)."""
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if body:
        raw_headers.append((b"content-type", b"application/json"))
        raw_headers.append((b"content-length", str(len(body)).encode()))
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw_headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
    }
    sent = False
    status, chunks = 0, []

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)
