"""What `func azure functionapp publish` would upload from this folder: the app and nothing else.

Azure Functions Core Tools cannot be installed offline, so `FuncIgnore` is a line-for-line port
of its .funcignore matcher (Core Tools' `GitIgnoreParser`, itself a port of codemix's
gitignore-parser): each pattern becomes a regular expression anchored at the start of the file's
path from the app folder, and not at its end. Publishing walks every file of the folder (except
`.git/`, `.vscode/` and a few file names) and uploads those the matcher accepts; the test walks
the same way, and adds the folders other machines have (virtualenvs, node_modules, caches).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = {"function_app.py", "host.json", "requirements.txt", "core", "handlers"}
# Always skipped by Core Tools, whatever .funcignore says.
SKIPPED_DIRECTORIES = {".git", ".vscode"}
SKIPPED_FILES = {".funcignore", ".gitignore", "local.settings.json", "project.lock.json"}
# Paths other machines have although this one may not.
ELSEWHERE = [
    ".venv/lib/python3.11/site-packages/x.py",
    ".venv-py312/bin/python",
    "venv/bin/python",
    "python_modules/x/__init__.py",
    ".python_packages/lib/site-packages/x.py",
    "node_modules/azurite/package.json",
    ".pyodide/pyodide.js",
    ".azurite/__blobstorage__/x",
    "data/scheduler.db",
    "docs/index.md",
    "tests/test_x.py",
    "bench/run.py",
    "infra/azure/main.bicep",
    "__pycache__/function_app.cpython-311.pyc",
    "core/__pycache__/api.cpython-311.pyc",
    "handlers/__pycache__/azure.cpython-311.pyc",
    "core/stores/__pycache__/sqlite.cpython-311.pyc",
    "local.settings.json.example",
    "bot_scheduler.egg-info/PKG-INFO",
]


class FuncIgnore:
    """Core Tools' matcher: `accepts(path)` for a path relative to the app folder, with `/`."""

    def __init__(self, text: str) -> None:
        positive: list[str] = []
        negative: list[str] = []
        for raw in text.split("\n"):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            target = positive
            if line.startswith("!"):
                line, target = line[1:], negative
            target.append(line.removeprefix("/"))
        self.positive = self._compile(positive)
        self.negative = self._compile(negative)

    @staticmethod
    def _compile(patterns: list[str]) -> re.Pattern[str]:
        if not patterns:
            return re.compile("$^")
        parts = [
            re.sub(r"[\-\[\]/{}()+?.\\^$|]", lambda m: "\\" + m.group(0), p)
            .replace("**", "(.+)")
            .replace("*", "([^\\/]+)")
            for p in sorted(patterns)
        ]
        return re.compile("^((" + ")|(".join(parts) + "))")

    def accepts(self, path: str) -> bool:
        return bool(self.negative.match(path)) or not self.positive.match(path)


def uploaded(root: Path, matcher: FuncIgnore) -> set[str]:
    """Every file of `root` publishing would upload (folders it denies whole are not walked)."""
    found = set()
    for folder, dirs, files in os.walk(root):
        relative = Path(folder).relative_to(root).as_posix()
        prefix = "" if relative == "." else relative + "/"
        dirs[:] = [
            d
            for d in dirs
            if d not in SKIPPED_DIRECTORIES and matcher.accepts(f"{prefix}{d}/probe")
        ]
        found |= {
            f"{prefix}{name}"
            for name in files
            if name not in SKIPPED_FILES and matcher.accepts(f"{prefix}{name}")
        }
    return found


def matcher() -> FuncIgnore:
    return FuncIgnore((ROOT / ".funcignore").read_text())


def test_the_matcher_is_core_tools_one() -> None:
    ignore = FuncIgnore("tests\n**/__pycache__\n*.pyc\n!keep.pyc\n/data\n")
    assert not ignore.accepts("tests/test_x.py")
    assert not ignore.accepts("tests_more/x")  # anchored at the start only
    assert ignore.accepts("core/tests/x.py")  # ... of the whole path
    assert not ignore.accepts("core/__pycache__/x.pyc")
    assert ignore.accepts("__pycache__/x.py")  # `**/` needs a folder before it
    assert not ignore.accepts("x.pyc") and ignore.accepts("core/x.pyc")
    assert ignore.accepts("keep.pyc")  # a negation wins
    assert not ignore.accepts("data/x.db")


def test_publishing_uploads_the_app_and_nothing_else() -> None:
    ignore = matcher()
    files = uploaded(ROOT, ignore)
    outside = sorted(f for f in files if f.split("/")[0] not in APP)
    assert not outside, f"func would upload these; add them to .funcignore: {outside}"
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    for path in ELSEWHERE:
        assert not ignore.accepts(path), f"{path} would be uploaded"


def test_publishing_uploads_every_file_the_worker_imports() -> None:
    ignore = matcher()
    files = uploaded(ROOT, ignore)
    sources = {
        p.relative_to(ROOT).as_posix()
        for package in ("core", "handlers")
        for p in (ROOT / package).rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert {"function_app.py", "host.json", "requirements.txt"} <= files
    assert sources <= files, sorted(sources - files)


def test_local_settings_run_the_host_on_azurite() -> None:
    """`func start` needs blob storage (timer locks): AzureWebJobsStorage points at Azurite,
    which serves blob, queue and table; both timer schedules must be set."""
    values = json.loads((ROOT / "local.settings.json.example").read_text())["Values"]
    assert values["AzureWebJobsStorage"] == "UseDevelopmentStorage=true"
    assert values["FUNCTIONS_WORKER_RUNTIME"] == "python"
    assert {"SCHEDULER_DRAIN_SCHEDULE", "SCHEDULER_POLL_SCHEDULE", "SCHEDULER_API_KEYS"} <= set(
        values
    )
    assert "TableEndpoint=http://127.0.0.1:10002/" in values["AZURE_STORAGE_CONNECTION_STRING"]
