"""The Cloudflare Worker's Runtime: its store and backend on the Worker's bindings (D1, the
Containers Durable Object), kept for the isolate's life (see handlers/cloudflare.py).

handlers/cloudflare.py imports this module on the Worker's first request, not at import: it
brings the scheduler and the models with it.
"""

from __future__ import annotations

from typing import Any

from core.config import Settings
from core.errors import ConfigError
from core.ports import Backend, JobStore
from core.runtime import Runtime, build_backend, build_store
from core.scheduler import Scheduler
from handlers.cloudflare import CONTAINERS_BINDING, D1_BINDING


def _binding(env: Any, name: str, what: str) -> Any:
    binding = getattr(env, name, None)
    if binding is None:
        raise ConfigError(f"the {what} needs the Worker binding {name} (see wrangler.toml)")
    return binding


def build_worker_store(settings: Settings, env: Any) -> JobStore:
    if settings.store != "d1":
        return build_store(settings)
    from core.stores.d1 import D1Store

    return D1Store(_binding(env, D1_BINDING, "d1 store"))


def build_worker_backend(settings: Settings, env: Any) -> Backend:
    if settings.platform != "cloudflare":
        return build_backend(settings)
    from core.backends.cloudflare import CloudflareContainersBackend

    return CloudflareContainersBackend(_binding(env, CONTAINERS_BINDING, "cloudflare backend"))


class WorkerRuntime(Runtime):
    """The Runtime on the Worker's bindings, kept for the isolate's life."""

    def __init__(self, settings: Settings, env: Any) -> None:
        super().__init__(settings)
        self.env = env

    async def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            async with self._lock:
                if self._scheduler is None:
                    store = build_worker_store(self.settings, self.env)
                    await store.open()
                    backend = build_worker_backend(self.settings, self.env)
                    self._scheduler = Scheduler(store, backend, self.settings)
        return self._scheduler

    async def close(self) -> None:
        return None  # bindings hold no connection; the next request reuses the scheduler

    async def shutdown(self) -> None:
        await super().close()
