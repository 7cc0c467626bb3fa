"""Whether a backend's recent starts are succeeding: which backend jobs spill over from.

Per process and in memory (each scheduler process learns on its own, and a restart forgets):
after `failures` consecutive failed starts (any error but StartRefused: a quota, a 5xx, an
unreachable API) a backend is skipped for `cooldown` seconds. Once the cool-down is over, one
claim is assigned to it as a trial; the next claims skip it until that start answers (success:
the count starts again from 0; failure: another cool-down) or until the trial claim's lease
(`trial_hold` seconds) has run out without a start.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass
class BackendHealth:
    failures: int = 0  # consecutive failed starts
    until: float = 0.0  # on the clock: skipped until then, once failures reached the limit


class Health:
    def __init__(
        self,
        names: Iterable[str],
        failures: int,
        cooldown: float,
        trial_hold: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = failures
        self.cooldown = cooldown
        self.trial_hold = trial_hold
        self.clock = clock
        self.states = {name: BackendHealth() for name in names}

    def usable(self, name: str) -> bool:
        """Whether a claim may be assigned to `name`: its starts are succeeding, or its
        cool-down is over (for one trial start)."""
        state = self.states[name]
        return state.failures < self.limit or self.clock() >= state.until

    def assigned(self, name: str) -> None:
        """A claim was assigned to `name`: when it is the trial after a cool-down, the next
        claims skip the backend until the trial's start answers."""
        state = self.states[name]
        if state.failures >= self.limit:
            state.until = self.clock() + self.trial_hold

    def failed(self, name: str) -> None:
        state = self.states[name]
        state.failures += 1
        if state.failures >= self.limit:
            state.until = self.clock() + self.cooldown

    def succeeded(self, name: str) -> None:
        state = self.states[name]
        state.failures, state.until = 0, 0.0

    def cooling_for(self, name: str) -> float | None:
        """Seconds left before `name` may be tried again; None when it is usable."""
        return None if self.usable(name) else self.states[name].until - self.clock()
