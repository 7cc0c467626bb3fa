"""`botsched serve --own-public-url` (what `make run` runs): the bots a local server runs report
their status to it, unless the user said otherwise (handlers/local.py `local_public_url`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from core import cli
from core.config import Settings
from handlers import local

ROOT = Path(__file__).resolve().parents[2]


def public_url(**env: str) -> str | None:
    return local.local_public_url(Settings.from_env(env)).public_url


def test_defaults_to_the_servers_own_loopback_address() -> None:
    assert public_url() == "http://127.0.0.1:8080"
    assert public_url(PORT="9001") == "http://127.0.0.1:9001"
    assert public_url(HOST="localhost", PORT="9001") == "http://127.0.0.1:9001"
    assert public_url(HOST="127.0.0.2") == "http://127.0.0.2:8080"
    assert public_url(HOST="::1", PORT="9001") == "http://[::1]:9001"


def test_a_url_the_user_set_is_kept() -> None:
    assert public_url(SCHEDULER_PUBLIC_URL="https://sched.example.com/") == (
        "https://sched.example.com"
    )
    assert public_url(SCHEDULER_PUBLIC_URL="http://10.0.0.5:9000", HOST="0.0.0.0") == (
        "http://10.0.0.5:9000"
    )


@pytest.mark.parametrize(
    "env",
    [
        {"HOST": "0.0.0.0", "SCHEDULER_API_KEYS": "key1234567:t"},
        {"HOST": "192.168.1.20", "SCHEDULER_API_KEYS": "key1234567:t"},
        {"PLATFORM": "podman"},  # a container's 127.0.0.1 is its own
    ],
    ids=["all-interfaces", "lan-address", "containers"],
)
def test_none_beyond_loopback_or_for_containers(env: dict[str, str]) -> None:
    assert public_url(**env) is None


def test_serve_passes_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HOST", "PORT", "SCHEDULER_PUBLIC_URL", "PLATFORM", "SCHEDULER_STORE"):
        monkeypatch.delenv(name, raising=False)
    calls: list[tuple[Settings, dict[str, Any]]] = []
    monkeypatch.setattr(local, "serve", lambda settings, **kw: calls.append((settings, kw)))
    cli.main(["serve", "--port", "9002", "--own-public-url"])
    cli.main(["serve"])
    assert [kw for _, kw in calls] == [{"own_public_url": True}, {"own_public_url": False}]
    assert calls[0][0].port == 9002
    args = cli.parser().parse_args(["serve"])
    assert isinstance(args, argparse.Namespace) and args.own_public_url is False


def test_make_run_serves_with_its_own_public_url() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nrun: setup\n", 1)[1].split("\n\n", 1)[0]
    assert recipe.strip() == "$(BIN)/botsched serve --own-public-url"
