"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.podman_env import PodmanEnv, PodmanUnavailable, start_podman


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
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{exc} (CI is set, so this is not skipped)", pytrace=False)
        pytest.skip(str(exc))
    try:
        yield env
    finally:
        env.stop()
