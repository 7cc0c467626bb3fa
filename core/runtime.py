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
from core.platforms import is_list, platform_names
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
    """The backend PLATFORM names; for a list of them, one that spills jobs over from each to
    the next (core/backends/spill.py)."""
    if is_list(settings.platform):
        from core.backends.spill import spill_backend

        return spill_backend(settings, check_platform(settings.platform), _build_one)
    return _build_one(settings)


def _build_one(settings: Settings) -> Backend:
    cls = _load("backend", settings.platform, BACKENDS)
    backend: Backend = cls.from_settings(settings)
    return backend


def check_platform(platform: str) -> list[str]:
    """The backends PLATFORM names, in order; ConfigError (one line) for a name that is not a
    backend, and for a backend named twice (aliases alike: `docker` and `podman` are one)."""
    known = ", ".join(sorted(BACKENDS))
    if not is_list(platform):
        if platform not in BACKENDS:
            raise ConfigError(f"PLATFORM={platform!r} is not available; choose one of: {known}")
        return [platform]
    names = platform_names(platform)
    seen: dict[tuple[str, str], str] = {}  # (module, class) -> the name it was given first
    for index, name in enumerate(names):
        if name not in BACKENDS:
            raise ConfigError(f"PLATFORM={platform!r}: {name!r} is not a backend; known: {known}")
        first = seen.setdefault(BACKENDS[name][:2], name)
        if len(seen) <= index:  # named before, under this name or another
            also = "" if first == name else f" ({first!r} and {name!r})"
            raise ConfigError(f"PLATFORM={platform!r} names one backend twice{also}")
    if len(names) < 2:
        raise ConfigError(f"PLATFORM={platform!r} lists one backend: name it alone")
    return names


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
