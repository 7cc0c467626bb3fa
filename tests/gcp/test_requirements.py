"""requirements.txt (what `gcloud functions deploy` installs) is generated from pyproject.toml by
scripts/gen-requirements.py and cannot drift from it; .gcloudignore uploads what the build needs."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen-requirements.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_requirements", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = load_script()

PYPROJECT = """
[project]
name = "x"
version = "1"
dependencies = ["starlette>=0.40", "pydantic>=2.7"]

[project.optional-dependencies]
gcp = ["google-cloud-firestore>=2.16", "Pydantic>=2.8", "google_cloud_run>=0.10"]
azure = ["azure-functions>=1.21", "azure-data-tables>=12.5"]
postgres = ["psycopg[binary]>=3.2", "psycopg-pool>=3.2"]
aws = ["mangum>=0.17"]
"""


def test_the_committed_requirements_txt_is_the_generated_one() -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, (
        f"{out.stderr.strip()}\nrequirements.txt must be regenerated from pyproject.toml "
        "(`python scripts/gen-requirements.py`), and pyproject.toml needs the `gcp` extra"
    )


def test_the_requirements_are_the_dependencies_the_extras_and_the_framework(
    tmp_path: Path,
) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(PYPROJECT)
    lines = [
        line for line in gen.render(pyproject).splitlines() if line and not line.startswith("#")
    ]
    assert lines == [
        "starlette>=0.40,<2",
        "pydantic>=2.7,<3",  # the first mention of a project wins
        "google-cloud-firestore>=2.16,<3",
        "google_cloud_run>=0.10,<1",
        "azure-functions>=1.21,<2",
        "azure-data-tables>=12.5,<13",
        "psycopg[binary]>=3.2,<4",
        "psycopg-pool>=3.2,<4",
        gen.FRAMEWORK + ",<4",  # every function needs it: added when no extra lists it
    ]


def test_an_extra_that_lists_the_framework_keeps_its_own_pin(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(PYPROJECT.replace('"Pydantic>=2.8"', '"Functions_Framework==3.10.2"'))
    text = gen.render(pyproject)
    assert "Functions_Framework==3.10.2" in text.splitlines()
    assert gen.FRAMEWORK not in text


@pytest.mark.parametrize(
    ("requirement", "bounded"),
    [
        ("starlette>=0.40", "starlette>=0.40,<2"),
        ("starlette", "starlette<2"),
        ("starlette>=0.40,<1.5", "starlette>=0.40,<1.5"),  # its own bound is kept
        ("pydantic==2.7.1", "pydantic==2.7.1"),
        ("httpx>=0.27 ; python_version<'4'", "httpx>=0.27,<1 ; python_version<'4'"),
    ],
)
def test_every_requirement_gets_an_upper_bound(requirement: str, bounded: str) -> None:
    assert gen.bounded(requirement) == bounded


def test_a_dependency_without_a_ceiling_fails_and_writes_nothing(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(PYPROJECT.replace('"pydantic>=2.7"', '"pydantic>=2.7", "left-pad>=1"'))
    output = tmp_path / "requirements.txt"
    assert gen.main(["--pyproject", str(pyproject), "--output", str(output)]) == 2
    assert not output.exists()


def test_the_tested_versions_are_within_the_bounds() -> None:
    """The ceilings are above what the tests run on: each requirement accepts the installed
    version."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    lines = (ROOT / "requirements.txt").read_text().splitlines()
    outside = []
    for line in (line for line in lines if line and not line.startswith("#")):
        requirement = Requirement(line)
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            outside.append(f"{requirement.name} {installed} is outside {requirement.specifier}")
    assert outside == []


def test_a_missing_gcp_extra_fails_and_writes_nothing(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(PYPROJECT.replace("gcp = ", "other = "))
    output = tmp_path / "requirements.txt"
    code = gen.main(["--pyproject", str(pyproject), "--output", str(output)])
    assert code == 2
    assert not output.exists()


def test_check_fails_on_a_stale_file_and_passes_once_written(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(PYPROJECT)
    output = tmp_path / "requirements.txt"
    args = ["--pyproject", str(pyproject), "--output", str(output)]
    assert gen.main([*args, "--check"]) == 1
    assert gen.main(args) == 0
    assert gen.main([*args, "--check"]) == 0
    output.write_text(output.read_text() + "requests\n")
    assert gen.main([*args, "--check"]) == 1


@pytest.mark.parametrize(
    ("requirement", "name"),
    [("Foo_Bar[x]>=1", "foo-bar"), ("a.b ; python_version<'4'", "a-b"), ("x", "x")],
)
def test_name_of(requirement: str, name: str) -> None:
    assert gen.name_of(requirement) == name


def test_gcloudignore_allows_only_what_the_function_runs() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".gcloudignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "/*"  # everything at the top level, except:
    assert {"!/main.py", "!/requirements.txt", "!/core/", "!/handlers/"} <= set(lines)


def test_gcloud_uploads_the_entry_point_the_packages_and_the_requirements(tmp_path: Path) -> None:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        pytest.skip("gcloud is not installed")
    env = {**os.environ, "CLOUDSDK_CONFIG": str(tmp_path), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
    out = subprocess.run(
        [gcloud, "meta", "list-files-for-upload", str(ROOT)], env=env, capture_output=True,
        text=True, check=True, timeout=60,
    )  # fmt: skip
    files = {Path(line).as_posix() for line in out.stdout.splitlines() if line}
    assert {"main.py", "requirements.txt", "core/api.py", "handlers/gcp.py"} <= files
    assert {"core/stores/sqlite.py", "core/backends/process.py", "core/demo_bot.py"} <= files
    tops = {file.split("/")[0] for file in files}
    assert tops == {"main.py", "requirements.txt", "core", "handlers"}, tops
    assert not any("__pycache__" in file or file.endswith(".pyc") for file in files)
