"""The import layout every platform relies on, and what a cold start pays for."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import core
import handlers
from core.runtime import BACKENDS, STORES

ROOT = Path(__file__).resolve().parents[2]
HEAVY = (
    "grpc", "google", "azure", "kubernetes", "boto3", "botocore", "uvicorn", "mangum", "yaml",
    "psycopg", "psycopg_pool", "psycopg_binary",
)  # fmt: skip


def test_core_and_handlers_resolve_inside_the_repository() -> None:
    # Google Cloud Functions appends the source root to sys.path: an installed package named
    # `core` would otherwise shadow ours.
    assert Path(core.__file__).resolve().parent == ROOT / "core"
    assert Path(handlers.__file__).resolve().parent == ROOT / "handlers"


def test_console_script_and_extras_are_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "bot-scheduler"
    postgres = " ".join(project["optional-dependencies"]["postgres"])
    assert "psycopg[binary]" in postgres and "psycopg-pool" in postgres
    assert project["scripts"]["botsched"] == "core.cli:main"
    assert project["requires-python"] == ">=3.11"


def test_importing_the_api_loads_no_cloud_sdk() -> None:
    # Compared with what the bare interpreter already holds: a namespace package's .pth file
    # (google's, installed by functions-framework) may load empty `google` modules at startup.
    code = (
        "import sys, json; before = set(sys.modules); "
        "import core.api, core.runtime, core.preflight, core.cli, handlers.local, handlers.aws; "
        "new = set(sys.modules) - before; "
        f"print(json.dumps(sorted(m for m in new if m.split('.')[0] in {HEAVY!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []


# Every SDK a store or backend may use, and what comes with them.
SDKS = (
    "grpc", "google", "proto", "azure", "aiohttp", "msal", "yaml", "kubernetes", "mangum",
    "psycopg", "psycopg_pool", "psycopg_binary",
)  # fmt: skip
MODULES = sorted({module for module, _, _ in (*STORES.values(), *BACKENDS.values())})


@pytest.mark.parametrize("module", MODULES)
def test_importing_a_store_or_backend_loads_no_sdk(module: str) -> None:
    """Stores and backends load their SDK on first use, never at import (cold starts)."""
    code = (
        "import sys, json; before = set(sys.modules); "
        f"import {module}; "
        "new = set(sys.modules) - before; "
        f"print(json.dumps(sorted(m for m in new if m.split('.')[0] in {SDKS!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []


# What a platform's entry point may not load at import: a cloud SDK (its host loads its own
# framework: azure.functions, functions_framework and what comes with them), nor what the first
# request builds (the models, the settings, the scheduler, the routes, a store, a backend), so
# that a cold start's import costs about what importing Starlette does (`make bench` measures it).
ENTRY_POINTS = [
    "core.api",
    "handlers.local",
    "handlers.aws",
    "handlers.azure",
    "handlers.gcp",
    "handlers.cloudflare",
    "function_app",
    "main",
]
CLOUD_SDKS = (
    "grpc", "proto", "aiohttp", "msal", "boto3", "botocore", "mangum", "kubernetes",
    "psycopg", "psycopg_pool", "psycopg_binary",
)  # fmt: skip
CLOUD_SDK_PACKAGES = (
    "google.cloud.firestore",
    "google.cloud.run",
    "google.api_core",
    "google.auth",
)
FIRST_REQUEST = (
    "core.routes",
    "core.models",
    "core.config",
    "core.scheduler",
    "core.runtime",
    "core.stores",
    "core.backends",
    "core.openapi",
    "pydantic.main",
)


def _loaded_by(module: str) -> list[str]:
    code = (
        "import sys, json; before = set(sys.modules); "
        f"import {module}; "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded: list[str] = json.loads(out.stdout)
    return loaded


def _under(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == package or name.startswith(package + ".") for package in packages)


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_importing_an_entry_point_loads_no_sdk_and_nothing_of_the_first_request(
    module: str,
) -> None:
    loaded = _loaded_by(module)
    sdks = [
        name
        for name in loaded
        if name.split(".")[0] in CLOUD_SDKS
        or _under(name, CLOUD_SDK_PACKAGES)
        or (name.startswith("azure.") and not _under(name, ("azure.functions",)))
    ]
    assert sdks == []
    assert [name for name in loaded if _under(name, FIRST_REQUEST)] == []
    assert [name for name in loaded if _under(name, ("core.console",))] == []


# The console (core/console/) is loaded by its own first request, never by the app or the API's.
CONSOLE_LOADS = """
import asyncio, json, sys
import httpx
from core.api import create_app
from core.config import Settings

settings = Settings.from_env({"SCHEDULER_STORE": "memory", "SCHEDULER_DATA_DIR": sys.argv[1]})
app = create_app(settings)

async def statuses(*paths):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return [(await client.get(path)).status_code for path in paths]

api = asyncio.run(statuses("/", "/health", "/api/scheduler/stats", "/api/scheduler/jobs"))
before = sorted(name for name in sys.modules if name.startswith("core.console"))
console = asyncio.run(statuses("/console"))
print(json.dumps([api, before, console, "core.console.pages" in sys.modules]))
"""


def test_the_console_is_loaded_by_its_first_request_only(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", CONSOLE_LOADS, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == [[200, 200, 200, 200], [], [200], True]


def test_the_consoles_files_are_package_data() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = setuptools["package-data"]["core.console"]
    static = ROOT / "core" / "console"
    files = [path for path in (static / "static").iterdir() if path.is_file()]
    assert files and all(any(path.match(p) for p in patterns) for path in files)
