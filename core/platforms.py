"""PLATFORM as an ordered list of backends, and the per-backend caps that go with it.

`PLATFORM=process` names one backend, as it always has. `PLATFORM=process,podman` names several,
in the order jobs spill over from one to the next (core/backends/spill.py). Each of them may have
a cap of its own, `SCHEDULER_MAX_CONCURRENT_JOBS_<NAME>`: NAME is the backend's name as PLATFORM
gives it, upper-cased, with every character that is not a letter or a digit written as `_`.
Only the global cap applies to a backend without one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from core.errors import ConfigError

CAP_PREFIX = "SCHEDULER_MAX_CONCURRENT_JOBS_"
_NOT_ALNUM = re.compile(r"[^A-Z0-9]")


def platform_names(platform: str) -> list[str]:
    """The backends PLATFORM lists, in its order (blank items left out)."""
    return [name.strip() for name in platform.split(",") if name.strip()]


def is_list(platform: str) -> bool:
    """Whether PLATFORM names more than one backend: a cheap test, no parsing."""
    return "," in platform


def cap_variable(name: str) -> str:
    """The variable that holds the cap of the backend PLATFORM names `name`."""
    return CAP_PREFIX + _NOT_ALNUM.sub("_", name.upper())


def backend_caps(env: Mapping[str, str], platform: str) -> dict[str, int]:
    """The per-backend caps `env` sets, by backend name as PLATFORM gives it. ConfigError (one
    line) for a value that is not an integer >= 0, for a cap of a backend PLATFORM does not list,
    and for any cap when PLATFORM names one backend (its cap is SCHEDULER_MAX_CONCURRENT_JOBS)."""
    names = platform_names(platform)
    by_variable = {cap_variable(name): name for name in names}
    caps: dict[str, int] = {}
    for variable, raw in env.items():
        if not variable.startswith(CAP_PREFIX) or not raw.strip():
            continue
        name = by_variable.get(variable)
        if name is None:
            listed = ", ".join(sorted(by_variable)) or "none"
            raise ConfigError(
                f"{variable} is set but PLATFORM={platform!r} lists no such backend "
                f"(its per-backend caps: {listed})"
            )
        caps[name] = _count(variable, raw)
    if caps and len(names) < 2:
        raise ConfigError(
            f"{cap_variable(names[0])} is set but PLATFORM={platform!r} names one backend: "
            "its cap is SCHEDULER_MAX_CONCURRENT_JOBS"
        )
    return caps


def _count(variable: str, raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"{variable}: an integer >= 0 is needed, not {raw.strip()!r}")
    return value
