"""Fixtures shared by every test package."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from core.stores.sqlite import SqliteStore
from tests.azurite_env import AzuriteEnv, AzuriteUnavailable, start_azurite
from tests.ci import unavailable
from tests.gcloud_env import EmulatorUnavailable, FirestoreEmulator, start_firestore
from tests.podman_env import PodmanEnv, PodmanUnavailable, start_podman
from tests.postgres_env import PostgresEnv, PostgresUnavailable, start_postgres


@pytest.fixture(scope="session")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodmanEnv]:
    """A private `podman system service` (Docker-compatible API on `.socket`) with the busybox
    test image `.image`, for the whole test session; its containers are removed at the end.

    Without podman installed this skips, except in CI (`CI` set), where it fails: the
    real-container tests must never be skipped silently there.
    """
    # A short path: the API socket lives in it (unix socket paths are limited to 107 bytes).
    root = tmp_path_factory.mktemp("podman")
    try:
        env = start_podman(root)
    except PodmanUnavailable as exc:
        unavailable(exc)
    try:
        yield env
    finally:
        env.stop()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteEnv]:
    """A private Azurite Table service for the whole session (`make test` installs it)."""
    try:
        if importlib.util.find_spec("azure.data.tables") is None:
            raise AzuriteUnavailable("azure-data-tables is missing: pip install -e '.[azure]'")
        env = start_azurite(tmp_path_factory.mktemp("azurite"))
    except AzuriteUnavailable as exc:
        unavailable(exc)
    try:
        yield env
    finally:
        env.stop()


@pytest.fixture(scope="session")
def firestore_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirestoreEmulator]:
    """A private Firestore emulator for the whole session. Without gcloud (or Java, or
    google-cloud-firestore) this skips, except in CI (`CI` set), where it fails."""
    try:
        if not _installed("google.cloud.firestore_v1"):
            raise EmulatorUnavailable("google-cloud-firestore is missing: pip install -e '.[gcp]'")
        env = start_firestore(tmp_path_factory.mktemp("firestore"))
    except EmulatorUnavailable as exc:
        unavailable(exc)
    try:
        yield env
    finally:
        env.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresEnv]:
    """A private PostgreSQL server for the whole session (`make test` installs Debian's
    postgresql when `initdb` is missing), with a password-authenticated role for the tests.
    Without it (or psycopg) this skips, except in CI (`CI` set), where it fails."""
    try:
        env = start_postgres()
    except PostgresUnavailable as exc:
        unavailable(exc)
    try:
        yield env
    finally:
        env.stop()


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A SQLite store on a fresh file in the test's directory, open for the test."""
    store = SqliteStore(tmp_path / "jobs.db")
    await store.open()
    try:
        yield store
    finally:
        await store.close()
