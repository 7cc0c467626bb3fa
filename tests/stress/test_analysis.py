"""The stress harness's arithmetic on hand-written bot logs: when a stress test fails, the
failure must be the scheduler's, not a miscount here."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.stress.analysis import (
    BotRun,
    JobView,
    Result,
    duplicates,
    failed_after_success,
    fill,
    max_alive,
    max_alive_per_tenant,
    orphans,
    parse_log,
)
from tests.stress.procs import BOT

pytestmark = pytest.mark.stress

LOG = """\
start a 10 100.0
start b 11 100.5
end a 10 101.0
start c 12 101.0
end b 11 103.5 term
start a 13 103.0
garbage line
"""


def runs_of(tmp_path: Path, text: str = LOG) -> list[BotRun]:
    log = tmp_path / "bots.log"
    log.write_text(text)
    return parse_log(log)


def test_the_log_becomes_one_run_per_bot_process(tmp_path: Path) -> None:
    runs = runs_of(tmp_path)
    assert [(run.job_id, run.pid, run.start, run.end) for run in runs] == [
        ("a", 10, 100.0, 101.0),
        ("b", 11, 100.5, 103.5),
        ("c", 12, 101.0, None),
        ("a", 13, 103.0, None),
    ]
    assert [run.terminated for run in runs] == [False, True, False, False]


def test_bots_alive_at_once_counts_unended_bots_until_the_end(tmp_path: Path) -> None:
    runs = runs_of(tmp_path)
    assert max_alive(runs, end_of_run=200.0) == 3  # b, c and the second a at 103
    assert max_alive(runs[:3], end_of_run=200.0) == 2  # an end and a start at 101: 2, not 3
    tenants = {"a": "t1", "b": "t2", "c": "t1"}
    assert max_alive_per_tenant(runs, tenants, end_of_run=200.0) == 2


def test_duplicates_and_orphans(tmp_path: Path) -> None:
    runs = runs_of(tmp_path)
    runs[1].end = 105.0
    jobs = {
        "a": JobView("a", "t1", "completed", 101.5),  # its second bot never ended: orphan
        "b": JobView("b", "t2", "failed", 102.0),  # ended 3 s after its job: orphan
        "c": JobView("c", "t1", "running", None),  # not final: lost, not orphan
    }
    assert duplicates(runs) == ["a"]
    assert orphans(runs, jobs, tolerance=2.5) == ["a", "b"]
    assert orphans(runs, jobs, tolerance=3.5) == ["a"]


def test_a_failed_job_whose_bot_ran_to_its_end_is_reported(tmp_path: Path) -> None:
    runs = runs_of(tmp_path, "start a 1 1.0\nend a 1 2.0\nstart b 2 1.0\nend b 2 2.0 term\n")
    jobs = {
        "a": JobView("a", "t1", "failed", 2.1, "process vanished without an exit code"),
        "b": JobView("b", "t1", "failed", 2.1, "exceeded maxRuntimeSeconds=1"),
    }
    assert failed_after_success(runs, jobs) == ["a"]


def test_fill_reports_lost_jobs_and_broken_caps(tmp_path: Path) -> None:
    runs = runs_of(tmp_path)
    jobs = {
        "a": JobView("a", "t1", "completed", 110.0),
        "b": JobView("b", "t1", "completed", 110.0),
        "c": JobView("c", "t1", "queued", None),
        "d": JobView("d", "t1", "completed", 110.0),  # completed without a bot
    }
    runs[2].alive_at_end = runs[3].alive_at_end = True  # c and the second a never ended
    result = Result("sqlite", jobs=4, processes=2, cap=2, per_tenant_cap=2)
    fill(result, runs, jobs, tolerance=1.0, end_of_run=120.0)
    assert result.lost == ["c", "d"]
    assert (result.duplicates, result.orphans) == (["a"], ["a"])
    assert (result.max_alive, result.max_alive_per_tenant) == (3, 3)
    assert result.cap_exceeded and result.per_tenant_cap_exceeded and not result.ok
    assert "3 bots alive at once with cap 2" in result.problems()


def test_the_bot_logs_its_start_and_end(tmp_path: Path) -> None:
    log = tmp_path / "bots.log"
    env = {**os.environ, "STRESS_BOT_LOG": str(log), "STRESS_BOT_SECONDS": "0.01-0.02"}
    done = subprocess.run([sys.executable, str(BOT)], env={**env, "JOB_ID": "j1"}, timeout=20)
    assert done.returncode == 0
    [run] = parse_log(log)
    assert run.job_id == "j1" and run.end is not None and not run.terminated
    assert 0.01 <= run.end - run.start < 5


def test_the_bot_logs_a_sigterm_and_exits_143(tmp_path: Path) -> None:
    log = tmp_path / "bots.log"
    env = {**os.environ, "STRESS_BOT_LOG": str(log), "STRESS_BOT_SECONDS": "30", "JOB_ID": "j2"}
    bot = subprocess.Popen([sys.executable, str(BOT)], env=env)
    for _ in range(200):
        if log.exists() and log.read_text():
            break
        time.sleep(0.05)
    bot.terminate()
    assert bot.wait(timeout=20) == 143
    [run] = parse_log(log)
    assert run.terminated and run.end is not None


def test_a_bot_that_vanished_without_a_trace_ends_with_its_job(tmp_path: Path) -> None:
    runs = runs_of(tmp_path, "start a 1 1.0\nstart b 2 1.0\nend b 2 2.0\nstart c 3 3.0\n")
    jobs = {
        "a": JobView("a", "t1", "completed", 2.5),
        "b": JobView("b", "t1", "completed", 2.1),
        "c": JobView("c", "t1", "completed", 4.0),
    }
    result = Result("sqlite", jobs=3, processes=1, cap=2, per_tenant_cap=0)
    fill(result, runs, jobs, tolerance=1.0, end_of_run=100.0)
    assert (runs[0].end, runs[0].vanished) == (2.5, True)
    assert (result.vanished, result.max_alive, result.orphans) == (2, 2, [])
