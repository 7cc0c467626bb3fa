"""A test double of the Backend port for scheduler and API tests.

It is not a platform fake: it runs nothing. Tests set each run's phase to play the platform; the
real process backend is exercised in tests/unit/test_process_backend.py and tests/e2e/.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from core.errors import BackendError, ExecutionLost, NotSupported
from core.models import Execution, ExecutionRef, Job


class FakeBackend:
    name = "fake"

    def __init__(self, start_delay: float = 0.0) -> None:
        self.start_delay = start_delay
        self.starts: Counter[str] = Counter()  # job id -> runs actually started
        self.executions: dict[str, Execution] = {}
        self.stopped: list[str] = []
        self.fail_starts = 0  # the next N starts raise BackendError
        self.lost: set[str] = set()
        self.logs_supported = True
        self.lists_runs = True
        self.find_error: BaseException | None = None

    async def start(self, job: Job) -> ExecutionRef:
        if self.start_delay:
            await asyncio.sleep(self.start_delay)
        if self.fail_starts > 0:
            self.fail_starts -= 1
            raise BackendError("platform said no")
        if job.id not in self.executions:  # named after the job: a second start adopts
            self.starts[job.id] += 1
            self.executions[job.id] = Execution(phase="running")
        return ExecutionRef(backend=self.name, id=job.id)

    async def status(self, ref: ExecutionRef) -> Execution:
        if ref.id in self.lost or ref.id not in self.executions:
            raise ExecutionLost(f"no run {ref.id}")
        return self.executions[ref.id]

    async def stop(self, ref: ExecutionRef) -> None:
        self.stopped.append(ref.id)
        if ref.id in self.executions and self.executions[ref.id].phase == "running":
            self.executions[ref.id] = Execution(phase="failed", exitCode=143, reason="stopped")

    async def find(self, job_id: str) -> ExecutionRef | None:
        if self.find_error is not None:
            raise self.find_error
        if job_id in self.lost or job_id not in self.executions:
            return None
        return ExecutionRef(backend=self.name, id=job_id)

    async def runs(self) -> dict[str, ExecutionRef]:
        if not self.lists_runs:
            raise NotSupported("this backend cannot list its runs")
        return {
            job_id: ExecutionRef(backend=self.name, id=job_id)
            for job_id, execution in self.executions.items()
            if execution.phase == "running" and job_id not in self.lost
        }

    def alive(self) -> int:
        """How many runs are live right now: what a cap limits."""
        return sum(execution.phase == "running" for execution in self.executions.values())

    async def logs(self, ref: ExecutionRef, tail: int = 200) -> str:
        if not self.logs_supported:
            raise NotSupported("this backend keeps no logs")
        if ref.id not in self.executions:
            raise ExecutionLost(f"no run {ref.id}")
        lines = [f"{ref.id} line {n}" for n in range(1, 6)]
        return "\n".join(lines[-tail:]) + "\n"

    async def close(self) -> None:
        return None

    def finish(self, job_id: str, exit_code: int = 0) -> None:
        """Play the platform: the run ends with `exit_code`."""
        phase = "succeeded" if exit_code == 0 else "failed"
        reason = None if exit_code == 0 else f"exit code {exit_code}"
        self.executions[job_id] = Execution(phase=phase, exitCode=exit_code, reason=reason)
