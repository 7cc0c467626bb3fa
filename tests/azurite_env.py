"""A private Azurite Table service for the Azure Table store tests (DESIGN.md, "Real parts in
tests"): the npm package installed in the repository's `.azurite/` folder, run in memory on a free
port of 127.0.0.1, with the well-known development account.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.processes import free_port, terminate

ROOT = Path(__file__).resolve().parents[1]
INSTALL_COMMAND = "npm install --prefix .azurite azurite@3"
INSTALL_HINT = f"run `make azurite` (or `{INSTALL_COMMAND}`) in the repository"
LOCAL_BIN = ROOT / ".azurite" / "node_modules" / ".bin" / "azurite-table"
ACCOUNT = "devstoreaccount1"
# Azurite's published development key (the same on every machine; not a secret).
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
START_TIMEOUT = 20.0


class AzuriteUnavailable(RuntimeError):
    """Node or the azurite package is not installed."""


@dataclass
class AzuriteEnv:
    """A running Azurite Table service and how to reach it."""

    host: str
    port: int
    process: subprocess.Popen[bytes] = field(repr=False)
    log: Path
    started_in: float  # seconds from spawn until the port accepted connections

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"TableEndpoint={self.endpoint};"
        )

    def stop(self) -> None:
        terminate(self.process)


def azurite_command() -> list[str]:
    """How to run azurite-table: $AZURITE_TABLE, the repository's `.azurite/`, or PATH."""
    node = shutil.which("node")
    if node is None:
        raise AzuriteUnavailable(f"node is not installed, so Azurite cannot run; {INSTALL_HINT}")
    configured = os.environ.get("AZURITE_TABLE")
    for candidate in (configured, LOCAL_BIN, shutil.which("azurite-table")):
        if candidate and Path(candidate).exists():
            return [node, str(Path(candidate).resolve())]
    raise AzuriteUnavailable(f"azurite is not installed; {INSTALL_HINT}")


def _accepts(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def start_azurite(tmp: Path, attempts: int = 3) -> AzuriteEnv:
    """Start Azurite's Table service in memory on a free port and wait until it accepts
    connections (at most START_TIMEOUT seconds). Raises AzuriteUnavailable when it is not
    installed, RuntimeError (with its log) when it does not come up."""
    command = azurite_command()
    tmp.mkdir(parents=True, exist_ok=True)
    error = "Azurite did not start"
    for attempt in range(attempts):  # another process may take the free port first
        host, port = "127.0.0.1", free_port()
        log = tmp / f"azurite-{attempt}.log"
        started = time.monotonic()
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    *command, "--tableHost", host, "--tablePort", str(port),
                    "--inMemoryPersistence", "--skipApiVersionCheck", "--silent",
                ],
                cwd=tmp, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        env = AzuriteEnv(host, port, process, log, 0.0)
        deadline = started + START_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            if _accepts(host, port):
                env.started_in = time.monotonic() - started
                return env
            time.sleep(0.05)
        env.stop()
        error = f"Azurite did not start on port {port}: {log.read_text(errors='replace')[-2000:]}"
    raise RuntimeError(error)
