"""What `botsched serve` and `botsched drain` check before they start, and how they name the
store they work on: a wrong PLATFORM or store is one clear line, never a traceback.

A PostgreSQL store is opened and closed here, so that a wrong DATABASE_URL, password or host, or
a schema behind the code, stops the start with its one line; opening it applies the missing
migrations first when SCHEDULER_POSTGRES_MIGRATE=auto (the default of `serve` and `drain`)."""

from __future__ import annotations

import asyncio

from core.config import Settings
from core.errors import ConfigError
from core.ports import JobStore
from core.runtime import STORES, build_backend, build_store, check_platform


def check_runtime(settings: Settings, *, existing_store: bool = False) -> None:
    """Raise ConfigError when the store or the backend cannot be built from the settings;
    with `existing_store`, also when a SQLite store's file does not exist yet."""
    if settings.store not in STORES:
        known = ", ".join(sorted(STORES))
        raise ConfigError(
            f"SCHEDULER_STORE={settings.store!r} is not available; choose one of: {known}"
        )
    check_platform(settings.platform)  # a name that is no backend, or one backend named twice
    if existing_store and settings.store == "sqlite" and not settings.database_path.is_file():
        raise ConfigError(
            f"the SQLite store {settings.database_path} does not exist: `botsched serve` "
            "creates it; to drain a server's store, run from its directory or set "
            "SCHEDULER_DATA_DIR (or SCHEDULER_SQLITE_PATH) as the server has them"
        )
    backend = build_backend(settings)  # a missing setting or package is a ConfigError here
    asyncio.run(backend.close())
    if settings.store == "postgres":
        asyncio.run(_open_and_close(build_store(settings)))


async def _open_and_close(store: JobStore) -> None:
    await store.open()
    await store.close()


def store_description(settings: Settings) -> str:
    """`sqlite store data/scheduler.db`, `memory store (empty at start, lost on exit)`, ..."""
    where = {
        "sqlite": str(settings.database_path),
        "memory": "(empty at start, lost on exit)",
        "azure_table": f"table {settings.azure_table_name}",
        "firestore": f"{settings.firestore_database}/{settings.firestore_collection}",
        "postgres": redacted_url(settings.database_url),
    }.get(settings.store, "")
    return f"{settings.store} store {where}".rstrip()


def redacted_url(url: str | None) -> str:
    """DATABASE_URL without its password (core/stores/postgres_connections.py imports no
    driver)."""
    from core.stores.postgres_connections import redact

    return redact(url) if url else "(DATABASE_URL is not set)"
