"""Pyodide under Node, prepared once into ./.pyodide, for running the Cloudflare Worker entry.

Cloudflare's Python Workers run on Pyodide; workerd itself cannot load Python offline, so the tests
run the worker in the npm package `pyodide` under Node instead. This module installs (idempotent,
a stamp file per input set):

- npm: `pyodide` (its wasm, stdlib and lock file are in the package: no CDN is needed) and
  `sql.js` (SQLite in wasm: the D1 stand-in's engine; Node 20 has no `node:sqlite`);
- PyPI: the wheels the worker imports, at the versions this venv uses: the pure ones, the workers
  SDK (`workers-runtime-sdk`: the `workers` module and its `asgi` bridge) and pydantic-core's
  WebAssembly wheel for that Pyodide's ABI (`pyemscripten_2026_0_wasm32`, cp314).

Run `python -m tests.pyodide_env` to prepare it by hand; `make test` does it too. `ensure()` returns
the paths or raises PyodideUnavailable naming what is missing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / ".pyodide"
WHEELS = HOME / "wheels"

PYODIDE_VERSION = "314.0.7"  # Python 3.14.2, emscripten 5.0.3, ABI pyemscripten_2026_0
SQLJS_VERSION = "1.13.0"
WASM_PLATFORM = "pyemscripten_2026_0_wasm32"
WASM_PYTHON = "3.14"
WASM_ABI = "cp314"
WORKERS_SDK = "workers-runtime-sdk==1.9.5"

# pure-Python distributions the worker imports; their versions follow this venv's
PURE = ["starlette", "anyio", "idna", "typing_extensions", "pydantic", "annotated-types",
        "typing-inspection"]  # fmt: skip
WASM = ["pydantic-core"]


class PyodideUnavailable(Exception):
    pass


@dataclass(frozen=True)
class PyodideEnv:
    node: str
    home: Path
    wheels: list[Path]


def requirements() -> list[str]:
    pinned = [f"{name}=={metadata.version(name)}" for name in PURE + WASM]
    return [*pinned, WORKERS_SDK]


def _stamp_key() -> str:
    inputs = {"pyodide": PYODIDE_VERSION, "sqljs": SQLJS_VERSION, "reqs": requirements()}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PyodideUnavailable(f"{' '.join(command[:4])} ... failed:\n{done.stderr[-2000:]}")


def ensure() -> PyodideEnv:
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        raise PyodideUnavailable("node and npm are needed for the Pyodide tests")
    stamp = HOME / f".stamp-{_stamp_key()}"
    if not stamp.exists():
        _install(npm)
        for old in HOME.glob(".stamp-*"):
            old.unlink()
        stamp.touch()
    wheels = sorted(WHEELS.glob("*.whl"))
    return PyodideEnv(node=node, home=HOME, wheels=wheels)


def _install(npm: str) -> None:
    HOME.mkdir(parents=True, exist_ok=True)
    _run([npm, "install", "--prefix", str(HOME), "--no-audit", "--no-fund", "--loglevel=error",
          f"pyodide@{PYODIDE_VERSION}", f"sql.js@{SQLJS_VERSION}"])  # fmt: skip
    if WHEELS.exists():
        shutil.rmtree(WHEELS)
    WHEELS.mkdir()
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--dest", str(WHEELS)]  # fmt: skip
    pure = [r for r in requirements() if not r.startswith(tuple(WASM))]
    _run([*pip, *pure])
    wasm = [r for r in requirements() if r.startswith(tuple(WASM))]
    _run([*pip, "--platform", WASM_PLATFORM, "--python-version", WASM_PYTHON,
          "--implementation", "cp", "--abi", WASM_ABI, *wasm])  # fmt: skip


if __name__ == "__main__":
    env = ensure()
    print(f"pyodide {PYODIDE_VERSION} in {env.home}; wheels:")
    for wheel in env.wheels:
        print("  " + wheel.name)
