"""The import layout every platform relies on, and what a cold start pays for."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import core
import handlers

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("grpc", "google", "azure", "kubernetes", "boto3", "botocore", "uvicorn", "mangum", "yaml")


def test_core_and_handlers_resolve_inside_the_repository() -> None:
    # Google Cloud Functions appends the source root to sys.path: an installed package named
    # `core` would otherwise shadow ours.
    assert Path(core.__file__).resolve().parent == ROOT / "core"
    assert Path(handlers.__file__).resolve().parent == ROOT / "handlers"


def test_console_script_and_extras_are_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "bot-scheduler"
    assert project["scripts"]["botsched"] == "core.cli:main"
    assert project["requires-python"] == ">=3.11"


def test_importing_the_api_loads_no_cloud_sdk() -> None:
    # Compared with what the bare interpreter already holds: a namespace package's .pth file
    # (google's, installed by functions-framework) may load empty `google` modules at startup.
    code = (
        "import sys, json; before = set(sys.modules); "
        "import core.api, core.runtime, handlers.local, handlers.aws; "
        "new = set(sys.modules) - before; "
        f"print(json.dumps(sorted(m for m in new if m.split('.')[0] in {HEAVY!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []
