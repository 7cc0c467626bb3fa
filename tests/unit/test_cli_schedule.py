"""`botsched submit --wait` showing the queue, `botsched reschedule` and `botsched put-by-key`
(core/cli.py): what they send and print, against a fake server."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from core import cli
from tests.unit.cli_fake import Handler, fake_server

ENV_VARS = ("BOTSCHED_URL", "BOTSCHED_API_KEY", "PORT")
Install = Callable[[Handler], list[httpx.Request]]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("core.cli.time.sleep", lambda seconds: None)


def job(status: str, **fields: Any) -> dict[str, Any]:
    return {"id": "j1", "status": status, "reason": None, "startedAt": None, **fields}


def in_minutes(minutes: float) -> str:
    moment = datetime.now(UTC) + timedelta(minutes=minutes, seconds=30.5)
    return moment.isoformat().replace("+00:00", "Z")


def test_submit_wait_shows_the_place_in_the_queue_and_the_start(
    fake_server: Install, capsys: pytest.CaptureFixture[str]
) -> None:
    queued = job("queued", queuePosition=2, estimatedStartAt=in_minutes(20))
    looks = iter(
        [
            queued,
            queued,  # the same place: no new line
            job("queued", queuePosition=0, estimatedStartAt=in_minutes(3)),
            job("running", startedAt="2030-01-01T10:00:02Z"),
            job("running", startedAt="2030-01-01T10:00:02Z"),
            job("completed", startedAt="2030-01-01T10:00:02Z"),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            assert json.loads(request.content)["joinAt"] == "2030-01-01T10:00:00Z"
            return httpx.Response(201, json={"success": True, "job": queued})
        return httpx.Response(200, json={"success": True, "job": next(looks)})

    fake_server(handler)
    with pytest.raises(SystemExit) as exited:
        cli.main(
            [
                "submit",
                "--meeting-url",
                "https://m/x",
                "--join-at",
                "2030-01-01T10:00:00Z",
                "--wait",
            ]
        )
    assert exited.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "submitted job j1"
    start = queued["estimatedStartAt"]
    assert lines[1] == f"[   0s] queued (position 2, starts in ~20m 30s, at {start})"
    assert lines[2].startswith("[   0s] queued (position 0, starts in ~3m 30s, at ")  # moved up
    assert lines[3] == "[   0s] queued -> running"
    assert lines[4] == "bot started at 2030-01-01T10:00:02Z"
    assert lines[5] == "[   0s] queued -> running -> completed"
    assert lines[6] == "{"  # the final job, as JSON
    assert "\n".join(lines).count("bot started") == 1


def test_a_job_due_now_starts_now(fake_server: Install) -> None:
    assert cli.waiting(job("queued", queuePosition=0, estimatedStartAt=in_minutes(-2))) == (
        " (position 0, starts now)"
    )
    assert cli.waiting(job("queued", queuePosition=1000)) == " (position 1000+)"
    assert cli.waiting(job("running")) == ""


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (59.9, "59s"),
        (61, "1m 1s"),
        (3600 * 2 + 600, "2h 10m"),
        (86400 * 3 + 7200, "3d 2h"),
    ],
)
def test_spans_read_easily(seconds: float, text: str) -> None:
    assert cli.span(seconds) == text


def test_submit_may_refuse_a_job_that_cannot_start_now(
    fake_server: Install, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["onCapacity"] == "reject"
        error = {"success": False, "error": "at_capacity", "message": "at capacity: …"}
        return httpx.Response(429, json={**error, "retryAfter": 60}, headers={"Retry-After": "60"})

    fake_server(handler)
    with pytest.raises(SystemExit) as exited:
        cli.main(["submit", "--meeting-url", "https://m/x", "--on-capacity", "reject"])
    assert exited.value.code == 1
    assert "at_capacity: at capacity" in capsys.readouterr().err


def test_reschedule_patches_the_options_given(
    fake_server: Install, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = fake_server(
        lambda request: httpx.Response(200, json={"success": True, "job": job("queued")})
    )
    cli.main(["reschedule", "j1", "--join-at", "2030-01-01T10:30:00Z", "--priority", "9"])
    cli.main(["reschedule", "j1", "--deadline", "none", "--max-runtime", "600"])
    assert [(r.method, r.url.path) for r in seen] == [("PATCH", "/api/scheduler/jobs/j1")] * 2
    assert json.loads(seen[0].content) == {"joinAt": "2030-01-01T10:30:00Z", "priority": 9}
    assert json.loads(seen[1].content) == {"deadline": None, "maxRuntimeSeconds": 600}
    assert json.loads(capsys.readouterr().out.split("\n}\n")[0] + "\n}")["status"] == "queued"


def test_reschedule_without_a_change_is_a_usage_error(
    fake_server: Install, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = fake_server(lambda request: httpx.Response(500))
    with pytest.raises(SystemExit) as exited:
        cli.main(["reschedule", "j1"])
    assert exited.value.code == 2 and not seen
    assert "--join-at" in capsys.readouterr().err


def test_a_job_that_left_the_queue_is_an_error(
    fake_server: Install, capsys: pytest.CaptureFixture[str]
) -> None:
    error = {"success": False, "error": "not_queued", "message": "job j1 is running: …"}
    fake_server(lambda request: httpx.Response(409, json={**error, "state": "running"}))
    with pytest.raises(SystemExit) as exited:
        cli.main(["reschedule", "j1", "--priority", "1"])
    assert exited.value.code == 1
    assert "not_queued: job j1 is running" in capsys.readouterr().err


def test_put_by_key_sends_the_desired_job(
    fake_server: Install, capsys: pytest.CaptureFixture[str]
) -> None:
    answer = {"success": True, "job": job("queued"), "created": False, "warnings": ["w: x"]}
    seen = fake_server(lambda request: httpx.Response(200, json=answer))
    key = "abc@google.com:2030-01-01T10:00:00Z"
    cli.main(
        ["put-by-key", key, "--meeting-url", "https://m/x", "--join-at", "2030-01-01T10:00:00Z"]
    )
    cli.main(["put-by-key", key, "--cancel"])
    assert [r.method for r in seen] == ["PUT", "PUT"]
    assert (
        seen[0].url.raw_path.decode()
        == "/api/scheduler/jobs/by-key/abc%40google.com%3A2030-01-01T10%3A00%3A00Z"
    )
    assert json.loads(seen[0].content) == {
        "meetingUrl": "https://m/x",
        "priority": 5,
        "joinAt": "2030-01-01T10:00:00Z",
    }
    assert json.loads(seen[1].content) == {"cancelled": True}
    assert "botsched: warning: w: x" in capsys.readouterr().err


def test_put_by_key_needs_a_meeting_or_cancel(fake_server: Install) -> None:
    seen = fake_server(lambda request: httpx.Response(500))
    with pytest.raises(SystemExit) as exited:
        cli.main(["put-by-key", "k1"])
    assert exited.value.code == 2 and not seen


__all__ = ["fake_server"]  # the fixture, shared with tests/unit/test_cli.py
