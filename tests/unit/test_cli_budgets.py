"""`botsched budgets ...` (core/cli_budgets.py): parsing; what it sends and prints against a fake
server (httpx's MockTransport); and a session against the real app in-process (its routes, auth,
scheduler, budgets and ledger, on the memory store; the backend is a double and no bot starts),
with an admin key and a tenant's. The CLI as a subprocess against a real `botsched serve`:
tests/stress/test_budgets_topology.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from core import cli, cli_budgets
from core.api import create_app
from core.config import Settings
from core.runtime import Runtime
from core.scheduler import Scheduler
from core.stores.memory import MemoryStore
from tests.fakes import FakeBackend
from tests.unit.cli_fake import Handler, fake_server
from tests.unit.test_cli_webhooks_app import AppTransport

__all__ = ["fake_server"]  # a fixture, used by name

FakeServer = Callable[[Handler], list[httpx.Request]]
ADMIN_KEY = "admin-key-cli-0123"
TENANT_KEY = "acme-key-0123"
PERIOD = {
    "period": "2030-01-01",
    "limitMinutes": 600.0,
    "chargedMinutes": 12.5,
    "spentMinutes": 10.0,
    "heldMinutes": 2.5,
    "remainingMinutes": 587.5,
    "resetsAt": "2030-01-02T00:00:00Z",
}
USAGE: dict[str, Any] = {
    "tenant": "acme",
    "budget": {"day": 600.0, "month": None, "onExhausted": "finish"},
    "day": PERIOD,
    "month": {**PERIOD, "limitMinutes": None, "remainingMinutes": None, "period": "2030-01"},
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BOTSCHED_URL", "BOTSCHED_API_KEY", "PORT"):
        monkeypatch.delenv(name, raising=False)


def answer(status: int = 200, **body: Any) -> Handler:
    return lambda request: httpx.Response(status, json={"success": status < 400, **body})


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    cli.main(list(argv))
    out: str = capsys.readouterr().out
    return out


def fails(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """The exit code and stderr of a command that fails."""
    with pytest.raises(SystemExit) as exited:
        cli.main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return int(exited.value.code or 0), err


# -- parsing -------------------------------------------------------------------------------


def test_the_budget_commands_parse() -> None:
    parse = cli.parser().parse_args
    assert parse(["budgets"]).run is cli_budgets.cmd_list
    assert parse(["budgets", "list"]).run is cli_budgets.cmd_list
    args = parse(["budgets", "show", "acme"])
    assert (args.run, args.tenant) == (cli_budgets.cmd_show, "acme")
    args = parse(["budgets", "set", "acme", "--day", "600", "--on-exhausted", "finish"])
    assert (args.run, args.day, args.month, args.on_exhausted) == (
        cli_budgets.cmd_set,
        600.0,
        None,
        "finish",
    )
    assert parse(["budgets", "set", "acme", "--month", "0.5"]).on_exhausted == "stop"
    assert parse(["budgets", "delete", "acme"]).run is cli_budgets.cmd_delete


@pytest.mark.parametrize(
    "argv",
    [
        ["budgets", "show"],
        ["budgets", "nope"],
        ["budgets", "set"],
        ["budgets", "set", "acme", "--day", "lots"],
        ["budgets", "set", "acme", "--day", "-1"],
        ["budgets", "set", "acme", "--month", "inf"],
        ["budgets", "set", "acme", "--day", "1", "--on-exhausted", "never"],
        ["budgets", "delete"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, err = fails(capsys, *argv)
    assert code == 2 and "usage: botsched" in err


def test_set_without_a_limit_is_a_usage_error(
    fake_server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = fake_server(answer(usage=USAGE))
    code, err = fails(capsys, "budgets", "set", "acme")
    assert code == 2 and err.strip().startswith("botsched: give --day and/or --month")
    assert seen == []


# -- against a fake server -----------------------------------------------------------------


def test_list_prints_a_table(fake_server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    none = {**USAGE, "tenant": "globex", "budget": None}
    seen = fake_server(answer(budgets=[USAGE, none]))
    lines = run(capsys, "budgets").splitlines()
    assert (seen[0].method, seen[0].url.path) == ("GET", "/api/scheduler/budgets")
    assert lines[0].split() == [
        "TENANT",
        "DAY",
        "USED/LIMIT",
        "MONTH",
        "USED/LIMIT",
        "ON",
        "EXHAUSTED",
    ]
    assert lines[1].split() == ["acme", "12.5/600", "12.5/-", "finish"]
    assert lines[2].split() == ["globex", "12.5/600", "12.5/-", "-"]


def test_show_set_and_delete_send_what_they_say(
    fake_server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = fake_server(answer(usage=USAGE))
    assert json.loads(run(capsys, "budgets", "show", "acme corp")) == USAGE
    assert seen[0].url.raw_path == b"/api/scheduler/budgets/acme%20corp"
    out = run(
        capsys,
        "--api-key",
        ADMIN_KEY,
        "budgets",
        "set",
        "acme",
        "--day",
        "600",
        "--on-exhausted",
        "finish",
    )
    assert json.loads(out) == USAGE
    put = seen[1]
    assert (put.method, put.headers["x-api-key"]) == ("PUT", ADMIN_KEY)
    assert json.loads(put.content) == {"day": 600.0, "month": None, "onExhausted": "finish"}
    out = run(capsys, "budgets", "delete", "acme")
    assert seen[2].method == "DELETE"
    assert (
        out == "deleted the stored budget of acme; now: day 600 min (finish, from the settings)\n"
    )


def test_a_refusal_is_one_line_and_exit_1(
    fake_server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    message = "only an admin key (SCHEDULER_ADMIN_KEYS) changes budgets"
    fake_server(answer(403, error="forbidden", message=message))
    code, err = fails(capsys, "budgets", "set", "acme", "--day", "1")
    assert (code, err) == (1, f"botsched: forbidden: {message}\n")


def test_no_server_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = fails(capsys, "--url", "http://127.0.0.1:9", "budgets")
    assert code == 2 and "cannot reach the scheduler" in err


# -- against the real app ------------------------------------------------------------------


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[AppTransport]:
    env = {
        "SCHEDULER_STORE": "memory",
        "SCHEDULER_API_KEYS": f"{TENANT_KEY}:acme",
        "SCHEDULER_ADMIN_KEYS": ADMIN_KEY,
        "SCHEDULER_BUDGETS": json.dumps({"acme": {"day": 60}}),
    }
    settings = Settings.from_env(env)
    scheduler = Scheduler(MemoryStore(), FakeBackend(), settings)
    transport = AppTransport(create_app(settings, Runtime(settings, scheduler)))

    def client(args: Any) -> cli.Client:
        made = cli.Client(args.url, args.api_key)
        made.http = httpx.Client(
            base_url="http://sched.test", headers=made.http.headers, transport=transport
        )
        return made

    monkeypatch.setattr(cli, "client", client)
    yield transport
    transport.close()


def test_a_session_against_the_app(app: AppTransport, capsys: pytest.CaptureFixture[str]) -> None:
    admin, tenant = ("--api-key", ADMIN_KEY), ("--api-key", TENANT_KEY)
    assert run(capsys, *admin, "budgets").splitlines()[1].split() == ["acme", "0/60", "0/-", "stop"]
    code, err = fails(capsys, *tenant, "budgets", "set", "acme", "--day", "600")
    assert code == 1 and err.startswith("botsched: forbidden: only an admin key")
    shown = json.loads(run(capsys, *admin, "budgets", "set", "initech", "--month", "90"))
    assert shown["budget"] == {"day": None, "month": 90.0, "onExhausted": "stop"}
    listed = run(capsys, *admin, "budgets", "list").splitlines()
    assert [line.split()[0] for line in listed[1:]] == ["acme", "initech"]
    assert json.loads(run(capsys, *tenant, "budgets", "show", "acme"))["day"]["limitMinutes"] == 60
    code, err = fails(capsys, *tenant, "budgets", "show", "initech")
    assert code == 1 and err.startswith("botsched: not_found: ")
    out = run(capsys, *admin, "budgets", "delete", "initech")
    assert (
        out
        == "deleted the stored budget of initech; now: none (SCHEDULER_BUDGETS has none for it)\n"
    )
    assert [line.split()[0] for line in run(capsys, *admin, "budgets").splitlines()[1:]] == ["acme"]
    code, err = fails(capsys, *admin, "budgets", "set", "*", "--day", "1")
    assert code == 1 and err.startswith("botsched: validation_error: tenant: `*`")
