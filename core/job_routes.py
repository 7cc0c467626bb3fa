"""The routes that change a job's schedule, and what every job answer shares.

`PATCH /api/scheduler/jobs/{jobId}` changes a queued job's joinAt, deadline, priority or
maxRuntimeSeconds (a moved job takes the slots of its new time: core/moves.py); `PUT
/api/scheduler/jobs/by-key/{externalKey}` makes the job of the client's own key look as the body
says (core/desired.py, `Scheduler.put_by_key`). A queued job in an answer of submit, GET, PATCH
and PUT carries `queuePosition` and `estimatedStartAt` (core/capacity.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.capacity import queue_fields, with_fields
from core.config import Settings
from core.desired import check_key
from core.errors import ValidationFailed
from core.http import JSONText, json_response, read_json, tenant_of
from core.intake import parse_changes, parse_desired
from core.meetings import submit_warnings
from core.models import Job, JobState, utcnow
from core.routing import method_route
from core.scheduler import Scheduler

log = logging.getLogger("botsched.api")

JOBS = "/api/scheduler/jobs"
BY_KEY = JOBS + "/by-key/{externalKey}"
ON_CAPACITY_HEADER = "x-on-capacity"
ON_CAPACITY_VALUES = ("queue", "reject")


def on_capacity_of(request: Request) -> str | None:
    """The X-On-Capacity header: `queue` or `reject` (any case), or None when not sent."""
    value = request.headers.get(ON_CAPACITY_HEADER)
    if value is None:
        return None
    if value.lower() not in ON_CAPACITY_VALUES:
        raise ValidationFailed("X-On-Capacity: must be queue or reject", fields=["X-On-Capacity"])
    return value.lower()


async def job_json(scheduler: Scheduler, job: Job, *, tenant_shown: bool = False) -> JSONText:
    """The job as the API shows it; a queued one with its place in the queue and its estimated
    start (not stored: computed for this answer); to an admin key, with its `tenant`."""
    members = await queue_fields(scheduler.store, scheduler.settings, job, scheduler.clock())
    return JSONText(with_fields(listed_json(job, tenant_shown), members))


def listed_json(job: Job, tenant_shown: bool) -> str:
    """The job as a list shows it: `public_json`, and its `tenant` to an admin key."""
    text = job.public_json()
    return with_fields(text, f',"tenant":{json.dumps(job.tenant)}') if tenant_shown else text


def due_now(job: Job) -> bool:
    return job.status is JobState.QUEUED and job.notBefore <= utcnow()


def dispatch_soon(scheduler: Scheduler) -> BackgroundTask:
    """After the response: start the new job now if capacity is free, not at the next tick. A
    dispatch already in flight in this process takes the request instead (one at a time)."""

    async def dispatch() -> None:
        try:
            await scheduler.dispatch()
        except Exception:
            log.exception("dispatch after submit failed; the next drain will retry")

    return BackgroundTask(dispatch)


class JobRoutes:
    def __init__(self, settings: Settings, scheduler: Callable[[], Awaitable[Scheduler]]) -> None:
        self.settings = settings
        self._scheduler = scheduler

    def table(self) -> list[Route]:
        return [method_route(BY_KEY, PUT=self.put_by_key)]

    async def _body(self, request: Request) -> Any:
        settings = self.settings
        return await read_json(request, settings.max_body_bytes, settings.body_timeout_seconds)

    async def reschedule(self, request: Request) -> Response:
        """PATCH: 200 with the job; 409 `not_queued` (with `state`) once it left the queue, 409
        `overbooked` or `meeting_taken` for a move refused (core/moves.py)."""
        tenant = tenant_of(request, self.settings)
        job_id = request.path_params["jobId"]
        data = await self._body(request)
        scheduler = await self._scheduler()
        job = await scheduler.get(tenant, job_id)
        fields = parse_changes(data, job, self.settings, utcnow())
        job = await scheduler.reschedule(tenant, job_id, fields)
        warnings = submit_warnings(job.id)  # moved holding no reservation (overbooking queue)
        return await self._answer(
            scheduler, job, 200, **({"warnings": warnings} if warnings else {})
        )

    async def put_by_key(self, request: Request) -> Response:
        """PUT: 201 with a job it created, 200 with the job it changed, cancelled or kept."""
        tenant = tenant_of(request, self.settings)
        key = check_key(request.path_params["externalKey"])
        data = await self._body(request)
        spec, cancelled, warnings = parse_desired(
            data, self.settings, utcnow(), on_capacity_of(request)
        )
        scheduler = await self._scheduler()
        outcome = await scheduler.put_by_key(tenant, key, spec, cancelled=cancelled)
        warnings += [f"{name}: not applied, the job has started" for name in outcome.not_applied]
        warnings += submit_warnings(outcome.job.id)  # created or moved holding no reservation
        extra: dict[str, Any] = {"created": outcome.created}
        if outcome.duplicate:
            extra["duplicate"] = True
        if warnings:
            extra["warnings"] = warnings
        status = 201 if outcome.created else 200
        return await self._answer(scheduler, outcome.job, status, **extra)

    async def _answer(self, scheduler: Scheduler, job: Job, status: int, **extra: Any) -> Response:
        body = {"success": True, "job": await job_json(scheduler, job), **extra}
        background = dispatch_soon(scheduler) if due_now(job) else None
        return json_response(body, status_code=status, background=background)
