"""A real webhook receiver for the delivery tests and the benchmark: Starlette under uvicorn on a
loopback port, verifying every delivery with `standardwebhooks` as a tenant's server would.

    python -m tests.webhooks.receiver --port P --secrets-file F --log L

Every POST (any path but /control and /health) is verified with each secret listed in the
secrets file (one a line, re-read when the file changes: during a rotation any listed secret
may verify) and logged as one JSON line to the log: webhook-id, type, job id, seq, time, which
secret verified it, the body's SHA-256 and what it was answered. An unverifiable delivery is
logged with `verified: false` and answered 401, whatever the behaviour.

`POST /control {"mode": ..., ...}` sets the behaviour for the next deliveries (a field not given
takes its default):

- `ok`: 200 (after `delay` seconds, default 0);
- `fail`: `status` (default 500);
- `hang`: no answer for `hang` seconds (default 3600), then 503 to whoever still listens;
- `down`: the server stops at once (as a process: it exits); start it again to bring it up.

In-process (`Receiver(...).start()`) it serves from a thread of its own, so the tests' event
loop and the receiver never wait for each other; `ReceiverProcess` runs the same app as a
subprocess.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ROOT = Path(__file__).resolve().parents[2]
MODES = ("ok", "fail", "hang", "down")
START_SECONDS = 20.0


@dataclass
class Behaviour:
    mode: str = "ok"
    delay: float = 0.0  # ok: seconds before the 200
    status: int = 500  # fail: the status answered
    hang: float = 3600.0  # hang: seconds before giving up on the caller


def fingerprint(secret: str) -> str:
    """Which secret verified a delivery, without writing the secret to the log."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


class Secrets:
    """The secrets file, re-read whenever it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._secrets: list[str] = []

    def current(self) -> list[str]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        if (stat.st_mtime_ns, stat.st_size) != self._stamp:
            lines = self.path.read_text().splitlines()
            self._secrets = [line.strip() for line in lines if line.strip()]
            self._stamp = (stat.st_mtime_ns, stat.st_size)
        return self._secrets


def write_secrets(path: Path, secrets: list[str]) -> None:
    """Replace the secrets file in one step (a reader sees the old or the new list)."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text("".join(f"{secret}\n" for secret in secrets))
    os.replace(temporary, path)


def verify(secrets: list[str], body: bytes, headers: dict[str, str]) -> tuple[str | None, str]:
    """(the fingerprint of the secret that verifies the delivery, "") or (None, why not)."""
    error = "no secret configured"
    for secret in secrets:
        try:
            Webhook(secret).verify(body, headers, json_parse=False)
        except (WebhookVerificationError, ValueError) as exc:  # ValueError: a malformed header
            error = str(exc) or type(exc).__name__
            continue
        return fingerprint(secret), ""
    return None, error


class ReceiverApp:
    """The app and its state: what to answer, which secrets verify, where to log."""

    def __init__(self, secrets_file: Path, log: Path) -> None:
        self.secrets = Secrets(secrets_file)
        self.log = log
        self.behaviour = Behaviour()
        self.on_down: list[Callable[[], None]] = []  # what stops the server
        self._lock = threading.Lock()
        self._released = asyncio.Event()  # set on shutdown: hung requests give up
        routes = [
            Route("/health", self.health, methods=["GET"]),
            Route("/control", self.control, methods=["POST"]),
            Route("/{path:path}", self.deliver, methods=["POST"]),
        ]
        self.app = Starlette(routes=routes)

    async def health(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def control(self, request: Request) -> Response:
        body = await request.json()
        if body.get("mode", self.behaviour.mode) not in MODES:
            return JSONResponse({"error": f"mode: one of {MODES}"}, status_code=400)
        fields = {name: body[name] for name in ("mode", "delay", "status", "hang") if name in body}
        self.behaviour = Behaviour(**fields)  # what is not given is the default
        if self.behaviour.mode == "down":
            for stop in self.on_down:
                stop()
        return JSONResponse(asdict(self.behaviour))

    async def deliver(self, request: Request) -> Response:
        body, behaviour = await request.body(), self.behaviour
        headers = dict(request.headers)
        secret, error = verify(self.secrets.current(), body, headers)
        answer: int | str = 401 if secret is None else _answer(behaviour)
        self._record(request.url.path, headers, body, secret, error, answer)
        if answer == "hang":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), behaviour.hang)
            return Response(status_code=503)
        if answer == 200 and behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        return Response(status_code=int(answer))

    def release(self) -> None:
        self._released.set()

    def _record(
        self,
        path: str,
        headers: dict[str, str],
        body: bytes,
        secret: str | None,
        error: str,
        answer: int | str,
    ) -> None:
        payload = _json(body) if secret is not None else {}
        msg_id = headers.get("webhook-id", "")
        entry = {
            "at": time.time(),
            "path": path,
            "id": msg_id,
            "type": payload.get("type"),
            "jobId": (payload.get("data") or {}).get("id"),
            "seq": _seq(msg_id),
            "verified": secret is not None,
            "secret": secret,
            "error": error or None,
            "bodySha256": hashlib.sha256(body).hexdigest(),
            "timestamp": headers.get("webhook-timestamp"),
            "answer": answer,
        }
        line = json.dumps(entry) + "\n"
        with self._lock, self.log.open("a") as out:
            out.write(line)
            out.flush()


def _answer(behaviour: Behaviour) -> int | str:
    if behaviour.mode == "fail":
        return behaviour.status
    if behaviour.mode == "hang":
        return "hang"
    return 200


def _json(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _seq(msg_id: str) -> int | None:
    tail = msg_id.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None


def read_log(log: Path) -> list[dict[str, Any]]:
    """Every complete line of a receiver's log, in the order it was written."""
    try:
        text = log.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def _server(receiver: ReceiverApp, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        receiver.app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)

    def down() -> None:
        receiver.release()
        server.should_exit = server.force_exit = True

    receiver.on_down[:] = [down]
    return server


@dataclass
class Handle:
    """What both runners share: the address, the log, the secrets file and the control route."""

    port: int
    secrets_file: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def entries(self) -> list[dict[str, Any]]:
        return read_log(self.log)

    def set_secrets(self, secrets: list[str]) -> None:
        write_secrets(self.secrets_file, secrets)

    def control(self, mode: str, **fields: float) -> None:
        answer = httpx.post(f"{self.url}/control", json={"mode": mode, **fields}, timeout=5)
        answer.raise_for_status()

    def down(self) -> None:
        """Stop serving (as `mode: down`), and wait until the port refuses connections."""
        with contextlib.suppress(httpx.TransportError):
            self.control("down")
        deadline = time.monotonic() + START_SECONDS
        while _accepts(self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the receiver on {self.port} did not stop")
            time.sleep(0.02)

    def wait_up(self, alive: Callable[[], bool] | None = None) -> None:
        deadline = time.monotonic() + START_SECONDS
        while not _accepts(self.port):
            if time.monotonic() > deadline or (alive is not None and not alive()):
                raise RuntimeError(f"the receiver on {self.port} did not start")
            time.sleep(0.02)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.2):
            return True
    except OSError:
        return False


@dataclass
class Receiver(Handle):
    """The receiver in a thread of this process, with its own event loop."""

    _thread: threading.Thread | None = field(default=None, repr=False)
    _server: uvicorn.Server | None = field(default=None, repr=False)

    def start(self) -> Receiver:
        """Serve (again, on the same port, with a fresh behaviour: `ok`)."""
        self._server = _server(ReceiverApp(self.secrets_file, self.log), self.port)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        self.wait_up(self._thread.is_alive)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None and self._thread.is_alive():
            self.down()
            self._thread.join(timeout=START_SECONDS)


@dataclass
class ReceiverProcess(Handle):
    """The receiver as its own process (`python -m tests.webhooks.receiver`)."""

    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> ReceiverProcess:
        command = [sys.executable, "-m", "tests.webhooks.receiver", "--port", str(self.port)]
        command += ["--secrets-file", str(self.secrets_file), "--log", str(self.log)]
        self._process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL)
        process = self._process
        self.wait_up(lambda: process.poll() is None)
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self.down()
            self._process.wait(timeout=START_SECONDS)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secrets-file", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args(argv)
    _server(ReceiverApp(args.secrets_file, args.log), args.port).run()


if __name__ == "__main__":
    main()
