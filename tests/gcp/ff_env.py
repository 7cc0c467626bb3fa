"""Real functions-framework servers for the Cloud Functions tests: `functions-framework --target
<fn> --source main.py` in a process group of its own, as the Cloud Functions runtime starts it
(ASGI mode is detected from the `aio` decorators, no flag), and the Pub/Sub CloudEvent that
Eventarc delivers to the tick function."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from core.backends.process import _is_run
from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "demo-botsched"
TOPIC = "botsched-tick"
SUBSCRIPTION = "botsched-tick-push"
PUBSUB_SOURCE = f"//pubsub.googleapis.com/projects/{PROJECT}/topics/{TOPIC}"
PUBSUB_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def clean_env() -> dict[str, str]:
    """The test process's environment without anything that would configure the scheduler or
    the framework."""
    prefixes = ("SCHEDULER_", "BOTSCHED_", "BOT_", "DEMO_BOT_", "FUNCTION_", "K_")
    names = {"PORT", "HOST", "PLATFORM", "MAX_JOBS", "CONTAINER_IMAGE", "RECORDINGS_PATH", "DEBUG"}
    names |= {"WORKERS", "THREADS", "CLOUD_RUN_TIMEOUT_SECONDS", "LOG_EXECUTION_ID"}
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes) and k not in names}


def framework_command() -> list[str]:
    script = Path(sys.executable).with_name("functions-framework")
    return [str(script)] if script.exists() else [sys.executable, "-m", "functions_framework"]


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group (gunicorn's arbiter and its worker, or gcloud and its Java
    server), then SIGKILL to whatever of the group is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(STOP_TIMEOUT)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(STOP_TIMEOUT)


def kill_bots(data_dir: Path) -> None:
    """Kill the process groups of demo bots that still run (the process backend's runs)."""
    for pid_file in (data_dir / "runs").glob("*/pid"):
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            continue
        if _is_run(pid, pid_file.with_name("exit")):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


class Function:
    """One `functions-framework` process serving one target of main.py on a free port."""

    def __init__(self, target: str, env: Mapping[str, str], log: Path) -> None:
        self.target = target
        self.env = dict(env)
        self.log_path = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=20)

    def start(self, ready_path: str) -> Function:
        argv = [*framework_command(), "--target", self.target, "--source", str(ROOT / "main.py")]
        argv += ["--port", str(self.port), "--host", "127.0.0.1"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.target} exited {self.process.returncode}: {self.log()}")
            with contextlib.suppress(httpx.TransportError):
                self.http.get(ready_path)  # any answer: the server is up
                return self
            time.sleep(0.05)
        raise RuntimeError(f"{self.target} did not answer in {START_TIMEOUT}s: {self.log()}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_group(process)
        self.http.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]


def pubsub_envelope(data: bytes, message_id: str, published: datetime) -> dict[str, Any]:
    """The body of a Pub/Sub push (and of Eventarc's messagePublished CloudEvent)."""
    return {
        "message": {
            "data": base64.b64encode(data).decode(),
            "messageId": message_id,
            "publishTime": published.isoformat().replace("+00:00", "Z"),
        },
        "subscription": f"projects/{PROJECT}/subscriptions/{SUBSCRIPTION}",
    }


def pubsub_cloudevent(
    envelope: Mapping[str, Any], source: str = PUBSUB_SOURCE
) -> tuple[dict[str, str], dict[str, Any]]:
    """The CloudEvent HTTP request (binary content mode) that Eventarc sends a function for a
    Pub/Sub message: headers and JSON body."""
    message = envelope["message"]
    headers = {
        "ce-id": message["messageId"],
        "ce-source": source,
        "ce-type": PUBSUB_TYPE,
        "ce-specversion": "1.0",
        "ce-time": message["publishTime"],
        "content-type": "application/json",
    }
    return headers, dict(envelope)


def tick_request(data: bytes = b"tick") -> tuple[dict[str, str], dict[str, Any]]:
    """A fresh Cloud Scheduler tick as the function receives it."""
    envelope = pubsub_envelope(data, str(uuid.uuid4().int % 10**16), datetime.now(UTC))
    return pubsub_cloudevent(envelope)
