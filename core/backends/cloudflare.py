"""The `cloudflare` backend (PLATFORM=cloudflare): one Cloudflare Container per bot job.

Each job gets its own container-enabled Durable Object, named after the job:
`ns.idFromName(job_id)` -> `ns.get(id)` -> `stub.fetch(...)`, where `ns` is the Worker's binding
(`env.BOTS`, see wrangler.toml). The Durable Object class is ours, in
infra/cloudflare/src/bot-container.ts (it extends `Container` from `@cloudflare/containers`), and
speaks this small JSON protocol (any host; `https://bot` is used):

- `POST /start` `{"jobId", "env": {...}, "maxRuntimeSeconds"}` -> 200 with the run's status. It
  starts the container with `env` as its environment, once: a second start for the same job adopts
  the run the first one began (same name -> same Durable Object), so a retried start never
  starts a second bot.
- `GET /status` -> 200 `{"phase": "pending|running|succeeded|failed", "exitCode", "reason",
  "startedAt", "finishedAt"}` (times as ISO 8601 or epoch ms), 404 when this job never started.
- `POST /stop` -> 200 (also for a finished or unknown run).

The bot's env is what every backend passes: BOT_CONFIG (the JSON bot config), MEETING_URL,
BOT_NAME, JOB_ID, RECORDING_MODE. The ref is the job id (the Durable Object's name).

find asks the job's Durable Object for its status: a run (live or finished) when it answers 200,
none when it answers 404. A namespace cannot enumerate its objects, so runs raises NotSupported.

`namespace` is the binding as a Python Worker sees it (the workers SDK wraps it: `get(id)` gives
a stub whose `fetch(url, method=..., headers=..., body=...)` answers a Response with `status` and
an awaitable `text()`); nothing here imports a JS module, so tests drive it with a stand-in.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from core.backends.policy import refusal
from core.config import Settings
from core.errors import BackendError, ConfigError, ExecutionLost, NotSupported
from core.models import Execution, ExecutionRef, Job

NAME = "cloudflare"
BASE_URL = "https://bot"
PHASES = {"pending", "running", "succeeded", "failed", "unknown"}


def bot_env(job: Job) -> dict[str, str]:
    return {
        "BOT_CONFIG": json.dumps(job.bot_config()),
        "MEETING_URL": job.meetingUrl,
        "BOT_NAME": job.botName,
        "JOB_ID": job.id,
        "RECORDING_MODE": job.recordingMode,
    }


def _time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def execution_from(body: dict[str, Any]) -> Execution:
    phase = body.get("phase")
    if phase not in PHASES:
        phase = "unknown"
    exit_code = body.get("exitCode")
    return Execution(
        phase=phase,
        exitCode=int(exit_code) if exit_code is not None else None,
        reason=body.get("reason") or None,
        startedAt=_time(body.get("startedAt")),
        finishedAt=_time(body.get("finishedAt")),
    )


class CloudflareContainersBackend:
    """Backend over a container-enabled Durable Object namespace binding (`env.BOTS`)."""

    name = NAME

    def __init__(self, namespace: Any) -> None:
        self.namespace = namespace

    @classmethod
    def from_settings(cls, settings: Settings) -> CloudflareContainersBackend:
        raise ConfigError(
            "PLATFORM=cloudflare needs the Worker's Durable Object binding: serve through "
            "handlers/cloudflare.py (wrangler.toml binds it as BOTS)"
        )

    async def start(self, job: Job) -> ExecutionRef:
        """StartRefused when the Durable Object answers 400, 403, 404 or 422 (a request it will
        never take); its 502 `start_failed`, other 5xx and a failed fetch are transient."""
        body = {"jobId": job.id, "env": bot_env(job), "maxRuntimeSeconds": job.maxRuntimeSeconds}
        try:
            await self._call(job.id, "POST", "/start", body)
        except BackendError as exc:
            refused = refusal(exc)
            if refused is None:
                raise
            raise refused from exc
        return ExecutionRef(backend=NAME, id=job.id)

    async def status(self, ref: ExecutionRef) -> Execution:
        status, body = await self._call(ref.id, "GET", "/status", None, missing_ok=True)
        if status == 404:
            raise ExecutionLost(f"no container run for job {ref.id}", id=ref.id)
        return execution_from(body)

    async def stop(self, ref: ExecutionRef) -> None:
        await self._call(ref.id, "POST", "/stop", {}, missing_ok=True)

    async def find(self, job_id: str) -> ExecutionRef | None:
        status, _ = await self._call(job_id, "GET", "/status", None, missing_ok=True)
        return None if status == 404 else ExecutionRef(backend=NAME, id=job_id)

    async def runs(self) -> dict[str, ExecutionRef]:
        raise NotSupported("Cloudflare Containers cannot list their runs")

    async def logs(self, ref: ExecutionRef, tail: int = 200) -> str:
        raise NotSupported("Cloudflare Containers logs are in the dashboard or `wrangler tail`")

    async def close(self) -> None:
        return None

    async def _call(
        self,
        job_id: str,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        missing_ok: bool = False,
    ) -> tuple[int, dict[str, Any]]:
        stub = self.namespace.get(self.namespace.idFromName(job_id))
        options: dict[str, Any] = {"method": method}
        if body is not None:
            options["headers"] = {"content-type": "application/json"}
            options["body"] = json.dumps(body)
        try:
            response = await stub.fetch(BASE_URL + path, **options)
            status = int(response.status)
            text = await response.text()
        except Exception as exc:  # a JsException under Pyodide
            raise BackendError(f"container {job_id}: {method} {path} failed: {exc}") from exc
        if status == 404 and missing_ok:
            return status, {}
        where = f"container {job_id}: {method} {path}"
        if status >= 400:
            raise BackendError(f"{where} answered {status}: {text[:200]}", status=status)
        try:
            parsed = json.loads(text) if text else {}
        except ValueError:
            raise BackendError(f"{where}: not JSON: {text[:200]}") from None
        return status, parsed if isinstance(parsed, dict) else {}
