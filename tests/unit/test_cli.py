"""`botsched` without a server: argument parsing, settings, and what the client does with answers.

The commands against a real server are in tests/e2e/test_local_server.py.
"""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from core import cli
from core.config import Settings
from tests.unit.cli_fake import Handler, fake_server

ENV_VARS = (
    "BOTSCHED_URL",
    "BOTSCHED_API_KEY",
    "PORT",
    "HOST",
    "SCHEDULER_API_KEYS",
    "SCHEDULER_AUTH_DISABLED",
    "SCHEDULER_STORE",
    "SCHEDULER_DATA_DIR",
    "SCHEDULER_SQLITE_PATH",
    "PLATFORM",
    "BOT_COMMAND",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def closed_url() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- parsing -------------------------------------------------------------------------------


def test_url_defaults_to_loopback_on_port_8080() -> None:
    args = cli.parser().parse_args(["stats"])
    assert args.url == "http://127.0.0.1:8080"
    assert args.api_key is None
    assert args.run is cli.cmd_stats


def test_url_and_key_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "3000")
    assert cli.parser().parse_args(["stats"]).url == "http://127.0.0.1:3000"
    monkeypatch.setenv("BOTSCHED_URL", "https://sched.example.com")
    monkeypatch.setenv("BOTSCHED_API_KEY", "key1234567")
    args = cli.parser().parse_args(["stats"])
    assert (args.url, args.api_key) == ("https://sched.example.com", "key1234567")
    args = cli.parser().parse_args(["--url", "http://h:1", "--api-key", "other-key", "stats"])
    assert (args.url, args.api_key) == ("http://h:1", "other-key")


def test_submit_arguments() -> None:
    args = cli.parser().parse_args(["submit", "--meeting-url", "https://meet.google.com/x"])
    assert args.meeting_url == "https://meet.google.com/x"
    assert (args.priority, args.wait, args.timeout, args.bot_name) == (5, False, 3600.0, None)
    args = cli.parser().parse_args(
        [
            "submit",
            "--meeting-url",
            "https://m/x",
            "--priority",
            "9",
            "--bot-name",
            "B",
            "--join-at",
            "2030-01-01T10:00:00Z",
            "--deadline",
            "2030-01-01T11:00:00Z",
            "--max-runtime",
            "60",
            "--dedup-key",
            "d",
            "--idempotency-key",
            "i",
            "--wait",
            "--timeout",
            "12.5",
        ]
    )
    assert args.priority == 9 and args.max_runtime == 60 and args.wait
    assert (args.dedup_key, args.idempotency_key, args.timeout) == ("d", "i", 12.5)
    assert args.run is cli.cmd_submit


@pytest.mark.parametrize("command", ["status", "cancel", "logs"])
def test_job_commands_take_an_id(command: str) -> None:
    args = cli.parser().parse_args([command, "job-1"])
    assert args.job_id == "job-1"


def test_list_and_serve_and_drain_options() -> None:
    args = cli.parser().parse_args(["list", "--status", "running", "--limit", "5"])
    assert (args.status, args.limit, args.run) == ("running", 5, cli.cmd_list)
    args = cli.parser().parse_args(["serve", "--host", "0.0.0.0", "--port", "9000"])
    assert (args.host, args.port, args.run) == ("0.0.0.0", 9000, cli.cmd_serve)
    assert cli.parser().parse_args(["drain", "--once"]).once


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nope"],
        ["submit"],
        ["submit", "--meeting-url", "u", "--priority", "high"],
        ["status"],
        ["list", "--limit", "x"],
        ["serve", "--port", "http"],
    ],
    ids=["no-command", "unknown", "no-url", "bad-priority", "no-id", "bad-limit", "bad-port"],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert "usage: botsched" in capsys.readouterr().err


# -- settings ------------------------------------------------------------------------------


def test_settings_with_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "3000")
    monkeypatch.setenv("SCHEDULER_MAX_CONCURRENT_JOBS", "4")
    settings = cli.settings_with({})
    assert (settings.port, settings.max_concurrent_jobs) == (3000, 4)
    settings = cli.settings_with({"PORT": "9999", "HOST": "0.0.0.0"})
    assert (settings.port, settings.host, settings.max_concurrent_jobs) == (9999, "0.0.0.0", 4)
    assert isinstance(settings, Settings)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"PORT": "0"}, "PORT"),
        ({"SCHEDULER_POLLING_INTERVAL": "soon"}, "POLLING"),
        ({"SCHEDULER_API_KEYS": "short:t"}, "8 characters"),
    ],
)
def test_bad_settings_exit_2_with_the_variable(
    overrides: dict[str, str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.settings_with(overrides)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("botsched: ") and needle in err
    assert "Traceback" not in err


def test_serve_refuses_an_exposed_host_without_keys(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "--host", "0.0.0.0", "--port", "9"])
    assert exited.value.code == 2
    assert "SCHEDULER_API_KEYS" in capsys.readouterr().err


def test_drain_once_prints_a_report(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SCHEDULER_STORE", "memory")
    monkeypatch.setenv("SCHEDULER_DATA_DIR", str(tmp_path))
    cli.main(["drain", "--once"])
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"idle": True}
    assert captured.err == "botsched: draining the memory store (empty at start, lost on exit)\n"


def test_drain_names_the_sqlite_store_it_drains(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "scheduler.db"
    sqlite3.connect(database).close()
    monkeypatch.setenv("SCHEDULER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BOTSCHED_URL", "http://sched.example.com")
    cli.main(["drain", "--once"])
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"idle": True}
    assert captured.err == (
        f"botsched: draining the sqlite store {database} (directly: BOTSCHED_URL is not used)\n"
    )


def test_drain_refuses_a_sqlite_store_that_does_not_exist(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        cli.main(["drain", "--once"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("botsched: the SQLite store data/scheduler.db does not exist")
    assert "SCHEDULER_DATA_DIR" in err and err.count("\n") == 1
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("command", [["serve"], ["drain", "--once"]])
@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"PLATFORM": "nope"}, "PLATFORM='nope' is not available; choose one of: "),
        ({"SCHEDULER_STORE": "mongo"}, "SCHEDULER_STORE='mongo' is not available"),
    ],
)
def test_an_unknown_platform_or_store_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    env: dict[str, str],
    needle: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        cli.main(command)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("botsched: ") and needle in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_busy_port_says_which_and_how_to_change_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit) as exited:
            cli.main(["serve", "--port", str(port)])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"botsched: port {port} is in use on 127.0.0.1; set PORT=" in err
    assert "Traceback" not in err


def test_a_401_names_the_key_variable(
    fake_server: Callable[[Handler], list[httpx.Request]], capsys: pytest.CaptureFixture[str]
) -> None:
    body = {"success": False, "error": "unauthorized", "message": "missing API key"}
    fake_server(lambda request: httpx.Response(401, json=body))
    with pytest.raises(SystemExit) as exited:
        cli.main(["stats"])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("botsched: unauthorized: missing API key; set BOTSCHED_API_KEY")


# -- talking to the API --------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["stats"],
        ["list"],
        ["status", "j1"],
        ["cancel", "j1"],
        ["logs", "j1"],
        ["submit", "--meeting-url", "https://meet.google.com/x"],
    ],
    ids=lambda argv: argv[0],
)
def test_no_server_exits_2_with_a_clear_message(
    closed_url: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--url", closed_url, *argv])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"botsched: cannot reach the scheduler at {closed_url}: is `botsched serve` running?\n"
    )


def test_no_server_via_environment(
    closed_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BOTSCHED_URL", closed_url + "/")
    with pytest.raises(SystemExit) as exited:
        cli.main(["stats"])
    assert exited.value.code == 2
    assert f"cannot reach the scheduler at {closed_url}:" in capsys.readouterr().err


def test_submit_sends_the_spec_key_and_idempotency_key(
    fake_server: Callable[[Handler], list[httpx.Request]], capsys: pytest.CaptureFixture[str]
) -> None:
    job = {"id": "j1", "status": "queued", "meetingUrl": "https://m/x", "priority": 9}
    seen = fake_server(lambda request: httpx.Response(201, json={"success": True, "job": job}))
    cli.main(
        [
            "--api-key",
            "key1234567",
            "submit",
            "--meeting-url",
            "https://m/x",
            "--priority",
            "9",
            "--dedup-key",
            "d1",
            "--idempotency-key",
            "idem-1",
        ]
    )
    (request,) = seen
    assert (request.method, request.url.path) == ("POST", "/api/scheduler/jobs")
    assert json.loads(request.content) == {
        "meetingUrl": "https://m/x",
        "priority": 9,
        "dedupKey": "d1",
    }
    assert request.headers["x-api-key"] == "key1234567"
    assert request.headers["idempotency-key"] == "idem-1"
    assert json.loads(capsys.readouterr().out) == job


def test_api_errors_exit_1_with_code_and_message(
    fake_server: Callable[[Handler], list[httpx.Request]], capsys: pytest.CaptureFixture[str]
) -> None:
    body = {"success": False, "error": "not_found", "message": "job j9 not found"}
    fake_server(lambda request: httpx.Response(404, json=body))
    with pytest.raises(SystemExit) as exited:
        cli.main(["status", "j9"])
    assert exited.value.code == 1
    assert capsys.readouterr().err == "botsched: not_found: job j9 not found\n"


def test_a_reply_that_is_not_json_exits_1(
    fake_server: Callable[[Handler], list[httpx.Request]], capsys: pytest.CaptureFixture[str]
) -> None:
    fake_server(lambda request: httpx.Response(502, text="<html>Bad Gateway</html>"))
    with pytest.raises(SystemExit) as exited:
        cli.main(["stats"])
    assert exited.value.code == 1
    assert "HTTP 502, not JSON" in capsys.readouterr().err


def test_list_and_stats_print_readably(
    fake_server: Callable[[Handler], list[httpx.Request]], capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/scheduler/stats":
            stats = {"queueSize": 1, "runningJobs": 2, "maxConcurrentJobs": 10}
            return httpx.Response(200, json={"success": True, **stats, "stats": stats})
        assert request.url.params["status"] == "queued"
        job = {"id": "j1", "status": "queued", "priority": 5, "meetingUrl": "https://m/x"}
        return httpx.Response(200, json={"success": True, "jobs": [job], "nextCursor": "c2"})

    fake_server(handler)
    cli.main(["list", "--status", "queued"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["j1", "queued", "p5", "https://m/x"]
    assert out[1] == "(more: cursor c2)"
    cli.main(["stats"])
    assert json.loads(capsys.readouterr().out) == {
        "queueSize": 1,
        "runningJobs": 2,
        "maxConcurrentJobs": 10,
    }


def test_submit_wait_follows_the_states(
    fake_server: Callable[[Handler], list[httpx.Request]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("core.cli.time.sleep", lambda seconds: None)
    states = iter(["queued", "provisioning", "running", "running", "failed"])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(201, json={"job": {"id": "j1", "status": "queued"}})
        status = next(states)
        job = {
            "id": "j1",
            "status": status,
            "reason": "exit code 3" if status == "failed" else None,
        }
        return httpx.Response(200, json={"success": True, "job": job})

    fake_server(handler)
    with pytest.raises(SystemExit) as exited:
        cli.main(["submit", "--meeting-url", "https://m/x", "--wait"])
    assert exited.value.code == 1  # the job failed
    out = capsys.readouterr().out
    assert out.startswith("submitted job j1\n")
    assert "queued -> provisioning -> running -> failed (exit code 3)" in out
    assert out.count("-> running\n") == 1  # not a line per poll when not a terminal


def test_submit_sends_its_webhook_url(
    fake_server: Callable[[Handler], list[httpx.Request]], capsys: pytest.CaptureFixture[str]
) -> None:
    job = {"id": "j1", "status": "queued", "webhookUrl": "https://hooks.example.com/j"}
    seen = fake_server(lambda request: httpx.Response(201, json={"success": True, "job": job}))
    cli.main(["submit", "--meeting-url", "https://m/x", "--webhook-url", job["webhookUrl"]])
    assert json.loads(seen[0].content)["webhookUrl"] == "https://hooks.example.com/j"
    assert json.loads(capsys.readouterr().out) == job


__all__ = ["fake_server"]  # the fixture (tests/unit/cli_fake.py)
