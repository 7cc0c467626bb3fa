"""A real part that is missing here: a skip on a developer's machine, a failure in CI."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def unavailable(reason: object) -> NoReturn:
    """Skip the test, except in CI (`CI` set), where the tests on real parts must all run."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this is not skipped)", pytrace=False)
    pytest.skip(str(reason))
