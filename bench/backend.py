"""A backend that starts nothing and records when each start was asked for: what the drain and
latency benchmarks measure the scheduler with, so that no real run's cost is in the figures."""

from __future__ import annotations

import threading
import time

from core.models import Execution, ExecutionRef, Job


class RecordingBackend:
    name = "bench"

    def __init__(self) -> None:
        self.started: dict[str, float] = {}  # job id -> time.perf_counter() of its start
        self._changed = threading.Condition()

    async def start(self, job: Job) -> ExecutionRef:
        with self._changed:
            self.started.setdefault(job.id, time.perf_counter())
            self._changed.notify_all()
        return ExecutionRef(backend=self.name, id=job.id)

    def wait_started(self, job_id: str, timeout: float = 10.0) -> float:
        """When the job's start was asked for (from another thread)."""
        with self._changed:
            if not self._changed.wait_for(lambda: job_id in self.started, timeout):
                raise TimeoutError(f"job {job_id} was not started within {timeout} s")
            return self.started[job_id]

    async def status(self, ref: ExecutionRef) -> Execution:
        return Execution(phase="running")

    async def stop(self, ref: ExecutionRef) -> None:
        return None

    async def find(self, job_id: str) -> ExecutionRef | None:
        return ExecutionRef(backend=self.name, id=job_id) if job_id in self.started else None

    async def runs(self) -> dict[str, ExecutionRef]:
        return {job_id: ExecutionRef(backend=self.name, id=job_id) for job_id in self.started}

    async def logs(self, ref: ExecutionRef, tail: int = 200) -> str:
        return ""

    async def close(self) -> None:
        return None
