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
from core.errors import SchedulerError, ValidationFailed
from core.http import normalised, parse_model
from core.models import JobSpec

SNAKE_CASE_ROUTE = "/api/scheduler/meetings"


def parse_job(data: Any, settings: Settings, now: datetime) -> tuple[JobSpec, list[str]]:
    """The job a body asks for, and warnings about what in it was ignored."""
    context = {
        "meeting_policy": settings.meeting_policy,
        "now": now,
        "webhook_allow_private": settings.webhook_allow_private,
    }
    spec = parse_model(JobSpec, data, context)
    return spec, _unknown_fields(data)


def parse_batch(
    items: list[Any], settings: Settings, now: datetime
) -> tuple[list[tuple[int, JobSpec, list[str]]], list[dict[str, Any]]]:
    """Every item validated before any is created: (index, spec, warnings) of the valid ones,
    and an error entry (index, error, message) for each invalid one."""
    valid: list[tuple[int, JobSpec, list[str]]] = []
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            spec, warnings = parse_job(item, settings, now)
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
