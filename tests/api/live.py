"""The real app served by uvicorn on loopback, in a thread, over the memory store and the fake
backend: for the tests that drive it from outside (a browser, schemathesis)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from core.api import create_app
from core.config import Settings
from core.models import Job
from core.runtime import Runtime
from core.scheduler import Scheduler
from core.stores.memory import MemoryStore
from tests.fakes import FakeBackend
from tests.specs import serve_in_thread


@dataclass
class LiveApi:
    url: str
    store: MemoryStore
    backend: FakeBackend

    def jobs(self) -> list[Job]:
        """Every job in the store (the memory store is plain dicts: safe to read here)."""
        page = asyncio.run(self.store.list_jobs(None, None, 200))
        return page.jobs


@contextmanager
def live_api(env: dict[str, str]) -> Iterator[LiveApi]:
    settings = Settings.from_env({"SCHEDULER_STORE": "memory", **env})
    store = MemoryStore()
    backend = FakeBackend()
    scheduler = Scheduler(store, backend, settings)
    app = create_app(settings, Runtime(settings, scheduler), exposed=False)
    with serve_in_thread(app) as url:
        yield LiveApi(url, store, backend)
