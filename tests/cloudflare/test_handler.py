"""The Worker entry's CPython-testable parts: settings from bindings, the wrangler configs."""

from __future__ import annotations

import re
import tomllib
from types import SimpleNamespace

import pytest

from core.errors import ConfigError
from handlers import cloudflare
from handlers.cloudflare_runtime import WorkerRuntime
from tests import pyodide_env
from tests.cloudflare.toolchain import ROOT, SCHEDULER


def test_settings_come_from_string_bindings_with_cloudflare_defaults() -> None:
    env = SimpleNamespace(
        SCHEDULER_MAX_CONCURRENT_JOBS="4", MAX_JOBS="9", SCHEDULER_AUTH_DISABLED=True, DB=object()
    )
    settings = cloudflare.settings_from_bindings(env)
    assert (settings.store, settings.platform) == ("d1", "cloudflare")
    assert settings.max_concurrent_jobs == 4
    assert settings.auth_disabled is True


def test_bad_settings_raise_config_error() -> None:
    with pytest.raises(ConfigError):
        cloudflare.settings_from_bindings(SimpleNamespace(SCHEDULER_MAX_CONCURRENT_JOBS="zero"))


async def test_missing_binding_is_named() -> None:
    settings = cloudflare.settings_from_bindings(SimpleNamespace(SCHEDULER_AUTH_DISABLED="true"))
    runtime = WorkerRuntime(settings, SimpleNamespace())
    with pytest.raises(ConfigError, match="DB"):
        await runtime.scheduler()


def test_wrangler_toml_names_the_entry_bindings_and_cron() -> None:
    config = tomllib.loads((SCHEDULER / "wrangler.toml").read_text())
    assert config["main"] == "build/worker.py"
    assert "rules" not in config  # wrangler adds the Python module rule for a .py `main`
    assert "python_workers" in config["compatibility_flags"]
    assert config["triggers"]["crons"]
    assert [db["binding"] for db in config["d1_databases"]] == [cloudflare.D1_BINDING]
    bots = config["durable_objects"]["bindings"][0]
    assert bots["name"] == cloudflare.CONTAINERS_BINDING
    container = tomllib.loads((ROOT / "infra/cloudflare/wrangler.toml").read_text())
    assert container["name"] == bots["script_name"]
    assert container["containers"][0]["class_name"] == bots["class_name"]


def test_the_worker_project_lists_what_the_pyodide_test_runs_it_on() -> None:
    worker = tomllib.loads((SCHEDULER / "pyproject.toml").read_text())["project"]["dependencies"]
    scheduler = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~ \[]", requirement)[0] for requirement in worker}
    assert names == {"starlette", "pydantic", "httpx", "standardwebhooks"}
    assert set(worker) <= set(scheduler)  # the same floors as the scheduler's own
    # tests/cloudflare/test_worker_pyodide.py runs on these; the two the webhook deliveries use
    # are imported on a delivery's first attempt only, which needs a network the test has not
    delivering = {"httpx", "standardwebhooks"}
    assert names - delivering <= set(pyodide_env.PURE)
