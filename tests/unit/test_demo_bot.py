"""The demo bot, run for real as `python -m core.demo_bot`."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

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


# -- status reports, as the meet-teams bot makes them ----------------------------------------

CODES = ["joining_call", "in_waiting_room", "in_call_not_recording", "in_call_recording"]
CODES += ["call_ended"]


class Reports:
    """A local HTTP server that keeps every report POSTed to it and answers `answer`."""

    def __init__(self, answer: int = 200) -> None:
        self.seen: list[tuple[dict[str, str], Any]] = []
        reports = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {name.lower(): value for name, value in self.headers.items()}
                reports.seen.append((headers, json.loads(body)))
                self.send_response(answer)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/scheduler/bot-status"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Reports:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def codes(self) -> list[str]:
        return [body["data"]["status"]["code"] for _, body in self.seen]


def reporting(url: str, **extra: Any) -> str:
    return config(bot_id="job-7", bots_api_key="secret-token", bots_webhook_url=url, **extra)


def test_reports_each_status_as_the_real_bot_does() -> None:
    with Reports() as reports:
        done = run_bot(reporting(reports.url))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert reports.codes() == CODES
    for headers, body in reports.seen:
        assert headers["x-spoke-api-key"] == "secret-token"
        assert headers["content-type"] == "application/json"
        assert body["event"] == "bot.status_change"
        assert body["data"]["bot_id"] == "job-7"
        created_at = body["data"]["status"]["created_at"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", created_at)
        assert abs(datetime.fromisoformat(created_at) - datetime.now(UTC)) < timedelta(minutes=1)
    assert "secret-token" not in done.stdout


def test_statuses_are_printed_in_order_around_the_recording() -> None:
    done = run_bot(config())
    lines = done.stdout.splitlines()
    said = [line.removeprefix("demo bot: status ") for line in lines if " status " in line]
    assert said == CODES
    assert lines.index("demo bot: status in_call_recording") < lines.index(
        "demo bot: pretending to record (1/3)"
    )
    assert lines.index("demo bot: status call_ended") == len(lines) - 2  # then "done"


@pytest.mark.parametrize("missing", ["bot_id", "bots_api_key", "bots_webhook_url"])
def test_reports_nothing_without_all_three_keys(missing: str) -> None:
    with Reports() as reports:
        settings = json.loads(reporting(reports.url))
        del settings[missing]
        done = run_bot(json.dumps(settings))
    assert done.returncode == 0, done.stderr
    assert reports.seen == [] and done.stderr == ""


def test_a_refused_report_is_a_line_on_stderr_and_the_bot_goes_on() -> None:
    with Reports(answer=401) as reports:
        done = run_bot(reporting(reports.url, demo_exit_code=5))
    assert done.returncode == 5
    assert reports.codes() == CODES
    assert done.stderr.count("demo bot: cannot report ") == len(CODES)
    assert "HTTP Error 401" in done.stderr
    assert "pretending to record (3/3)" in done.stdout


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/x", "ftp://example.com/x", "nope"])
def test_an_unreachable_or_bad_url_does_not_stop_the_bot(url: str) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = run_bot(reporting(url.format(port=port)))
    assert done.returncode == 0
    assert done.stderr.count("demo bot: cannot report ") == len(CODES)
    assert "secret-token" not in done.stderr
    assert "done, exit code 0" in done.stdout


def test_sigterm_reports_call_ended_before_it_exits() -> None:
    with Reports() as reports:
        bot = subprocess.Popen(
            [sys.executable, "-m", "core.demo_bot"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=bot_env(DEMO_BOT_SECONDS="60"),
            cwd=ROOT,
        )
        assert bot.stdin is not None and bot.stdout is not None
        bot.stdin.write(reporting(reports.url))
        bot.stdin.close()
        try:
            while len(reports.seen) < len(CODES) - 1:  # up to in_call_recording
                assert bot.poll() is None
                time.sleep(0.01)
            bot.send_signal(signal.SIGTERM)
            assert bot.wait(timeout=30) == 143
        finally:
            bot.kill()
            bot.stdout.close()
    assert reports.codes() == CODES
