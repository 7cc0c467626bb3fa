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
    assert sorted(written) == sorted(script.wanted_files()) and removed == []
    assert sorted(script.wanted_files()) == sorted([*script.sources(), script.BUNDLED])
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


def test_the_console_files_are_bundled_as_a_module_the_console_serves(
    script: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Worker bundles Python modules only: its build carries the console's files in
    core/console/bundled_static.py, and the console serves them from it when static/ is absent."""
    target = tmp_path / "build"
    script.build(target)
    namespace: dict[str, object] = {}
    exec((target / script.BUNDLED).read_text(), namespace)
    bundled = namespace["FILES"]
    static = ROOT / "core" / "console" / "static"
    assert bundled == {p.name: p.read_text() for p in static.iterdir()}

    from core.console import pages

    module = ModuleType("core.console.bundled_static")
    module.FILES = bundled  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "core.console.bundled_static", module)
    monkeypatch.setattr(pages, "STATIC", tmp_path / "no-static")
    for cached in (pages.contents, pages.hashed_names, pages.files, pages.page):
        cached.cache_clear()
    try:
        page = pages.page().content.decode()
        assert "not part of this build" not in page
        served = pages.files()
        assert {f.content for f in served.values()} == {
            (static / name).read_bytes() for name in pages.FILES
        }
        assert all(f'"console/assets/{name}"' in page for name in served)
    finally:
        for cached in (pages.contents, pages.hashed_names, pages.files, pages.page):
            cached.cache_clear()


def test_check_reports_a_stale_build(script: ModuleType) -> None:
    command = [sys.executable, str(BUILD_SCRIPT)]
    subprocess.run(command, check=True, capture_output=True)
    check = subprocess.run([*command, "--check"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout
