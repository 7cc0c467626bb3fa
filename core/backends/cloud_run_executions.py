"""What a Cloud Run execution says (core/backends/cloud_run.py): whose it is, and its phase."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from core.models import Execution

if TYPE_CHECKING:
    from google.cloud.run_v2 import Execution as RunExecution


def job_id_of(execution: RunExecution) -> str | None:
    """The JOB_ID in the env of the execution's containers (its template has the overrides)."""
    for container in execution.template.containers:
        for var in container.env:
            if var.name == "JOB_ID":
                return str(var.value)
    return None


def to_execution(execution: RunExecution) -> Execution:
    started, finished = _time(execution.start_time), _time(execution.completion_time)
    times: dict[str, Any] = {"startedAt": started, "finishedAt": finished}
    completed = next((c for c in execution.conditions if c.type_ == "Completed"), None)
    state = completed.state.name if completed else ""
    ended_badly = execution.failed_count or execution.cancelled_count
    if state == "CONDITION_FAILED" or (finished and ended_badly and state != "CONDITION_SUCCEEDED"):
        return Execution(phase="failed", reason=_failure(execution, completed), **times)
    if state == "CONDITION_SUCCEEDED" or finished:
        return Execution(phase="succeeded", exitCode=0, **times)
    if execution.running_count > 0:
        return Execution(phase="running", startedAt=started)
    return Execution(phase="pending", startedAt=started)


def _time(value: datetime | None) -> datetime | None:
    """A plain aware datetime (the SDK's carry nanoseconds in a subclass)."""
    return datetime(*value.utctimetuple()[:6], value.microsecond, tzinfo=UTC) if value else None


def _failure(execution: RunExecution, completed: Any) -> str:
    why = completed.execution_reason.name if completed else ""
    if why in ("CANCELLED", "CANCELLING") or (execution.cancelled_count and not why):
        reason = "cancelled"
    elif why and why != "EXECUTION_REASON_UNDEFINED":
        reason = why.lower().replace("_", " ")  # "non zero exit code", ...
    else:
        common = completed.reason.name if completed else ""
        reason = common if common and common != "COMMON_REASON_UNDEFINED" else "failed"
    message = str(completed.message) if completed and completed.message else ""
    return f"{reason}: {message[:300]}" if message else reason
