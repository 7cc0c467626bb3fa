"""The local server: uvicorn serving the app, with `drain_once` on the polling interval (and at
once when a bot the process backend started ends).

With `own_public_url` (`botsched serve --own-public-url`, as `make run` does), the bots the process
backend runs report their status to this server itself: SCHEDULER_PUBLIC_URL, when unset,
defaults to its own loopback address (`local_public_url`)."""

from __future__ import annotations

import errno
import logging
import socket
import sys
from typing import TYPE_CHECKING

from core.api import create_app
from core.errors import ConfigError

if TYPE_CHECKING:  # imported on first use (core/api.py)
    import uvicorn
    from starlette.applications import Starlette

    from core.config import Settings

log = logging.getLogger("botsched.local")

# uvicorn's limits: idle keep-alive connections close after KEEP_ALIVE_SECONDS; past
# MAX_CONNECTIONS open connections new requests get 503; a shutdown waits at most
# SHUTDOWN_SECONDS for requests in flight. A request body that stalls is cut by the app
# (SCHEDULER_BODY_TIMEOUT_SECONDS).
KEEP_ALIVE_SECONDS = 5
MAX_CONNECTIONS = 1000
SHUTDOWN_SECONDS = 10


def build_app(settings: Settings | None = None) -> Starlette:
    from core.config import Settings

    settings = settings or Settings.from_env()
    return create_app(settings, drain_every=settings.polling_interval)


def serve(settings: Settings | None = None, *, own_public_url: bool = False) -> None:
    """Serve until stopped; ConfigError (one line for the user) when it cannot start."""
    from core.config import Settings
    from core.preflight import check_runtime, store_description

    settings = settings or Settings.from_env()
    if own_public_url:
        settings = local_public_url(settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    check_runtime(settings)
    with listen(settings.host, settings.port) as sock:
        server = uvicorn_server(build_app(settings), settings)
        log.info("jobs are kept in the %s", store_description(settings))
        if settings.public_url:
            log.info("bots report their status to %s", settings.public_url)
        server.run(sockets=[sock])
    if not server.started:
        raise ConfigError("the server did not start; see the messages above")


def local_public_url(settings: Settings) -> Settings:
    """The settings with SCHEDULER_PUBLIC_URL set to this server's own address, so that the bots
    it runs as local processes can report their status to it: only when the variable is unset,
    the backend is `process` (a container's loopback is not ours) and the server listens on
    loopback only (beyond it, which address bots reach it at is the user's to say)."""
    from core.config import is_loopback

    host = settings.host
    if settings.public_url or settings.platform != "process" or not is_loopback(host):
        return settings
    host = "127.0.0.1" if host == "localhost" else f"[{host}]" if ":" in host else host
    return settings.model_copy(update={"public_url": f"http://{host}:{settings.port}"})


def uvicorn_server(app: Starlette, settings: Settings) -> uvicorn.Server:
    import uvicorn

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=settings.access_log,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        limit_concurrency=MAX_CONNECTIONS,
        timeout_graceful_shutdown=SHUTDOWN_SECONDS,
    )
    return uvicorn.Server(config)


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, or ConfigError that says what to change."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} is in use on {host}; set PORT=... to a free port (or stop what "
                "listens there)"
            ) from None
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); check HOST") from None
    return sock


def main() -> None:
    try:
        serve()
    except ConfigError as exc:
        print(f"botsched: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
