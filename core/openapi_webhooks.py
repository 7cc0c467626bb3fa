"""The OpenAPI document's part for events and webhooks: a job's timeline, a tenant's endpoints,
their delivery log and replay, and the bot's status callback (core/webhook_routes.py). The
request bodies of the endpoints are built from their models in core/openapi.py."""

from __future__ import annotations

from typing import Any

from core.events import (
    EVENT_TYPES,
    FILTER_TYPES,
    SUMMARY_FIELDS,  # what an event says of its job
)
from core.models import EXAMPLE_ID, EXAMPLE_TIME
from core.openapi_paths import (
    BODY_ERRORS,
    ERRORS,
    JOB,
    JOB_ID,
    LISTING,
    SUCCESS,
    _body,
    _error,
    _json,
    _op,
    _param,
    obj,
    prop,
    ref,
)
from core.webhooks.bot_status import CODE_PATTERN
from core.webhooks.endpoints import MAX_ENDPOINTS

WEBHOOKS = "/api/scheduler/webhooks"
WEBHOOK = WEBHOOKS + "/{webhookId}"
EXAMPLE_WEBHOOK_ID = "wh_5f2b0c1e9d8a4b7c6e5f4a3b2c1d0e9f"
EXAMPLE_EVENT_ID = f"evt_{EXAMPLE_ID}_000003"
# an attempt's key as core.webhooks.delivery.attempt_key makes it (newest first)
EXAMPLE_ATTEMPT_CURSOR = f"acme:{EXAMPLE_WEBHOOK_ID}:998106508060000:{EXAMPLE_EVENT_ID}:01"
EXAMPLE_URL = "https://hooks.example.com/botsched"
STRING_OR_NULL = ["string", "null"]
TIME = {"format": "date-time"}


def shape(**fields: Any) -> dict[str, Any]:
    """An object whose fields are all present: each a schema, or prop()'s arguments (the
    fourth, when there is one: more of the schema)."""
    properties = {
        name: field if isinstance(field, dict) else prop(*field[:3], **(field[3:] or [{}])[0])
        for name, field in fields.items()
    }
    return obj(list(properties), **properties)


def listed(item: str, description: str) -> dict[str, Any]:
    return {"type": "array", "items": ref(item), "description": description}


ENDPOINT_ID = ("string", "The endpoint's id (wh_jobs: the jobs' webhookUrl).", EXAMPLE_WEBHOOK_ID)
EVENT_ID = (
    "string",
    "The event's id: `evt_{jobId}_{seq}`, stable across attempts.",
    EXAMPLE_EVENT_ID,
)
JOB_OF = ("string", "The job.", EXAMPLE_ID)
TYPE = ("string", "The event's type.", "job.completed")
SECRET = (
    "string",
    "The signing secret (Standard Webhooks, `whsec_` and base64). Shown this once: keep it "
    "now; GET and the list never show it.",
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
)


def webhook_schemas(job: dict[str, Any]) -> dict[str, Any]:
    """The answers of the webhook routes; `job` is the Job schema (an event's data is part of
    it)."""
    job_fields = {name: job["properties"][name] for name in (*SUMMARY_FIELDS, "containerId")}
    backend = (STRING_OR_NULL, "The backend of its run; null before a run.", "process")
    return {
        "Webhook": shape(
            id=ENDPOINT_ID,
            url=(STRING_OR_NULL, "Where deliveries go; null for wh_jobs.", EXAMPLE_URL),
            events=(
                "array",
                "The event types delivered; empty: every type.",
                ["job.completed"],
                {"items": {"type": "string", "enum": list(FILTER_TYPES)}},
            ),
            description=(STRING_OR_NULL, "Its owner's note.", "CRM sync"),
            createdAt=("string", "When it was made.", EXAMPLE_TIME, TIME),
            disabled=("boolean", "True: no deliveries (see disabledReason).", False),
            disabledReason=(STRING_OR_NULL, "Why: its owner, or failing since when.", None),
            failingSince=(STRING_OR_NULL, "Every delivery failed since then.", None, TIME),
            lastSuccessAt=(STRING_OR_NULL, "Its last delivery that succeeded.", None, TIME),
            secrets=(
                "integer",
                "How many secrets sign its deliveries now: 2 for a while after a rotation.",
                1,
                {"minimum": 1},
            ),
        ),
        "WebhookResponse": shape(success=SUCCESS, webhook=ref("Webhook")),
        "WebhookSecret": shape(success=SUCCESS, webhook=ref("Webhook"), secret=SECRET),
        "WebhookList": shape(success=SUCCESS, webhooks=listed("Webhook", "Oldest first.")),
        "Deleted": shape(success=SUCCESS),
        "Event": shape(
            id=EVENT_ID,
            type=(
                "string",
                f"What happened: {', '.join(EVENT_TYPES)} (or another bot.* the bot reported).",
                "job.completed",
            ),
            timestamp=("string", "When.", EXAMPLE_TIME, TIME),
            data={**shape(**job_fields, backend=backend), "description": "The job then."},
        ),
        "JobEvents": shape(success=SUCCESS, jobId=JOB_OF, events=listed("Event", "Oldest first.")),
        **delivery_schemas(),
    }


def delivery_schemas() -> dict[str, Any]:
    states = {"enum": ["pending", "delivered", "dead"]}
    return {
        "DeliveryAttempt": shape(
            deliveryId=("string", "The delivery: `{webhookId}:{eventId}`.", "wh_jobs:evt_…"),
            eventId=EVENT_ID,
            jobId=JOB_OF,
            type=TYPE,
            attempt=("integer", "1 for the delivery's first attempt.", 1, {"minimum": 1}),
            at=("string", "When it was made.", EXAMPLE_TIME, TIME),
            status=(["integer", "null"], "The receiver's HTTP status; null: no answer.", 200),
            latencyMs=(["integer", "null"], "How long it took.", 84, {"minimum": 0}),
            error=(STRING_OR_NULL, "Why it failed; null when it succeeded.", None),
        ),
        "DeliveryList": shape(
            success=SUCCESS,
            deliveries=listed("DeliveryAttempt", "Newest first."),
            nextCursor=(
                STRING_OR_NULL,
                "The next page's `cursor`; null: the last page.",
                EXAMPLE_ATTEMPT_CURSOR,
            ),
        ),
        "Delivery": shape(
            endpointId=ENDPOINT_ID,
            eventId=EVENT_ID,
            jobId=JOB_OF,
            type=TYPE,
            state=("string", "pending: its attempts are to come.", "pending", states),
            attempts=("integer", "Attempts so far (0: the first is due).", 0, {"minimum": 0}),
            replays=("integer", "How many times it was replayed before.", 0, {"minimum": 0}),
            nextAttemptMs=(["integer", "null"], "Its next attempt (epoch ms).", 1893491940000),
        ),
        "ReplayResponse": shape(success=SUCCESS, delivery=ref("Delivery")),
    }


def bot_schemas() -> dict[str, Any]:
    """The bot's own status report (the meet-teams bot's shape) and its answer."""
    code = (
        "string",
        "The bot's status: joining_call, in_waiting_room, in_call_not_recording, "
        "in_call_recording, call_ended, …",
        "in_call_recording",
        {"pattern": CODE_PATTERN},
    )
    seen = (["number", "string", "null"], "When the bot saw it.", 1893491940)
    status = {**shape(code=code, created_at=seen), "required": ["code"]}
    data = shape(
        bot_id=("string", "The job's id.", EXAMPLE_ID, {"minLength": 1, "maxLength": 200}),
        status={**status, "description": "What the bot reports."},
    )
    event = ("string", "Always this.", "bot.status_change", {"pattern": r"^bot\.status_change$"})
    return {
        "BotReport": shape(event=event, data={**data, "description": "The bot and its status."}),
        "BotStatusResponse": shape(
            success=SUCCESS,
            jobId=JOB_OF,
            botStatus=("string", "The status recorded.", "in_call_recording"),
        ),
    }


WEBHOOK_ID = _param(
    "path",
    "webhookId",
    "The endpoint's id; `wh_jobs` holds the secret of the jobs' own webhookUrl.",
    EXAMPLE_WEBHOOK_ID,
    type="string",
    pattern="^[A-Za-z0-9_]{1,64}$",
)
EVENT = _param("path", "eventId", "An event's `id`.", EXAMPLE_EVENT_ID, type="string")
ATTEMPTS = [
    {**LISTING[1], "description": "Attempts per page."},
    {
        **LISTING[2],
        "description": "The `nextCursor` of the page before (only one this endpoint's listing "
        "gave is valid).",
        "example": EXAMPLE_ATTEMPT_CURSOR,
    },
]
NO_STORE = {"description": "`no-store`.", "schema": {"type": "string", "const": "no-store"}}
SHOWN = _json("WebhookSecret", "The endpoint, and its secret.", headers={"Cache-Control": NO_STORE})
ONCE = " The answer's `secret` is shown this once: GET and the list never show it."
WEBHOOK_ERRORS = {
    "404": _error("No such endpoint (another tenant's is a 404 too)."),
    "409": _error("The endpoint changed meanwhile; try again."),
}
# operationId: (summary, description)
TEXTS = {
    "getJobEvents": (
        "A job's events",
        "Every event written for the job, oldest first (job.queued first): the bodies its "
        "deliveries carry.",
    ),
    "createWebhook": (
        "Add a webhook endpoint",
        "The caller's jobs' events are POSTed to `url`, signed with Standard Webhooks' headers "
        "(webhook-id, webhook-timestamp, webhook-signature)." + ONCE,
    ),
    "listWebhooks": ("List the webhook endpoints", "The caller's endpoints (wh_jobs too)."),
    "createJobWebhookSecret": (
        "Create the secret of the jobs' webhookUrl",
        "The secret that signs deliveries to the jobs' own `webhookUrl` (endpoint `wh_jobs`), "
        "needed before a job with a webhookUrl is submitted; 409 when it exists (rotate it: "
        "POST /api/scheduler/webhooks/wh_jobs/rotate)." + ONCE,
    ),
    "getWebhook": ("Get a webhook endpoint", "The endpoint and its health, never its secrets."),
    "updateWebhook": (
        "Change a webhook endpoint",
        "Its url, events, description, or `enabled` (true also revives an endpoint the "
        "scheduler disabled for failing). Fields left out stay as they are.",
    ),
    "deleteWebhook": ("Delete a webhook endpoint", "No more deliveries to it."),
    "rotateWebhookSecret": (
        "Rotate an endpoint's secret",
        "A new secret; the ones before it still sign deliveries (a signature each) for "
        "SCHEDULER_WEBHOOK_SECRET_OVERLAP_SECONDS." + ONCE,
    ),
    "listWebhookDeliveries": (
        "An endpoint's delivery attempts",
        "Every attempt, newest first, a page at a time: pass `nextCursor` back as `cursor` (a "
        "page may hold fewer than `limit`).",
    ),
    "replayWebhookEvent": (
        "Send an event again",
        "New attempts of the event to the endpoint, with its webhook-id. 400 for wh_jobs when "
        "the event's job had no webhookUrl.",
    ),
    "reportBotStatus": (
        "The bot's status report",
        "Where a bot the scheduler started reports itself (with SCHEDULER_PUBLIC_URL set): "
        "kept as the job's `botStatus` and a `bot.*` event. Authenticated by its job's token "
        "in x-spoke-api-key (or x-meeting-baas-api-key, as later bots send it), not by an API "
        "key.",
    ),
}


def _hook(
    op_id: str,
    responses: dict[str, Any],
    errors: tuple[str, ...] = (),
    *parameters: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """A Webhooks operation; its 404 and 409 say "endpoint" where a job's say "job"."""
    own = {code: WEBHOOK_ERRORS[code] for code in errors if code in WEBHOOK_ERRORS}
    codes = tuple(code for code in errors if code not in own)
    extra.update(operationId=op_id, **({"parameters": list(parameters)} if parameters else {}))
    return _op(*TEXTS[op_id], "Webhooks", {**own, **responses}, codes, **extra)


def webhook_paths() -> dict[str, Any]:
    events = {"200": _json("JobEvents", "The job's timeline."), "404": ERRORS["404"]}
    one = {"200": _json("WebhookResponse", "The endpoint (never its secrets).")}
    spec = {"url": EXAMPLE_URL, "events": ["job.completed"]}
    replayed = {
        "202": _json("ReplayResponse", "Queued for delivery."),
        "404": _error("No such endpoint or event (another tenant's: 404 too)."),
        "409": _error("The endpoint is disabled, or changed meanwhile."),
    }
    return {
        JOB + "/events": {"get": _hook("getJobEvents", events, (), JOB_ID)},
        WEBHOOKS: {
            "post": _hook(
                "createWebhook",
                {"201": SHOWN, "409": _error(f"The caller has {MAX_ENDPOINTS} endpoints already.")},
                BODY_ERRORS,
                requestBody=_body("EndpointSpec", spec),
            ),
            "get": _hook("listWebhooks", {"200": _json("WebhookList", "The endpoints.")}),
        },
        WEBHOOKS + "/job-secret": {
            "post": _hook("createJobWebhookSecret", {"201": SHOWN, "409": _error("It exists.")})
        },
        WEBHOOK: {
            "get": _hook("getWebhook", one, ("404",), WEBHOOK_ID),
            "patch": _hook(
                "updateWebhook",
                one,
                (*BODY_ERRORS, "404", "409"),
                WEBHOOK_ID,
                requestBody=_body("EndpointChange", {"enabled": False}),
            ),
            "delete": _hook(
                "deleteWebhook", {"200": _json("Deleted", "Deleted.")}, ("404",), WEBHOOK_ID
            ),
        },
        WEBHOOK + "/rotate": {
            "post": _hook("rotateWebhookSecret", {"200": SHOWN}, ("404", "409"), WEBHOOK_ID)
        },
        WEBHOOK + "/deliveries": {
            "get": _hook(
                "listWebhookDeliveries",
                {"200": _json("DeliveryList", "A page of attempts.")},
                ("400", "404"),
                WEBHOOK_ID,
                *ATTEMPTS,
            )
        },
        WEBHOOK + "/events/{eventId}/replay": {
            "post": _hook("replayWebhookEvent", replayed, ("400",), WEBHOOK_ID, EVENT)
        },
        **bot_paths(),
    }


def bot_paths() -> dict[str, Any]:
    status = {"code": "in_call_recording"}
    example = {"event": "bot.status_change", "data": {"bot_id": EXAMPLE_ID, "status": status}}
    refused = "No x-spoke-api-key, or not the token of the job bot_id names (the same answer "
    responses = {
        "200": _json("BotStatusResponse", "Recorded."),
        "401": {**ERRORS["401"], "description": refused + "when there is no such job)."},
        "409": _error("The job is already finished, or changed meanwhile."),
    }
    return {
        "/api/scheduler/bot-status": {
            "post": _hook(
                "reportBotStatus",
                responses,
                BODY_ERRORS,
                security=[{"botToken": []}],
                requestBody=_body("BotReport", example),
            )
        }
    }


SIGNED = {
    "webhook-id": (
        "The event's id: the same on every attempt (deduplicate on it).",
        EXAMPLE_EVENT_ID,
    ),
    "webhook-timestamp": ("When this attempt was signed (epoch seconds).", "1893491940"),
    "webhook-signature": (
        "`v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` under the secret; "
        "several, space-separated, while an older secret is in its overlap.",
        "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
    ),
}


def delivered() -> dict[str, Any]:
    """The request each delivery makes (OpenAPI's top-level `webhooks`)."""
    headers = [
        {**_param("header", name, text, example, type="string"), "required": True}
        for name, (text, example) in SIGNED.items()
    ]
    received = {"description": "Received: any other answer is retried, then dead."}
    return {
        "event": {
            "post": {
                "tags": ["Webhooks"],
                "summary": "An event, delivered",
                "description": "What an endpoint (or a job's webhookUrl) is sent, signed as "
                "Standard Webhooks says: check the signature with the endpoint's secret, and "
                "answer 2xx within SCHEDULER_WEBHOOK_TIMEOUT_SECONDS (redirects are not "
                "followed). Failed attempts are retried on SCHEDULER_WEBHOOK_RETRY_SCHEDULE; "
                "a job's events arrive in order.",
                "operationId": "eventDelivered",
                "security": [],
                "parameters": headers,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": ref("Event")}},
                },
                "responses": {"2XX": received},
            }
        }
    }
