"""What the bots saw: their own log, read back and checked against the scheduler's promises.

The log is the bots' record (tests/stress/bot.py), not the store's: a bot that started twice, or
that outlived its job, shows here whatever the store says.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

FINAL = ("completed", "failed", "cancelled")


@dataclass
class BotRun:
    """One bot process, from its `start` line to its `end` line (None: none was written)."""

    job_id: str
    pid: int
    start: float
    end: float | None = None
    terminated: bool = False
    alive_at_end: bool = False
    vanished: bool = False  # died with no end line and no exit file: its end is a guess


@dataclass(frozen=True)
class JobView:
    """A job as the API showed it at the end of the run."""

    id: str
    tenant: str
    status: str
    completed_at: float | None  # epoch seconds
    reason: str | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL


@dataclass
class Result:
    """The guarantees, measured from the bots' side. Job id lists are kept whole."""

    store: str
    jobs: int
    processes: int
    cap: int
    per_tenant_cap: int
    kills: int = 0
    restarts: int = 0
    bots: int = 0
    max_alive: int = 0
    max_alive_per_tenant: int = 0
    duplicates: list[str] = field(default_factory=list)
    not_final: list[str] = field(default_factory=list)
    completed_without_bot: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    failed_after_success: list[str] = field(default_factory=list)  # its bot exited 0
    alive_at_end: int = 0
    vanished: int = 0
    unknown_bots: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # reason -> failed jobs
    crashes: list[str] = field(default_factory=list)
    timed_out: bool = False
    wall_seconds: float = 0.0
    workdir: str = ""  # the run's logs: scheduler processes, bots, result.txt

    @property
    def lost(self) -> list[str]:
        return sorted(set(self.not_final) | set(self.completed_without_bot))

    @property
    def cap_exceeded(self) -> bool:
        return self.max_alive > self.cap

    @property
    def per_tenant_cap_exceeded(self) -> bool:
        return bool(self.per_tenant_cap) and self.max_alive_per_tenant > self.per_tenant_cap

    @property
    def ok(self) -> bool:
        broken = self.duplicates or self.lost or self.orphans
        return not (broken or self.cap_exceeded or self.per_tenant_cap_exceeded)

    def problems(self) -> list[str]:
        """Each broken promise, in words."""
        found = []
        if self.cap_exceeded:
            found.append(f"{self.max_alive} bots alive at once with cap {self.cap}")
        if self.per_tenant_cap_exceeded:
            found.append(
                f"{self.max_alive_per_tenant} bots of one tenant alive at once "
                f"with per-tenant cap {self.per_tenant_cap}"
            )
        for name in ("duplicates", "lost", "orphans"):
            ids = getattr(self, name)
            if ids:
                found.append(f"{len(ids)} {name} (e.g. {', '.join(ids[:3])})")
        if self.crashes:
            found.append(f"{len(self.crashes)} scheduler crashes; first: {self.crashes[0]}")
        return found

    def summary(self) -> str:
        per_tenant = f"{self.max_alive_per_tenant}/{self.per_tenant_cap or '-'}"
        return (
            f"[{self.store}] jobs={self.jobs} processes={self.processes} kills={self.kills} "
            f"restarts={self.restarts} bots={self.bots} duplicates={len(self.duplicates)} "
            f"lost={len(self.lost)} orphans={len(self.orphans)} "
            f"max_alive={self.max_alive}/{self.cap} per_tenant={per_tenant} "
            f"failed_after_success={len(self.failed_after_success)} "
            f"alive_at_end={self.alive_at_end} vanished={self.vanished} statuses={self.statuses} "
            f"timed_out={self.timed_out} wall={self.wall_seconds:.1f}s dir={self.workdir}"
        )

    def report(self) -> str:
        """The summary, the problems and every job id list, for result.txt."""
        lines = [self.summary(), *self.problems(), f"failures: {self.failures}"]
        for name in ("duplicates", "lost", "orphans", "failed_after_success"):
            lines.append(f"{name}: {' '.join(getattr(self, name)) or '-'}")
        return "\n".join(lines) + "\n"


def parse_log(path: Path) -> list[BotRun]:
    """The bot runs in the log, keyed by (job id, pid), in order of their start."""
    runs: dict[tuple[str, int], BotRun] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) < 4 or parts[0] not in ("start", "end"):
                continue
            key = (parts[1], int(parts[2]))
            moment = float(parts[3])
            if parts[0] == "start":
                runs[key] = BotRun(parts[1], key[1], moment)
            elif key in runs:
                runs[key].end = moment
                runs[key].terminated = parts[4:5] == ["term"]
    return sorted(runs.values(), key=lambda run: run.start)


def settle_unended(runs: Iterable[BotRun], bot_path: Path, runs_dir: Path) -> list[BotRun]:
    """Bots with no `end` line: still alive (flagged and SIGKILLed, with their group), or
    killed without one (their end is the run's exit file's mtime when there is one)."""
    alive = []
    for run in runs:
        if run.end is not None:
            continue
        if is_bot_alive(run.pid, bot_path, run.job_id):
            run.alive_at_end = True
            alive.append(run)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(os.getpgid(run.pid), signal.SIGKILL)
        else:
            run.terminated = True  # killed before it could write its end
            with contextlib.suppress(OSError):
                run.end = (runs_dir / run.job_id / "exit").stat().st_mtime
    return alive


def is_bot_alive(pid: int, bot_path: Path, job_id: str) -> bool:
    """Whether `pid` is a live (not zombie) stress bot of `job_id`."""
    proc = Path(f"/proc/{pid}")
    try:
        state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
        cmdline = (proc / "cmdline").read_bytes()
        environ = (proc / "environ").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    mine = os.fsencode(str(bot_path)) in cmdline and f"JOB_ID={job_id}".encode() in environ
    return mine and state not in ("Z", "X")


def max_alive(runs: Iterable[BotRun], end_of_run: float) -> int:
    """The most bots alive at one moment (an end before a start at the same moment)."""
    events = []
    for run in runs:
        events.append((run.start, 1))
        events.append((run.end if run.end is not None else end_of_run, -1))
    alive = peak = 0
    for _, step in sorted(events):
        alive += step
        peak = max(peak, alive)
    return peak


def max_alive_per_tenant(
    runs: Iterable[BotRun], tenants: Mapping[str, str], end_of_run: float
) -> int:
    by_tenant: dict[str, list[BotRun]] = defaultdict(list)
    for run in runs:
        by_tenant[tenants.get(run.job_id, "?")].append(run)
    return max((max_alive(group, end_of_run) for group in by_tenant.values()), default=0)


def orphans(runs: Iterable[BotRun], jobs: Mapping[str, JobView], tolerance: float) -> list[str]:
    """Jobs with a bot alive (more than `tolerance` seconds) after the job was final."""
    found = set()
    for run in runs:
        job = jobs.get(run.job_id)
        if job is not None and job.final and _outlived(run, job, tolerance):
            found.add(run.job_id)
    return sorted(found)


def _outlived(run: BotRun, job: JobView, tolerance: float) -> bool:
    if run.alive_at_end or run.end is None:
        return True
    return job.completed_at is not None and run.end > job.completed_at + tolerance


def failed_after_success(runs: Iterable[BotRun], jobs: Mapping[str, JobView]) -> list[str]:
    """Failed jobs whose every bot ran to its end, unstopped: the bot succeeded."""
    clean: dict[str, bool] = {}
    for run in runs:
        ended = run.end is not None and not run.terminated and not run.alive_at_end
        clean[run.job_id] = clean.get(run.job_id, True) and ended
    return sorted(id for id, job in jobs.items() if job.status == "failed" and clean.get(id))


def duplicates(runs: Iterable[BotRun]) -> list[str]:
    starts = Counter(run.job_id for run in runs)
    return sorted(job_id for job_id, count in starts.items() if count > 1)


def epoch(stamp: str | None) -> float | None:
    """An ISO 8601 time from the API as epoch seconds."""
    return datetime.fromisoformat(stamp).timestamp() if stamp else None


def close_vanished(runs: Iterable[BotRun], jobs: Mapping[str, JobView], end_of_run: float) -> None:
    """A bot that died with no trace of when: dead by the time its job was final (the scheduler
    saw it gone), else counted alive until `end_of_run`."""
    for run in runs:
        if run.end is None and not run.alive_at_end:
            job = jobs.get(run.job_id)
            final_at = job.completed_at if job is not None and job.final else None
            run.end, run.vanished = final_at or end_of_run, True


def fill(
    result: Result,
    runs: list[BotRun],
    jobs: Mapping[str, JobView],
    tolerance: float,
    end_of_run: float,
) -> None:
    """Everything the bot log and the final job list say, into `result`; a bot still alive at
    the end counts as alive until `end_of_run`."""
    close_vanished(runs, jobs, end_of_run)
    tenants = {job.id: job.tenant for job in jobs.values()}
    started = {run.job_id for run in runs}
    result.bots = len(runs)
    result.max_alive = max_alive(runs, end_of_run)
    result.max_alive_per_tenant = max_alive_per_tenant(runs, tenants, end_of_run)
    result.duplicates = duplicates(runs)
    result.not_final = sorted(job.id for job in jobs.values() if not job.final)
    result.completed_without_bot = sorted(
        job.id for job in jobs.values() if job.status == "completed" and job.id not in started
    )
    result.orphans = orphans(runs, jobs, tolerance)
    result.failed_after_success = failed_after_success(runs, jobs)
    result.alive_at_end = sum(run.alive_at_end for run in runs)
    result.vanished = sum(run.vanished for run in runs)
    result.unknown_bots = sum(run.job_id not in jobs for run in runs)
    result.statuses = dict(Counter(job.status for job in jobs.values()))
    result.failures = dict(
        Counter(job.reason or "?" for job in jobs.values() if job.status == "failed")
    )
