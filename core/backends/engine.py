"""A small client for the Docker Engine API (v1.41), which dockerd and Podman's service both speak.

httpx over the engine's unix socket (or TCP), plus the one call httpx cannot make: attaching to a
container's stdin, which hijacks the connection (HTTP 101), done on a raw stream.
"""

from __future__ import annotations

import asyncio
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from core.config import Settings
from core.errors import BackendError

API = "/v1.41"
PING_TIMEOUT = 3.0


@dataclass(frozen=True)
class Endpoint:
    """Where an engine listens: a unix socket path, or a TCP host and port."""

    engine: str
    socket: Path | None = None
    host: str | None = None
    port: int | None = None

    def describe(self) -> str:
        where = str(self.socket) if self.socket else f"tcp://{self.host}:{self.port}"
        return f"{self.engine} at {where}"

    def client(self, timeout: float) -> httpx.AsyncClient:
        if self.socket is not None:
            transport = httpx.AsyncHTTPTransport(uds=str(self.socket))
            return httpx.AsyncClient(
                transport=transport, base_url=f"http://engine{API}", timeout=timeout
            )
        return httpx.AsyncClient(base_url=f"http://{self.host}:{self.port}{API}", timeout=timeout)

    async def open_stream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.socket is not None:
            return await asyncio.open_unix_connection(str(self.socket))
        return await asyncio.open_connection(self.host, self.port)


def parse_docker_host(value: str, engine: str) -> Endpoint:
    parsed = urlparse(value)
    if parsed.scheme == "unix":
        return Endpoint(engine, socket=Path(parsed.path))
    if parsed.scheme in ("tcp", "http") and parsed.hostname:
        return Endpoint(engine, host=parsed.hostname, port=parsed.port or 2375)
    raise BackendError(f"DOCKER_HOST must be unix:///path or tcp://host:port, not {value!r}")


def candidates(settings: Settings, env: dict[str, str] | None = None) -> list[Endpoint]:
    """The endpoints to try, in order: DOCKER_HOST, then the engines' usual sockets."""
    env = dict(os.environ) if env is None else env
    engine = settings.container_engine or ("docker" if settings.platform == "docker" else "podman")
    if settings.docker_host:
        return [parse_docker_host(settings.docker_host, engine)]
    engines = [engine]
    if settings.auto_detect_engine:
        engines += [other for other in ("podman", "docker") if other != engine]
    runtime_dir = env.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    sockets = {
        "podman": [f"{runtime_dir}/podman/podman.sock", "/run/podman/podman.sock"],
        "docker": [
            "/var/run/docker.sock",
            "/run/docker.sock",
            f"{Path.home()}/.docker/run/docker.sock",
        ],
    }
    return [Endpoint(name, socket=Path(path)) for name in engines for path in sockets[name]]


async def detect(settings: Settings) -> Endpoint:
    """The first candidate whose `_ping` answers; a BackendError naming all that were tried."""
    tried = []
    for endpoint in candidates(settings):
        if endpoint.socket is not None and not endpoint.socket.exists():
            tried.append(f"{endpoint.describe()} (no socket)")
            continue
        try:
            async with endpoint.client(PING_TIMEOUT) as client:
                response = await client.get("/_ping")
            if response.status_code == 200:
                return endpoint
            tried.append(f"{endpoint.describe()} (HTTP {response.status_code})")
        except httpx.HTTPError as exc:
            tried.append(f"{endpoint.describe()} ({type(exc).__name__})")
    raise BackendError(
        "no container engine answered; tried: "
        + "; ".join(tried)
        + ". Start one (podman system service --time=0) or set DOCKER_HOST."
    )


async def attach_stdin(endpoint: Endpoint, container: str) -> asyncio.StreamWriter:
    """Attach to the container's stdin before it starts; `send_stdin` then writes the data and
    closes the write side, which the engine passes on to the bot as end of input."""
    reader, writer = await endpoint.open_stream()
    request = (
        f"POST {API}/containers/{container}/attach?stream=1&stdin=1 HTTP/1.1\r\n"
        "Host: engine\r\nUpgrade: tcp\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n"
    )
    writer.write(request.encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), PING_TIMEOUT * 3)
    status = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
    if status not in (b"101", b"200"):
        writer.close()
        raise BackendError(f"the engine refused to attach stdin (HTTP {status.decode()})")
    return writer


async def send_stdin(writer: asyncio.StreamWriter, data: bytes) -> None:
    try:
        writer.write(data)
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        await writer.drain()
    finally:
        writer.close()


def demux(raw: bytes) -> str:
    """The engine's multiplexed log stream (8-byte frame headers) as text; raw text passes."""
    out, pos = bytearray(), 0
    while pos + 8 <= len(raw) and raw[pos] in (0, 1, 2) and raw[pos + 1 : pos + 4] == b"\0\0\0":
        (size,) = struct.unpack(">I", raw[pos + 4 : pos + 8])
        out += raw[pos + 8 : pos + 8 + size]
        pos += 8 + size
    if pos == 0:
        return raw.decode("utf-8", "replace")
    return bytes(out).decode("utf-8", "replace")


def error_message(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
        message = body.get("message") if isinstance(body, dict) else None
    except ValueError:
        message = None
    return str(message or response.text[:200] or f"HTTP {response.status_code}")
