"""The local server: uvicorn serving the app, with `drain_once` on the polling interval."""

from __future__ import annotations

import logging

from starlette.applications import Starlette

from core.api import create_app
from core.config import Settings


def build_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    return create_app(settings, drain_every=settings.polling_interval)


def serve(settings: Settings | None = None) -> None:
    import uvicorn

    settings = settings or Settings.from_env()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = build_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")


if __name__ == "__main__":
    serve()
