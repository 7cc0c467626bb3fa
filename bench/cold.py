"""Cold starts: importing a module in a fresh interpreter, against importing bare Starlette and
pydantic in one; and a fresh interpreter's first answer to a submit, ours against the echo app's.
Each figure is one fresh process; floor and ours are interleaved round by round."""

from __future__ import annotations

import subprocess
import sys

from bench.servers import ROOT
from bench.table import Sample

FLOOR_MODULES = "starlette.applications, starlette.routing, pydantic"

# The time of `import MODULE` alone, after the host's own imports when it has some: a platform's
# host imports its framework before it loads our entry file (the Azure Functions worker imports
# azure.functions, the functions-framework CLI functions_framework).
IMPORT = """
import time
{preload}
started = time.perf_counter()
import {module}
print(time.perf_counter() - started)
"""

# From the interpreter's first statement to the first 201: imports, building the app, the submit.
FIRST_ANSWER = """
import time
started = time.perf_counter()
import asyncio
from bench.asgi_driver import SUBMIT_PATH, request, submit_body
{build}
status, body = asyncio.run(request(app, "POST", SUBMIT_PATH, submit_body()))
assert status == 201, body
print(time.perf_counter() - started)
"""
FLOOR_BUILD = "from bench.echo_app import app"
OUR_BUILD = """
from core.api import create_app
from core.config import Settings
app = create_app(Settings.from_env({"SCHEDULER_STORE": "memory"}))
"""


def _seconds(code: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def import_ms(module: str, preload: str | None = None) -> float:
    return 1000 * _seconds(
        IMPORT.format(module=module, preload=f"import {preload}" if preload else "")
    )


def imports(targets: list[tuple[str, str | None]], rounds: int) -> tuple[Sample, dict[str, Sample]]:
    """The floor's import time and each target's (module, preloaded module), in ms."""
    floor, ours = Sample(), {f"{module}|{preload}": Sample() for module, preload in targets}
    for _ in range(rounds):
        floor.add(import_ms(FLOOR_MODULES))
        for module, preload in targets:
            ours[f"{module}|{preload}"].add(import_ms(module, preload))
    return floor, ours


def first_answers(rounds: int) -> tuple[Sample, Sample]:
    """A fresh process's first 201 to a submit, in ms: the echo app's, ours (memory store)."""
    floor, ours = Sample(), Sample()
    for _ in range(rounds):
        floor.add(1000 * _seconds(FIRST_ANSWER.format(build=FLOOR_BUILD)))
        ours.add(1000 * _seconds(FIRST_ANSWER.format(build=OUR_BUILD)))
    return floor, ours
