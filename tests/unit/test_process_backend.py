"""The process backend, with real processes.

A bot command that is not found raises BackendError at start (nothing is spawned); a program that
the bot itself cannot find (here `env` running a missing program) is a failed run, exit code 127.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.backends.process import ProcessBackend
from core.config import Settings
from core.errors import BackendError, ExecutionLost
from core.models import Execution, ExecutionRef, Job

ROOT = Path(__file__).resolve().parents[2]
DEMO = ["env", f"PYTHONPATH={ROOT}", "DEMO_BOT_SECONDS=0.2", sys.executable, "-m", "core.demo_bot"]
TIMEOUT = 20.0
HAS_PROC = Path("/proc/self").is_dir()

Factory = Callable[..., ProcessBackend]


def make_job(job_id: str = "job-1", **fields: Any) -> Job:
    now = datetime.now(UTC)
    fields.setdefault("meetingUrl", "https://meet.example/abc-defg-hij")
    return Job(id=job_id, tenant="t1", createdAt=now, updatedAt=now, notBefore=now, **fields)


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


def alive(pid: int) -> bool:
    """Alive and not a zombie (this machine's init does not reap orphans)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    if not HAS_PROC:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
        except (OSError, ValueError):
            continue
        if fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members


async def wait_for(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def until_done(backend: ProcessBackend, ref: ExecutionRef) -> Execution:
    deadline = time.monotonic() + TIMEOUT
    while True:
        execution = await backend.status(ref)
        if execution.phase in ("succeeded", "failed"):
            return execution
        assert execution.phase == "running"
        assert time.monotonic() < deadline, "the run did not end in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def backend_for(tmp_path: Path) -> AsyncIterator[Factory]:
    """Backends over one runs_dir; every run still alive at the end is killed."""
    runs = tmp_path / "runs"
    made: list[ProcessBackend] = []

    def factory(command: Sequence[str], grace: float = 5.0) -> ProcessBackend:
        made.append(ProcessBackend(command, runs, stop_grace_seconds=grace))
        return made[-1]

    yield factory
    for backend in made:
        await backend.close()
    for pid_file in runs.glob("*/pid"):
        pid = int(pid_file.read_text())
        if pid != os.getpgrp() and alive(pid) and os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)


def read_int(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def pid_of(backend: ProcessBackend, ref: ExecutionRef) -> int:
    return int((backend.runs_dir / ref.id / "pid").read_text())


async def test_demo_bot_runs_to_succeeded(backend_for: Factory) -> None:
    backend = backend_for(DEMO)
    ref = await backend.start(make_job())
    assert ref == ExecutionRef(backend="process", id="job-1")
    done = await until_done(backend, ref)
    assert done.phase == "succeeded" and done.exitCode == 0 and done.reason is None
    assert done.startedAt is not None and done.finishedAt is not None
    assert done.startedAt <= done.finishedAt
    log = await backend.logs(ref)
    assert log.startswith("demo bot (stand-in, records nothing)\n")
    assert "meeting_url: https://meet.example/abc-defg-hij" in log
    assert "JOB_ID: job-1" in log


async def test_nonzero_exit_is_failed_with_the_code(backend_for: Factory) -> None:
    backend = backend_for(sh("exit 3"))
    done = await until_done(backend, await backend.start(make_job()))
    assert (done.phase, done.exitCode, done.reason) == ("failed", 3, "exit code 3")


async def test_config_reaches_the_bot_on_stdin_and_in_the_environment(
    backend_for: Factory,
) -> None:
    script = (
        'echo "stdin=$(cat)"; echo "env=$BOT_CONFIG"; echo "url=$MEETING_URL"; '
        'echo "name=$BOT_NAME"; echo "id=$JOB_ID"; echo "mode=$RECORDING_MODE"'
    )
    job = make_job(
        "job-cfg", botName="Note Taker", recordingMode="gallery_view", config={"lang": "fr"}
    )
    backend = backend_for(sh(script))
    ref = await backend.start(job)
    assert (await until_done(backend, ref)).phase == "succeeded"
    seen = dict(line.split("=", 1) for line in (await backend.logs(ref)).splitlines())
    assert json.loads(seen["stdin"]) == job.bot_config()
    assert json.loads(seen["env"]) == job.bot_config()
    assert json.loads(seen["stdin"])["lang"] == "fr"
    assert seen["url"] == "https://meet.example/abc-defg-hij"
    assert (seen["name"], seen["id"], seen["mode"]) == ("Note Taker", "job-cfg", "gallery_view")


async def _start_with_child(backend: ProcessBackend, child_file: Path) -> tuple[ExecutionRef, int]:
    ref = await backend.start(make_job())
    await wait_for(lambda: read_int(child_file) is not None, "the child's pid")
    child = read_int(child_file)
    assert child is not None
    assert alive(child)
    assert (await backend.status(ref)).phase == "running"
    return ref, child


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc to list a process group")
async def test_stop_terminates_the_whole_group(backend_for: Factory, tmp_path: Path) -> None:
    child_file = tmp_path / "child"
    script = f"sleep 60 & echo $! > {shlex.quote(str(child_file))}; wait"
    backend = backend_for(sh(script))
    ref, child = await _start_with_child(backend, child_file)
    pgid = pid_of(backend, ref)
    assert child in group_members(pgid)
    await backend.stop(ref)
    done = await backend.status(ref)
    assert (done.phase, done.exitCode) == ("failed", 143)
    assert done.reason == "exit code 143 (killed by SIGTERM)"
    assert not alive(child) and not alive(pgid)
    assert group_members(pgid) == []
    await backend.stop(ref)  # stopping a finished run is not an error


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc to list a process group")
async def test_stop_kills_a_bot_that_ignores_sigterm(backend_for: Factory, tmp_path: Path) -> None:
    child_file = tmp_path / "child"
    script = f"trap '' TERM; sleep 60 & echo $! > {shlex.quote(str(child_file))}; wait"
    backend = backend_for(sh(script), grace=0.3)
    ref, child = await _start_with_child(backend, child_file)
    pgid = pid_of(backend, ref)
    await backend.stop(ref)
    done = await backend.status(ref)
    assert (done.phase, done.exitCode) == ("failed", 137)
    assert done.reason == "exit code 137 (killed by SIGKILL)"
    assert not alive(child) and group_members(pgid) == []


async def test_second_start_adopts_the_run(backend_for: Factory) -> None:
    backend = backend_for(sh("echo started; sleep 0.5"))
    other = backend_for(sh("echo started; sleep 0.5"))  # another scheduler process, same dir
    job = make_job()
    refs = await asyncio.gather(backend.start(job), other.start(job), backend.start(job))
    assert refs[0] == refs[1] == refs[2]
    first_pid = pid_of(backend, refs[0])
    assert await backend.start(job) == refs[0]
    assert pid_of(backend, refs[0]) == first_pid
    assert (await until_done(backend, refs[0])).phase == "succeeded"
    assert await backend.start(job) == refs[0]  # a finished run is adopted too, not rerun
    await asyncio.sleep(0.3)
    assert (await backend.logs(refs[0])).splitlines() == ["started"]


async def test_a_new_instance_follows_a_run_to_its_end(backend_for: Factory) -> None:
    first = backend_for(sh("echo before; sleep 0.5; echo after; exit 5"))
    ref = await first.start(make_job())
    assert (await first.status(ref)).phase == "running"
    await first.close()  # the scheduler goes away; the bot does not
    second = backend_for(["false"])
    assert await second.start(make_job()) == ref  # adopted: `false` never runs
    done = await until_done(second, ref)
    assert (done.phase, done.exitCode, done.reason) == ("failed", 5, "exit code 5")
    assert (await second.logs(ref)).splitlines() == ["before", "after"]


async def test_unknown_runs_are_lost(backend_for: Factory) -> None:
    backend = backend_for(DEMO)
    for ref in (
        ExecutionRef(backend="process", id="never-started"),
        ExecutionRef(backend="process", id="../escape"),
        ExecutionRef(backend="podman", id="job-1"),
    ):
        with pytest.raises(ExecutionLost):
            await backend.status(ref)
        with pytest.raises(ExecutionLost):
            await backend.logs(ref)
        await backend.stop(ref)  # not an error


async def test_missing_command_raises_backend_error(backend_for: Factory) -> None:
    backend = backend_for(["no-such-bot-command-xyz", "--flag"])
    job = make_job(config={"token": "secret-value-123"})
    with pytest.raises(BackendError) as caught:
        await backend.start(job)
    assert "no-such-bot-command-xyz" in caught.value.message
    assert "secret-value-123" not in str(caught.value)
    with pytest.raises(ExecutionLost):  # nothing was started
        await backend.status(ExecutionRef(backend="process", id=job.id))


async def test_program_missing_inside_the_bot_fails_with_127(backend_for: Factory) -> None:
    backend = backend_for(["env", "no-such-program-xyz"])
    done = await until_done(backend, await backend.start(make_job()))
    assert (done.phase, done.exitCode) == ("failed", 127)


async def test_job_id_that_cannot_name_a_directory(backend_for: Factory) -> None:
    with pytest.raises(BackendError):
        await backend_for(DEMO).start(make_job("../escape"))


async def test_killed_wrapper_is_a_vanished_run(backend_for: Factory) -> None:
    backend = backend_for(["sleep", "60"])
    ref = await backend.start(make_job())
    os.killpg(pid_of(backend, ref), signal.SIGKILL)
    done = await until_done(backend, ref)
    assert (done.phase, done.exitCode) == ("failed", None)
    assert done.reason == "process vanished without an exit code"


@pytest.mark.skipif(not HAS_PROC, reason="the pid-reuse guard reads /proc")
async def test_a_reused_pid_is_not_taken_for_the_run(backend_for: Factory) -> None:
    backend = backend_for(DEMO)
    run = backend.runs_dir / "job-1"
    run.mkdir(parents=True)
    (run / "pid").write_text(f"{os.getpid()}\n")  # alive, but not this run's wrapper
    ref = ExecutionRef(backend="process", id="job-1")
    try:
        done = await backend.status(ref)
        assert (done.phase, done.reason) == ("failed", "process vanished without an exit code")
        await backend.stop(ref)  # must not signal us
    finally:
        (run / "pid").unlink()


async def test_logs_tail_returns_the_last_lines(backend_for: Factory) -> None:
    backend = backend_for(sh("i=1; while [ $i -le 50 ]; do echo line$i; i=$((i+1)); done"))
    ref = await backend.start(make_job())
    assert (await until_done(backend, ref)).phase == "succeeded"
    assert await backend.logs(ref, tail=3) == "line48\nline49\nline50\n"
    assert len((await backend.logs(ref)).splitlines()) == 50
    assert await backend.logs(ref, tail=0) == ""


async def test_logs_of_a_big_file_read_at_most_one_mib(backend_for: Factory) -> None:
    backend = backend_for(sh("true"))
    ref = await backend.start(make_job())
    await until_done(backend, ref)
    lines = [f"{n:09d}\n" for n in range(300_000)]  # 3 MB
    (backend.runs_dir / ref.id / "log").write_text("".join(lines) + "no newline")
    assert await backend.logs(ref, tail=2) == "000299999\nno newline"
    everything = await backend.logs(ref, tail=10**9)
    assert 0 < len(everything) <= 1024 * 1024
    assert everything.endswith("000299999\nno newline")
    assert everything.splitlines()[0] in {line.strip() for line in lines}  # no cut line


def test_from_settings(tmp_path: Path) -> None:
    default = ProcessBackend.from_settings(Settings(data_dir=tmp_path, stop_grace_seconds=2))
    assert default.command == [sys.executable, "-m", "core.demo_bot"]
    assert default.runs_dir == tmp_path / "runs"
    assert default.stop_grace_seconds == 2
    custom = ProcessBackend.from_settings(Settings(bot_command="node bot.js --name 'a b'"))
    assert custom.command == ["node", "bot.js", "--name", "a b"]
    assert custom.runs_dir == (Path("data") / "runs").absolute()


# -- find and runs: what the scheduler asks before a retry and in its reconcile pass -------------


async def test_find_returns_the_ref_start_gave_and_none_for_a_job_never_started(
    backend_for: Factory,
) -> None:
    backend = backend_for(sh("sleep 30"))
    ref = await backend.start(make_job("job-a"))
    assert await backend.find("job-a") == ref
    assert await backend.find("job-b") is None
    assert await backend.find("../escape") is None


async def test_runs_lists_live_runs_of_any_instance_and_omits_finished_ones(
    backend_for: Factory,
) -> None:
    sleeper, quick = backend_for(sh("sleep 30")), backend_for(sh("exit 0"))
    live = await sleeper.start(make_job("live"))
    done = await quick.start(make_job("done"))
    await until_done(quick, done)
    other = backend_for(sh("true"))  # another process's view of the same runs
    assert await other.runs() == {"live": live}
    await other.stop(live)
    assert await other.runs() == {}


STARTER = """
import asyncio, sys
from core.backends.process import ProcessBackend
from tests.unit.test_process_backend import make_job

async def main() -> None:
    backend = ProcessBackend(["sleep", "30"], sys.argv[1])
    for n in range(int(sys.argv[2])):
        await backend.start(make_job(f"run-{n}"))

asyncio.run(main())
"""


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc")
async def test_runs_another_process_just_started_are_running_from_here(
    backend_for: Factory, tmp_path: Path
) -> None:
    """Another scheduler process starts bots while this one asks for their status at once:
    a wrapper caught between fork and exec has no cmdline yet, and must still count as alive."""
    watcher = backend_for(sh("true"))
    count = 20
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", STARTER, str(watcher.runs_dir), str(count), cwd=ROOT
    )
    seen: dict[str, str] = {}
    deadline = time.monotonic() + TIMEOUT
    while len(seen) < count and time.monotonic() < deadline:
        for n in range(count):
            run_id = f"run-{n}"
            if run_id not in seen and (watcher.runs_dir / run_id / "pid").exists():
                execution = await watcher.status(ExecutionRef(backend="process", id=run_id))
                seen[run_id] = f"{execution.phase}: {execution.reason}"
        await asyncio.sleep(0)
    assert await proc.wait() == 0
    assert seen == {f"run-{n}": "running: None" for n in range(count)}
    assert sorted(await watcher.runs()) == sorted(seen)


async def test_a_run_whose_starter_died_mid_spawn_is_found_and_never_started_twice(
    backend_for: Factory, tmp_path: Path
) -> None:
    """The starter was killed after forking the wrapper but before it wrote the pid file: the
    wrapper writes its own pid, so the run is found, adopted by a second start, and followed."""
    from core.backends.process import WRAPPER

    marks = tmp_path / "marks"
    backend = backend_for(sh(f"echo started >> {marks}; sleep 0.5"))
    run = backend.runs_dir / "job-1"
    run.mkdir(parents=True)
    (run / "spawned").touch()
    argv = ["/bin/sh", "-c", WRAPPER, "sh", str(run / "pid"), str(run / "exit"), *backend.command]
    orphan = await asyncio.create_subprocess_exec(*argv, start_new_session=True)  # then "died"
    ref = ExecutionRef(backend="process", id="job-1")
    await wait_for(lambda: (run / "pid").exists(), "the wrapper's own pid file")
    assert await backend.find("job-1") == ref
    assert await backend.start(make_job("job-1")) == ref  # adopted, not spawned again
    assert (await backend.status(ref)).phase == "running"
    assert (await until_done(backend, ref)).phase == "succeeded"
    await asyncio.wait_for(orphan.wait(), TIMEOUT)
    assert marks.read_text() == "started\n"


async def test_a_spawned_run_without_a_pid_is_pending_then_lost(backend_for: Factory) -> None:
    backend = backend_for(sh("true"))
    run = backend.runs_dir / "job-1"
    run.mkdir(parents=True)
    (run / "spawned").touch()
    ref = ExecutionRef(backend="process", id="job-1")
    assert (await backend.status(ref)).phase == "pending"
    assert await backend.find("job-1") == ref
    old = time.time() - 60
    os.utime(run / "spawned", (old, old))
    with pytest.raises(ExecutionLost):
        await backend.status(ref)


async def test_a_starter_that_died_before_forking_leaves_a_run_that_starts_afresh(
    backend_for: Factory,
) -> None:
    backend = backend_for(sh("exit 0"))
    run = backend.runs_dir / "job-1"
    run.mkdir(parents=True)
    (run / "spawned").touch()
    old = time.time() - 60
    os.utime(run / "spawned", (old, old))
    assert await backend.find("job-1") is None  # no run: recovery may requeue the job
    ref = await backend.start(make_job("job-1"))
    assert (await until_done(backend, ref)).phase == "succeeded"
