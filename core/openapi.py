"""The OpenAPI document: its schemas are built from the models (so they cannot drift from what
the server validates), its paths are in core/openapi_paths.py, the webhooks' operations and
schemas in core/openapi_webhooks.py, the budgets' in core/openapi_budgets.py."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel

from core import __version__
from core.capacity import POSITION_LIMIT
from core.desired import SCHEDULE_FIELDS
from core.meeting_config import MeetingRequest
from core.models import EXAMPLE_ID, EXAMPLE_TIME, PRIVATE_FIELDS, Job, JobSpec, JobState
from core.openapi_budgets import TAG as BUDGETS_TAG
from core.openapi_budgets import add_budgets, budget_paths
from core.openapi_paths import REF, SUCCESS, obj, paths, prop, ref
from core.openapi_webhooks import bot_schemas, delivered, webhook_paths, webhook_schemas
from core.webhook_routes import EndpointChange, EndpointSpec
from core.webhooks.bot_status import TOKEN_HEADER

DEFAULT_MAX_BATCH = 100
WARNINGS = prop(
    "array",
    "Present when the request had fields this route does not know: they were ignored.",
    ["colour: unknown field, ignored"],
    items={"type": "string"},
)
COUNT = "Jobs in this state."
TENANT = prop("string", "To an admin key (SCHEDULER_ADMIN_KEYS) only: the job's tenant.", "acme")


def _model(schemas: dict[str, Any], model: type[BaseModel], mode: str = "validation") -> Any:
    schema = model.model_json_schema(ref_template=REF, mode=mode)  # type: ignore[arg-type]
    schemas.update(schema.pop("$defs", {}))
    return schema


def public_job(schema: dict[str, Any]) -> dict[str, Any]:
    """The Job model as `Job.public()` serves it: no private field, `containerId` added, and
    every field present (null when unset)."""
    properties = {k: v for k, v in schema["properties"].items() if k not in PRIVATE_FIELDS}
    properties["containerId"] = prop(
        ["string", "null"],
        "The original's name for the backend's run id (`execution.id`); null before a run.",
        "botsched-8f0c2b1e",
    )
    return {**schema, "properties": properties, "required": list(properties)}


def job_schemas(spec: dict[str, Any]) -> dict[str, Any]:
    """The answers with jobs, and the bodies that change one (`spec`: the JobSpec schema)."""
    changed = {name: spec["properties"][name] for name in SCHEDULE_FIELDS}
    return {
        "JobView": {
            "allOf": [
                ref("Job"),
                obj(
                    [],
                    queuePosition=prop(
                        "integer",
                        "While queued: the queued jobs due now, of any tenant, that rank ahead "
                        "of it (priority, then joinAt or creation); 0: it starts next. At least "
                        f"{POSITION_LIMIT} "
                        "when it reads that. For a job not due yet: those the estimate still "
                        "sees waiting at its time. Not stored: computed for this answer.",
                        0,
                        minimum=0,
                        maximum=POSITION_LIMIT,
                    ),
                    estimatedStartAt=prop(
                        "string",
                        "While queued: when it should start, from the jobs ahead, the cap and "
                        "run lengths (each running job's maxRuntimeSeconds or the median of "
                        "recent runs); never before its notBefore.",
                        EXAMPLE_TIME,
                        format="date-time",
                    ),
                    tenant=TENANT,
                ),
            ],
            "description": "A job; while queued, with its place in the queue.",
        },
        "JobResponse": obj(
            ["success", "job"],
            success=SUCCESS,
            job=ref("JobView"),
            duplicate=prop(
                "boolean",
                "Present when the job existed (dedup or idempotency key, or the same meeting).",
                True,
            ),
            duplicateReason={
                **prop(
                    "string",
                    "With `duplicate`: why: `idempotencyKey`, `dedupKey`, or `meeting` (an "
                    "unfinished job of yours for the same meeting and time).",
                    "meeting",
                ),
                "enum": ["idempotencyKey", "dedupKey", "meeting"],
            },
            created=prop("boolean", "PUT by key: whether this PUT created the job.", True),
            warnings=WARNINGS,
        ),
        "JobChange": {
            **obj([], **changed),
            "minProperties": 1,
            "additionalProperties": False,
            "description": "The fields to change (at least one); null clears joinAt, deadline "
            "or maxRuntimeSeconds.",
        },
        "DesiredJob": {
            "anyOf": [
                {
                    "allOf": [
                        ref("JobSpec"),
                        obj(
                            [],
                            cancelled={
                                "const": False,
                                "description": "false (or left out): the job as the body says.",
                                "examples": [False],
                            },
                        ),
                    ]
                },
                obj(
                    ["cancelled"],
                    cancelled={
                        "const": True,
                        "description": "Cancel the key's job in any unfinished state; the rest "
                        "of the body is not read.",
                        "examples": [True],
                    },
                ),
            ],
            "description": "A job as POST /api/scheduler/jobs takes it, or `cancelled: true`.",
        },
        "JobList": obj(
            ["success", "jobs", "nextCursor"],
            success=SUCCESS,
            jobs={
                "type": "array",
                "items": {"allOf": [ref("Job"), obj([], tenant=TENANT)]},
                "description": "Newest first.",
            },
            nextCursor=prop(
                ["string", "null"], "Pass as `cursor` for the next page; null on the last.", None
            ),
        ),
    }


def batch_schemas(max_batch: int) -> dict[str, Any]:
    return {
        "BatchRequest": obj(
            ["jobs"],
            jobs={
                "type": "array",
                "items": {
                    "anyOf": [
                        ref("JobSpec"),
                        {"description": "Any other value: refused alone, in `errors`."},
                    ]
                },
                "minItems": 1,
                "maxItems": max_batch,
                "description": f"1 to {max_batch} jobs, each validated on its own: the "
                "invalid ones are reported in `errors`, the others submitted.",
            },
        ),
        "BatchJob": {"allOf": [ref("Job"), obj(["index", "duplicate"], **BATCH_ITEM)]},
        "BatchError": obj(
            ["index", "error", "message"],
            index=BATCH_ITEM["index"],
            error=prop("string", "The error code.", "validation_error"),
            message=prop("string", "What is wrong, naming the field.", "meetingUrl: …"),
            meetingUrl=prop(
                "string",
                "The item's meetingUrl, when it had one (as the original reported errors).",
                "https://meet.google.com/abc-defg-hij",
            ),
        ),
        "BatchResponse": obj(
            ["success", "submitted", "failed", "count", "jobs", "errors"],
            success=prop("boolean", "True when at least one job was submitted.", True),
            submitted=prop("integer", "Jobs submitted (or found by dedup key).", 2, minimum=0),
            count=prop("integer", "The original's name for `submitted`.", 2, minimum=0),
            failed=prop("integer", "Items refused.", 0, minimum=0),
            jobs={"type": "array", "items": ref("BatchJob"), "description": "The jobs submitted."},
            errors={"type": "array", "items": ref("BatchError"), "description": "Items refused."},
        ),
    }


BATCH_ITEM = {
    "index": prop("integer", "The item's position in the request.", 0, minimum=0),
    "duplicate": prop("boolean", "True when the dedup key found an existing job.", False),
    "warnings": WARNINGS,
}


def meeting_schemas() -> dict[str, Any]:
    meeting = obj(
        ["id", "containerId", "meetingUrl", "status", "createdAt", "botConfig"],
        id=prop("string", "The job's id (`bot_uuid` when given).", EXAMPLE_ID),
        containerId=prop(["string", "null"], "The backend's run id; null before a run.", None),
        meetingUrl=prop("string", "The meeting.", "https://meet.google.com/abc-defg-hij"),
        status={**ref("JobState"), "description": "The job's state."},
        createdAt=prop("string", "When it was submitted.", EXAMPLE_TIME, format="date-time"),
        botConfig=prop("object", "The config the bot is started with.", {"bot_name": "Bot"}),
    )
    return {
        "MeetingResponse": obj(
            ["success", "meeting", "job"],
            success=SUCCESS,
            meeting={**meeting, "description": "The original's answer."},
            job=ref("JobView"),
            duplicate=prop("boolean", "Present when the Idempotency-Key found the job.", True),
        )
    }


def stats_schemas() -> dict[str, Any]:
    counts = {
        name: prop("integer", COUNT if name.endswith("Jobs") else text, 0, minimum=0)
        for name, text in STATS_FIELDS.items()
    }
    stats = obj(list(counts), **counts)
    stats["properties"].update(
        maxConcurrentJobs=prop("integer", "The global cap on active jobs.", 10, minimum=1),
        maxConcurrentJobsPerTenant=prop(["integer", "null"], "The per-tenant cap, if any.", None),
        platform=prop("string", "The backend that runs the bots.", "process"),
        backends=BACKENDS_STATS,
        estimatedWaitSeconds=prop(
            "integer",
            "How long a job of yours submitted now without joinAt (priority 5) should wait "
            "for a slot, from the queue ahead, the caps and run lengths.",
            0,
            minimum=0,
        ),
    )
    stats["required"] += [
        "maxConcurrentJobs",
        "maxConcurrentJobsPerTenant",
        "platform",
        "backends",
        "estimatedWaitSeconds",
    ]
    return {
        "Stats": stats,
        "StatsResponse": {
            "allOf": [stats, obj(["success", "stats"], success=SUCCESS, stats=ref("Stats"))]
        },
    }


def service_schemas() -> dict[str, Any]:
    return {
        "Health": obj(
            ["success", "status", "timestamp"],
            success=prop("boolean", "False when the store cannot be read.", True),
            status=prop(
                "string", "healthy, or unhealthy (503).", "healthy", enum=["healthy", "unhealthy"]
            ),
            timestamp=prop("string", "The server's time.", EXAMPLE_TIME, format="date-time"),
            activeJobs=prop("integer", "Jobs in provisioning, running or stopping.", 1, minimum=0),
            platform=prop("string", "The backend that runs the bots.", "process"),
            error=prop("string", "Why it is unhealthy.", "store unavailable"),
        ),
        "Info": obj(
            ["name", "version", "endpoints"],
            name=prop("string", "The API's name.", "Bot Scheduler API"),
            version=prop("string", "The server's version.", __version__),
            platform=prop("string", "The backend that runs the bots.", "process"),
            documentation=prop("string", "The docs page.", "/ui"),
            console=prop("string", "The operator console (a web page).", "/console"),
            endpoints={
                **prop("object", "Each operation, by name.", {"health": "GET /health"}),
                "additionalProperties": {"type": "string"},
            },
        ),
        "Logs": obj(
            ["success", "jobId", "logs"],
            success=SUCCESS,
            jobId=prop("string", "The job.", EXAMPLE_ID),
            logs=prop("string", "The last lines the bot printed.", "joined the meeting\n"),
        ),
        "Error": obj(
            ["success", "error", "message"],
            success={"const": False, "description": "Always false.", "examples": [False]},
            error=prop("string", "A stable error code.", "validation_error"),
            message=prop("string", "What went wrong; a bad field is named.", "meetingUrl: …"),
            fields=prop("array", "The bad fields.", ["meetingUrl"], items={"type": "string"}),
            retryAfter=prop("integer", "With 429: seconds to wait.", 1),
            state={
                **ref("JobState"),
                "description": "With 409 `not_queued`: the job's state.",
            },
            jobId=prop(
                "string", "With 409 `meeting_taken`: the job with the meeting's bot.", EXAMPLE_ID
            ),
            estimatedStartAt=prop(
                "string",
                "With 429 `at_capacity`: when the job should have started.",
                EXAMPLE_TIME,
                format="date-time",
            ),
        ),
    }


BACKEND_STATS = obj(
    ["name", "cap", "activeJobs", "coolingDown", "coolingDownUntil", "consecutiveFailures"],
    name=prop("string", "The backend, as PLATFORM names it.", "process"),
    cap=prop(["integer", "null"], "Its own cap, if any (else only the global one).", 4),
    activeJobs=prop(
        "integer", "Your active jobs on it (everyone's, for an admin key).", 2, minimum=0
    ),
    coolingDown=prop(
        "boolean", "Whether it is skipped, its recent starts having failed (this server).", False
    ),
    coolingDownUntil=prop(
        ["string", "null"], "Until when it is skipped.", None, format="date-time"
    ),
    consecutiveFailures=prop(
        "integer", "Its starts that failed in a row (this server).", 0, minimum=0
    ),
)
BACKENDS_STATS = {
    "type": "array",
    "items": BACKEND_STATS,
    "description": "Each backend PLATFORM lists, in its order (spill-over: the README).",
}
STATS_FIELDS = {
    "queueSize": "Jobs queued.",
    "provisioningJobs": COUNT,
    "runningJobs": COUNT,
    "stoppingJobs": COUNT,
    "completedJobs": COUNT,
    "failedJobs": COUNT,
    "cancelledJobs": COUNT,
    "totalJobs": "All the caller's jobs.",
}


@cache
def openapi_document(max_batch: int = DEFAULT_MAX_BATCH) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    schemas["JobSpec"] = _model(schemas, JobSpec)
    schemas["Job"] = public_job(_model(schemas, Job, "serialization"))
    schemas["MeetingRequest"] = _model(schemas, MeetingRequest)
    schemas["JobState"] = {
        **schemas["JobState"],
        "description": ", ".join(s.value for s in JobState),
    }
    for more in (job_schemas(schemas["JobSpec"]), batch_schemas(max_batch), meeting_schemas()):
        schemas.update(more)
    schemas.update(stats_schemas(), **service_schemas())
    schemas["EndpointSpec"] = _model(schemas, EndpointSpec)
    schemas["EndpointChange"] = _model(schemas, EndpointChange)
    schemas.update(webhook_schemas(schemas["Job"]), **bot_schemas())
    operations = paths(webhook_paths(), budget_paths())
    add_budgets(schemas, operations)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Bot Scheduler API",
            "version": __version__,
            "description": "Schedules meeting-recording bots: submit a job, one bot records "
            "the meeting. Send your API key as `X-API-Key` or `Authorization: Bearer`.",
        },
        "tags": [
            {"name": "Jobs", "description": "Submit, follow and cancel recording jobs."},
            {"name": "Meetings", "description": "The original's snake_case bot config."},
            {"name": "Webhooks", "description": "A job's events, and their delivery to you."},
            BUDGETS_TAG,
            {"name": "Service", "description": "Health, info and metrics."},
        ],
        "paths": operations,
        "webhooks": delivered(),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
                "botToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": TOKEN_HEADER,
                    "description": "The bot's own token (`bots_api_key` in its config), made for "
                    "each start of its job: not an API key.",
                },
            },
        },
        "security": [{"apiKey": []}, {"bearer": []}],
    }
