"""The `azure` backend: one execution of an Azure Container Apps Job per bot job.

Bots run as executions of one manual-trigger Container Apps Job (AZURE_SUBSCRIPTION_ID,
AZURE_RESOURCE_GROUP, AZURE_JOB_NAME; infra/azure/main.bicep makes one, its container named `bot`),
through the official async SDK (azure-mgmt-appcontainers, pinned to api-version 2026-01-01: the
spec the tests validate against) and azure-identity's DefaultAzureCredential, so a managed
identity works in Azure. Both load on first use, never at import; missing, they raise ConfigError.

- start: Jobs_Start with a per-run override of the container `bot`: SCHEDULER_CONTAINER_IMAGE, env
  BOT_CONFIG, MEETING_URL, BOT_NAME, JOB_ID, RECORDING_MODE, and the job's cpu/memory (or the
  defaults) in Container Apps' terms: cores as a float ("500m" -> 0.5), memory in Gi ("512Mi" ->
  "0.5Gi"). They pass through unchecked: Container Apps accepts only some pairs (0.25/0.5Gi ...
  2/4Gi on Consumption, more on workload profiles) and a refused pair fails the start with its
  message. The 202 body names the execution (JobExecutionBase), else the SDK's poller follows
  Location.
- adoption: executions get generated names, so a retried start cannot find its run by name. It
  lists the job's executions first and adopts the one whose `bot` env has this JOB_ID (a live one,
  else the newest even if it ended: a finished run must not be followed by a second bot). `$filter`
  has no documented grammar, so matching is done here: one paged list per start over the history
  Container Apps keeps. Residual risk: a run started an instant ago by a dispatcher that died may
  not be listed yet; the claim TTL and retry backoff put time between it and a recovered start.
- status: Running, Processing -> running; Succeeded -> succeeded (exit code 0; Container Apps has
  no exit codes); Failed -> failed; Stopped -> failed ("stopped"); Degraded -> running until the
  execution has an end time, then failed; Unknown -> unknown; 404 -> ExecutionLost.
- find: the execution adoption would pick for the job id; runs: one paged list of the job's
  executions, the live ones (not ended by `status`'s reading) keyed by their JOB_ID, the newest
  when a job has several. An execution without a JOB_ID (started by hand) is not the scheduler's.
- stop: Jobs_StopExecution, accepted (202) and not waited for; an unknown or ended run is fine.
- logs: NotSupported (an execution's output is in the environment's Log Analytics workspace).
- SDK errors: BackendError with the HTTP status, ARM error code and message; never a token. A
  start refused for good (400 such as ContainerAppInvalidResourceTotal, 403, 404, 422) raises
  StartRefused; 401, 409, 429, 5xx, quota errors and network errors stay BackendError, retried
  (core/backends/policy.py).
- No retries behind the scheduler's back: a run cannot set replicaRetryLimit or replicaTimeout
  (a JobExecutionTemplate holds containers only), so the Job must (infra/azure/main.bicep:
  `replicaRetryLimit: 0`, `replicaTimeout: botTimeoutSeconds`). The first start of a backend
  reads the Job and refuses to start on one whose replicaRetryLimit is above 0.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from core.backends.policy import refusal
from core.config import Settings
from core.errors import (
    BackendError,
    ConfigError,
    ExecutionLost,
    NotSupported,
    SchedulerError,
    StartRefused,
)
from core.models import Execution, ExecutionRef, Job
from core.resources import cpu_nanos, memory_bytes

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.mgmt.appcontainers.aio import ContainerAppsAPIClient
    from azure.mgmt.appcontainers.models import JobExecution, JobExecutionTemplate

API_VERSION = "2026-01-01"
CONTAINER = "bot"
INSTALL = "pip install 'bot-scheduler[azure]'"
POLL_SECONDS = 2.0  # between LRO polls when Azure sends no Retry-After
TIMEOUTS = {"connection_timeout": 10.0, "read_timeout": 60.0}  # azure-core's are 300 s each
START_TIMEOUT = 60.0  # well inside the claim TTL: a start that hangs is retried, then adopted
EXECUTION_NAME = re.compile(r"[-\w._()]+")  # JobExecutionNameParameter's pattern in Jobs.json
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ENDED = frozenset({"Succeeded", "Failed", "Stopped"})
FINAL = frozenset({"succeeded", "failed"})  # phases of a run that has ended
ROLE_HINT = (
    "; the scheduler's identity needs Microsoft.App/jobs/read, jobs/*/action and "
    "jobs/executions/read on the job (infra/azure/main.bicep grants them)"
)
# Settings field -> the variable that sets it
VARIABLES = {
    "azure_subscription_id": "AZURE_SUBSCRIPTION_ID",
    "azure_resource_group": "AZURE_RESOURCE_GROUP",
    "azure_job_name": "AZURE_JOB_NAME",
}


@dataclass(frozen=True)
class AzureJob:
    """The Container Apps Job whose executions run the bots."""

    subscription_id: str
    resource_group: str
    job_name: str

    @classmethod
    def from_settings(cls, settings: Settings) -> AzureJob:
        values = {field: (getattr(settings, field) or "").strip() for field in VARIABLES}
        missing = [VARIABLES[field] for field, value in values.items() if not value]
        if missing:
            raise ConfigError(f"PLATFORM=azure needs {', '.join(missing)}")
        return cls(*values.values())


class ContainerAppsBackend:
    name = "azure"

    def __init__(
        self,
        settings: Settings,
        target: AzureJob,
        credential: AsyncTokenCredential | None = None,
        *,
        poll_interval: float = POLL_SECONDS,
        start_timeout: float = START_TIMEOUT,
        **client_options: Any,
    ) -> None:
        """`client_options` go to ContainerAppsAPIClient (base_url, retry_total, transport, ...)."""
        self.settings = settings
        self.target = target
        self.poll_interval = poll_interval
        self.start_timeout = start_timeout
        self._credential = credential
        self._owns_credential = credential is None
        self._client_options = {**TIMEOUTS, **client_options}
        self._client: ContainerAppsAPIClient | None = None
        self._job_checked = False  # the Job was read and does not retry

    @classmethod
    def from_settings(cls, settings: Settings) -> ContainerAppsBackend:
        backend = cls(settings, AzureJob.from_settings(settings))
        backend._api()  # fail at startup, not at the first start, when the extra is missing
        return backend

    async def start(self, job: Job) -> ExecutionRef:
        async with self._translated(f"start of job {job.id}", refuse=True):
            await self._check_job()
            name = await self._find(job.id) or await self._start(job)
        return ExecutionRef(backend=self.name, id=name)

    async def status(self, ref: ExecutionRef) -> Execution:
        if not EXECUTION_NAME.fullmatch(ref.id):
            raise ExecutionLost(f"{ref.id!r} cannot name a Container Apps execution", ref=ref.id)
        async with self._translated(f"status of execution {ref.id}", missing=ExecutionLost):
            execution = await self._api().job_execution(*self._job(), ref.id)
        return to_execution(execution)

    async def stop(self, ref: ExecutionRef) -> None:
        if not EXECUTION_NAME.fullmatch(ref.id):
            return
        client = self._api()
        from azure.core.exceptions import HttpResponseError

        async with self._translated(f"stop of execution {ref.id}", missing=None):
            try:
                await client.jobs.begin_stop_execution(
                    *self._job(), ref.id, polling_interval=self.poll_interval
                )
            except HttpResponseError as exc:
                if exc.status_code not in (400, 409) or not await self._ended(ref.id):
                    raise

    async def find(self, job_id: str) -> ExecutionRef | None:
        async with self._translated(f"lookup of the execution of job {job_id}"):
            name = await self._find(job_id)
        return ExecutionRef(backend=self.name, id=name) if name else None

    async def runs(self) -> dict[str, ExecutionRef]:
        newest: dict[str, tuple[datetime, str]] = {}
        async with self._translated("listing of the executions"):
            async for execution in self._api().jobs_executions.list(*self._job()):
                job_id = job_id_of(execution)
                if not (execution.name and job_id) or to_execution(execution).phase in FINAL:
                    continue
                key = (execution.start_time or EPOCH, execution.name)
                newest[job_id] = max(newest.get(job_id, key), key)
        return {
            job_id: ExecutionRef(backend=self.name, id=name) for job_id, (_, name) in newest.items()
        }

    async def logs(self, ref: ExecutionRef, tail: int = 200) -> str:
        raise NotSupported(
            f"Container Apps has no API for the output of execution {ref.id}: it is in the "
            "environment's Log Analytics workspace (table ContainerAppConsoleLogs_CL)"
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._owns_credential and self._credential is not None:
            await self._credential.close()
            self._credential = None

    def template(self, job: Job) -> JobExecutionTemplate:
        """The per-run override of the job's container: image, the bot's env and resources."""
        from azure.mgmt.appcontainers import models

        cpu, memory = container_resources(
            job.cpu or self.settings.default_cpu, job.memory or self.settings.default_memory
        )
        container = models.JobExecutionContainer(
            name=CONTAINER,
            image=self.settings.container_image,
            env=[models.EnvironmentVar(name=k, value=v) for k, v in bot_env(job).items()],
            resources=models.ContainerResources(cpu=cpu, memory=memory),
        )
        return models.JobExecutionTemplate(containers=[container])

    # -- API calls ---------------------------------------------------------------------------

    def _api(self) -> ContainerAppsAPIClient:
        if self._client is None:
            try:
                import aiohttp  # noqa: F401  (the SDK's async transport)
                from azure.mgmt.appcontainers.aio import ContainerAppsAPIClient

                if self._credential is None:
                    from azure.identity.aio import DefaultAzureCredential

                    self._credential = DefaultAzureCredential()
            except ImportError as exc:
                raise ConfigError(
                    f"PLATFORM=azure needs azure-mgmt-appcontainers, azure-identity and aiohttp "
                    f"({exc.name} is missing); install them with: {INSTALL}"
                ) from exc
            self._client = ContainerAppsAPIClient(
                self._credential,
                self.target.subscription_id,
                api_version=API_VERSION,
                **self._client_options,
            )
        return self._client

    def _job(self) -> tuple[str, str]:
        return self.target.resource_group, self.target.job_name

    async def _check_job(self) -> None:
        """Refuse (StartRefused) to start on a Job that retries a failed replica: Container Apps
        would start the bot again behind the scheduler's back. Read until it passes."""
        if self._job_checked:
            return
        found = await self._api().jobs.get(*self._job())
        retries = getattr(found.configuration, "replica_retry_limit", None) or 0
        if retries > 0:
            raise StartRefused(
                f"Container Apps Job {self.target.job_name} retries a failed replica {retries} "
                "times, which would send a bot into its meeting again: set its "
                "replicaRetryLimit to 0 (infra/azure/main.bicep)"
            )
        self._job_checked = True

    async def _start(self, job: Job) -> str:
        poller = await self._api().jobs.begin_start(
            *self._job(), self.template(job), polling_interval=self.poll_interval
        )
        started = poller.polling_method().resource()  # the 202's body, when it names the run
        if not (started and started.name):
            try:
                started = await asyncio.wait_for(poller.result(), self.start_timeout)
            except TimeoutError:
                raise BackendError(
                    f"Container Apps did not name the execution of job {job.id} within "
                    f"{self.start_timeout:g}s"
                ) from None
        if not (started and started.name):
            raise BackendError(f"Container Apps started job {job.id} but named no execution")
        return str(started.name)

    async def _find(self, job_id: str) -> str | None:
        """The execution already started for `job_id`: a live one first, then the newest."""
        best: tuple[bool, datetime, str] | None = None
        async for execution in self._api().jobs_executions.list(*self._job()):
            if execution.name and job_id_of(execution) == job_id:
                live = _state(execution) not in ENDED
                key = (live, execution.start_time or EPOCH, execution.name)
                best = max(best, key) if best else key
        return best[2] if best else None

    async def _ended(self, name: str) -> bool:
        try:
            execution = await self._api().job_execution(*self._job(), name)
        except Exception:
            return False
        return to_execution(execution).phase in ("succeeded", "failed")

    @asynccontextmanager
    async def _translated(
        self, what: str, missing: type[BackendError] | None = BackendError, refuse: bool = False
    ) -> AsyncIterator[None]:
        """SDK errors as BackendError; a 404 as `missing` (None: ignored); with `refuse` (a
        start), the permanent ones as StartRefused."""
        try:
            yield
        except SchedulerError:
            raise
        except Exception as exc:
            from azure.core.exceptions import AzureError, ResourceNotFoundError

            if not isinstance(exc, AzureError):
                raise
            if isinstance(exc, ResourceNotFoundError) and missing is None:
                return
            error = backend_error(exc, what)
            if isinstance(exc, ResourceNotFoundError):
                error = (missing or BackendError)(error.message, **error.details)
            raise (refusal(error) if refuse else None) or error from exc


def bot_env(job: Job) -> dict[str, str]:
    return {
        "BOT_CONFIG": json.dumps(job.bot_config()),
        "MEETING_URL": job.meetingUrl,
        "BOT_NAME": job.botName,
        "JOB_ID": job.id,
        "RECORDING_MODE": job.recordingMode,
    }


def container_resources(cpu: str, memory: str) -> tuple[float, str]:
    """Our quantities in Container Apps' terms: cores as a float, memory in Gi ("0.5Gi")."""
    gib = f"{memory_bytes(memory) / 2**30:.4f}".rstrip("0").rstrip(".")
    return round(cpu_nanos(cpu) / 1e9, 4), f"{gib}Gi"


def job_id_of(execution: JobExecution) -> str | None:
    """The JOB_ID in the env of the execution's `bot` container."""
    template = execution.template
    for container in (template.containers if template else None) or []:
        if container.name == CONTAINER:
            for var in container.env or []:
                if var.name == "JOB_ID":
                    return str(var.value)
    return None


def to_execution(execution: JobExecution) -> Execution:
    state = _state(execution)
    started, ended = execution.start_time, execution.end_time
    times: dict[str, Any] = {"startedAt": started, "finishedAt": ended}
    if state in ("Running", "Processing") or (state == "Degraded" and ended is None):
        return Execution(phase="running", startedAt=started)
    if state == "Succeeded":
        return Execution(phase="succeeded", exitCode=0, **times)
    if state in ("Failed", "Stopped", "Degraded"):
        reason = "stopped" if state == "Stopped" else state
        detail = getattr(execution, "message", None)  # newer api-versions say why
        reason += f": {detail}" if detail else ""
        return Execution(phase="failed", reason=reason, **times)
    return Execution(phase="unknown", startedAt=started)


def _state(execution: JobExecution) -> str:
    status = execution.status
    return str(getattr(status, "value", status) or "Unknown")


def backend_error(exc: Exception, what: str) -> BackendError:
    """A short message: HTTP status, ARM error code and message; never a header or a token."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
    )

    status = getattr(exc, "status_code", None)
    first_line = (str(getattr(exc, "message", "") or exc).strip().splitlines() or [""])[0]
    if isinstance(exc, HttpResponseError) and status:
        code = getattr(exc.error, "code", None) or exc.reason or ""
        message = getattr(exc.error, "message", None) or ""
        text = f"HTTP {status} {code}: {message[:300]}".rstrip(": ")
        text += ROLE_HINT if status == 403 else ""
    elif isinstance(exc, ClientAuthenticationError):
        text = f"no Azure credential: {first_line[:200]}"
    elif isinstance(exc, ServiceRequestError):
        text = f"Azure Resource Manager unreachable: {first_line[:200]}"
    else:
        text = f"{type(exc).__name__}: {first_line[:200]}"
    details = {"status": status} if status else {}
    return BackendError(f"Container Apps {what} failed: {text}", **details)
