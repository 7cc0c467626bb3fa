"""A PLATFORM list or a per-backend cap that cannot work stops `botsched serve` and `botsched
drain` with one line, exit code 2, no traceback.

REAL parts: the `botsched` entry point of this virtualenv, run as a child process in an empty
directory with only the variables each case sets (tests/stress/procs.py base_env).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.processes import free_port
from tests.stress.procs import ROOT, base_env, botsched

CASES = [
    (
        {"PLATFORM": "podman,docker"},
        "botsched: PLATFORM='podman,docker' names one backend twice ('podman' and 'docker')",
    ),
    (
        {"PLATFORM": "process,process"},
        "botsched: PLATFORM='process,process' names one backend twice",
    ),
    (
        {"PLATFORM": "process,nope"},
        "botsched: PLATFORM='process,nope': 'nope' is not a backend; known: ",
    ),
    (
        {"PLATFORM": "process,podman", "SCHEDULER_MAX_CONCURRENT_JOBS_DOCKER": "2"},
        "botsched: SCHEDULER_MAX_CONCURRENT_JOBS_DOCKER is set but PLATFORM='process,podman' "
        "lists no such backend",
    ),
    (
        {"PLATFORM": "process,podman", "SCHEDULER_MAX_CONCURRENT_JOBS_PODMAN": "-2"},
        "botsched: SCHEDULER_MAX_CONCURRENT_JOBS_PODMAN: an integer >= 0 is needed, not '-2'",
    ),
]


@pytest.mark.parametrize("command", ["serve", "drain"])
@pytest.mark.parametrize(("env", "line"), CASES)
def test_botsched_exits_with_the_one_line(
    tmp_path: Path, command: str, env: dict[str, str], line: str
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "scheduler.db").touch()  # so that `drain` gets as far as the backend
    full = {**base_env(), **env, "PORT": str(free_port()), "SCHEDULER_DATA_DIR": "data"}
    args = [*botsched(ROOT), command] + (["--once"] if command == "drain" else [])
    done = subprocess.run(
        args, cwd=tmp_path, env=full, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(line) and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
