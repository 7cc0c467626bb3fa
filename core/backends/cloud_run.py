"""The `cloudrun` backend (PLATFORM=cloudrun or gcp): one execution of a Cloud Run Job per bot job.

Bots run as executions of one Cloud Run Job (GCP_PROJECT_ID, GCP_REGION, GCP_JOB_NAME; its image,
cpu, memory, service account and `maxRetries: 0` are the job's own: a run cannot override them;
the first start of a backend reads the Job and refuses to start on one that retries, since every
retry would send the bot into the meeting again: core/backends/policy.py),
through the official SDK `google-cloud-run` (run_v2), signed in with Application Default
Credentials. The SDK loads on first use, never at import (it pulls in grpc); missing, it raises
ConfigError naming the extra.

- Transport: the sync clients with `transport="rest"`, each call in `asyncio.to_thread`. The async
  clients speak only gRPC, whose channels belong to the event loop that made them and which no
  HTTP fake can answer; REST is plain HTTPS through `requests`, testable against a contract fake,
  and a few calls per poll cost a worker thread each, nothing more.
- start: RunJob with overrides: the container's env gets BOT_CONFIG, MEETING_URL, BOT_NAME, JOB_ID
  and RECORDING_MODE (merged into the job's env; Cloud Run expands no `$(VAR)`, so values go as
  they are; one may hold 32768 bytes), task_count 1 and timeout = maxRuntimeSeconds, else twice
  SCHEDULER_EXPECTED_RUN_SECONDS (never the Job's own, 10 minutes by default). RunJob
  answers a long-running operation that ends only when the execution does; its `metadata` is the
  Execution, so its name is read at once and nothing waits. The ref is the execution's full name.
- adoption: executions get generated names, so a retried start cannot find its run by name. It
  lists the job's executions first and adopts the one whose template (overrides applied) has this
  JOB_ID in a container's env: a live one, else the newest even if it ended (a finished run must
  not be followed by a second bot). RunJob cannot set labels per run and the list has no filter,
  so matching is done here, over the newest MAX_SCAN executions (Cloud Run lists newest first;
  not a documented contract): one more call per start. Residual risk: a run started an instant
  ago by a dispatcher that died, or whose RunJob answer was lost, may not be listed yet; the
  claim TTL and the retry backoff put time between it and the retried start. The Cloud Run Job
  must be the scheduler's alone.
- find: the execution adoption would pick for the job id; runs: the live executions among the
  newest MAX_SCAN, keyed by their JOB_ID (the newest when a job has several). An execution without
  a JOB_ID (started by hand) is not the scheduler's; a live one older than MAX_SCAN newer
  executions is not seen (the same bound as adoption).
- status: the `Completed` condition decides (CONDITION_SUCCEEDED -> succeeded, exit code 0;
  CONDITION_FAILED -> failed, its execution reason and message as the reason, "cancelled" when it
  was cancelled), else a completion time with the counts; running_count > 0 -> running; else
  pending. The Execution carries no exit code (its Tasks do). 404 -> ExecutionLost.
- stop: CancelExecution, not waited for; an unknown or finished execution is fine.
- logs: NotSupported: Cloud Run writes a run's output to Cloud Logging only.
- SDK errors: BackendError with the HTTP status, gRPC status and a short message; 401/403 name the
  IAM permissions needed. Never a token. A start refused for good (400 INVALID_ARGUMENT, 403,
  404, an env value too long) raises StartRefused; 429, 5xx, FAILED_PRECONDITION and network
  errors stay BackendError, retried.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from core.backends.cloud_run_executions import job_id_of, to_execution
from core.backends.policy import refusal, run_timeout_seconds
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

if TYPE_CHECKING:
    from google.cloud.run_v2 import Execution as RunExecution
    from google.cloud.run_v2 import ExecutionsClient, JobsClient, RunJobRequest

INSTALL = "pip install 'bot-scheduler[gcp]'"
TIMEOUT = 30.0  # per API call
PAGE_SIZE = 100
MAX_SCAN = 500  # executions looked at when adopting
MAX_ENV_VALUE = 32768  # bytes, Cloud Run's limit for one env value
MAX_TIMEOUT = 168 * 3600  # seconds, Cloud Run's longest task timeout
EXECUTION_NAME = re.compile(r"projects/[^/]+/locations/[^/]+/jobs/[^/]+/executions/[^/]+")
SEGMENT = re.compile(r"[^/\s]+")
HTTP_PREFIX = re.compile(r"^[A-Z]+ https?://\S+: ")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FINAL = frozenset({"succeeded", "failed"})  # phases of a run that has ended
IAM_HINT = (
    "; the scheduler's identity needs run.jobs.get and run.jobs.runWithOverrides on the job and "
    "run.executions.get, run.executions.list and run.executions.cancel (roles/run.developer "
    "grants them)"
)
# Settings field -> variable; read from Settings once core/config.py has the field, else the env
VARIABLES = {
    "gcp_project_id": "GCP_PROJECT_ID",
    "gcp_region": "GCP_REGION",
    "gcp_job_name": "GCP_JOB_NAME",
}
T = TypeVar("T")
log = logging.getLogger("botsched.backends")


@dataclass(frozen=True)
class CloudRunJob:
    """The Cloud Run Job whose executions run the bots."""

    project: str
    region: str
    job: str

    @property
    def name(self) -> str:
        return f"projects/{self.project}/locations/{self.region}/jobs/{self.job}"

    @classmethod
    def from_settings(cls, settings: Settings) -> CloudRunJob:
        values = {field: (getattr(settings, field) or "").strip() for field in VARIABLES}
        missing = [VARIABLES[field] for field, value in values.items() if not value]
        if missing:
            raise ConfigError(f"PLATFORM={settings.platform} needs {', '.join(missing)}")
        for field, value in values.items():
            if not SEGMENT.fullmatch(value):
                raise ConfigError(f"{VARIABLES[field]}={value!r} cannot name a Cloud Run Job")
        return cls(*values.values())


class CloudRunBackend:
    name = "cloudrun"

    def __init__(
        self,
        settings: Settings,
        target: CloudRunJob,
        *,
        credentials: Any = None,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        """`credentials` None: Application Default Credentials. `client_options` go to both
        clients (e.g. {"api_endpoint": "http://127.0.0.1:8089"} for a fake)."""
        self.settings = settings
        self.target = target
        self._credentials = credentials
        self._client_options = dict(client_options or {})
        self._clients: tuple[JobsClient, ExecutionsClient] | None = None
        self._lock = threading.Lock()
        self._job_checked = False  # the Job was read and does not retry

    @classmethod
    def from_settings(cls, settings: Settings) -> CloudRunBackend:
        _sdk()  # fail at startup, not at the first start, when the extra is missing
        return cls(settings, CloudRunJob.from_settings(settings))

    async def start(self, job: Job) -> ExecutionRef:
        request = self.run_request(job)
        try:
            await self._check_job()
            name = await self._call(f"start of job {job.id}", self._start, job.id, request)
        except BackendError as exc:
            refused = refusal(exc)
            if refused is None:
                raise
            raise refused from exc
        return ExecutionRef(backend=self.name, id=name)

    async def status(self, ref: ExecutionRef) -> Execution:
        if not EXECUTION_NAME.fullmatch(ref.id):
            raise ExecutionLost(f"{ref.id!r} cannot name a Cloud Run execution", ref=ref.id)
        execution = await self._call(
            f"status of execution {ref.id}", self._get, ref.id, missing=ExecutionLost
        )
        return to_execution(execution)

    async def stop(self, ref: ExecutionRef) -> None:
        if EXECUTION_NAME.fullmatch(ref.id):
            await self._call(f"stop of execution {ref.id}", self._cancel, ref.id)

    async def find(self, job_id: str) -> ExecutionRef | None:
        name = await self._call(f"lookup of the execution of job {job_id}", self._find, job_id)
        return ExecutionRef(backend=self.name, id=name) if name else None

    async def runs(self) -> dict[str, ExecutionRef]:
        live = await self._call("listing of the executions", self._live)
        return {job_id: ExecutionRef(backend=self.name, id=name) for job_id, name in live.items()}

    async def logs(self, ref: ExecutionRef, tail: int = 200) -> str:
        short = ref.id.rpartition("/")[2]
        raise NotSupported(
            f"Cloud Run writes the output of execution {short} to Cloud Logging only: query "
            f'resource.type="cloud_run_job" AND labels."run.googleapis.com/execution_name"='
            f'"{short}" (or open the execution\'s logUri)'
        )

    async def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, None
        for client in clients or ():
            client.transport.close()  # type: ignore[no-untyped-call]  # the SDK's

    def run_request(self, job: Job) -> RunJobRequest:
        """RunJob for the target job with this bot job's env, one task and its timeout."""
        run_v2 = _sdk()
        env = bot_env(job)
        for key, value in env.items():
            if len(value.encode()) > MAX_ENV_VALUE:
                raise StartRefused(
                    f"{key} of job {job.id} is {len(value.encode())} bytes; Cloud Run allows "
                    f"{MAX_ENV_VALUE} in one env value"
                )
        overrides = run_v2.RunJobRequest.Overrides(
            container_overrides=[
                run_v2.RunJobRequest.Overrides.ContainerOverride(
                    env=[run_v2.EnvVar(name=key, value=value) for key, value in env.items()]
                )
            ],
            task_count=1,
            timeout=timedelta(seconds=min(run_timeout_seconds(job, self.settings), MAX_TIMEOUT)),
        )
        request: RunJobRequest = run_v2.RunJobRequest(name=self.target.name, overrides=overrides)
        return request

    async def _check_job(self) -> None:
        """Refuse (StartRefused) to start on a Job whose tasks retry: Cloud Run would start the
        bot again behind the scheduler's back. Read once per backend, until it passes."""
        if self._job_checked:
            return
        job = await self._call(f"check of job {self.target.job}", self._get_job)
        template = job.template.template
        if "max_retries" not in template:  # a field of a oneof: absent is not 0
            log.warning("Cloud Run Job %s does not say its maxRetries", self.target.name)
        elif template.max_retries > 0:
            raise StartRefused(
                f"Cloud Run Job {self.target.name} retries a failed task {template.max_retries} "
                "times, which would send a bot into its meeting again: set it to 0 "
                f"(gcloud run jobs update {self.target.job} --max-retries 0)"
            )
        self._job_checked = True

    # -- API calls: sync, each run in a worker thread -------------------------------------

    def _api(self) -> tuple[JobsClient, ExecutionsClient]:
        with self._lock:
            if self._clients is None:
                run_v2 = _sdk()
                options: dict[str, Any] = {
                    "credentials": self._credentials,
                    "transport": "rest",
                    "client_options": self._client_options or None,
                }
                self._clients = (run_v2.JobsClient(**options), run_v2.ExecutionsClient(**options))
            return self._clients

    def _get_job(self) -> Any:
        return self._api()[0].get_job(name=self.target.name, timeout=TIMEOUT)

    def _start(self, job_id: str, request: RunJobRequest) -> str:
        found = self._find(job_id)
        if found:
            return found
        operation = self._api()[0].run_job(request=request, timeout=TIMEOUT)
        execution = operation.metadata  # the Execution, there from the first answer
        name = str(getattr(execution, "name", "") or "") or self._find(job_id)
        if not name:
            raise BackendError(f"Cloud Run started job {job_id} but named no execution")
        return name

    def _find(self, job_id: str) -> str | None:
        """The execution already started for `job_id`: a live one first, then the newest."""
        best: tuple[bool, datetime, str] | None = None
        for execution in self._executions():
            if execution.name and job_id_of(execution) == job_id:
                live = to_execution(execution).phase not in FINAL
                key = (live, execution.create_time or EPOCH, execution.name)
                best = max(best, key) if best else key
        return best[2] if best else None

    def _live(self) -> dict[str, str]:
        """Job id -> its newest live execution, among those `_executions` reads."""
        newest: dict[str, tuple[datetime, str]] = {}
        for execution in self._executions():
            job_id = job_id_of(execution)
            if execution.name and job_id and to_execution(execution).phase not in FINAL:
                key = (execution.create_time or EPOCH, execution.name)
                newest[job_id] = max(newest.get(job_id, key), key)
        return {job_id: name for job_id, (_, name) in newest.items()}

    def _executions(self) -> Iterator[RunExecution]:
        """The job's newest MAX_SCAN executions (Cloud Run lists newest first), page by page."""
        pager = self._api()[1].list_executions(
            request={"parent": self.target.name, "page_size": PAGE_SIZE}, timeout=TIMEOUT
        )
        return itertools.islice(pager, MAX_SCAN)

    def _get(self, name: str) -> RunExecution:
        return self._api()[1].get_execution(name=name, timeout=TIMEOUT)

    def _cancel(self, name: str) -> None:
        from google.api_core import exceptions

        try:
            self._api()[1].cancel_execution(name=name, timeout=TIMEOUT)
        except exceptions.NotFound:
            pass  # gone: nothing to stop
        except (exceptions.BadRequest, exceptions.Conflict):
            try:
                ended = to_execution(self._get(name)).phase in ("succeeded", "failed")
            except exceptions.NotFound:
                ended = True
            if not ended:
                raise  # refused for another reason than having ended

    async def _call(
        self,
        what: str,
        func: Callable[..., T],
        *args: Any,
        missing: type[BackendError] = BackendError,
    ) -> T:
        """`func` in a thread; SDK errors as BackendError, a 404 as `missing`."""
        try:
            return await asyncio.to_thread(func, *args)
        except SchedulerError:
            raise
        except Exception as exc:
            from google.api_core import exceptions

            error = backend_error(exc, what)
            if error is None:
                raise
            if isinstance(exc, exceptions.NotFound):
                error = missing(error.message, **error.details)
            raise error from exc


def _sdk() -> Any:
    try:
        return importlib.import_module("google.cloud.run_v2")
    except ImportError as exc:
        raise ConfigError(
            f"PLATFORM=cloudrun needs google-cloud-run ({exc.name} is missing); "
            f"install it with: {INSTALL}"
        ) from exc


def bot_env(job: Job) -> dict[str, str]:
    return {
        "BOT_CONFIG": json.dumps(job.bot_config()),
        "MEETING_URL": job.meetingUrl,
        "BOT_NAME": job.botName,
        "JOB_ID": job.id,
        "RECORDING_MODE": job.recordingMode,
    }


def backend_error(exc: Exception, what: str) -> BackendError | None:
    """A short message: HTTP status, gRPC status and message; None for a non-SDK error."""
    import requests
    from google.api_core import exceptions
    from google.auth import exceptions as auth_exceptions

    first_line = (str(getattr(exc, "message", "") or exc).strip().splitlines() or [""])[0]
    first_line = HTTP_PREFIX.sub("", first_line)[:300]  # the REST transport's "GET https://..: "
    details: dict[str, Any] = {}
    if isinstance(exc, exceptions.GoogleAPICallError):
        status = exc.code if isinstance(exc.code, int) else None
        grpc = getattr(exc.grpc_status_code, "name", "") or _error_status(exc.response)
        text = " ".join(p for p in (f"HTTP {status}" if status else "", grpc) if p)
        text = f"{text}: {first_line}" if first_line else text
        text += IAM_HINT if status in (401, 403) else ""
        details = {"status": status} if status else {}
    elif isinstance(exc, auth_exceptions.GoogleAuthError):
        text = f"no usable Google credentials ({type(exc).__name__}: {first_line[:200]})"
    elif isinstance(exc, requests.RequestException | OSError):
        text = f"Cloud Run API unreachable: {type(exc).__name__}"
    else:
        return None
    return BackendError(f"Cloud Run {what} failed: {text}", **details)


def _error_status(response: Any) -> str:
    """The `status` of a Google JSON error body ("PERMISSION_DENIED"), or ""."""
    try:
        status = response.json()["error"]["status"]
    except Exception:
        return ""
    return status if isinstance(status, str) else ""
