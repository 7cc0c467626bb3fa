"""scripts/build-cloudflare-worker.py: build/ mirrors worker.py, core/ and handlers/, idempotent."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.cloudflare.toolchain import BUILD_SCRIPT, ROOT


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_cloudflare_worker", BUILD_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_only_the_entry_and_the_two_packages(script: ModuleType) -> None:
    names = set(script.sources())
    assert "worker.py" in names
    assert {"core/api.py", "handlers/cloudflare.py", "core/stores/d1.py"} <= names
    assert all(n == "worker.py" or n.startswith(("core/", "handlers/")) for n in names)
    assert all(n.endswith(".py") and "__pycache__" not in n for n in names)


def test_builds_once_then_only_what_changed(script: ModuleType, tmp_path: Path) -> None:
    target = tmp_path / "build"
    written, removed = script.build(target)
    assert sorted(written) == sorted(script.sources()) and removed == []
    assert (target / "handlers" / "cloudflare.py").read_bytes() == (
        ROOT / "handlers" / "cloudflare.py"
    ).read_bytes()
    assert script.build(target) == ([], [])  # idempotent

    (target / "core" / "api.py").write_text("# edited by hand\n")
    (target / "core" / "gone.py").write_text("")
    (target / "tests").mkdir()
    (target / "tests" / "test_x.py").write_text("")
    written, removed = script.build(target)
    assert written == ["core/api.py"]
    assert sorted(removed) == ["core/gone.py", "tests/test_x.py"]
    assert not (target / "tests").exists()


def test_check_reports_a_stale_build(script: ModuleType) -> None:
    command = [sys.executable, str(BUILD_SCRIPT)]
    subprocess.run(command, check=True, capture_output=True)
    check = subprocess.run([*command, "--check"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout
