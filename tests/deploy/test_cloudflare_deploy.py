"""Both Cloudflare Workers build for upload with the real wrangler, offline (`--dry-run`).

- The Python Worker, from the folder the README deploys from (infra/cloudflare/scheduler/): its
  config passes wrangler's checks, the `[build]` step runs, and the bundle holds worker.py and the
  modules of core/ and handlers/, and nothing else of the repository (no tests, bench or
  virtualenv), well under the Workers size limits. With its dependencies vendored as `pywrangler
  sync` does (the wheels the Pyodide test runs the Worker on), it still fits the free plan's 3 MB.
- The container Worker (infra/cloudflare/): `tsc` type-checks it against @cloudflare/containers
  and the Workers types, and wrangler bundles it with its container and Durable Object.

wrangler and tsc come from infra/cloudflare/package-lock.json, run by Node >= 22.12
(tests/cloudflare/toolchain.py). When they cannot be installed (no npm, offline) this skips,
except in CI, where it fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ci import unavailable
from tests.cloudflare import toolchain
from tests.cloudflare.toolchain import ROOT, SCHEDULER, Toolchain, ToolchainUnavailable
from tests.pyodide_env import PyodideUnavailable
from tests.pyodide_env import ensure as ensure_pyodide

FREE_PLAN_GZIP_KIB = 3 * 1024
PAID_PLAN_GZIP_KIB = 10 * 1024
OURS = ("worker.py", "core/", "handlers/")


@dataclass(frozen=True)
class DryRun:
    output: str
    outdir: Path

    @property
    def gzip_kib(self) -> float:
        found = re.search(r"Total Upload: [\d.]+ KiB / gzip: ([\d.]+) KiB", self.output)
        assert found, self.output[-3000:]
        return float(found[1])

    def files(self, under: str = "") -> set[str]:
        root = self.outdir / under
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def tools() -> Toolchain:
    try:
        return toolchain.ensure()
    except ToolchainUnavailable as exc:
        unavailable(exc)


def dry_run(tools: Toolchain, cwd: Path, outdir: Path) -> DryRun:
    command = [*tools.wrangler, "deploy", "--dry-run", "--outdir", str(outdir)]
    done = subprocess.run(
        command, cwd=cwd, env=toolchain.wrangler_env(), capture_output=True, text=True,
        timeout=180, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    return DryRun(output, outdir)


def expected_modules() -> set[str]:
    """What the build step copies: the entry shim and every module of core/ and handlers/, and
    the one it writes: the console's files as a module."""
    found = {"worker.py", "core/console/bundled_static.py"}
    for package in ("core", "handlers"):
        for path in (ROOT / package).rglob("*.py"):
            if "__pycache__" not in path.parts:
                found.add(path.relative_to(ROOT).as_posix())
    return found


@pytest.fixture(scope="module")
def scheduler(tools: Toolchain, tmp_path_factory: pytest.TempPathFactory) -> DryRun:
    toolchain.build_worker()
    return dry_run(tools, SCHEDULER, tmp_path_factory.mktemp("scheduler-dry-run"))


def test_python_worker_config_passes_wranglers_checks(scheduler: DryRun) -> None:
    assert "[custom build]" in scheduler.output  # wrangler ran the build step itself
    assert "ERROR" not in scheduler.output
    assert "WARNING" not in scheduler.output, scheduler.output
    for binding in ("env.DB (bot-scheduler)", "env.BOTS (BotContainer, defined in"):
        assert binding in scheduler.output


def test_python_worker_bundles_only_core_and_handlers(scheduler: DryRun) -> None:
    ours = {name for name in scheduler.files() if not name.startswith("python_modules/")}
    ours.discard("README.md")  # wrangler's note about the output folder
    assert ours == expected_modules()
    assert all(name.startswith(OURS) for name in ours)
    table = r"│ ((?:core|handlers|tests|bench|\.venv)/[\w/.-]+) "  # wrangler's module list
    listed = set(re.findall(table, scheduler.output))
    assert listed == expected_modules() - {"worker.py"}


def test_python_worker_is_small(scheduler: DryRun) -> None:
    assert scheduler.gzip_kib < FREE_PLAN_GZIP_KIB


@pytest.mark.parametrize(
    "command", [["d1", "create", "bot-scheduler"], ["secret", "put", "SCHEDULER_API_KEYS"]]
)
def test_account_commands_get_past_the_config_to_the_login(
    tools: Toolchain, tmp_path: Path, command: list[str]
) -> None:
    """Run without any credentials (a fresh HOME, no CLOUDFLARE_* variables), they stop at the
    login, which they only reach once the Worker's wrangler.toml is accepted."""
    env = {**toolchain.wrangler_env(), "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    done = subprocess.run(
        [*tools.wrangler, *command], cwd=SCHEDULER, env=env, input="not-a-key\n",
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "CLOUDFLARE_API_TOKEN" in output, output[-3000:]
    assert "configuration" not in output.lower(), output[-3000:]


def vendor(wheels: list[Path], target: Path) -> None:
    """python_modules/ as `pywrangler sync` leaves it: the wheels' contents, unpacked."""
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target)
    (target / "pyvenv.cfg").touch()


def replica(root: Path) -> Path:
    """The Worker project in a scratch tree laid out like the repository (core/ and handlers/
    linked), so that a python_modules/ can sit beside its wrangler.toml."""
    worker = root / SCHEDULER.relative_to(ROOT)
    worker.mkdir(parents=True)
    for name in ("wrangler.toml", "pyproject.toml", "worker.py"):
        shutil.copy2(SCHEDULER / name, worker / name)
    (root / "scripts").mkdir()
    shutil.copy2(toolchain.BUILD_SCRIPT, root / "scripts" / toolchain.BUILD_SCRIPT.name)
    for package in ("core", "handlers"):
        (root / package).symlink_to(ROOT / package, target_is_directory=True)
    return worker


def test_python_worker_with_its_vendored_dependencies_fits_the_free_plan(
    tools: Toolchain, tmp_path: Path
) -> None:
    try:
        wheels = ensure_pyodide().wheels
    except PyodideUnavailable as exc:
        unavailable(exc)
    worker = replica(tmp_path / "repo")
    vendor(wheels, worker / "python_modules")
    result = dry_run(tools, worker, tmp_path / "out")
    assert "Vendored Modules" in result.output
    vendored = result.files("python_modules")
    assert {"starlette/__init__.py", "pydantic/__init__.py", "workers/__init__.py"} <= vendored
    assert any(name.startswith("pydantic_core/") and name.endswith(".so") for name in vendored)
    ours = {name for name in result.files() if not name.startswith("python_modules/")}
    assert ours - {"README.md"} == expected_modules()
    assert result.gzip_kib < FREE_PLAN_GZIP_KIB < PAID_PLAN_GZIP_KIB


@pytest.fixture(scope="module")
def containers(tools: Toolchain, tmp_path_factory: pytest.TempPathFactory) -> DryRun:
    return dry_run(tools, toolchain.CLOUDFLARE, tmp_path_factory.mktemp("containers-dry-run"))


def test_container_worker_type_checks(tools: Toolchain) -> None:
    done = subprocess.run(
        [*tools.tsc, "--noEmit", "-p", str(toolchain.CLOUDFLARE)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_container_worker_bundles_with_its_container(containers: DryRun) -> None:
    assert "WARNING" not in containers.output, containers.output  # e.g. a renamed instance_type
    assert "env.BOTS (BotContainer)" in containers.output
    assert "bot-scheduler-containers-botcontainer" in containers.output
    assert containers.files() >= {"bot-container.js"}
    assert containers.gzip_kib < FREE_PLAN_GZIP_KIB
