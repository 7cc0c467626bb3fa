"""Several backends as one: `PLATFORM=process,podman` spills jobs over from one to the next.

The scheduler assigns each claim one of the backends (core/spill_slots.py: the first, in PLATFORM
order, with room under its own cap whose recent starts are succeeding) and records it on the job
in the claim's write (`Job.backend`, and `Job.backends`: every backend a claim of it was
assigned). This backend then

- starts the job on its assigned backend, and counts that backend's start failures
  (core/backends/spill_health.py: per process, in memory);
- routes `status`, `stop` and `logs` by the run's `ExecutionRef.backend` to the backend that
  holds it;
- finds a job's run on every backend a claim of it was assigned (`find_in`), and answers "cannot
  tell" when any of them cannot: so a retried start never lands a second bot on another backend
  while the first may still be starting;
- lists the union of its backends' runs (a backend that cannot list its runs is left out; one
  that fails to answer fails the listing, so the reconcile pass skips rather than misjudges).

The backends are keyed by their names as PLATFORM gives them (`podman`, `azure-container-apps`);
a run's ExecutionRef names its backend as that backend does (`podman`, `azure`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from core.backends.spill_health import Health
from core.config import Settings
from core.errors import BackendError, NotSupported, StartRefused
from core.models import Execution, ExecutionRef, Job
from core.ports import Backend

log = logging.getLogger("botsched.backends")
T = TypeVar("T")


@runtime_checkable
class Ends(Protocol):
    """A backend that can tell when a bot it started ended (the process backend)."""

    async def wait_ended(self, seconds: float) -> bool: ...


class SpillBackend:
    def __init__(
        self,
        children: Mapping[str, Backend],
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if len(children) < 2:
            raise ValueError("spill-over needs at least two backends")
        self.children = dict(children)  # name as PLATFORM gives it -> backend, in its order
        self.order = list(self.children)
        self.name = ",".join(self.order)
        self.caps = {name: settings.backend_caps.get(name) for name in self.order}
        self._keys = {child.name: key for key, child in self.children.items()}
        self._keys.update({key: key for key in self.order})
        hold = settings.claim_ttl_seconds
        failures, cooldown = settings.backend_failures, settings.backend_cooldown_seconds
        self.health = Health(self.order, failures, cooldown, hold, clock)

    def key_of(self, backend: str) -> str | None:
        """The PLATFORM name of the backend a run's ExecutionRef names; None if not ours."""
        return self._keys.get(backend)

    def assigned(self, job: Job) -> str:
        """The backend a job was assigned; the first for a job claimed without one."""
        return job.backend if job.backend in self.children else self.order[0]

    def counted_on(self, job: Job) -> str:
        """The backend whose cap an active job takes a slot of: the one its claim assigned;
        for a job claimed before claims recorded one, the one its run is on; else the first."""
        if job.backend in self.children:
            return job.backend
        key = self.key_of(job.execution.backend) if job.execution is not None else None
        return key or self.order[0]

    async def start(self, job: Job) -> ExecutionRef:
        name = self.assigned(job)
        try:
            ref = await self.children[name].start(job)
        except StartRefused:  # the job's own fault, not the backend's
            raise
        except Exception as exc:
            self.health.failed(name)
            self._log_failure(name, exc)
            raise
        self.health.succeeded(name)
        return ref

    def _log_failure(self, name: str, exc: Exception) -> None:
        left = self.health.cooling_for(name)
        if left is not None:
            failures = self.health.states[name].failures
            message = exc.message if isinstance(exc, BackendError) else type(exc).__name__
            log.warning(
                "backend %s: %d starts failed in a row (%s); skipped for %.0f s",
                name,
                failures,
                message,
                left,
            )

    async def status(self, ref: ExecutionRef) -> Execution:
        return await self._child(ref).status(ref)

    async def stop(self, ref: ExecutionRef) -> None:
        await self._child(ref).stop(ref)

    async def logs(self, ref: ExecutionRef, tail: int = 200) -> str:
        return await self._child(ref).logs(ref, tail)

    def _child(self, ref: ExecutionRef) -> Backend:
        key = self.key_of(ref.backend)
        if key is None:  # a run this scheduler cannot reach: never taken for gone
            raise BackendError(f"run {ref.id} is on backend {ref.backend!r}, not in PLATFORM")
        return self.children[key]

    async def find(self, job_id: str) -> ExecutionRef | None:
        return await self.find_in(job_id, ())

    async def find_in(self, job_id: str, names: Sequence[str]) -> ExecutionRef | None:
        """The job's run on any of the backends `names` (those its claims were assigned, all
        of them when none was recorded; a backend PLATFORM no longer lists is not asked).
        Raises BackendError when any of them cannot tell."""
        asked = [name for name in dict.fromkeys(names) if name in self.children] or self.order
        found = await _all([self._find_on(name, job_id) for name in asked])
        refs = [ref for ref in found if ref is not None]
        if len(refs) > 1:
            log.error("job %s has runs on several backends: %s", job_id, refs)
        return refs[0] if refs else None

    async def _find_on(self, name: str, job_id: str) -> ExecutionRef | None:
        try:
            return await self.children[name].find(job_id)
        except Exception as exc:  # cannot tell, whatever the reason
            why = exc.message if isinstance(exc, BackendError) else type(exc).__name__
            message = f"backend {name} cannot tell whether job {job_id} has a run: {why}"
            raise BackendError(message) from exc

    async def runs(self) -> dict[str, ExecutionRef]:
        listed = await _all([_runs_or_none(child) for child in self.children.values()])
        if all(runs is None for runs in listed):
            raise NotSupported("none of the backends can list its runs")
        merged: dict[str, ExecutionRef] = {}
        for runs in reversed(listed):  # the first backend's run wins a (never expected) tie
            merged.update(runs or {})
        return merged

    async def wait_ended(self, seconds: float) -> bool:
        """Up to `seconds`: True as soon as a bot one of the backends started here ended
        (those that can tell: core/loops.py), else False."""
        waits = [child.wait_ended for child in self.children.values() if isinstance(child, Ends)]
        if not waits:
            await asyncio.sleep(seconds)
            return False
        tasks = [asyncio.ensure_future(wait(seconds)) for wait in waits]
        try:
            for done in asyncio.as_completed(tasks):
                if await done:
                    return True
            return False
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        await _all([child.close() for child in self.children.values()])


async def _runs_or_none(backend: Backend) -> dict[str, ExecutionRef] | None:
    try:
        return await backend.runs()
    except NotSupported:
        return None


async def _all(calls: Sequence[Awaitable[T]]) -> list[T]:
    """Await every call, all of them even when some fail; then raise the first failure."""
    results: list[Any] = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def spill_backend(
    settings: Settings, names: Sequence[str], build: Callable[[Settings], Backend]
) -> SpillBackend:
    """A SpillBackend of the backends `names`, each built by `build` from the settings with
    PLATFORM set to its own name (so that, e.g., `docker` talks to Docker)."""
    children = {name: build(settings.model_copy(update={"platform": name})) for name in names}
    return SpillBackend(children, settings)
