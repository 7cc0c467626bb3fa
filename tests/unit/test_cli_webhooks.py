"""`botsched events` and `botsched webhooks ...` (core/cli_webhooks.py): parsing, and what they
send and print, against a fake server.

A session against the real app: tests/unit/test_cli_webhooks_app.py; against a real server
process: tests/e2e/test_bot_status.py.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from core import cli, cli_webhooks

ENV_VARS = ("BOTSCHED_URL", "BOTSCHED_API_KEY", "PORT")
HOOK: dict[str, Any] = {
    "id": "wh_1",
    "url": "https://hooks.example.com/in",
    "events": [],
    "description": None,
    "disabled": False,
    "secrets": 1,
}

Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def use_http(monkeypatch: pytest.MonkeyPatch, http: httpx.Client) -> None:
    """The CLI's client talks through `http` (its base URL and transport)."""

    def client(args: Any) -> cli.Client:
        made = cli.Client(args.url, args.api_key)
        made.http = http
        return made

    monkeypatch.setattr(cli, "client", client)


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> Callable[[Handler], list[httpx.Request]]:
    """Point the CLI at a handler; returns the list of requests it got."""

    def install(handler: Handler) -> list[httpx.Request]:
        seen: list[httpx.Request] = []

        def record(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return handler(request)

        http = httpx.Client(base_url="http://sched.test", transport=httpx.MockTransport(record))
        use_http(monkeypatch, http)
        return seen

    return install


FakeServer = Callable[[Handler], list[httpx.Request]]


def answer(**body: Any) -> Handler:
    return lambda request: httpx.Response(200, json={"success": True, **body})


# -- parsing -------------------------------------------------------------------------------


def test_events_and_webhooks_commands_parse() -> None:
    parse = cli.parser().parse_args
    args = parse(["events", "job-1"])
    assert (args.job_id, args.run) == ("job-1", cli_webhooks.cmd_events)
    args = parse(["webhooks", "create", "https://h.example/x", "--event", "job.completed"])
    assert (args.endpoint_url, args.events, args.description) == (
        "https://h.example/x",
        ["job.completed"],
        None,
    )
    assert args.url == "http://127.0.0.1:8080"  # the scheduler's, not the endpoint's
    args = parse(["webhooks", "create", "https://h", "--event", "a", "--event", "b"])
    assert args.events == ["a", "b"]
    assert parse(["webhooks", "create", "https://h"]).events is None
    for action in ("get", "delete", "enable", "disable", "rotate", "deliveries"):
        assert parse(["webhooks", action, "wh_9"]).webhook_id == "wh_9"
    assert parse(["webhooks", "enable", "wh_9"]).enabled is True
    assert parse(["webhooks", "disable", "wh_9"]).enabled is False
    args = parse(["webhooks", "deliveries", "wh_9", "--limit", "5"])
    assert (args.limit, args.cursor) == (5, None)
    args = parse(["webhooks", "replay", "wh_9", "evt_j_000001"])
    assert (args.webhook_id, args.event_id) == ("wh_9", "evt_j_000001")
    assert parse(["webhooks", "list"]).run is cli_webhooks.cmd_list
    assert parse(["webhooks", "job-secret"]).run is cli_webhooks.cmd_job_secret


@pytest.mark.parametrize(
    "argv",
    [
        ["events"],
        ["webhooks"],
        ["webhooks", "nope"],
        ["webhooks", "create"],
        ["webhooks", "get"],
        ["webhooks", "replay", "wh_1"],
        ["webhooks", "deliveries", "wh_1", "--limit", "many"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert "usage: botsched" in capsys.readouterr().err


# -- what they send and print --------------------------------------------------------------


def event(seq: int, kind: str, status: str, bot: str | None = None, **more: Any) -> Any:
    data = {"id": "j1", "status": status, "botStatus": bot, **more}
    stamp = f"2030-01-01T10:00:0{seq}.000Z"
    return {"id": f"evt_j1_{seq:06d}", "type": kind, "timestamp": stamp, "data": data}


def test_events_prints_the_timeline(
    fake_server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    timeline = [
        event(1, "job.queued", "queued"),
        event(2, "bot.joining_call", "running", "joining_call"),
        event(3, "job.failed", "failed", "call_ended", reason="exit code 3"),
    ]
    seen = fake_server(answer(jobId="j1", events=timeline))
    cli.main(["events", "j1"])
    assert seen[0].url.path == "/api/scheduler/jobs/j1/events"
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TIME", "EVENT", "STATUS", "BOT"]
    assert lines[1].split() == ["2030-01-01T10:00:01.000Z", "job.queued", "queued", "-"]
    assert lines[2].split()[1:] == ["bot.joining_call", "running", "joining_call"]
    assert lines[3].split()[1:] == ["job.failed", "failed", "(exit", "code", "3)", "call_ended"]
    assert len({line.index(" job.") if " job." in line else 25 for line in lines[1:]}) == 1


def test_create_sends_the_spec_and_shows_the_secret_once(
    fake_server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    created = {"success": True, "webhook": HOOK, "secret": "whsec_abc"}
    seen = fake_server(lambda request: httpx.Response(201, json=created))
    url: str = HOOK["url"]
    argv = ["webhooks", "create", url, "--event", "job.completed", "--event", "job.failed"]
    cli.main([*argv, "--description", "ops"])
    (request,) = seen
    assert (request.method, request.url.path) == ("POST", "/api/scheduler/webhooks")
    assert json.loads(request.content) == {
        "url": HOOK["url"],
        "events": ["job.completed", "job.failed"],
        "description": "ops",
    }
    out, err = capsys.readouterr()
    assert json.loads(out) == {"webhook": HOOK, "secret": "whsec_abc"}
    assert "not shown again" in err and "botsched webhooks rotate wh_1" in err


def test_create_without_events_sends_only_the_url(fake_server: FakeServer) -> None:
    created = {"success": True, "webhook": HOOK, "secret": "whsec_abc"}
    seen = fake_server(lambda request: httpx.Response(201, json=created))
    cli.main(["webhooks", "create", str(HOOK["url"])])
    assert json.loads(seen[0].content) == {"url": HOOK["url"]}


@pytest.mark.parametrize(
    ("argv", "method", "path", "body"),
    [
        (["get", "wh_1"], "GET", "/wh_1", None),
        (["enable", "wh_1"], "PATCH", "/wh_1", {"enabled": True}),
        (["disable", "wh_1"], "PATCH", "/wh_1", {"enabled": False}),
    ],
)
def test_one_endpoint_commands(
    fake_server: FakeServer,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    method: str,
    path: str,
    body: Any,
) -> None:
    seen = fake_server(answer(webhook=HOOK))
    cli.main(["webhooks", *argv])
    (request,) = seen
    assert (request.method, request.url.path) == (method, "/api/scheduler/webhooks" + path)
    assert (json.loads(request.content) if request.content else None) == body
    assert json.loads(capsys.readouterr().out) == HOOK


def test_delete_rotate_job_secret_replay(
    fake_server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            return httpx.Response(200, json={"success": True})
        if request.url.path.endswith("/replay"):
            delivery = {"eventId": "evt_j1_000001", "state": "pending", "attempts": 0}
            return httpx.Response(202, json={"success": True, "delivery": delivery})
        return httpx.Response(200, json={"success": True, "webhook": HOOK, "secret": "whsec_n"})

    seen = fake_server(handler)
    cli.main(["webhooks", "delete", "wh_1"])
    assert capsys.readouterr().out == "deleted webhook wh_1\n"
    cli.main(["webhooks", "rotate", "wh_1"])
    out, err = capsys.readouterr()
    assert json.loads(out)["secret"] == "whsec_n" and "not shown again" in err
    cli.main(["webhooks", "job-secret"])
    assert json.loads(capsys.readouterr().out)["secret"] == "whsec_n"
    cli.main(["webhooks", "replay", "wh_1", "evt_j1_000001"])
    assert json.loads(capsys.readouterr().out)["state"] == "pending"
    assert [(r.method, r.url.path.removeprefix("/api/scheduler/webhooks")) for r in seen] == [
        ("DELETE", "/wh_1"),
        ("POST", "/wh_1/rotate"),
        ("POST", "/job-secret"),
        ("POST", "/wh_1/events/evt_j1_000001/replay"),
    ]


def test_deliveries_is_a_table_with_the_next_cursor(
    fake_server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    tries = [
        {
            "at": "2030-01-01T10:00:05.000Z",
            "type": "job.completed",
            "eventId": "evt_j1_000004",
            "attempt": 2,
            "status": 200,
            "latencyMs": 12,
            "error": None,
        },
        {
            "at": "2030-01-01T10:00:00.000Z",
            "type": "job.completed",
            "eventId": "evt_j1_000004",
            "attempt": 1,
            "status": None,
            "latencyMs": 10001,
            "error": "timed out",
        },
    ]
    seen = fake_server(answer(deliveries=tries, nextCursor="wh_1:00042"))
    cli.main(["webhooks", "deliveries", "wh_1", "--limit", "2", "--cursor", "wh_1:00040"])
    assert seen[0].url.path == "/api/scheduler/webhooks/wh_1/deliveries"
    assert dict(seen[0].url.params) == {"limit": "2", "cursor": "wh_1:00040"}
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "TIME                      EVENT          EVENT ID       ATTEMPT  STATUS  LATENCY MS  ERROR"
    )
    assert lines[1].split() == [*[str(v) for v in tries[0].values()][:-1], "-"]
    assert lines[2].split()[3:] == ["1", "-", "10001", "timed", "out"]
    assert lines[3] == "(more: --cursor wh_1:00042)"


def test_an_api_error_exits_1(fake_server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    body = {"success": False, "error": "not_found", "message": "webhook wh_9 not found"}
    fake_server(lambda request: httpx.Response(404, json=body))
    with pytest.raises(SystemExit) as exited:
        cli.main(["webhooks", "get", "wh_9"])
    assert exited.value.code == 1
    assert capsys.readouterr().err == "botsched: not_found: webhook wh_9 not found\n"


def test_no_server_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(SystemExit) as exited:
        cli.main(["--url", f"http://127.0.0.1:{port}", "webhooks", "list"])
    assert exited.value.code == 2
    assert "cannot reach the scheduler" in capsys.readouterr().err
