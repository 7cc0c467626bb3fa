"""`botsched migrate`, and how `botsched drain` and `serve` start on the postgres store: the
settings, the start-up check, one line without the password when something is wrong, and no
psycopg imported before a store is opened. Real: the CLI in a subprocess, a private PostgreSQL
server (tests/postgres_env.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from core.config import SERVERLESS_DEFAULTS, Settings
from core.errors import ConfigError
from core.preflight import check_runtime, store_description
from core.runtime import build_store
from core.stores import postgres_schema
from tests.postgres_env import PostgresEnv
from tests.processes import ROOT, clean_env


def botsched(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`botsched ARGS` in a subprocess, with `env` and no DATABASE_URL of this process's."""
    inherited = {k: v for k, v in clean_env().items() if k != "DATABASE_URL"}
    environment = {**inherited, "SCHEDULER_DATA_DIR": str(tmp_path), **env}
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *args],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def assert_one_clean_line(stderr: str, secret: str) -> None:
    assert stderr.count("\n") == 1 and stderr.startswith("botsched: "), stderr
    assert "Traceback" not in stderr and secret not in stderr


def test_migrate_applies_once_and_check_says_where_it_stands(
    postgres: PostgresEnv, tmp_path: Path
) -> None:
    url = postgres.fresh_url()
    latest = postgres_schema.LATEST
    behind = botsched("migrate", "--check", tmp_path=tmp_path, DATABASE_URL=url)
    assert behind.returncode == 1
    assert f"schema version 0, this scheduler needs {latest}" in behind.stdout
    first = botsched("migrate", tmp_path=tmp_path, DATABASE_URL=url)
    assert first.returncode == 0, first.stderr
    assert f"migrated the schema from version 0 to {latest}" in first.stdout
    assert postgres.password not in first.stdout and ":***@" in first.stdout
    again = botsched("migrate", tmp_path=tmp_path, DATABASE_URL=url)
    assert again.returncode == 0 and "nothing to migrate" in again.stdout
    check = botsched("migrate", "--check", tmp_path=tmp_path, DATABASE_URL=url)
    assert check.returncode == 0 and "(up to date)" in check.stdout


def test_migrate_with_a_wrong_password_is_one_line(postgres: PostgresEnv, tmp_path: Path) -> None:
    wrong = "wrong-" + uuid.uuid4().hex
    done = botsched("migrate", tmp_path=tmp_path, DATABASE_URL=postgres.url(password=wrong))
    assert done.returncode == 2
    assert_one_clean_line(done.stderr, wrong)
    assert "password authentication failed" in done.stderr


def test_migrate_without_database_url(tmp_path: Path) -> None:
    done = botsched("migrate", tmp_path=tmp_path)
    assert done.returncode == 2 and "DATABASE_URL is not set" in done.stderr


def test_drain_on_an_unmigrated_database_says_to_migrate(
    postgres: PostgresEnv, tmp_path: Path
) -> None:
    url = postgres.fresh_url()
    env = {"SCHEDULER_STORE": "postgres", "DATABASE_URL": url}
    off = {**env, "SCHEDULER_POSTGRES_MIGRATE": "off"}
    refused = botsched("drain", "--once", tmp_path=tmp_path, **off)
    assert refused.returncode == 2
    assert_one_clean_line(refused.stderr, postgres.password)
    assert "run `botsched migrate`" in refused.stderr
    drained = botsched("drain", "--once", tmp_path=tmp_path, **env)  # auto: migrates at start
    assert drained.returncode == 0, drained.stderr
    assert json.loads(drained.stdout.splitlines()[-1]) == {"idle": True}
    assert "draining the postgres store postgresql://botsched_test:***@" in drained.stderr


def test_settings_and_start_up_check(postgres: PostgresEnv) -> None:
    settings = Settings.from_env({"SCHEDULER_STORE": "postgres"})
    assert settings.postgres_migrate == "auto" and settings.postgres_pool_size == 10
    with pytest.raises(ConfigError, match="needs DATABASE_URL"):
        build_store(settings)
    serverless = Settings.from_env({"SCHEDULER_STORE": "postgres"}, defaults=SERVERLESS_DEFAULTS)
    assert serverless.postgres_migrate == "off"  # no DDL on a serverless request
    wrong = "wrong-" + uuid.uuid4().hex
    settings = Settings.from_env(
        {"SCHEDULER_STORE": "postgres", "DATABASE_URL": postgres.url(password=wrong)}
    )
    assert wrong not in repr(settings)
    assert wrong not in store_description(settings)
    with pytest.raises(ConfigError) as raised:
        check_runtime(settings)
    assert wrong not in raised.value.message and "\n" not in raised.value.message


def test_nothing_imports_psycopg_before_a_store_opens() -> None:
    modules = "core.stores.postgres, core.stores.postgres_schema, core.cli_migrate, core.preflight"
    code = (
        "import sys, json; "
        f"import {modules}; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0].startswith('psycopg'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []
