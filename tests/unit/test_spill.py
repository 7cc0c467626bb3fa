"""Spill-over to a second backend, in parts: the health of each backend's starts, the choice of a
backend for a claim, the composite's routing, and the settings that configure it.

Real parts: core/backends/spill.py, core/backends/spill_health.py, core/spill_slots.py,
core/platforms.py, core/runtime.py and Settings, as they are. The backends under the composite are
tests/fakes.py's FakeBackend (it runs nothing; tests play the platform) with distinct names; the
clock of the health is a number the tests move. The real backends are composed in
tests/podman/test_spill_podman.py and tests/stress/test_spill_topology.py.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.backends.podman import PodmanBackend
from core.backends.process import ProcessBackend
from core.backends.spill import SpillBackend
from core.backends.spill_health import Health
from core.config import Settings
from core.errors import BackendError, ConfigError, NotSupported, StartRefused
from core.models import Execution, ExecutionRef, Job
from core.runtime import build_backend, check_platform
from core.spill_slots import BackendSlots
from tests.fakes import FakeBackend

NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)


class Named(FakeBackend):
    """A FakeBackend under a name of its own, as a composite needs distinct ones."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.closed = False

    async def close(self) -> None:
        self.closed = True


class Ticks:
    """The health's clock: seconds the test sets."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def job(job_id: str = "job-1", **fields: Any) -> Job:
    return Job(
        id=job_id,
        tenant="t1",
        meetingUrl="https://meet.example/x",
        createdAt=NOW,
        updatedAt=NOW,
        notBefore=NOW,
        **fields,
    )


def spill(
    caps: dict[str, int] | None = None, ticks: Ticks | None = None, **settings: Any
) -> tuple[SpillBackend, Named, Named]:
    first, second = Named("a"), Named("b")
    config = Settings(
        platform="a,b",
        backend_caps=caps or {},
        backend_failures=settings.pop("failures", 2),
        backend_cooldown_seconds=settings.pop("cooldown", 60),
        claim_ttl_seconds=10,
    )
    backend = SpillBackend({"a": first, "b": second}, config, clock=ticks or Ticks())
    return backend, first, second


# -- health ------------------------------------------------------------------------------------


def test_a_backend_cools_down_after_consecutive_failures_then_gets_one_trial() -> None:
    ticks = Ticks()
    health = Health(["a"], failures=3, cooldown=60, trial_hold=10, clock=ticks)
    health.failed("a")
    health.failed("a")
    health.succeeded("a")  # a success in between: the count starts again
    health.failed("a")
    health.failed("a")
    assert health.usable("a")
    health.failed("a")  # the third in a row
    assert not health.usable("a") and health.cooling_for("a") == 60
    ticks.now += 59.9
    assert not health.usable("a")
    ticks.now += 0.1  # cool-down over: one trial
    assert health.usable("a") and health.cooling_for("a") is None
    health.assigned("a")
    assert not health.usable("a")  # the next claims skip it while the trial is out
    ticks.now += 10  # the trial claim ran out without a start: try again
    assert health.usable("a")
    health.assigned("a")
    health.failed("a")  # the trial failed: another full cool-down
    assert health.cooling_for("a") == 60
    ticks.now += 60
    health.assigned("a")
    health.succeeded("a")
    assert health.usable("a") and health.states["a"].failures == 0


def test_assigning_a_healthy_backend_changes_nothing() -> None:
    health = Health(["a"], failures=1, cooldown=60, trial_hold=10, clock=Ticks())
    for _ in range(5):
        health.assigned("a")
    assert health.usable("a")


async def test_start_failures_count_but_a_refused_start_does_not() -> None:
    backend, first, _ = spill(failures=2)
    first.fail_starts = 1
    with pytest.raises(BackendError):
        await backend.start(job("j1", backend="a"))
    assert backend.health.states["a"].failures == 1

    async def refuse(job: Job) -> ExecutionRef:
        raise StartRefused("bot command not found")

    first.start = refuse  # type: ignore[method-assign]
    with pytest.raises(StartRefused):
        await backend.start(job("j2", backend="a"))
    assert backend.health.states["a"].failures == 1 and backend.health.usable("a")
    del first.start  # the FakeBackend's own start again
    await backend.start(job("j3", backend="a"))
    assert backend.health.states["a"].failures == 0


# -- choosing a backend ------------------------------------------------------------------------


def test_a_claim_goes_to_the_first_backend_with_room_under_its_own_cap() -> None:
    backend, _, _ = spill(caps={"a": 2})
    on_a = [job(f"a{n}", backend="a") for n in range(2)]
    assert BackendSlots(backend, on_a[:1]).choose(job()) == "a"
    slots = BackendSlots(backend, on_a)
    assert slots.choose(job()) == "b"
    slots.take(job("b1", backend="b"))
    assert slots.choose(job()) == "b"  # b has no cap of its own: only the global one


def test_a_zero_cap_backend_never_gets_a_claim_and_a_full_one_stops_claims() -> None:
    backend, _, _ = spill(caps={"a": 0, "b": 1})
    slots = BackendSlots(backend, [])
    assert slots.choose(job()) == "b"
    slots.assign(job("x", backend="b"))
    assert slots.choose(job()) is None


def test_a_cooling_backend_is_skipped_unless_every_backend_is_cooling() -> None:
    ticks = Ticks()
    backend, _, _ = spill(ticks=ticks, failures=1)
    backend.health.failed("a")
    assert BackendSlots(backend, []).choose(job()) == "b"
    backend.health.failed("b")
    assert BackendSlots(backend, []).choose(job()) == "a"  # all cooling: in order anyway
    full = BackendSlots(spill(caps={"a": 0}, ticks=ticks, failures=1)[0], [])
    full.spill.health.failed("b")
    full.spill.health.failed("a")
    assert full.choose(job()) == "b"  # the first with room


def test_a_cooling_backend_with_room_does_not_make_jobs_wait_for_a_full_one() -> None:
    """b is healthy but full, a has room but cools down: the job waits (None), it does not
    go to a, since not every backend is cooling down."""
    backend, _, _ = spill(caps={"b": 1}, failures=1)
    backend.health.failed("a")
    assert BackendSlots(backend, [job("b1", backend="b")]).choose(job()) is None


def test_a_job_back_from_a_failed_claim_prefers_another_backend_with_room() -> None:
    backend, _, _ = spill(caps={"b": 1})
    assert BackendSlots(backend, []).choose(job(backend="a", backends=("a",))) == "b"
    full_b = BackendSlots(backend, [job("b1", backend="b")])
    assert full_b.choose(job(backend="a", backends=("a",))) == "a"  # no other has room


def test_jobs_from_before_count_on_their_run_s_backend_else_on_the_first() -> None:
    backend, _, _ = spill(caps={"a": 5, "b": 5})
    running_on_b = job("old-b", execution=ExecutionRef(backend="b", id="old-b"))
    unknown = job("old-x")
    slots = BackendSlots(backend, [running_on_b, unknown])
    assert slots.load == {"b": 1, "a": 1}


def test_the_trial_after_a_cool_down_is_one_claim() -> None:
    ticks = Ticks()
    backend, _, _ = spill(ticks=ticks, failures=1, cooldown=30)
    backend.health.failed("a")
    ticks.now += 30
    slots = BackendSlots(backend, [])
    first = slots.choose(job("j1"))
    slots.assign(job("j1", backend=first))
    assert (first, slots.choose(job("j2"))) == ("a", "b")


# -- routing -----------------------------------------------------------------------------------


async def test_start_status_stop_and_logs_reach_the_backend_of_the_run() -> None:
    backend, first, second = spill()
    ref = await backend.start(job("j1", backend="b"))
    assert ref == ExecutionRef(backend="b", id="j1") and "j1" not in first.executions
    assert (await backend.status(ref)).phase == "running"
    assert "j1 line 5" in await backend.logs(ref)
    await backend.stop(ref)
    assert second.stopped == ["j1"] and first.stopped == []
    assert await backend.start(job("j2")) == ExecutionRef(backend="a", id="j2")  # none: first
    with pytest.raises(BackendError, match="not in PLATFORM"):
        await backend.status(ExecutionRef(backend="gone", id="j3"))


async def test_find_asks_every_backend_a_claim_was_assigned_and_cannot_tell_if_one_cannot() -> None:
    backend, first, second = spill()
    await backend.start(job("j1", backend="b"))
    assert await backend.find_in("j1", ("a",)) is None  # b was not assigned: not asked
    assert await backend.find_in("j1", ("a", "b")) == ExecutionRef(backend="b", id="j1")
    assert await backend.find_in("j1", ()) == ExecutionRef(backend="b", id="j1")  # none: all
    assert await backend.find("j1") == ExecutionRef(backend="b", id="j1")
    first.find_error = BackendError("quota API down")
    with pytest.raises(BackendError, match=r"backend a cannot tell .*quota API down"):
        await backend.find_in("j1", ("a", "b"))
    assert await backend.find_in("j1", ("b", "gone")) is not None  # unlisted: not asked
    second.find_error = RuntimeError("boom")
    with pytest.raises(BackendError, match=r"backend b cannot tell .*RuntimeError"):
        await backend.find_in("j1", ("b",))


async def test_runs_is_the_union_and_fails_when_a_backend_cannot_answer() -> None:
    backend, first, second = spill()
    await backend.start(job("j1", backend="a"))
    await backend.start(job("j2", backend="b"))
    assert set(await backend.runs()) == {"j1", "j2"}
    second.lists_runs = False  # cannot list at all: left out
    assert set(await backend.runs()) == {"j1"}
    first.lists_runs = False
    with pytest.raises(NotSupported):
        await backend.runs()
    first.lists_runs = True

    async def down() -> dict[str, ExecutionRef]:
        raise BackendError("engine unreachable")

    first.runs = down  # type: ignore[method-assign]
    with pytest.raises(BackendError, match="unreachable"):
        await backend.runs()


class Ending(Named):
    """Tells when one of its bots ended, as the process backend does."""

    async def wait_ended(self, seconds: float) -> bool:
        await asyncio.sleep(0.01)
        return True


async def test_a_bot_that_ended_on_a_backend_that_tells_wakes_the_drain() -> None:
    config = Settings(platform="a,b")
    telling = SpillBackend({"a": Named("a"), "b": Ending("b")}, config)
    assert await asyncio.wait_for(telling.wait_ended(5), 1)
    silent, _, _ = spill()
    assert not await silent.wait_ended(0.01)


async def test_close_closes_every_backend() -> None:
    backend, first, second = spill()
    await backend.close()
    assert first.closed and second.closed


async def test_status_of_a_run_is_the_backend_s_answer() -> None:
    backend, _, second = spill()
    ref = await backend.start(job("j1", backend="b"))
    second.finish("j1", 3)
    assert await backend.status(ref) == Execution(phase="failed", exitCode=3, reason="exit code 3")


# -- settings and building ---------------------------------------------------------------------


def test_per_backend_caps_and_health_settings_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "PLATFORM": "process, azure-container-apps",
            "SCHEDULER_MAX_CONCURRENT_JOBS": "8",
            "SCHEDULER_MAX_CONCURRENT_JOBS_AZURE_CONTAINER_APPS": "3",
            "SCHEDULER_MAX_CONCURRENT_JOBS_PROCESS": " ",  # blank: unset
            "SCHEDULER_BACKEND_FAILURES": "5",
            "SCHEDULER_BACKEND_COOLDOWN_SECONDS": "30",
        }
    )
    assert settings.backend_caps == {"azure-container-apps": 3}
    assert (settings.backend_failures, settings.backend_cooldown_seconds) == (5, 30.0)
    defaults = Settings.from_env({})
    assert (defaults.backend_caps, defaults.backend_failures) == ({}, 3)
    assert defaults.backend_cooldown_seconds == 300.0


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"PLATFORM": "process,podman", "SCHEDULER_MAX_CONCURRENT_JOBS_DOCKER": "2"},
            "SCHEDULER_MAX_CONCURRENT_JOBS_DOCKER is set but PLATFORM='process,podman' lists "
            "no such backend",
        ),
        (
            {"PLATFORM": "process,podman", "SCHEDULER_MAX_CONCURRENT_JOBS_PODMAN": "-1"},
            "SCHEDULER_MAX_CONCURRENT_JOBS_PODMAN: an integer >= 0 is needed, not '-1'",
        ),
        (
            {"PLATFORM": "process,podman", "SCHEDULER_MAX_CONCURRENT_JOBS_PODMAN": "two"},
            "SCHEDULER_MAX_CONCURRENT_JOBS_PODMAN: an integer >= 0 is needed, not 'two'",
        ),
        (
            {"PLATFORM": "podman", "SCHEDULER_MAX_CONCURRENT_JOBS_PODMAN": "2"},
            "PLATFORM='podman' names one backend: its cap is SCHEDULER_MAX_CONCURRENT_JOBS",
        ),
        ({"SCHEDULER_BACKEND_FAILURES": "0"}, "SCHEDULER_BACKEND_FAILURES: "),
        ({"SCHEDULER_BACKEND_COOLDOWN_SECONDS": "-5"}, "SCHEDULER_BACKEND_COOLDOWN_SECONDS: "),
    ],
)
def test_bad_per_backend_settings_are_one_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    assert message in refused.value.message and "\n" not in refused.value.message


@pytest.mark.parametrize(
    ("platform", "message"),
    [
        ("process,nope", "PLATFORM='process,nope': 'nope' is not a backend; known: "),
        ("podman,process,docker", "names one backend twice ('podman' and 'docker')"),
        ("gcp,cloudrun", "names one backend twice ('gcp' and 'cloudrun')"),
        ("process,process", "PLATFORM='process,process' names one backend twice"),
        ("process,", "PLATFORM='process,' lists one backend: name it alone"),
        ("nope", "PLATFORM='nope' is not available; choose one of: "),
    ],
)
def test_a_platform_list_with_an_unknown_or_repeated_backend_is_one_line(
    platform: str, message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        check_platform(platform)
    assert message in refused.value.message and "\n" not in refused.value.message
    with pytest.raises(ConfigError):
        build_backend(Settings(platform=platform))


async def test_a_list_builds_each_backend_under_its_own_name(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "PLATFORM": "process,docker",
            "SCHEDULER_DATA_DIR": str(tmp_path),
            "SCHEDULER_MAX_CONCURRENT_JOBS_DOCKER": "1",
        }
    )
    backend = build_backend(settings)
    assert isinstance(backend, SpillBackend) and backend.name == "process,docker"
    assert isinstance(backend.children["process"], ProcessBackend)
    docker = backend.children["docker"]
    assert isinstance(docker, PodmanBackend) and docker.name == "docker"
    assert backend.caps == {"process": None, "docker": 1}
    await backend.close()


def test_one_name_builds_that_backend_alone(tmp_path: Path) -> None:
    backend = build_backend(Settings(platform="process", data_dir=tmp_path))
    assert isinstance(backend, ProcessBackend)
