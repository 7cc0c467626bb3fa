"""The CLI's client pointed at a handler instead of a server: what the CLI tests share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from core import cli

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Handler], list[Any]]]:
    """Point the CLI's client at a handler; returns the list of requests it got."""

    def install(handler: Handler) -> list[httpx.Request]:
        seen: list[httpx.Request] = []

        def record(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return handler(request)

        def client(args: Any) -> cli.Client:
            made = cli.Client(args.url, args.api_key)
            made.http = httpx.Client(
                base_url=made.url, headers=made.http.headers, transport=httpx.MockTransport(record)
            )
            return made

        monkeypatch.setattr(cli, "client", client)
        return seen

    yield install
