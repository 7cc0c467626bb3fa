"""What the kubernetes backend reads and writes in batch/v1 Jobs, apart from the API calls: the
Job's name and label values for a job id, the container's resources, what a Job's status says
(final or live, why it failed) and the errors an API answer carries.
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import datetime
from typing import Any

import httpx

from core.backends.exits import exit_reason
from core.errors import BackendError
from core.models import Phase
from core.resources import cpu_nanos, memory_bytes

PREFIX = "botsched-"
LABEL_JOB = "botsched.io/job"
LABEL_TENANT = "botsched.io/tenant"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "bot-scheduler"
MAX_NAME = 63  # the Job name is copied into its pods' job-name label: a label value's limit
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
# The Jobs `start` makes: managed by the scheduler and labelled with a job id.
RUNS_SELECTOR = f"{MANAGED_BY}={MANAGER},{LABEL_JOB}"

Permission = tuple[str, str, str]  # (API group, resource, verb), as a Role rule names them


def job_name(job_id: str) -> str:
    """`botsched-<job id>` when that is a DNS-1123 label, else a folded one with a hash."""
    name = PREFIX + job_id
    if valid_name(name):
        return name
    digest = hashlib.sha256(job_id.encode()).hexdigest()[:10]
    folded = re.sub(r"[^a-z0-9]+", "-", job_id.lower())[: MAX_NAME - len(PREFIX) - 11]
    folded = folded.strip("-")
    return f"{PREFIX}{folded}-{digest}" if folded else f"{PREFIX}{digest}"


def label_value(text: str) -> str:
    """`text` as a label value (63 characters of [-A-Za-z0-9_.], alphanumeric at both ends);
    the exact value is in the annotation of the same key."""
    if len(text) <= MAX_NAME and LABEL_VALUE.fullmatch(text):
        return text
    return re.sub(r"[^-A-Za-z0-9_.]+", "-", text)[:MAX_NAME].strip("-_.")


def valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME and DNS_LABEL.fullmatch(name) is not None


def resources(cpu: str, memory: str) -> dict[str, Any]:
    """Requests = limits, in quantities any API server accepts (millicores, bytes)."""
    quantities = {
        "cpu": f"{math.ceil(cpu_nanos(cpu) / 1_000_000)}m",
        "memory": str(memory_bytes(memory)),
    }
    return {"requests": quantities, "limits": dict(quantities)}


def final_condition(status: dict[str, Any]) -> dict[str, Any] | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True":
            return dict(condition)
    return None


def live_phase(status: dict[str, Any]) -> Phase:
    if status.get("succeeded") or status.get("failed") or status.get("terminating"):
        return "running"  # the pod ended; the Job controller has not concluded yet
    active, ready = status.get("active") or 0, status.get("ready")
    if active and (ready is None or ready > 0):  # `ready` is absent before Kubernetes 1.24
        return "running"
    return "pending"  # no pod yet, or it is being scheduled or pulling the image


def failure_reason(condition: dict[str, Any], terminated: dict[str, Any]) -> str:
    parts = [str(condition.get("reason") or "Failed")]
    code = terminated.get("exitCode")
    if isinstance(code, int):
        parts.append(exit_reason(code))
    if terminated.get("reason") == "OOMKilled":
        parts.append("out of memory (OOM-killed)")
    message = condition.get("message")
    return ", ".join(parts) + (f": {message}" if message else "")


def created(pod: dict[str, Any]) -> str:
    return str(pod.get("metadata", {}).get("creationTimestamp") or "")


def parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def api_status(response: httpx.Response) -> dict[str, Any]:
    """The meta/v1 Status an error response carries, or {}."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def over_quota(response: httpx.Response) -> bool:
    """A 403 of a ResourceQuota (`exceeded quota: ...`), not of RBAC: it passes with time."""
    message = str(api_status(response).get("message") or "")
    return response.status_code == 403 and "exceeded quota" in message


def failed(permission: Permission, name: str, response: httpx.Response) -> BackendError:
    _, resource, verb = permission
    status = api_status(response)
    reason = status.get("reason") or f"HTTP {response.status_code}"
    message = status.get("message") or response.text[:200]
    return BackendError(
        f"Kubernetes {verb} of {resource} {name} failed: {reason}: {message}",
        status=response.status_code,
    )


def job_id_of(job: dict[str, Any]) -> str | None:
    """The job id a Job runs, when `start` made it: the exact id is in the annotation, and the
    Job's name must be the one `job_name` gives that id."""
    metadata = job.get("metadata") or {}
    job_id = (metadata.get("annotations") or {}).get(LABEL_JOB)
    if isinstance(job_id, str) and job_id and metadata.get("name") == job_name(job_id):
        return job_id
    return None
