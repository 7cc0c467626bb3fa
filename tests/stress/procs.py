"""The scheduler processes of a stress run: `botsched serve` and `botsched drain`, supervised.

A process that dies (a fault hook SIGKILLs itself, or the harness kills it) is started again on
the same port with the same environment, until the fleet is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
BOT = Path(__file__).resolve().with_name("bot.py")
SUPERVISE_SECONDS = 0.1
STOP_SECONDS = 5.0
READY_SECONDS = 60.0
MAX_CRASHES = 20  # deaths other than SIGKILL after which a dead process stays down
CLEARED_PREFIXES = ("SCHEDULER_", "BOTSCHED_", "BOT_", "DEMO_BOT_", "STRESS_", "AZURE_", "GCP_")
CLEARED_NAMES = (
    *("PORT", "HOST", "PLATFORM", "MAX_JOBS", "CONTAINER_IMAGE", "RECORDINGS_PATH"),
    *("FIRESTORE_EMULATOR_HOST", "FIRESTORE_COLLECTION", "FIRESTORE_DATABASE"),
)


def botsched(source: Path) -> list[str]:
    """The `botsched` entry point of this virtualenv; for another checkout `source`, the module
    (found first through PYTHONPATH, which base_env points at `source`)."""
    script = Path(sys.executable).with_name("botsched")
    if source == ROOT and script.exists():
        return [str(script)]
    return [sys.executable, "-m", "core.cli"]


def base_env(source: Path = ROOT) -> dict[str, str]:
    """The harness's environment without anything that would configure the scheduler, with
    the scheduler's code taken from `source`."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(CLEARED_PREFIXES) and name not in CLEARED_NAMES
    }
    env.update(PYTHONPATH=str(source), PYTHONUNBUFFERED="1")
    return env


@dataclass
class Proc:
    """One scheduler process (`serve` or `drain`), restartable."""

    name: str
    command: str
    env: dict[str, str]
    logs: Path
    port: int | None = None
    fault_seed: int = 0
    source: Path = ROOT
    starts: int = 0
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**self.env, "BOTSCHED_FAULTS_SEED": str(self.fault_seed * 1000 + self.starts)}
        if self.port is not None:
            env.update(HOST="127.0.0.1", PORT=str(self.port))
        log = self.logs / f"{self.name}-{self.starts}.log"
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                [*botsched(self.source), self.command],
                cwd=self.source,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.starts += 1

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    def terminate(self, grace: float) -> None:
        """SIGTERM, and SIGKILL when it is still up `grace` seconds later."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(grace)
        self.kill()

    def log_tail(self, chars: int = 3000) -> str:
        log = self.logs / f"{self.name}-{max(self.starts - 1, 0)}.log"
        with contextlib.suppress(OSError):
            return log.read_text(errors="replace")[-chars:]
        return ""


class Fleet:
    """Every scheduler process of a run, with a supervisor that restarts the dead ones."""

    def __init__(self, procs: list[Proc], rng: random.Random) -> None:
        self.procs = procs
        self.rng = rng
        self.kills = 0
        self.restarts = 0
        self.crashes: list[str] = []  # deaths other than SIGKILL: the scheduler failed
        self._stopping = False

    @property
    def servers(self) -> list[Proc]:
        return [proc for proc in self.procs if proc.command == "serve"]

    def live_servers(self) -> list[Proc]:
        return [proc for proc in self.servers if proc.alive()] or self.servers

    async def start(self) -> None:
        """The first server alone (it creates the table or collection), then the rest."""
        first, rest = self.procs[0], self.procs[1:]
        first.start()
        await wait_ready(first)
        for proc in rest:
            proc.start()
        await asyncio.gather(*(wait_ready(proc) for proc in rest if proc.command == "serve"))

    async def supervise(self) -> None:
        """Restart any process that died, until `stop`."""
        while not self._stopping:
            for proc in self.procs:
                code = proc.popen.poll() if proc.popen is not None else None
                if code is None or self._stopping:
                    continue
                if code != -signal.SIGKILL:
                    self.crashes.append(f"{proc.name} exited with {code}:\n{proc.log_tail()}")
                    if len(self.crashes) > MAX_CRASHES:
                        proc.popen = None  # it cannot run at all: leave it down
                        continue
                proc.start()
                self.restarts += 1
            await asyncio.sleep(SUPERVISE_SECONDS)

    def kill_one(self) -> Proc | None:
        """SIGKILL a random live process (the supervisor starts it again)."""
        live = [proc for proc in self.procs if proc.alive()]
        if not live:
            return None
        victim = self.rng.choice(live)
        victim.kill()
        self.kills += 1
        return victim

    async def stop(self) -> None:
        """SIGTERM every process, SIGKILL those still up after STOP_SECONDS."""
        self._stopping = True
        await asyncio.gather(
            *(asyncio.to_thread(proc.terminate, STOP_SECONDS) for proc in self.procs)
        )


async def wait_ready(proc: Proc, seconds: float = READY_SECONDS) -> None:
    """Until a server answers /health (a drain process is ready once started)."""
    if proc.port is None:
        return
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=proc.url, timeout=2.0) as http:
        while time.monotonic() < deadline:
            if proc.popen is not None and proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited at start:\n{proc.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/health")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{proc.name} not healthy after {seconds:.0f}s:\n{proc.log_tail()}")


EnvFor = Callable[[int, str], dict[str, str]]


def make_fleet(
    servers: int, drainers: int, env_for: EnvFor, logs: Path, seed: int, source: Path = ROOT
) -> Fleet:
    """`servers` serve processes (each on its own free port), then `drainers` drain ones;
    `env_for(index, command)` gives each its environment."""
    commands = ["serve"] * servers + ["drain"] * drainers
    procs = [
        Proc(
            name=f"{command}{index if command == 'serve' else index - servers}",
            command=command,
            env=env_for(index, command),
            logs=logs,
            port=free_port() if command == "serve" else None,
            fault_seed=seed * 100 + index,
            source=source,
        )
        for index, command in enumerate(commands)
    ]
    return Fleet(procs, random.Random(seed))
