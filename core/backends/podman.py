"""The `podman` / `docker` backend: one container per job through the Docker Engine API.

Podman's Docker-compatible service and dockerd speak the same API, so one class serves both
(`PLATFORM=podman` or `docker`; the engine and its socket are detected, see engine.py).

- The container is named after the job (`botsched-<job id>`) and labelled with the job id and
  tenant. Creating a name that exists fails with 409, so a retried or recovered start adopts the
  container already there instead of starting a second bot.
- The bot gets its config as the original bot does: the JSON on stdin (attached before the start)
  and as `BOT_CONFIG`, plus `MEETING_URL`, `BOT_NAME`, `JOB_ID`, `RECORDING_MODE`; CPU and memory
  limits from the job or the defaults; `RECORDINGS_PATH` mounted at `RECORDINGS_CONTAINER_PATH`.
- When a finished container is seen, its logs and exit state are kept under
  `SCHEDULER_DATA_DIR/containers/<job id>/` and the container is removed; status, logs and a
  later start answer from those files. Nothing is kept in memory, so a restarted scheduler
  follows running containers to their end.
- find looks the job's container up by its name (or its kept result); runs lists the containers
  carrying the job label whose state is not a finished one (created, running, paused, ...).
- A start the engine refuses for good raises StartRefused (core/backends/policy.py): an image
  reference it cannot parse, an image no registry has (or lets us pull), a command the image
  does not have; anything else (the engine unreachable, a registry that does not answer, an OCI
  runtime error) is BackendError, retried. A container the engine would not start is removed
  first, so the retried start (or `find`) finds no run that never began.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx

from core.backends.engine import Endpoint, attach_stdin, demux, detect, error_message, send_stdin
from core.backends.exits import exit_reason
from core.config import Settings
from core.errors import BackendError, ExecutionLost, StartRefused
from core.models import Execution, ExecutionRef, Job
from core.resources import cpu_nanos, memory_bytes

PREFIX = "botsched-"
LABEL_JOB = "io.botsched.job"
LABEL_TENANT = "io.botsched.tenant"
TIMEOUT = 30.0
MAX_KEPT_LOG = 10 * 2**20
ENDED = frozenset({"exited", "dead", "stopped"})  # container states of a finished run
# what an engine says of an image or a command that can never start as it is (Podman answers 500
# for them, dockerd 400 or 404); lowercase
NEVER_STARTS = (
    "invalid reference format",
    "must be lowercase",
    "manifest unknown",
    "name unknown",
    "repository does not exist",
    "requested access to the resource is denied",
    "unauthorized",
    "command that was not found",
    "executable file not found",
    "no such file or directory",
    "permission denied",
)


class PodmanBackend:
    def __init__(self, settings: Settings, endpoint: Endpoint | None = None) -> None:
        self.name = settings.platform if settings.platform in ("podman", "docker") else "podman"
        self.settings = settings
        self.kept_dir = (settings.data_dir / "containers").absolute()
        self._endpoint = endpoint
        self._client: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> PodmanBackend:
        return cls(settings)

    async def start(self, job: Job) -> ExecutionRef:
        ref = ExecutionRef(backend=self.name, id=PREFIX + job.id)
        if self._kept(ref).exists():
            return ref  # the run already ended and was cleaned up: never a second bot
        state = await self._state(ref.id)
        if state is None:
            state = await self._create(job, ref.id)
        if state.get("Status") == "created":
            await self._start_with_stdin(ref.id, json.dumps(job.bot_config()).encode())
        return ref

    async def status(self, ref: ExecutionRef) -> Execution:
        kept = self._kept(ref)
        if kept.exists():
            return Execution.model_validate_json(kept.read_text())
        state = await self._state(ref.id)
        if state is None:
            raise ExecutionLost(f"container {ref.id} is gone", ref=ref.id)
        execution = _execution(state)
        if execution.phase in ("succeeded", "failed"):
            await self._keep_and_remove(ref, execution)
        return execution

    async def stop(self, ref: ExecutionRef) -> None:
        grace = int(self.settings.stop_grace_seconds)
        response = await self._call(
            "POST", f"/containers/{ref.id}/stop", params={"t": grace}, timeout=grace + TIMEOUT
        )
        if response.status_code not in (204, 304, 404):
            raise BackendError(f"stop of {ref.id} failed: {error_message(response)}")

    async def find(self, job_id: str) -> ExecutionRef | None:
        """The container named after the job, or its kept result once it was removed."""
        ref = ExecutionRef(backend=self.name, id=PREFIX + job_id)
        if self._kept(ref).exists() or await self._state(ref.id) is not None:
            return ref
        return None

    async def runs(self) -> dict[str, ExecutionRef]:
        """Live containers labelled with a job id and named as `start` names them."""
        filters = json.dumps({"label": [LABEL_JOB]})  # states are matched here: the engines'
        params = {"all": "true", "filters": filters}
        response = await self._call("GET", "/containers/json", params=params)
        if response.status_code != 200:
            raise BackendError(f"listing containers failed: {error_message(response)}")
        found: dict[str, ExecutionRef] = {}
        for container in response.json() or []:
            job_id = (container.get("Labels") or {}).get(LABEL_JOB)
            names = {str(name).lstrip("/") for name in container.get("Names") or []}
            if job_id and PREFIX + job_id in names and str(container.get("State")) not in ENDED:
                found[job_id] = ExecutionRef(backend=self.name, id=PREFIX + job_id)
        return found

    async def logs(self, ref: ExecutionRef, tail: int = 200) -> str:
        kept = self._kept(ref).with_name("log")
        if kept.exists():
            return "".join(kept.read_text().splitlines(keepends=True)[-tail:])
        text = await self._fetch_logs(ref.id, str(tail))
        if text is None:
            raise ExecutionLost(f"container {ref.id} is gone", ref=ref.id)
        return text

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- engine calls ------------------------------------------------------------------------

    async def _http(self) -> httpx.AsyncClient:
        async with self._lock:
            if self._client is None:
                self._endpoint = self._endpoint or await detect(self.settings)
                self._client = self._endpoint.client(TIMEOUT)
        return self._client

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        client = await self._http()
        try:
            return await client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise BackendError(f"container engine unreachable: {type(exc).__name__}") from exc

    async def _state(self, name: str) -> dict[str, Any] | None:
        response = await self._call("GET", f"/containers/{name}/json")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise BackendError(f"inspect of {name} failed: {error_message(response)}")
        state: dict[str, Any] = response.json().get("State") or {}
        return state

    async def _create(self, job: Job, name: str) -> dict[str, Any]:
        body = self._container_spec(job)
        response = await self._call("POST", "/containers/create", params={"name": name}, json=body)
        if response.status_code == 404:  # the image is not here yet
            await self._pull(self.settings.container_image)
            response = await self._call(
                "POST", "/containers/create", params={"name": name}, json=body
            )
        if response.status_code == 409:  # someone created it first: adopt theirs
            return await self._state(name) or {}
        if response.status_code == 400:  # the engine refuses this container for good
            raise StartRefused(f"create of {name} refused: {error_message(response)}")
        if response.status_code != 201:
            raise start_error(f"create of {name} failed: {error_message(response)}")
        return {"Status": "created"}

    async def _start_with_stdin(self, name: str, config: bytes) -> None:
        assert self._endpoint is not None
        try:
            writer = await attach_stdin(self._endpoint, name)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, BackendError):
            writer = None  # the config still reaches the bot as BOT_CONFIG
        response = await self._call("POST", f"/containers/{name}/start")
        if writer is not None:
            await send_stdin(writer, config)
        if response.status_code not in (204, 304):
            error = start_error(f"start of {name} failed: {error_message(response)}")
            with suppress(BackendError):  # nothing runs: leave nothing `find` would take for a run
                await self._call("DELETE", f"/containers/{name}", params={"force": 1})
            raise error

    async def _pull(self, image: str) -> None:
        repository, _, tag = (
            image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
        )
        params = {"fromImage": repository or image, "tag": tag or "latest"}
        response = await self._call("POST", "/images/create", params=params, timeout=600.0)
        if response.status_code != 200 or b'"error"' in response.content[-2000:]:
            raise start_error(f"image {image} is not available: {pull_error(response)}")

    async def _fetch_logs(self, name: str, tail: str) -> str | None:
        params = {"stdout": 1, "stderr": 1, "tail": tail}
        response = await self._call("GET", f"/containers/{name}/logs", params=params)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise BackendError(f"logs of {name} failed: {error_message(response)}")
        return demux(response.content)

    async def _keep_and_remove(self, ref: ExecutionRef, execution: Execution) -> None:
        """Keep the finished run's logs and result, then remove its container."""
        text = await self._fetch_logs(ref.id, "all")
        if text is None:
            return  # another poller kept it and removed the container first
        kept = self._kept(ref)
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.with_name("log").write_text(text[-MAX_KEPT_LOG:])
        tmp = kept.with_suffix(".tmp")
        tmp.write_text(execution.model_dump_json())
        tmp.replace(kept)  # written last: its presence means "logs kept"
        response = await self._call("DELETE", f"/containers/{ref.id}", params={"force": 1})
        if response.status_code not in (204, 404):
            raise BackendError(f"removal of {ref.id} failed: {error_message(response)}")

    def _kept(self, ref: ExecutionRef) -> Path:
        return self.kept_dir / ref.id.removeprefix(PREFIX) / "result.json"

    def _container_spec(self, job: Job) -> dict[str, Any]:
        config = json.dumps(job.bot_config())
        env = {
            "BOT_CONFIG": config,
            "MEETING_URL": job.meetingUrl,
            "BOT_NAME": job.botName,
            "JOB_ID": job.id,
            "RECORDING_MODE": job.recordingMode,
        }
        recordings = self.settings.recordings_path.absolute()
        recordings.mkdir(parents=True, exist_ok=True)
        return {
            "Image": self.settings.container_image,
            "Env": [f"{key}={value}" for key, value in env.items()],
            "Labels": {LABEL_JOB: job.id, LABEL_TENANT: job.tenant},
            "AttachStdin": True,
            "OpenStdin": True,
            "StdinOnce": True,
            "HostConfig": {
                "NanoCpus": cpu_nanos(job.cpu or self.settings.default_cpu),
                "Memory": memory_bytes(job.memory or self.settings.default_memory),
                "Binds": [f"{recordings}:{self.settings.recordings_container_path}"],
            },
        }


def _execution(state: dict[str, Any]) -> Execution:
    status = state.get("Status", "")
    started, finished = _time(state.get("StartedAt")), _time(state.get("FinishedAt"))
    if status == "created":
        return Execution(phase="pending")
    if status in ("running", "paused", "restarting", "removing"):
        return Execution(phase="running", startedAt=started)
    if status not in ENDED:
        return Execution(phase="unknown", reason=f"container status {status!r}")
    code = int(state.get("ExitCode") or 0)
    if state.get("OOMKilled"):
        return Execution(
            phase="failed",
            exitCode=code,
            reason="out of memory (OOM-killed)",
            startedAt=started,
            finishedAt=finished,
        )
    if code == 0 and status != "dead":
        return Execution(phase="succeeded", exitCode=0, startedAt=started, finishedAt=finished)
    reason = exit_reason(code) + (f": {state['Error']}" if state.get("Error") else "")
    return Execution(
        phase="failed", exitCode=code, reason=reason, startedAt=started, finishedAt=finished
    )


def _time(value: Any) -> Any:
    """The engine's RFC 3339 time, or None for its zero time."""
    if not value or str(value).startswith("0001-"):
        return None
    return value


def start_error(message: str) -> BackendError:
    """StartRefused when the engine's `message` says the start can never succeed."""
    lowered = message.lower()
    if any(words in lowered for words in NEVER_STARTS):
        return StartRefused(message)
    return BackendError(message)


def pull_error(response: httpx.Response) -> str:
    """The error of a pull: the last `error` of its progress stream, else the answer's."""
    for line in reversed(response.text.strip().splitlines()):
        try:
            event = json.loads(line)
        except ValueError:
            break
        if isinstance(event, dict) and event.get("error"):
            return str(event["error"])[:300]
    return error_message(response)
