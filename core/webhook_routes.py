"""The routes of events and webhooks: a job's timeline, a tenant's endpoints, their delivery
log and replay, and the callback a bot reports its own status to. Logic: core/webhooks/."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.config import Settings
from core.errors import Unauthorized, ValidationFailed
from core.events import FILTER_TYPES
from core.http import parse_model, query_int, read_json, read_scope, tenant_of
from core.routing import method_route, query_once
from core.scheduler import Scheduler
from core.webhooks.bot_status import CALLBACK_PATH, NEWER_TOKEN_HEADER, TOKEN_HEADER, BotReport
from core.webhooks.endpoints import JOB_URLS, check_events

WEBHOOKS = "/api/scheduler/webhooks"
JOB_SECRET = "job-secret"  # a path beside /webhooks/{webhookId}, which would match it too
# an event type: checked by check_events (its message lists them), published as an enum
EventType = Annotated[str, WithJsonSchema({"type": "string", "enum": list(FILTER_TYPES)})]
URL_TEXT = (
    "Where deliveries are POSTed: an https URL to a public host (checked as written and as "
    "resolved), with no user:password@ and no #fragment. SCHEDULER_WEBHOOK_ALLOW_PRIVATE "
    "also allows private hosts, and http to a loopback host."
)
EVENTS_TEXT = "The event types to deliver; empty or null: every type."


def _url(description: str, **extra: Any) -> Any:
    example = "https://hooks.example.com/botsched"
    return Field(
        min_length=1, max_length=2048, description=description, examples=[example], **extra
    )


def _events() -> Any:
    return Field(
        default=None,
        max_length=len(FILTER_TYPES),
        description=EVENTS_TEXT,
        examples=[["job.completed", "job.failed"]],
    )


def _description() -> Any:
    text = "A note for the endpoint's owner."
    return Field(default=None, max_length=200, description=text, examples=["CRM sync"])


class EndpointSpec(BaseModel):
    """A new webhook endpoint."""

    model_config = ConfigDict(extra="forbid", strict=True)
    url: str = _url(URL_TEXT, json_schema_extra={"format": "uri"})
    events: list[EventType] | None = _events()
    description: str | None = _description()


class EndpointChange(BaseModel):
    """The fields to change; those left out stay as they are."""

    model_config = ConfigDict(extra="forbid", strict=True)
    url: str = _url(f"A new URL (not for {JOB_URLS}). {URL_TEXT}", default=None)
    events: list[EventType] | None = _events()
    description: str | None = _description()
    enabled: bool | None = Field(
        default=None,
        description="false: no deliveries; true: deliver again, the endpoint healthy anew "
        "(also after the scheduler disabled it for failing).",
        examples=[True],
    )


class WebhookRoutes:
    def __init__(self, settings: Settings, scheduler: Callable[[], Awaitable[Scheduler]]):
        self.settings = settings
        self.scheduler = scheduler

    def table(self) -> list[Route]:
        one = WEBHOOKS + "/{webhookId}"
        return [
            method_route("/api/scheduler/jobs/{jobId}/events", GET=self.job_events),
            method_route(WEBHOOKS, POST=self.create, GET=self.list),
            method_route(f"{WEBHOOKS}/{JOB_SECRET}", POST=self.job_secret),
            method_route(one, GET=self.get, PATCH=self.change, DELETE=self.delete),
            method_route(f"{one}/rotate", POST=self.rotate),
            method_route(f"{one}/deliveries", GET=self.deliveries),
            method_route(f"{one}/events/{{eventId}}/replay", POST=self.replay),
            method_route(CALLBACK_PATH, POST=self.bot_status),
        ]

    async def _body(self, request: Request) -> Any:
        settings = self.settings
        return await read_json(request, settings.max_body_bytes, settings.body_timeout_seconds)

    async def job_events(self, request: Request) -> Response:
        tenant = read_scope(request, self.settings)  # an admin key reads every tenant's
        job_id = request.path_params["jobId"]
        events = await (await self.scheduler()).job_events(tenant, job_id)
        return JSONResponse({"success": True, "jobId": job_id, "events": events})

    async def create(self, request: Request) -> Response:
        tenant = tenant_of(request, self.settings)
        spec = parse_model(EndpointSpec, await self._body(request))
        events = check_events(spec.events)  # before the URL's look-up
        webhooks = (await self.scheduler()).webhooks
        url = await webhooks.check_url(spec.url)
        endpoint, secret = await webhooks.create(tenant, url, events, spec.description)
        return _shown_once(endpoint, secret, 201)

    async def job_secret(self, request: Request) -> Response:
        """The secret that signs deliveries to the jobs' own webhookUrl (endpoint wh_jobs)."""
        tenant = tenant_of(request, self.settings)
        endpoint, secret = await (await self.scheduler()).webhooks.create(tenant, None, [], None)
        return _shown_once(endpoint, secret, 201)

    async def list(self, request: Request) -> Response:
        tenant = tenant_of(request, self.settings)
        webhooks = (await self.scheduler()).webhooks
        shown = [webhooks.view(record) for record in await webhooks.list(tenant)]
        return JSONResponse({"success": True, "webhooks": shown})

    async def get(self, request: Request) -> Response:
        webhooks = (await self.scheduler()).webhooks
        record = await webhooks.get(*self._one(request))
        return JSONResponse({"success": True, "webhook": webhooks.view(record)})

    async def change(self, request: Request) -> Response:
        tenant, endpoint_id = self._one(request)
        change = parse_model(EndpointChange, await self._body(request))
        webhooks = (await self.scheduler()).webhooks
        fields = change.model_dump(exclude_unset=True)
        if "events" in fields:
            fields["events"] = check_events(fields["events"])
        if "url" in fields:
            if endpoint_id == JOB_URLS:
                raise ValidationFailed("url: wh_jobs sends to each job's own webhookUrl")
            fields["url"] = await webhooks.check_url(fields["url"])
        endpoint = await webhooks.change(tenant, endpoint_id, **fields)
        return JSONResponse({"success": True, "webhook": endpoint})

    async def delete(self, request: Request) -> Response:
        await (await self.scheduler()).webhooks.delete(*self._one(request))
        return JSONResponse({"success": True})

    async def rotate(self, request: Request) -> Response:
        endpoint, secret = await (await self.scheduler()).webhooks.rotate(*self._which(request))
        return _shown_once(endpoint, secret, 200)

    async def deliveries(self, request: Request) -> Response:
        tenant, endpoint_id = self._which(request)
        query_once(request, "limit", "cursor")
        limit = query_int(request, "limit", 50, 1, 200)
        cursor = request.query_params.get("cursor") or None
        webhooks = (await self.scheduler()).webhooks
        attempts, more = await webhooks.attempts(tenant, endpoint_id, limit, cursor)
        return JSONResponse({"success": True, "deliveries": attempts, "nextCursor": more})

    async def replay(self, request: Request) -> Response:
        tenant, endpoint_id = self._which(request)
        event_id = request.path_params["eventId"]
        delivery = await (await self.scheduler()).webhooks.replay(tenant, endpoint_id, event_id)
        return JSONResponse({"success": True, "delivery": delivery}, status_code=202)

    async def bot_status(self, request: Request) -> Response:
        """A bot's report of itself: authenticated by its job's token, not by an API key."""
        token = request.headers.get(TOKEN_HEADER) or request.headers.get(NEWER_TOKEN_HEADER)
        if not token:
            raise Unauthorized(f"missing {TOKEN_HEADER}: the bot's API key from its config")
        report = parse_model(BotReport, await self._body(request))
        job = await (await self.scheduler()).report_bot_status(report, token)
        return JSONResponse({"success": True, "jobId": job.id, "botStatus": job.botStatus})

    def _one(self, request: Request) -> tuple[str, str]:
        """_which, for /webhooks/{webhookId}: /webhooks/job-secret takes POST only (405)."""
        if request.path_params["webhookId"] == JOB_SECRET:
            raise HTTPException(405, headers={"Allow": "POST"})
        return self._which(request)

    def _which(self, request: Request) -> tuple[str, str]:
        return tenant_of(request, self.settings), request.path_params["webhookId"]


def _shown_once(endpoint: dict[str, Any], secret: str, status: int) -> Response:
    body = {"success": True, "webhook": endpoint, "secret": secret}
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
