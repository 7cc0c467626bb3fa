"""A submit's body made into a JobSpec: the settings' checks, unknown fields, near-miss names.

Unknown fields do not fail a submit (old clients keep working): the answer lists them in
`warnings`. A near-miss of a field's name (`meeting_url`, `meetingURL`, `bot_name`, ...) without
the field itself is a 400 that names the right field: it was certainly meant, and ignoring it
would run a different job than the client asked for.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

from core.config import Settings
from core.desired import SCHEDULE_FIELDS
from core.errors import SchedulerError, ValidationFailed
from core.http import normalised, parse_model
from core.leads import start_by
from core.models import Job, JobSpec

SNAKE_CASE_ROUTE = "/api/scheduler/meetings"


def parse_job(
    data: Any, settings: Settings, now: datetime, on_capacity: str | None = None
) -> tuple[JobSpec, list[str]]:
    """The job a body asks for, and warnings about what in it was ignored. `on_capacity`, the
    X-On-Capacity header's, is the body's `onCapacity` when the body has none."""
    if on_capacity is not None and isinstance(data, dict) and "onCapacity" not in data:
        data = {**data, "onCapacity": on_capacity}
    spec = parse_model(JobSpec, data, _context(settings, now))
    return spec, _unknown_fields(data)


def _context(settings: Settings, now: datetime) -> dict[str, Any]:
    return {
        "meeting_policy": settings.meeting_policy,
        "now": now,
        "webhook_allow_private": settings.webhook_allow_private,
    }


def parse_changes(data: Any, job: Job, settings: Settings, now: datetime) -> dict[str, Any]:
    """A PATCH's fields (SCHEDULE_FIELDS only, null clearing all but priority), checked as a
    submit checks them, beside the job's other fields (a deadline after joinAt)."""
    if not isinstance(data, dict):
        raise ValidationFailed("request body must be a JSON object")
    names = ", ".join(SCHEDULE_FIELDS)
    others = [key for key in data if key not in SCHEDULE_FIELDS]
    if others:
        raise ValidationFailed(
            f"{others[0]}: not a field PATCH changes; it takes {names} (PUT "
            "/api/scheduler/jobs/by-key/{externalKey} replaces a whole job)",
            fields=others,
        )
    if not data:
        raise ValidationFailed(f"nothing to change: give one or more of {names}")
    # a deadline that is only the end of the meeting's window is the scheduler's, not a limit
    # the client set: a new joinAt moves it (core/leads.py effective_deadline)
    deadline = None if job.deadline == start_by(job, settings) else job.deadline
    kept = {"meetingUrl": job.meetingUrl, "joinAt": job.joinAt, "deadline": deadline}
    spec = parse_model(JobSpec, {**kept, **data}, _context(settings, now))
    return {name: getattr(spec, name) for name in data}


def parse_desired(
    data: Any, settings: Settings, now: datetime, on_capacity: str | None = None
) -> tuple[JobSpec | None, bool, list[str]]:
    """A PUT by key's body: (the spec, False, warnings), or (None, True, []) for `"cancelled":
    true` (the rest of the body is then not read)."""
    if not isinstance(data, dict):
        raise ValidationFailed("request body must be a JSON object")
    cancelled = data.get("cancelled", False)
    if not isinstance(cancelled, bool):
        raise ValidationFailed("cancelled: must be true or false", fields=["cancelled"])
    if cancelled:
        return None, True, []
    spec, warnings = parse_job(
        {k: v for k, v in data.items() if k != "cancelled"}, settings, now, on_capacity
    )
    return spec, False, warnings


def parse_batch(
    items: list[Any], settings: Settings, now: datetime, on_capacity: str | None = None
) -> tuple[list[tuple[int, JobSpec, list[str]]], list[dict[str, Any]]]:
    """Every item validated before any is created: (index, spec, warnings) of the valid ones,
    and an error entry (index, error, message) for each invalid one."""
    valid: list[tuple[int, JobSpec, list[str]]] = []
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            spec, warnings = parse_job(item, settings, now, on_capacity)
        except SchedulerError as exc:
            errors.append({"index": index, "error": exc.code, "message": exc.message})
            url = item.get("meetingUrl") if isinstance(item, dict) else None
            if isinstance(url, str):
                errors[-1]["meetingUrl"] = url
            continue
        valid.append((index, spec, warnings))
    return valid, errors


@cache
def _fields_by_norm() -> dict[str, str]:
    return {normalised(name): name for name in JobSpec.model_fields}


def _unknown_fields(data: dict[str, Any]) -> list[str]:
    known = JobSpec.model_fields
    if known.keys() >= data.keys():
        return []
    by_norm = _fields_by_norm()
    warnings, misses = [], []
    for key in data:
        if key in known:
            continue
        meant = by_norm.get(normalised(key))
        if meant is not None and meant not in data:
            misses.append(
                f"{key}: not a field of this route; did you mean {meant}? "
                f"({SNAKE_CASE_ROUTE} takes the snake_case bot config)"
            )
        else:
            warnings.append(f"{key}: unknown field, ignored")
    if misses:
        raise ValidationFailed("; ".join(misses), fields=[m.split(":", 1)[0] for m in misses])
    return warnings
