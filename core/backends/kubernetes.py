"""The `kubernetes` backend: one batch/v1 Job per bot job, in `K8S_NAMESPACE`.

It talks to the API server with httpx, not the official SDK: the backend makes six calls
(create, get, list and delete Jobs; list a Job's pods; read a pod's log), while the `kubernetes`
package brings generated models for the whole API plus urllib3, google-auth, oauthlib and
websocket-client (and its async twin, aiohttp), all paid for at every serverless cold start. httpx
is already a dependency, async, and needs no grpc. Auth and kubeconfig parsing live in
kube_auth.py; what a Job's name, labels and status mean, in kube_jobs.py.

- The Job is named after the job (`botsched-<job id>`, a DNS-1123 label; an id that cannot be one
  is folded to one with a hash suffix) and labelled with the job id, tenant and
  app.kubernetes.io/managed-by. Creating a name that exists answers 409 AlreadyExists: a retried
  or recovered start adopts that Job instead of starting a second bot.
- One container `bot` running SCHEDULER_CONTAINER_IMAGE; requests = limits = the job's cpu and
  memory (or the defaults); `restartPolicy: Never` and `backoffLimit: 0` (a failed bot is never
  started again behind the scheduler's back); `activeDeadlineSeconds` = maxRuntimeSeconds, else
  twice SCHEDULER_EXPECTED_RUN_SECONDS (core/backends/policy.py);
  `ttlSecondsAfterFinished` = K8S_TTL_SECONDS_AFTER_FINISHED: after that the Job, its pod and its
  logs are gone and `status` raises ExecutionLost, so keep it longer than the scheduler may be
  down; `serviceAccountName` = K8S_SERVICE_ACCOUNT, else no API token is mounted into the bot.
- The bot gets BOT_CONFIG, MEETING_URL, BOT_NAME, JOB_ID and RECORDING_MODE as env (every `$`
  written `$$`, since Kubernetes expands `$(VAR)` in env values). A Job has no stdin to feed.
- status: only a `Complete` or `Failed` condition with status "True" is final; the Failed reason
  (DeadlineExceeded, BackoffLimitExceeded, ...) and the pod's exit code make the reason.
- stop deletes the Job with `propagationPolicy: Background` (its pod goes too, and the kubelet
  gives the bot terminationGracePeriodSeconds = BOT_STOP_GRACE_SECONDS after SIGTERM).
- logs come from the Job's newest pod (label selector `job-name=<name>`). Before a pod exists or
  while its container is waiting to start they are "" (the run exists and has printed nothing;
  NotSupported would say this backend never has logs); once the Job is gone: ExecutionLost.
- find gets the Job named after the job (live or finished, until its TTL removes it); runs lists
  the namespace's Jobs with the scheduler's labels (`managed-by=bot-scheduler` and a job label),
  paged, keeps those without a final condition and keys them by the exact job id annotation.
- Every call names the RBAC permission it needs; `RBAC` is exactly that set, which
  infra/kubernetes/ grants and a test compares. 401/403 raise a BackendError naming it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import httpx

from core.backends.kube_auth import Cluster, load_cluster
from core.backends.kube_jobs import (
    DNS_LABEL,
    LABEL_JOB,
    LABEL_TENANT,
    MANAGED_BY,
    MANAGER,
    MAX_NAME,
    RUNS_SELECTOR,
    Permission,
    api_status,
    created,
    failed,
    failure_reason,
    final_condition,
    job_id_of,
    job_name,
    label_value,
    live_phase,
    over_quota,
    parse_time,
    resources,
    valid_name,
)
from core.backends.policy import refusal, run_timeout_seconds
from core.config import Settings
from core.errors import BackendError, ConfigError, ExecutionLost
from core.models import Execution, ExecutionRef, Job

CONTAINER = "bot"
POD_JOB_LABEL = "job-name"  # set on a Job's pods by the Job controller (every version)
TIMEOUT = 30.0
PAGE_SIZE = 500  # Jobs per list call when listing the runs

CREATE_JOB: Permission = ("batch", "jobs", "create")
GET_JOB: Permission = ("batch", "jobs", "get")
LIST_JOBS: Permission = ("batch", "jobs", "list")
DELETE_JOB: Permission = ("batch", "jobs", "delete")
LIST_PODS: Permission = ("", "pods", "list")
GET_LOG: Permission = ("", "pods/log", "get")
RBAC: frozenset[Permission] = frozenset(
    {CREATE_JOB, GET_JOB, LIST_JOBS, DELETE_JOB, LIST_PODS, GET_LOG}
)


@dataclass(frozen=True)
class KubeOptions:
    """K8S_NAMESPACE (unset: the service account's or the kubeconfig context's, else
    "default"), K8S_TTL_SECONDS_AFTER_FINISHED and K8S_SERVICE_ACCOUNT (for the bot's pod)."""

    namespace: str | None = None
    ttl_seconds_after_finished: int = 3600
    service_account: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> KubeOptions:
        return cls(
            settings.k8s_namespace,
            settings.k8s_ttl_seconds_after_finished,
            settings.k8s_service_account,
        )


class KubernetesBackend:
    name = "kubernetes"

    def __init__(
        self,
        settings: Settings,
        cluster: Cluster,
        options: KubeOptions | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.cluster = cluster
        self.options = options or KubeOptions.from_settings(settings)
        self.namespace = self.options.namespace or cluster.namespace or "default"
        if not DNS_LABEL.fullmatch(self.namespace) or len(self.namespace) > MAX_NAME:
            raise ConfigError(f"K8S_NAMESPACE={self.namespace!r} is not a namespace name")
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesBackend:
        return cls(settings, load_cluster())

    async def start(self, job: Job) -> ExecutionRef:
        """Create the Job; StartRefused when retrying cannot help (an invalid Job, RBAC that
        forbids creating it, a namespace that does not exist: core/backends/policy.py)."""
        name = job_name(job.id)
        body = self.manifest(job, name)
        try:
            response = await self._call(CREATE_JOB, "POST", self._jobs(), json=body)
        except BackendError as exc:  # unreachable (transient) or RBAC (permanent)
            refused = refusal(exc)
            if refused is None:
                raise
            raise refused from exc
        if response.status_code == 409 and api_status(response).get("reason") == "AlreadyExists":
            pass  # a start before this one created it: adopt that Job
        elif response.status_code not in (200, 201, 202):
            error = failed(CREATE_JOB, name, response)
            raise refusal(error) or error
        return ExecutionRef(backend=self.name, id=name)

    async def status(self, ref: ExecutionRef) -> Execution:
        job = await self._get_job(_name(ref))
        if job is None:
            raise ExecutionLost(f"Kubernetes Job {ref.id} is gone", ref=ref.id)
        status: dict[str, Any] = job.get("status") or {}
        started = parse_time(status.get("startTime"))
        condition = final_condition(status)
        if condition is None:
            return Execution(phase=live_phase(status), startedAt=started)
        finished = parse_time(status.get("completionTime") or condition.get("lastTransitionTime"))
        if condition["type"] == "Complete":
            return Execution(phase="succeeded", exitCode=0, startedAt=started, finishedAt=finished)
        terminated = await self._terminated(ref.id)
        code = terminated.get("exitCode")
        return Execution(
            phase="failed",
            exitCode=code if isinstance(code, int) else None,
            reason=failure_reason(condition, terminated),
            startedAt=started,
            finishedAt=finished,
        )

    async def stop(self, ref: ExecutionRef) -> None:
        if not valid_name(ref.id):
            return
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        response = await self._call(DELETE_JOB, "DELETE", self._jobs(ref.id), json=body)
        if response.status_code not in (200, 202, 404):
            raise failed(DELETE_JOB, ref.id, response)

    async def find(self, job_id: str) -> ExecutionRef | None:
        name = job_name(job_id)
        if await self._get_job(name) is None:
            return None
        return ExecutionRef(backend=self.name, id=name)

    async def runs(self) -> dict[str, ExecutionRef]:
        found: dict[str, ExecutionRef] = {}
        for job in await self._list_jobs():
            job_id = job_id_of(job)
            if job_id and final_condition(job.get("status") or {}) is None:
                found[job_id] = ExecutionRef(backend=self.name, id=job_name(job_id))
        return found

    async def logs(self, ref: ExecutionRef, tail: int = 200) -> str:
        pod = await self._newest_pod(_name(ref))
        if pod is None:
            if await self._get_job(ref.id) is None:
                raise ExecutionLost(f"Kubernetes Job {ref.id} is gone", ref=ref.id)
            return ""  # no pod yet
        if tail <= 0:
            return ""
        pod_name = str(pod.get("metadata", {}).get("name", ""))
        path = f"/api/v1/namespaces/{self.namespace}/pods/{pod_name}/log"
        params = {"container": CONTAINER, "tailLines": str(tail)}
        response = await self._call(GET_LOG, "GET", path, params=params)
        if response.status_code == 200:
            return response.text
        if response.status_code == 400 and "waiting to start" in response.text:
            return ""  # the container is still being created
        if response.status_code == 404:
            raise ExecutionLost(f"the pod of Kubernetes Job {ref.id} is gone", ref=ref.id)
        raise failed(GET_LOG, pod_name, response)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def manifest(self, job: Job, name: str) -> dict[str, Any]:
        """The batch/v1 Job that runs `job`'s bot."""
        labels = {
            LABEL_JOB: label_value(job.id),
            LABEL_TENANT: label_value(job.tenant),
            MANAGED_BY: MANAGER,
        }
        spec: dict[str, Any] = {
            "backoffLimit": 0,  # never a second pod behind the scheduler's back
            "activeDeadlineSeconds": run_timeout_seconds(job, self.settings),
            "ttlSecondsAfterFinished": self.options.ttl_seconds_after_finished,
            "template": {"metadata": {"labels": labels}, "spec": self._pod_spec(job)},
        }
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": labels,
                "annotations": {LABEL_JOB: job.id, LABEL_TENANT: job.tenant},
            },
            "spec": spec,
        }

    def _pod_spec(self, job: Job) -> dict[str, Any]:
        env = {
            "BOT_CONFIG": json.dumps(job.bot_config()),
            "MEETING_URL": job.meetingUrl,
            "BOT_NAME": job.botName,
            "JOB_ID": job.id,
            "RECORDING_MODE": job.recordingMode,
        }
        container = {
            "name": CONTAINER,
            "image": self.settings.container_image,
            "env": [{"name": key, "value": value.replace("$", "$$")} for key, value in env.items()],
            "resources": resources(
                job.cpu or self.settings.default_cpu, job.memory or self.settings.default_memory
            ),
        }
        pod: dict[str, Any] = {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": math.ceil(self.settings.stop_grace_seconds),
            "containers": [container],
        }
        if self.options.service_account:
            pod["serviceAccountName"] = self.options.service_account
        else:
            pod["automountServiceAccountToken"] = False  # the bot needs no API access
        return pod

    # -- API calls ---------------------------------------------------------------------------

    def _jobs(self, name: str | None = None) -> str:
        path = f"/apis/batch/v1/namespaces/{self.namespace}/jobs"
        return f"{path}/{name}" if name else path

    async def _call(
        self, permission: Permission, method: str, path: str, **kwargs: Any
    ) -> httpx.Response:
        assert permission in RBAC, f"{permission} is missing from RBAC and the Role"
        if self._client is None:
            self._client = self.cluster.client(TIMEOUT, self._transport)
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise BackendError(
                f"Kubernetes API at {self.cluster.server} unreachable: {type(exc).__name__}"
                + (f": {exc}" if str(exc) else "")
            ) from exc
        if response.status_code in (401, 403) and not over_quota(response):
            raise self._denied(permission, response)
        return response

    def _denied(self, permission: Permission, response: httpx.Response) -> BackendError:
        group, resource, verb = permission
        what = f"{verb!r} on {resource!r} (apiGroup {group!r}) in namespace {self.namespace!r}"
        if response.status_code == 401:
            message = (
                f"Kubernetes rejected the credentials from {self.cluster.source} (HTTP 401) "
                f"for {what}: the token or client certificate is missing, expired or invalid"
            )
        else:
            message = (
                f"Kubernetes RBAC forbids {what} (HTTP 403): grant the scheduler's service "
                f"account the verb {verb!r} on {resource!r} in a Role (infra/kubernetes/)"
            )
        details = {"verb": verb, "resource": resource, "apiGroup": group}
        return BackendError(message, status=response.status_code, **details)

    async def _get_job(self, name: str) -> dict[str, Any] | None:
        response = await self._call(GET_JOB, "GET", self._jobs(name))
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise failed(GET_JOB, name, response)
        job: dict[str, Any] = response.json()
        return job

    async def _list_jobs(self) -> list[dict[str, Any]]:
        """The scheduler's Jobs in the namespace (RUNS_SELECTOR), every page."""
        params = {"labelSelector": RUNS_SELECTOR, "limit": str(PAGE_SIZE)}
        jobs: list[dict[str, Any]] = []
        while True:
            response = await self._call(LIST_JOBS, "GET", self._jobs(), params=params)
            if response.status_code != 200:
                raise failed(LIST_JOBS, f"in namespace {self.namespace}", response)
            body = response.json()
            jobs += [job for job in body.get("items") or [] if isinstance(job, dict)]
            token = (body.get("metadata") or {}).get("continue")
            if not token:
                return jobs
            params = {**params, "continue": str(token)}

    async def _newest_pod(self, name: str) -> dict[str, Any] | None:
        params = {"labelSelector": f"{POD_JOB_LABEL}={name}"}
        path = f"/api/v1/namespaces/{self.namespace}/pods"
        response = await self._call(LIST_PODS, "GET", path, params=params)
        if response.status_code != 200:
            raise failed(LIST_PODS, name, response)
        pods = [pod for pod in response.json().get("items") or [] if isinstance(pod, dict)]
        return max(pods, key=created, default=None)

    async def _terminated(self, name: str) -> dict[str, Any]:
        """The bot container's `terminated` state in the Job's newest pod; {} when unreadable."""
        try:
            pod = await self._newest_pod(name)
        except BackendError:
            return {}  # the exit code is a detail: the Job's condition already decided
        for container in (pod or {}).get("status", {}).get("containerStatuses") or []:
            if container.get("name") == CONTAINER:
                for key in ("state", "lastState"):
                    terminated = (container.get(key) or {}).get("terminated")
                    if isinstance(terminated, dict):
                        return terminated
        return {}


def _name(ref: ExecutionRef) -> str:
    if not valid_name(ref.id):
        raise ExecutionLost(f"{ref.id!r} cannot name a Kubernetes Job", ref=ref.id)
    return ref.id
