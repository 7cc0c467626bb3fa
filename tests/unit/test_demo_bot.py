"""The demo bot, run for real as `python -m core.demo_bot`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONFIG = {"meeting_url": "https://meet.example/abc-defg-hij", "bot_name": "Notes", "bot_uuid": "j1"}


def bot_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BOT_CONFIG", "JOB_ID")}
    env.update({"PYTHONPATH": str(ROOT), "DEMO_BOT_SECONDS": "0.1", **extra})
    return env


def run_bot(stdin: str | None, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core.demo_bot"],
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        env=bot_env(**extra),
        cwd=ROOT,
        timeout=30,
    )


def config(**extra: Any) -> str:
    return json.dumps({**CONFIG, **extra})


def test_labels_itself_and_prints_what_it_would_record() -> None:
    done = run_bot(config(), JOB_ID="job-42")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "demo bot (stand-in, records nothing)"
    assert "meeting_url: https://meet.example/abc-defg-hij" in lines
    assert "bot_name: Notes" in lines
    assert "JOB_ID: job-42" in lines
    assert "pretending to record (3/3)" in done.stdout


def test_reads_bot_config_when_stdin_is_empty() -> None:
    done = run_bot(None, BOT_CONFIG=config(meeting_url="https://meet.example/from-env"))
    assert done.returncode == 0, done.stderr
    assert "meeting_url: https://meet.example/from-env" in done.stdout
    assert "JOB_ID: j1" in done.stdout  # no JOB_ID variable: the config's bot_uuid


def test_stdin_wins_over_bot_config() -> None:
    done = run_bot(config(), BOT_CONFIG=config(meeting_url="https://meet.example/env"))
    assert "meeting_url: https://meet.example/abc-defg-hij" in done.stdout


def test_demo_exit_code_sets_the_exit_code() -> None:
    assert run_bot(config(demo_exit_code=4)).returncode == 4


def test_bad_json_exits_2_with_a_message() -> None:
    done = run_bot("{not json")
    assert done.returncode == 2
    assert "not valid JSON" in done.stderr


def test_no_config_at_all_exits_2() -> None:
    done = run_bot(None)
    assert done.returncode == 2
    assert "no bot config" in done.stderr


def test_sigterm_exits_143() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "core.demo_bot"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=bot_env(DEMO_BOT_SECONDS="60"),
        cwd=ROOT,
    ) as bot:
        assert bot.stdin is not None and bot.stdout is not None
        bot.stdin.write(config())
        bot.stdin.close()
        try:
            while "JOB_ID" not in bot.stdout.readline():  # it is past reading its config
                assert bot.poll() is None
            bot.send_signal(signal.SIGTERM)
            assert bot.wait(timeout=30) == 143
            assert "SIGTERM" in bot.stdout.read()
        finally:
            bot.kill()
