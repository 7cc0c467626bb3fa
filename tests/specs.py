"""The official API specifications in tests/api_specs, and serving a contract fake on loopback."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import uvicorn

from tests.ci import unavailable

SPECS = Path(__file__).resolve().parent / "api_specs"


class SpecMissing(Exception):
    pass


@lru_cache(maxsize=16)
def load_text(relative: str) -> str:
    path = SPECS / relative
    if not path.is_file():
        raise SpecMissing(f"the API specification is missing: {path}")
    return path.read_text()


def load_json(relative: str) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(load_text(relative))
    return spec


def require(relative: str) -> None:
    """Without the spec file, the test fails when CI is set and is skipped otherwise."""
    try:
        load_text(relative)
    except SpecMissing as exc:
        unavailable(exc)


@contextmanager
def serve_in_thread(app: Any, scheme: str = "http", **options: Any) -> Iterator[str]:
    """Serve `app` with uvicorn on a free port of 127.0.0.1 in a background thread; yields the
    base URL. `options` go to uvicorn.Config (e.g. ssl_certfile, ssl_keyfile)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False, **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the fake did not start"
        time.sleep(0.01)
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
