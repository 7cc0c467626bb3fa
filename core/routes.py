"""The Starlette app: the seed's routes, unchanged on the wire, plus ours.

Handlers for every platform serve this app, through `core.api.create_app`, which imports this
module on its first call; none of them adds a route of its own.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from core import __version__
from core.budget_routes import BudgetRoutes, stats_fields
from core.capacity import estimated_wait
from core.config import Settings, is_loopback
from core.docs import docs_routes
from core.errors import ConfigError, Conflict, SchedulerError, ValidationFailed
from core.http import (
    JSONText,
    json_response,
    listed_tenant,
    metrics_scope,
    on_http_error,
    on_scheduler_error,
    on_unexpected,
    parse_model,
    query_int,
    read_json,
    read_scope,
    tenant_of,
)
from core.intake import parse_batch, parse_job
from core.job_routes import (
    JobRoutes,
    dispatch_soon,
    due_now,
    job_json,
    listed_json,
    on_capacity_of,
)
from core.loops import deliver_forever, drain_forever, running
from core.meeting_config import MeetingRequest, check_no_nul_fields, meeting_view
from core.meetings import duplicate_reason, submit_warnings
from core.metrics import render_metrics
from core.models import Job, JobSpec, JobState, utcnow
from core.ratelimit import RateLimitMiddleware
from core.routing import method_route, on_method_not_allowed, query_once
from core.runtime import Runtime
from core.scheduler import Scheduler
from core.values import new_job_id
from core.webhook_routes import WebhookRoutes

log = logging.getLogger("botsched.api")

Endpoint = Callable[[Request], Awaitable[Response]]


def build_app(
    settings: Settings,
    runtime: Runtime | None = None,
    *,
    drain_every: float | None = None,
    exposed: bool | None = None,
) -> Starlette:
    """The app (see `core.api.create_app`)."""
    exposed = (not is_loopback(settings.host)) if exposed is None else exposed
    check_auth(settings, exposed)
    runtime = runtime or Runtime(settings)
    routes = Routes(settings, runtime)
    return Starlette(
        routes=routes.table(),
        exception_handlers={
            SchedulerError: on_scheduler_error,
            HTTPException: on_http_error,
            405: on_method_not_allowed,
            Exception: on_unexpected,
        },
        middleware=_middleware(settings, exposed),
        lifespan=_lifespan(runtime, drain_every),
    )


def _middleware(settings: Settings, exposed: bool) -> list[Middleware]:
    """The rate limiter, when there is a rate (none: one layer less on every request)."""
    if settings.rate_limit(exposed) <= 0:
        return []
    return [Middleware(RateLimitMiddleware, settings=settings, exposed=exposed)]


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
        loops = []
        if drain_every:
            scheduler = await runtime.scheduler()
            loops = [drain_forever(scheduler, drain_every), deliver_forever(scheduler, drain_every)]
        try:
            async with running(*loops):
                yield
        finally:
            await runtime.close()

    return lifespan


class Routes:
    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.max_body_bytes = settings.max_body_bytes
        self.body_timeout = settings.body_timeout_seconds
        self.jobs = JobRoutes(settings, self._scheduler)

    def table(self) -> list[Route]:
        """One route per path, so that a 405's Allow header lists every method of the path. The
        router tries them in order: the submit first."""
        jobs = "/api/scheduler/jobs"
        return [
            method_route(jobs, POST=self.submit, GET=self.list_jobs),
            method_route(f"{jobs}/batch", POST=self.submit_batch),
            method_route(
                jobs + "/{jobId}",
                GET=self.get_job,
                PATCH=self.jobs.reschedule,
                DELETE=self.cancel_job,
            ),
            *self.jobs.table(),
            method_route(jobs + "/{jobId}/logs", GET=self.job_logs),
            method_route("/api/scheduler/stats", GET=self.stats),
            method_route("/api/scheduler/meetings", POST=self.submit_meeting),
            *WebhookRoutes(self.settings, self._scheduler).table(),
            *BudgetRoutes(self.settings, self._scheduler).table(),
            Route("/", self.info, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            *docs_routes(self.settings.max_batch_size),
            Route("/console", console),
            Route("/console/assets/{name}", console),
        ]

    async def _scheduler(self) -> Scheduler:
        return await self.runtime.scheduler()

    async def _body(self, request: Request) -> Any:
        settings = self.settings
        return await read_json(request, settings.max_body_bytes, settings.body_timeout_seconds)

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
                    "rescheduleJob": "PATCH /api/scheduler/jobs/:jobId",
                    "putJobByKey": "PUT /api/scheduler/jobs/by-key/:externalKey",
                    "jobLogs": "GET /api/scheduler/jobs/:jobId/logs",
                    "stats": "GET /api/scheduler/stats",
                    "submitMeeting": "POST /api/scheduler/meetings",
                    "jobEvents": "GET /api/scheduler/jobs/:jobId/events",
                    "createWebhook": "POST /api/scheduler/webhooks",
                    "listWebhooks": "GET /api/scheduler/webhooks",
                    "jobWebhookSecret": "POST /api/scheduler/webhooks/job-secret",
                    "getWebhook": "GET /api/scheduler/webhooks/:webhookId",
                    "updateWebhook": "PATCH /api/scheduler/webhooks/:webhookId",
                    "deleteWebhook": "DELETE /api/scheduler/webhooks/:webhookId",
                    "rotateWebhookSecret": "POST /api/scheduler/webhooks/:webhookId/rotate",
                    "webhookDeliveries": "GET /api/scheduler/webhooks/:webhookId/deliveries",
                    "replayEvent": "POST /api/scheduler/webhooks/:webhookId/events/:eventId/replay",
                    "botStatus": "POST /api/scheduler/bot-status",
                    "listBudgets": "GET /api/scheduler/budgets",
                    "getBudget": "GET /api/scheduler/budgets/:tenant",
                    "setBudget": "PUT /api/scheduler/budgets/:tenant",
                    "deleteBudget": "DELETE /api/scheduler/budgets/:tenant",
                    "openapi": "GET /openapi.json",
                    "doc": "GET /doc",
                    "docs": "GET /docs",
                    "ui": "GET /ui",
                    "metrics": "GET /metrics",
                    "console": "GET /console",
                },
                "documentation": "/ui",
                "console": "/console",
            }
        )

    async def health(self, request: Request) -> Response:
        """The original's answer, and `platform`; 503 when the store cannot be read."""
        body: dict[str, Any] = {
            "success": True,
            "status": "healthy",
            "timestamp": utcnow().isoformat(),
            "platform": self.settings.platform,
        }
        try:  # the active jobs: what every drain reads anyway, cheap on every store
            active = await (await self._scheduler()).store.active()
        except Exception:
            log.exception("health: the store cannot be read")
            unhealthy = {"success": False, "status": "unhealthy", "error": "store unavailable"}
            return JSONResponse({**body, **unhealthy}, status_code=503)
        body["activeJobs"] = len(active)
        return JSONResponse(body)

    async def metrics(self, request: Request) -> Response:
        scope = metrics_scope(request, self.settings)
        scheduler = await self._scheduler()
        await scheduler.leads.lead()  # the learned lead, fresh enough to show
        text = render_metrics(await scheduler.store.counts(scope), scheduler, scope)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def submit(self, request: Request) -> Response:
        tenant = tenant_of(request, self.settings)
        body = await read_json(request, self.max_body_bytes, self.body_timeout)
        spec, warnings = parse_job(body, self.settings, utcnow(), on_capacity_of(request))
        return await self._submit_one(request, tenant, spec, warnings)

    async def submit_meeting(self, request: Request) -> Response:
        tenant = tenant_of(request, self.settings)
        data = await self._body(request)
        check_no_nul_fields(data)
        meeting = parse_model(MeetingRequest, data)
        job_id = meeting.bot_uuid or new_job_id()
        spec, _ = parse_job(
            meeting.to_spec(job_id), self.settings, utcnow(), on_capacity_of(request)
        )
        return await self._submit_one(request, tenant, spec, job_id=job_id, meeting=True)

    async def _submit_one(
        self,
        request: Request,
        tenant: str,
        spec: JobSpec,
        warnings: list[str] | None = None,
        *,
        job_id: str | None = None,
        meeting: bool = False,
    ) -> Response:
        """201 with the job; a meeting also gets the original's `meeting` answer."""
        key = request.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= 200:
            raise ValidationFailed("Idempotency-Key: must be 1 to 200 characters")
        scheduler = await self._scheduler()
        job, created = await _create(scheduler, tenant, spec, key, job_id)
        body: dict[str, Any] = {"success": True}
        if meeting:
            body["meeting"] = meeting_view(job)
        body["job"] = await job_json(scheduler, job)
        if not created:
            body["duplicate"] = True
            body["duplicateReason"] = duplicate_reason(spec, key, job)
        warnings = [*(warnings or []), *(submit_warnings(job.id) if created else [])]
        if warnings:
            body["warnings"] = warnings
        return json_response(
            body,
            status_code=201 if created else 200,
            background=dispatch_soon(scheduler) if created and due_now(job) else None,
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
        # all, before any is created
        valid, errors = parse_batch(items, self.settings, utcnow(), on_capacity_of(request))
        jobs: list[dict[str, Any]] = []
        created_any = False
        for index, spec, warnings in valid:
            try:
                job, created = await scheduler.submit(tenant, spec)
            except SchedulerError as exc:
                errors.append({"index": index, "error": exc.code, "message": exc.message})
                continue
            created_any = created_any or created
            extra = {"warnings": warnings} if warnings else {}
            jobs.append({"index": index, "duplicate": not created, **job.public(), **extra})
        errors.sort(key=lambda error: int(error["index"]))
        status = 201 if not errors else (207 if jobs else 400)
        body = {
            "success": bool(jobs),
            "submitted": len(jobs),
            "count": len(jobs),
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
        background = dispatch_soon(scheduler) if created_any else None
        return JSONResponse(body, status_code=status, background=background)

    async def list_jobs(self, request: Request) -> Response:
        scope = read_scope(request, self.settings)  # None: an admin key, every tenant's
        query_once(request, "status", "limit", "cursor", "tenant")
        tenant = listed_tenant(request, scope)
        raw_status = request.query_params.get("status")
        status = None
        if raw_status is not None:  # an empty status is no state either
            try:
                status = JobState(raw_status)
            except ValueError:
                choices = ", ".join(state.value for state in JobState)
                raise ValidationFailed(f"status: must be one of {choices}") from None
        limit = query_int(request, "limit", 50, 1, 200)
        cursor = request.query_params.get("cursor") or None
        page = await (await self._scheduler()).list_jobs(tenant, status, limit, cursor)
        jobs = JSONText("[" + ",".join(listed_json(job, scope is None) for job in page.jobs) + "]")
        return json_response({"success": True, "jobs": jobs, "nextCursor": page.nextCursor})

    async def get_job(self, request: Request) -> Response:
        scope = read_scope(request, self.settings)
        scheduler = await self._scheduler()
        job = await scheduler.get(scope, request.path_params["jobId"])
        shown = await job_json(scheduler, job, tenant_shown=scope is None)
        return json_response({"success": True, "job": shown})

    async def cancel_job(self, request: Request) -> Response:
        tenant = tenant_of(request, self.settings)
        job = await (await self._scheduler()).cancel(tenant, request.path_params["jobId"])
        return json_response({"success": True, "job": JSONText(job.public_json())})

    async def job_logs(self, request: Request) -> Response:
        tenant = read_scope(request, self.settings)
        query_once(request, "tail")
        tail = query_int(request, "tail", 200, 1, 10_000)
        scheduler = await self._scheduler()
        logs = await scheduler.logs(tenant, request.path_params["jobId"], tail)
        return JSONResponse({"success": True, "jobId": request.path_params["jobId"], "logs": logs})

    async def stats(self, request: Request) -> Response:
        tenant = read_scope(request, self.settings)  # None: an admin key, every tenant's
        scheduler = await self._scheduler()
        stats = await scheduler.stats(tenant)
        wait = await estimated_wait(scheduler.store, self.settings, tenant or "", scheduler.clock())
        stats["estimatedWaitSeconds"] = wait
        stats.update(await stats_fields(scheduler, tenant))  # `budget`, or `budgets` (admin)
        return JSONResponse({"success": True, **stats, "stats": stats})


async def console(request: Request) -> Response:
    """The operator console's page and files (core/console/), imported on its first request."""
    from core.console.pages import serve

    return await serve(request)


async def _create(
    scheduler: Scheduler, tenant: str, spec: JobSpec, key: str | None, job_id: str | None
) -> tuple[Job, bool]:
    """Submit; a retry of a submit that chose its job id (same id, same Idempotency-Key, same
    tenant) finds its job like any retry, where the id alone would be a 409."""
    try:
        return await scheduler.submit(tenant, spec, key, job_id=job_id)
    except Conflict:
        existing = await scheduler.store.get(job_id) if job_id and key else None
        if existing is None or (existing.tenant, existing.idempotencyKey) != (tenant, key):
            raise
        return existing, False


__all__ = ["Routes", "build_app"]
