"""Start failures in two classes (core/backends/policy.py): permanent ones (StartRefused) fail the
job at once, transient ones (BackendError) are retried with backoff. Each platform backend's own
mapping is tested beside it, against its contract fake or real engine: tests/gcp/test_cloud_run.py,
tests/azure/test_container_apps.py, tests/kubernetes/test_kubernetes_backend.py (contract fake and
an httpx MockTransport), tests/cloudflare/test_backend.py (a stand-in binding),
tests/podman/test_podman_backend.py (REAL Podman). Here: the rules themselves, and the process
backend on REAL child processes, through the scheduler.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.backends.policy import permanent, refusal, run_timeout_seconds
from core.backends.process import ProcessBackend
from core.errors import BackendError, StartRefused
from core.models import Job, JobState
from core.ports import JobStore
from core.scheduler import Scheduler
from tests.unit.conftest import Clock, at, fresh, settings, spec


@pytest.mark.parametrize(
    ("status", "text", "refused"),
    [
        (400, "HTTP 400 INVALID_ARGUMENT: containerOverrides.env.name", True),
        (403, "Kubernetes RBAC forbids 'create' on 'jobs'", True),
        (404, "Resource 'projects/p/locations/r/jobs/x' of kind 'JOB' was not found", True),
        (422, "Job.batch is invalid", True),
        (403, 'jobs.batch "x" is forbidden: exceeded quota: bots', False),
        (400, "HTTP 400 FAILED_PRECONDITION: the job is being updated", False),
        (400, "HTTP 400 ContainerAppsJobExecutionQuotaExceeded", False),
        (401, "HTTP 401 InvalidAuthenticationToken", False),
        (409, "HTTP 409 Conflict", False),
        (429, "HTTP 429 RESOURCE_EXHAUSTED", False),
        (500, "HTTP 500 INTERNAL", False),
        (503, "HTTP 503 UNAVAILABLE", False),
        (None, "Cloud Run API unreachable: ConnectionError", False),
    ],
)
def test_what_is_permanent(status: int | None, text: str, refused: bool) -> None:
    assert permanent(status, text) is refused
    error = BackendError(text, **({"status": status} if status else {}))
    converted = refusal(error)
    assert (converted is not None) is refused
    if converted is not None:
        assert converted.message == text and converted.details == error.details


def test_a_refusal_stays_one() -> None:
    assert refusal(StartRefused("bot command not found: bot", status=400)) is None


def test_every_run_gets_a_platform_timeout() -> None:
    config = settings(expected_run_seconds=3600)
    now = at(0)
    times = {"createdAt": now, "updatedAt": now, "notBefore": now}
    job = Job.from_spec(spec(), id="j", tenant="A", **times)
    assert run_timeout_seconds(job, config) == 7200  # twice the expected run
    capped = Job.from_spec(spec(maxRuntimeSeconds=5400), id="j", tenant="A", **times)
    assert run_timeout_seconds(capped, config) == 5400


# -- the process backend, REAL child processes -------------------------------------------------


async def test_a_bot_command_that_does_not_exist_fails_the_job_at_once(
    store: JobStore, clock: Clock, tmp_path: Path
) -> None:
    backend = ProcessBackend(["no-such-bot-command-xyz"], tmp_path / "runs")
    scheduler = Scheduler(store, backend, settings(), clock=clock)
    job, _ = await scheduler.submit("A", spec())
    report = await scheduler.drain_once(clock.at(0))
    failed = await fresh(store, job)
    assert (failed.status, failed.attempts, report.retried) == (JobState.FAILED, 1, 0)
    assert failed.reason == "start refused: bot command not found: no-such-bot-command-xyz"
    await backend.close()


async def test_a_run_directory_that_cannot_be_made_is_retried_then_given_up(
    store: JobStore, clock: Clock, tmp_path: Path
) -> None:
    """A transient failure (here: the runs directory is a file, so mkdir fails): retried with
    backoff, until SCHEDULER_MAX_ATTEMPTS starts were tried."""
    blocked = tmp_path / "runs"
    blocked.write_text("not a directory")
    backend = ProcessBackend(["true"], blocked)
    scheduler = Scheduler(store, backend, settings(max_attempts=2), clock=clock)
    job, _ = await scheduler.submit("A", spec())
    first = await scheduler.drain_once(clock.at(0))
    retried = await fresh(store, job)
    assert (first.retried, retried.status, retried.notBefore) == (1, JobState.QUEUED, at(10))
    assert retried.error and retried.error.startswith("start failed: cannot create the run")
    await scheduler.drain_once(clock.at(10))
    given_up = await fresh(store, job)
    assert (given_up.status, given_up.reason) == (JobState.FAILED, "gave up after 2 attempts")
    await backend.close()
