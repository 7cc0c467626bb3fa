"""Fault injection for the concurrency tests; inert unless its variables are set.

`BOTSCHED_FAULTS` names points in the scheduler where the process SIGKILLs itself, each with a
probability: `after_claim=0.2,after_start=0.1,after_running=0.1,during_stop=0.5`.
`BOTSCHED_FAULTS_SEED` seeds the draw (default: the pid, so processes differ).
`BOTSCHED_CLOCK_OFFSET_SECONDS` skews this process's wall clock by that many seconds (it may be
negative), to test clocks that differ between instances.

Production deployments never set these; with none set, `point` is a dictionary lookup and
`clock` is `utcnow`.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from core.models import utcnow

POINTS = ("after_claim", "after_start", "after_running", "during_stop")


def _parse(raw: str) -> dict[str, float]:
    chances: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, _, chance = item.partition("=")
        if name not in POINTS:
            raise ValueError(f"BOTSCHED_FAULTS: unknown point {name!r}; known: {POINTS}")
        chances[name] = float(chance or 1)
    return chances


class Faults:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.chances = _parse(env.get("BOTSCHED_FAULTS", ""))
        self.offset = timedelta(seconds=float(env.get("BOTSCHED_CLOCK_OFFSET_SECONDS") or 0))
        self._random = random.Random(int(env.get("BOTSCHED_FAULTS_SEED") or os.getpid()))

    def point(self, name: str) -> None:
        """Die here (SIGKILL, no cleanup) with the chance configured for `name`."""
        chance = self.chances.get(name)
        if chance and self._random.random() < chance:
            os.kill(os.getpid(), signal.SIGKILL)

    def clock(self) -> Callable[[], datetime]:
        if not self.offset:
            return utcnow
        offset = self.offset
        return lambda: utcnow() + offset


FAULTS = Faults()
