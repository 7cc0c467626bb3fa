"""The `process` backend: each bot is a local child process in a process group of its own.

All that is known about a run lives in files under `runs_dir/<job id>/`, so a scheduler that
restarts while bots run finds them again: `spawned` (made before the wrapper is forked, so a run
whose starter died mid-spawn is still found, never started twice), `pid` (the wrapper shell
around the bot, whose pid is also the run's process group id; the wrapper writes it itself before
the bot runs, and the starter again after the fork), `exit` (the bot's exit code, written
atomically by the wrapper) and `log` (the bot's stdout and stderr).

The wrapper (`/bin/sh -c WRAPPER sh <pid file> <exit file> <command...>`) outlives a SIGTERM to
the group until the bot ends, to record the bot's own exit code; when `stop` has to SIGKILL the
group, it records 137 itself. On Linux a pid only counts as the run's while its /proc cmdline
names the run's exit file (a reused pid is not mistaken for the bot), or has no cmdline yet (a
wrapper between fork and exec, started by this or any other process), and it is not a zombie
(some container inits never reap orphans). Children are spawned with subprocess.Popen: an asyncio
subprocess transport kills a child that is still running when the transport is closed or
collected, and bots must outlive the scheduler.

The bot gets its config the way the seed's bot expects it: the JSON on stdin (a file, unlinked
once the bot holds it open, so `start` never blocks on a bot that does not read it) and as
`BOT_CONFIG`, plus `MEETING_URL`, `BOT_NAME`, `JOB_ID` and `RECORDING_MODE`.

A bot command not found on the bot's PATH raises StartRefused at `start` (nothing is spawned;
the job fails at once); a program the bot itself fails to run is a failed run (exit code 127).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

from core.backends.exits import exit_reason
from core.config import Settings
from core.errors import BackendError, ExecutionLost, StartRefused
from core.models import Execution, ExecutionRef, Job

# $1 is the pid file, $2 the exit file. Trapping TERM (rather than ignoring it, which the bot would
# inherit) keeps the shell alive until the bot ends; the bookkeeping after it then ignores TERM.
WRAPPER = (
    "pid_file=$1; exit_file=$2; shift 2; "
    'echo $$ > "$pid_file.$$.tmp" && mv -f "$pid_file.$$.tmp" "$pid_file"; '
    'trap : TERM; "$@"; code=$?; trap "" TERM; '
    'echo "$code" > "$exit_file.tmp" && mv -f "$exit_file.tmp" "$exit_file"; exit "$code"'
)
SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")
POLL_SECONDS = 0.05
SPAWN_GRACE_SECONDS = 10.0  # a spawned run with no pid file yet is pending this long, then lost
EXIT_POLL_SECONDS = 0.2  # how soon wait_ended notices a bot that ended
LOCK_SECONDS = 10.0
KILL_WAIT_SECONDS = 5.0
LOG_CHUNK = 64 * 1024
LOG_MAX_BYTES = 1024 * 1024

# Children of closed backends, reaped by the next start() so they do not linger as zombies.
_DETACHED: list[subprocess.Popen[bytes]] = []


class ProcessBackend:
    name = "process"

    def __init__(
        self, command: Sequence[str], runs_dir: Path, stop_grace_seconds: float = 10.0
    ) -> None:
        if not command:
            raise ValueError("the bot command is empty")
        self.command = list(command)
        self.runs_dir = Path(runs_dir).absolute()
        self.stop_grace_seconds = stop_grace_seconds
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> ProcessBackend:
        if settings.bot_command:
            command = shlex.split(settings.bot_command)
        else:
            command = [sys.executable, "-m", "core.demo_bot"]
        return cls(command, settings.data_dir / "runs", settings.stop_grace_seconds)

    async def start(self, job: Job) -> ExecutionRef:
        run = self._run_dir(job.id)
        if run is None:
            raise StartRefused(f"job id {job.id!r} cannot name a run directory")
        ref = ExecutionRef(backend=self.name, id=job.id)
        try:
            run.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(f"cannot create the run directory: {exc.strerror}") from exc
        _DETACHED[:] = [proc for proc in _DETACHED if proc.poll() is None]
        for run_id in list(self._procs):
            self._reaped(run_id)
        async with _locked(run / "lock"):
            if not _spawned(run):  # else: adopt the run started before
                (run / "spawned").touch()
                try:
                    self._procs[job.id] = self._spawn(job, run)
                except BaseException:  # nothing runs: a later start may try again
                    (run / "spawned").unlink(missing_ok=True)
                    raise
        return ref

    async def status(self, ref: ExecutionRef) -> Execution:
        run = self._existing_run(ref)
        pid_file, exit_file = run / "pid", run / "exit"
        pid = _read_int(pid_file)
        if pid is None:
            return _without_pid(run, ref)
        started = _mtime(pid_file)
        self._reaped(ref.id)
        if not exit_file.exists():
            if self._running(ref.id, pid, exit_file):
                return Execution(phase="running", startedAt=started)
            if not exit_file.exists():  # it may have ended just now
                reason = "process vanished without an exit code"
                return Execution(phase="failed", reason=reason, startedAt=started)
        return _ended(_read_int(exit_file), started, _mtime(exit_file))

    async def stop(self, ref: ExecutionRef) -> None:
        run = self._run_dir(ref.id) if ref.backend == self.name else None
        pid = _read_int(run / "pid") if run else None
        if run is None or pid is None:
            return
        exit_file = run / "exit"
        if exit_file.exists() or not self._running(ref.id, pid, exit_file):
            return
        sent = signal.SIGTERM
        _signal_group(pid, sent)
        if not await self._wait_group(ref.id, pid, self.stop_grace_seconds):
            sent = signal.SIGKILL
            _signal_group(pid, sent)
            await self._wait_group(ref.id, pid, KILL_WAIT_SECONDS)
        if not self._running(ref.id, pid, exit_file) and not exit_file.exists():
            with suppress(OSError):  # the wrapper died with the bot: record how
                _write_atomic(exit_file, f"{128 + sent}\n")

    async def find(self, job_id: str) -> ExecutionRef | None:
        run = self._run_dir(job_id)
        if run is None or not _spawned(run):
            return None
        return ExecutionRef(backend=self.name, id=job_id)

    async def runs(self) -> dict[str, ExecutionRef]:
        """Runs whose wrapper is alive, from any process: those without an exit file yet."""
        live: dict[str, ExecutionRef] = {}
        for run_id in await asyncio.to_thread(self._unfinished):
            pid = _read_int(self.runs_dir / run_id / "pid")
            exit_file = self.runs_dir / run_id / "exit"
            if pid is not None and self._running(run_id, pid, exit_file):
                live[run_id] = ExecutionRef(backend=self.name, id=run_id)
        return live

    def _unfinished(self) -> list[str]:
        try:
            names = os.listdir(self.runs_dir)
        except FileNotFoundError:
            return []
        except OSError as exc:  # the runs directory is unreadable: cannot tell, not "none"
            raise BackendError(f"cannot list the runs: {exc.strerror}") from exc
        return [name for name in names if not os.path.exists(self.runs_dir / name / "exit")]

    async def logs(self, ref: ExecutionRef, tail: int = 200) -> str:
        run = self._existing_run(ref)
        return await asyncio.to_thread(_tail, run / "log", tail)

    async def close(self) -> None:
        """Forget the child processes; the bots keep running and a new instance adopts them."""
        _DETACHED.extend(self._procs.values())
        self._procs.clear()

    async def wait_ended(self, seconds: float) -> bool:
        """Wait up to `seconds` for a bot this instance started to end (True), so that a drain
        can follow at once; the ended child is reaped. Runs adopted from an earlier instance
        are not children: only the drain interval notices them."""
        deadline = time.monotonic() + seconds
        while True:
            if any([self._reaped(run_id) for run_id in list(self._procs)]):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(EXIT_POLL_SECONDS, left))

    def _run_dir(self, run_id: str) -> Path | None:
        return self.runs_dir / run_id if SAFE_ID.fullmatch(run_id) else None

    def _existing_run(self, ref: ExecutionRef) -> Path:
        run = self._run_dir(ref.id) if ref.backend == self.name else None
        if run is None or not run.is_dir():
            raise ExecutionLost(f"no run {ref.id!r} on the process backend", ref=ref.id)
        return run

    def _spawn(self, job: Job, run: Path) -> subprocess.Popen[bytes]:
        config = json.dumps(job.bot_config())
        env = dict(os.environ)
        env.update(
            BOT_CONFIG=config,
            MEETING_URL=job.meetingUrl,
            BOT_NAME=job.botName,
            JOB_ID=job.id,
            RECORDING_MODE=job.recordingMode,
        )
        program = self.command[0]
        if shutil.which(program, path=env.get("PATH", os.defpath)) is None:
            raise StartRefused(f"bot command not found: {program}", command=program)
        argv = ["/bin/sh", "-c", WRAPPER, "sh", str(run / "pid"), str(run / "exit"), *self.command]
        try:
            proc = _popen(argv, env, config, run)
        except OSError as exc:
            message = f"cannot start bot command {program}: {exc.strerror}"
            raise BackendError(message, command=program) from exc
        try:
            _write_atomic(run / "pid", f"{proc.pid}\n")
        except OSError as exc:
            _signal_group(proc.pid, signal.SIGKILL)
            raise BackendError(f"cannot record the bot's pid: {exc.strerror}") from exc
        return proc

    def _reaped(self, run_id: str) -> bool:
        """Whether our child for this run has ended (and is now reaped and forgotten)."""
        proc = self._procs.get(run_id)
        if proc is None or proc.poll() is None:
            return False
        del self._procs[run_id]
        return True

    def _running(self, run_id: str, pid: int, exit_file: Path) -> bool:
        return not self._reaped(run_id) and _is_run(pid, exit_file)

    async def _wait_group(self, run_id: str, pgid: int, seconds: float) -> bool:
        """Wait until no live process is left in the group; False when `seconds` ran out."""
        deadline = time.monotonic() + seconds
        while True:
            self._reaped(run_id)
            if not _group_alive(pgid):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_SECONDS)


def _popen(argv: list[str], env: dict[str, str], config: str, run: Path) -> subprocess.Popen[bytes]:
    stdin_path = run / "stdin"
    _write_atomic(stdin_path, config)
    try:
        with stdin_path.open("rb") as stdin, (run / "log").open("ab") as log:
            return subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
    finally:
        stdin_path.unlink(missing_ok=True)


@asynccontextmanager
async def _locked(path: Path) -> AsyncIterator[None]:
    """An exclusive flock on `path`, across coroutines and processes; freed if we die."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + LOCK_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BackendError(f"run directory {path.parent.name} stays locked") from None
                await asyncio.sleep(POLL_SECONDS)
        yield
    finally:
        os.close(fd)


def _spawned(run: Path) -> bool:
    """Whether the run exists or may be coming up: a `spawned` mark older than the grace with
    no pid and no exit file is a starter that died before it forked, and is started afresh."""
    if (run / "pid").exists() or (run / "exit").exists():
        return True
    marked = _mtime(run / "spawned")
    return marked is not None and time.time() - marked.timestamp() < SPAWN_GRACE_SECONDS


def _without_pid(run: Path, ref: ExecutionRef) -> Execution:
    """A run with no pid file: ended if the wrapper left its exit code, pending while its wrapper
    may still be coming up, else lost (never spawned, or spawned and killed before it ran)."""
    exit_file, spawned = run / "exit", _mtime(run / "spawned")
    if exit_file.exists():
        return _ended(_read_int(exit_file), spawned, _mtime(exit_file))
    if spawned is not None and time.time() - spawned.timestamp() < SPAWN_GRACE_SECONDS:
        return Execution(phase="pending", startedAt=spawned)
    raise ExecutionLost(f"run {ref.id} has no pid file", ref=ref.id)


def _ended(code: int | None, started: datetime | None, finished: datetime | None) -> Execution:
    if code == 0:
        return Execution(phase="succeeded", exitCode=0, startedAt=started, finishedAt=finished)
    reason = "unreadable exit file" if code is None else exit_reason(code)
    return Execution(
        phase="failed", exitCode=code, reason=reason, startedAt=started, finishedAt=finished
    )


def _live_stat(pid: int) -> list[str] | None:
    """`/proc/<pid>/stat` after the command name (state, ppid, pgrp, ...); None for a process
    that is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return fields if len(fields) > 2 and fields[0] not in ("Z", "X") else None


def _is_run(pid: int, exit_file: Path) -> bool:
    """Whether `pid` is alive and (where /proc tells) still the wrapper of this run, which has
    `.../<job id>/exit` among its arguments."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    if not Path("/proc/self").is_dir():
        return True
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    fields = _live_stat(pid)
    if fields is None:
        return False
    if argv == [b""]:  # between fork and exec (a run another process just started), unless
        return fields[1] not in ("0", "2")  # a kernel thread took the pid (child of kthreadd)
    suffix = os.fsencode(f"{os.sep}{exit_file.parent.name}{os.sep}{exit_file.name}")
    return any(arg.endswith(suffix) for arg in argv)


def _group_alive(pgid: int) -> bool:
    """Whether the group has a live member: killpg(0) alone would count zombies."""
    if not _signal_group(pgid, 0):
        return False
    if not Path("/proc/self").is_dir():
        return True
    for entry in os.listdir("/proc"):
        fields = _live_stat(int(entry)) if entry.isdigit() else None
        if fields and fields[2] == str(pgid):
            return True
    return False


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _mtime(path: Path) -> datetime | None:
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(tmp, path)


def _tail(path: Path, lines: int) -> str:
    """The last `lines` lines, read backwards in chunks and never more than LOG_MAX_BYTES."""
    if lines <= 0:
        return ""
    try:
        with path.open("rb") as file:
            end = pos = file.seek(0, os.SEEK_END)
            data = b""
            while pos > 0 and data.count(b"\n") <= lines and end - pos < LOG_MAX_BYTES:
                step = min(LOG_CHUNK, pos, LOG_MAX_BYTES - (end - pos))
                pos -= step
                file.seek(pos)
                data = file.read(step) + data
    except FileNotFoundError:
        return ""
    kept = data.splitlines(keepends=True)
    if pos > 0:
        kept = kept[1:]  # the first line may be cut
    return b"".join(kept[-lines:]).decode("utf-8", "replace")
