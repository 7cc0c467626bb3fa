"""Build the store, the backend and the scheduler a deployment's settings name.

Store and backend modules are imported here, on first use, so that importing the API or a handler
never pays for a cloud SDK it will not use.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

from core.config import Settings
from core.errors import ConfigError
from core.faults import FAULTS
from core.ports import Backend, JobStore
from core.scheduler import Scheduler

# name -> (module, class, extra to install)
STORES: dict[str, tuple[str, str, str | None]] = {
    "memory": ("core.stores.memory", "MemoryStore", None),
    "sqlite": ("core.stores.sqlite", "SqliteStore", None),
    "azure_table": ("core.stores.azure_table", "AzureTableStore", "azure"),
    "firestore": ("core.stores.firestore", "FirestoreStore", "gcp"),
    "d1": ("core.stores.d1", "D1Store", None),
    "postgres": ("core.stores.postgres", "PostgresStore", "postgres"),
}
BACKENDS: dict[str, tuple[str, str, str | None]] = {
    "process": ("core.backends.process", "ProcessBackend", None),
    "podman": ("core.backends.podman", "PodmanBackend", None),
    "docker": ("core.backends.podman", "PodmanBackend", None),
    "kubernetes": ("core.backends.kubernetes", "KubernetesBackend", None),
    "k8s": ("core.backends.kubernetes", "KubernetesBackend", None),
    "azure": ("core.backends.azure_container_apps", "ContainerAppsBackend", "azure"),
    "azure-container-apps": ("core.backends.azure_container_apps", "ContainerAppsBackend", "azure"),
    "cloudrun": ("core.backends.cloud_run", "CloudRunBackend", "gcp"),
    "gcp": ("core.backends.cloud_run", "CloudRunBackend", "gcp"),
    "cloudflare": ("core.backends.cloudflare", "CloudflareContainersBackend", None),
}


def _load(kind: str, name: str, table: dict[str, tuple[str, str, str | None]]) -> Any:
    if name not in table:
        known = ", ".join(sorted(table))
        variable = "SCHEDULER_STORE" if kind == "store" else "PLATFORM"
        raise ConfigError(f"{variable}={name!r} is not available; choose one of: {known}")
    module_name, class_name, extra = table[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"; install it with: pip install 'bot-scheduler[{extra}]'" if extra else ""
        raise ConfigError(f"the {name} {kind} needs a package that is missing{hint}") from exc
    return getattr(module, class_name)


def build_store(settings: Settings) -> JobStore:
    cls = _load("store", settings.store, STORES)
    if settings.store == "sqlite":
        store: JobStore = cls(settings.database_path, synchronous=settings.sqlite_synchronous)
    else:
        store = cls.from_settings(settings) if hasattr(cls, "from_settings") else cls()
    return store


def build_backend(settings: Settings) -> Backend:
    cls = _load("backend", settings.platform, BACKENDS)
    backend: Backend = cls.from_settings(settings)
    return backend


class Runtime:
    """Holds one scheduler per process, built on first use (serverless handlers have no startup
    event they can rely on) and closed on shutdown."""

    def __init__(self, settings: Settings, scheduler: Scheduler | None = None) -> None:
        self.settings = settings
        self._scheduler = scheduler
        self._lock = asyncio.Lock()

    async def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            async with self._lock:
                if self._scheduler is None:
                    store = build_store(self.settings)
                    await store.open()
                    backend = build_backend(self.settings)
                    clock = FAULTS.clock()
                    self._scheduler = Scheduler(store, backend, self.settings, clock=clock)
        return self._scheduler

    async def close(self) -> None:
        if self._scheduler is not None:
            await self._scheduler.deliverer.close()
            await self._scheduler.backend.close()
            await self._scheduler.store.close()
            self._scheduler = None
