"""Azure Functions entry point (Python v2 programming model). It must sit beside host.json: the
worker imports it and indexes the functions of `app` (see handlers/azure.py)."""

from handlers.azure import app

__all__ = ["app"]
