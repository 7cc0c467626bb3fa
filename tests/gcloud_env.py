"""A private Firestore emulator for the Firestore store tests (DESIGN.md, "Real parts in tests"):
`gcloud emulators firestore start` from the installed Google Cloud CLI (it runs a Java server), on
a free port of 127.0.0.1, in memory, with its own gcloud configuration directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.processes import free_port

PROJECT = "demo-botsched"  # a "demo-" project: one that can only ever be an emulator's
START_TIMEOUT = 60.0  # the first start of the Java server takes a few seconds, more when cold
INSTALL_HINT = (
    "install the Google Cloud CLI with its Firestore emulator component "
    "(`gcloud components install cloud-firestore-emulator`, or the Debian package "
    "google-cloud-cli-firestore-emulator) and Java 17+"
)


class EmulatorUnavailable(RuntimeError):
    """gcloud (or its Firestore emulator, or Java) is not installed."""


@dataclass
class FirestoreEmulator:
    """A running Firestore emulator and how to reach it."""

    host: str  # host:port, what FIRESTORE_EMULATOR_HOST would hold
    project: str
    process: subprocess.Popen[bytes] = field(repr=False)
    log: Path
    started_in: float  # seconds from spawn until it answered HTTP

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def reset(self, database: str = "(default)") -> None:
        """Delete every document of the project's database."""
        path = f"/emulator/v1/projects/{self.project}/databases/{database}/documents"
        request = urllib.request.Request(self.url + path, method="DELETE")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def stop(self) -> None:
        """Stop gcloud and the Java server it spawned: the whole process group."""
        _stop_group(self.process)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the group the emulator was started in (its own), SIGKILL after 10 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            process.poll()  # reap the leader
            if not _group_alive(process.pid):
                return
            time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group is alive (zombies, which nobody may reap in a container,
    do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp
                return True
    return False


def gcloud_command() -> str:
    """$GCLOUD, else gcloud on PATH; with Java, which the emulator runs on."""
    gcloud = os.environ.get("GCLOUD") or shutil.which("gcloud")
    if not gcloud or not Path(gcloud).exists():
        raise EmulatorUnavailable(f"gcloud is not installed; {INSTALL_HINT}")
    if shutil.which("java") is None:
        raise EmulatorUnavailable(f"java is not installed; {INSTALL_HINT}")
    return gcloud


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def start_firestore(tmp: Path, project: str = PROJECT, attempts: int = 3) -> FirestoreEmulator:
    """Start a Firestore emulator on a free port and wait until it answers HTTP (at most
    START_TIMEOUT seconds). Raises EmulatorUnavailable when gcloud or Java is missing,
    RuntimeError (with its log) when the emulator does not come up."""
    gcloud = gcloud_command()
    tmp.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "CLOUDSDK_CONFIG": str(tmp / "gcloud-config"),  # leave the user's gcloud config alone
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_PROJECT": project,
    }
    error = "the Firestore emulator did not start"
    for attempt in range(attempts):  # another process may take the free port first
        host = f"127.0.0.1:{free_port()}"
        log = tmp / f"firestore-{attempt}.log"
        started = time.monotonic()
        with log.open("wb") as out:
            process = subprocess.Popen(
                [gcloud, "emulators", "firestore", "start", f"--host-port={host}"],
                cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        emulator = FirestoreEmulator(host, project, process, log, 0.0)
        deadline = started + START_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            if _answers(emulator.url + "/"):
                emulator.started_in = time.monotonic() - started
                return emulator
            time.sleep(0.1)
        emulator.stop()
        tail = log.read_text(errors="replace")[-2000:]
        if process.returncode not in (0, None) and "component" in tail.lower():
            raise EmulatorUnavailable(f"{tail.strip()}; {INSTALL_HINT}")  # the emulator is missing
        error = f"the Firestore emulator did not start on {host}: {tail}"
    raise RuntimeError(error)
