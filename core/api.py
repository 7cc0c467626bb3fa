"""The Starlette app: the seed's routes, unchanged on the wire, plus ours.

Handlers for every platform serve this app; none of them adds a route of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from core import __version__
from core.config import Settings, is_loopback
from core.errors import ConfigError, SchedulerError, ValidationFailed
from core.http import (
    error_response,
    on_http_error,
    on_scheduler_error,
    on_unexpected,
    parse_model,
    query_int,
    read_json,
    tenant_of,
)
from core.metrics import render_metrics
from core.models import Job, JobSpec, JobState, utcnow
from core.openapi import DOCS_HTML, openapi_document
from core.runtime import Runtime
from core.scheduler import Scheduler

log = logging.getLogger("botsched.api")

Endpoint = Callable[[Request], Awaitable[Response]]


class MeetingRequest(BaseModel):
    """The seed's snake_case bot config, as its bot reads it; extra fields travel in `config`."""

    model_config = ConfigDict(extra="allow")

    meeting_url: str
    bot_name: str = "Recording Bot"
    email: str | None = None
    recording_mode: str = "speaker_view"
    priority: int = Field(default=5)

    def to_spec(self) -> dict[str, Any]:
        config = self.model_dump(exclude_none=True)
        return {
            "meetingUrl": self.meeting_url,
            "botName": self.bot_name,
            "email": self.email,
            "recordingMode": self.recording_mode,
            "priority": self.priority,
            "config": config,
        }


def create_app(
    settings: Settings,
    runtime: Runtime | None = None,
    *,
    drain_every: float | None = None,
    exposed: bool | None = None,
) -> Starlette:
    """The app. `drain_every` runs `drain_once` in the background on that interval (the local
    server's timer); `exposed` says whether it serves beyond loopback (default: from HOST)."""
    exposed = (not is_loopback(settings.host)) if exposed is None else exposed
    check_auth(settings, exposed)
    runtime = runtime or Runtime(settings)
    routes = Routes(settings, runtime)
    return Starlette(
        routes=routes.table(),
        exception_handlers={
            SchedulerError: on_scheduler_error,
            HTTPException: on_http_error,
            Exception: on_unexpected,
        },
        lifespan=_lifespan(runtime, drain_every),
    )


def check_auth(settings: Settings, exposed: bool) -> None:
    if settings.auth_enabled:
        return
    if settings.auth_disabled:
        log.warning("authentication is disabled (SCHEDULER_AUTH_DISABLED): anyone can use the API")
    elif exposed:
        raise ConfigError(
            "no API keys configured: set SCHEDULER_API_KEYS, or bind to loopback, "
            "or set SCHEDULER_AUTH_DISABLED=true for local use"
        )
    else:
        log.warning("no SCHEDULER_API_KEYS: authentication is off (loopback only)")


def _lifespan(
    runtime: Runtime, drain_every: float | None
) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = None
        if drain_every:
            scheduler = await runtime.scheduler()
            task = asyncio.create_task(drain_forever(scheduler, drain_every))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await runtime.close()

    return lifespan


async def drain_forever(scheduler: Scheduler, every: float) -> None:
    """The local timer: one drain per interval; a failed drain is logged, never fatal."""
    while True:
        try:
            report = await scheduler.drain_once()
            if report.dispatched or report.completed or report.failed or report.retried:
                log.info("drain: %s", report.model_dump(exclude_defaults=True))
        except Exception:
            log.exception("drain failed; trying again next interval")
        await asyncio.sleep(every)


class Routes:
    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime

    def table(self) -> list[Route]:
        jobs = "/api/scheduler/jobs"
        return [
            Route("/", self.info),
            Route("/health", self.health),
            Route("/metrics", self.metrics),
            Route("/openapi.json", self.openapi),
            Route("/docs", self.docs),
            Route(jobs, self.submit, methods=["POST"]),
            Route(jobs, self.list_jobs, methods=["GET"]),
            Route(f"{jobs}/batch", self.submit_batch, methods=["POST"]),
            Route(jobs + "/{jobId}", self.get_job, methods=["GET"]),
            Route(jobs + "/{jobId}", self.cancel_job, methods=["DELETE"]),
            Route(jobs + "/{jobId}/logs", self.job_logs, methods=["GET"]),
            Route("/api/scheduler/stats", self.stats, methods=["GET"]),
            Route("/api/scheduler/meetings", self.submit_meeting, methods=["POST"]),
        ]

    async def _scheduler(self) -> Scheduler:
        return await self.runtime.scheduler()

    async def _body(self, request: Request) -> Any:
        return await read_json(request, self.settings.max_body_bytes)

    async def info(self, request: Request) -> Response:
        return JSONResponse(
            {
                "name": "Bot Scheduler API",
                "version": __version__,
                "platform": self.settings.platform,
                "endpoints": {
                    "health": "GET /health",
                    "submitJob": "POST /api/scheduler/jobs",
                    "batchSubmit": "POST /api/scheduler/jobs/batch",
                    "listJobs": "GET /api/scheduler/jobs",
                    "getJob": "GET /api/scheduler/jobs/:jobId",
                    "cancelJob": "DELETE /api/scheduler/jobs/:jobId",
                    "jobLogs": "GET /api/scheduler/jobs/:jobId/logs",
                    "stats": "GET /api/scheduler/stats",
                    "submitMeeting": "POST /api/scheduler/meetings",
                    "openapi": "GET /openapi.json",
                    "docs": "GET /docs",
                    "metrics": "GET /metrics",
                },
            }
        )

    async def health(self, request: Request) -> Response:
        return JSONResponse(
            {
                "status": "healthy",
                "timestamp": utcnow().isoformat(),
                "platform": self.settings.platform,
            }
        )

    async def metrics(self, request: Request) -> Response:
        tenant_of(request, self.settings)
        scheduler = await self._scheduler()
        text = render_metrics(await scheduler.store.counts(), scheduler)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def docs(self, request: Request) -> Response:
        return HTMLResponse(DOCS_HTML)

    async def submit(self, request: Request) -> Response:
        tenant = tenant_of(request, self.settings)
        spec = parse_model(JobSpec, await self._body(request))
        return await self._submit_one(request, tenant, spec)

    async def submit_meeting(self, request: Request) -> Response:
        tenant = tenant_of(request, self.settings)
        meeting = parse_model(MeetingRequest, await self._body(request))
        return await self._submit_one(request, tenant, parse_model(JobSpec, meeting.to_spec()))

    async def _submit_one(self, request: Request, tenant: str, spec: JobSpec) -> Response:
        key = request.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= 200:
            raise ValidationFailed("Idempotency-Key: must be 1 to 200 characters")
        scheduler = await self._scheduler()
        job, created = await scheduler.submit(tenant, spec, key)
        body: dict[str, Any] = {"success": True, "job": job.public()}
        if not created:
            body["duplicate"] = True
        return JSONResponse(
            body,
            status_code=201 if created else 200,
            background=_dispatch_soon(scheduler) if created and _due_now(job) else None,
        )

    async def submit_batch(self, request: Request) -> Response:
        tenant = tenant_of(request, self.settings)
        data = await self._body(request)
        items = data.get("jobs") if isinstance(data, dict) else None
        if not isinstance(items, list) or not items:
            raise ValidationFailed("jobs: must be a non-empty array of job objects")
        if len(items) > self.settings.max_batch_size:
            raise ValidationFailed(f"jobs: at most {self.settings.max_batch_size} per batch")
        scheduler = await self._scheduler()
        jobs, errors, created_any = [], [], False
        for index, item in enumerate(items):
            try:
                job, created = await scheduler.submit(tenant, parse_model(JobSpec, item))
            except SchedulerError as exc:
                errors.append({"index": index, "error": exc.code, "message": exc.message})
                continue
            created_any = created_any or created
            jobs.append({"index": index, "duplicate": not created, **job.public()})
        status = 201 if not errors else (207 if jobs else 400)
        body = {
            "success": not errors,
            "submitted": len(jobs),
            "failed": len(errors),
            "jobs": jobs,
            "errors": errors,
        }
        if status == 400:  # nothing submitted: an error, so it has the error shape too
            body.update(
                error="validation_error",
                message="no job in the batch is valid: "
                + "; ".join(f"jobs[{e['index']}]: {e['message']}" for e in errors),
            )
        background = _dispatch_soon(scheduler) if created_any else None
        return JSONResponse(body, status_code=status, background=background)

    async def list_jobs(self, request: Request) -> Response:
        tenant = tenant_of(request, self.settings)
        raw_status = request.query_params.get("status")
        status = None
        if raw_status:
            try:
                status = JobState(raw_status)
            except ValueError:
                choices = ", ".join(state.value for state in JobState)
                raise ValidationFailed(f"status: must be one of {choices}") from None
        limit = query_int(request, "limit", 50, 1, 200)
        cursor = request.query_params.get("cursor") or None
        page = await (await self._scheduler()).list_jobs(tenant, status, limit, cursor)
        return JSONResponse(
            {
                "success": True,
                "jobs": [job.public() for job in page.jobs],
                "nextCursor": page.nextCursor,
            }
        )

    async def get_job(self, request: Request) -> Response:
        job = await self._job_call(request, Scheduler.get)
        return JSONResponse({"success": True, "job": job.public()})

    async def cancel_job(self, request: Request) -> Response:
        job = await self._job_call(request, Scheduler.cancel)
        return JSONResponse({"success": True, "job": job.public()})

    async def _job_call(
        self, request: Request, call: Callable[[Scheduler, str | None, str], Awaitable[Job]]
    ) -> Job:
        tenant = tenant_of(request, self.settings)
        return await call(await self._scheduler(), tenant, request.path_params["jobId"])

    async def job_logs(self, request: Request) -> Response:
        tenant = tenant_of(request, self.settings)
        tail = query_int(request, "tail", 200, 1, 10_000)
        scheduler = await self._scheduler()
        logs = await scheduler.logs(tenant, request.path_params["jobId"], tail)
        return JSONResponse({"success": True, "jobId": request.path_params["jobId"], "logs": logs})

    async def stats(self, request: Request) -> Response:
        tenant = tenant_of(request, self.settings)
        stats = await (await self._scheduler()).stats(tenant)
        return JSONResponse({"success": True, **stats, "stats": stats})


def _due_now(job: Job) -> bool:
    return job.notBefore <= utcnow()


def _dispatch_soon(scheduler: Scheduler) -> BackgroundTask:
    """After the response: start the new job now if capacity is free, not at the next tick. A
    dispatch already in flight in this process takes the request instead (one at a time)."""

    async def dispatch() -> None:
        try:
            await scheduler.dispatch()
        except Exception:
            log.exception("dispatch after submit failed; the next drain will retry")

    return BackgroundTask(dispatch)


__all__ = ["create_app", "error_response"]
