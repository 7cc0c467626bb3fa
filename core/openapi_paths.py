"""The operations of the OpenAPI document: each with a summary, its parameters and every
response it can give (the schemas are in core/openapi.py; the webhooks' operations and schemas
in core/openapi_webhooks.py), and the helpers both build with."""

from __future__ import annotations

from typing import Any

from core.desired import KEY_PATTERN, KEY_RULE, SCHEDULE_FIELDS
from core.models import EXAMPLE_ID, JobState

JOBS = "/api/scheduler/jobs"
JOB = JOBS + "/{jobId}"
BY_KEY = JOBS + "/by-key/{externalKey}"
REF = "#/components/schemas/{model}"


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def prop(kind: str | list[str], description: str, example: Any, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "description": description, "examples": [example], **extra}


def obj(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


SUCCESS = {"const": True, "description": "Always true on success.", "examples": [True]}


def _json(schema: str, description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": ref(schema)}},
        **extra,
    }


def _error(description: str, **headers: Any) -> dict[str, Any]:
    return _json("Error", description, **({"headers": headers} if headers else {}))


ERRORS = {
    "400": _error("Bad input: the message names the field."),
    "401": _error(
        "No API key, or an unknown one.",
        **{"WWW-Authenticate": {"description": "`Bearer`.", "schema": {"type": "string"}}},
    ),
    "404": _error("No such job (another tenant's job is a 404 too)."),
    "408": _error("The request body did not arrive in time."),
    "409": _error("The job is already finished, or changed meanwhile; try again."),
    "413": _error("The request body is larger than SCHEDULER_MAX_BODY_BYTES."),
    "429": _error(
        "Too many requests for this API key.",
        **{"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
    ),
}
BODY_ERRORS = ("400", "408", "413")
AT_CAPACITY = _error(
    "Too many requests for this API key; or (`error: at_capacity`) `onCapacity: reject` and "
    "no slot to start the job now: Retry-After is the seconds until its estimated start "
    "(`estimatedStartAt`).",
    **{"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
)
NOT_QUEUED = _error(
    "`not_queued`: the job is not queued any more, so it cannot be changed (`state` says "
    "its state); or it changed meanwhile (`conflict`): try again."
)

MOVE_REFUSED = _error(
    "`not_queued`: the job is not queued any more, so it cannot be changed (`state` says its "
    "state); `overbooked`: its new window is full (`earliestStart`); `meeting_taken`: another "
    "job has a bot for the meeting then (`jobId`); or it changed meanwhile (`conflict`): try "
    "again."
)


def _op(
    summary: str,
    description: str,
    tag: str,
    responses: dict[str, Any],
    errors: tuple[str, ...] = (),
    **extra: Any,
) -> dict[str, Any]:
    """An operation behind an API key: 401 and 429 can always happen. A response given in
    `responses` says more than the common one of its code in ERRORS."""
    codes = {*errors, "401", "429"} - responses.keys()
    return {
        "tags": [tag],
        "summary": summary,
        "description": description,
        "responses": dict(sorted({**responses, **{c: ERRORS[c] for c in codes}}.items())),
        **extra,
    }


def _param(where: str, name: str, description: str, example: Any, **schema: Any) -> Any:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "example": example,
        "schema": schema,
    }


TENANT_FILTER = "Only this tenant's jobs (an admin key; another may name only its own tenant)."
# a cursor as the API makes them (core.stores.cursor: not imported here, stores load lazily)
EXAMPLE_CURSOR = "MTg5MzQ5MTk0MDAwMDo4ZjBjMmIxZS01ZDNhLTRjN2UtOWE2MS0yZjRiOGQwZTdjMzU"
JOB_ID = _param("path", "jobId", "The job's id.", EXAMPLE_ID, type="string", minLength=1)
IDEMPOTENCY_KEY = _param(
    "header",
    "Idempotency-Key",
    "A retried POST with the same key returns the job the first one made (200).",
    "submit-2030-01-01-standup",
    type="string",
    minLength=1,
    maxLength=200,
)
LISTING = [
    _param(
        "query",
        "status",
        "Only jobs in this state.",
        "queued",
        type="string",
        enum=[state.value for state in JobState],
    ),
    _param(
        "query", "limit", "Jobs per page.", 50, type="integer", minimum=1, maximum=200, default=50
    ),
    _param(
        "query",
        "cursor",
        "The `nextCursor` of the page before (opaque: only one the API gave is valid).",
        EXAMPLE_CURSOR,
        type="string",
    ),
    _param("query", "tenant", TENANT_FILTER, "acme", type="string", minLength=1),
]
ON_CAPACITY = _param(
    "header",
    "X-On-Capacity",
    "`reject`: the body's `onCapacity` when the body has none (a job with no free slot to start "
    "now is refused with 429 and Retry-After instead of queued).",
    "reject",
    type="string",
    enum=["queue", "reject"],
)
EXTERNAL_KEY = _param(
    "path",
    "externalKey",
    f"Your key for the job, e.g. `{{calendarUid}}:{{occurrenceStart}}`: {KEY_RULE}.",
    "cal-5f2b0c1e:2030-01-01T10:00:00Z",
    type="string",
    pattern=KEY_PATTERN,
)
TAIL = _param(
    "query", "tail", "How many lines, from the end.", 200, type="integer", minimum=1, maximum=10_000
)


def _body(schema: str, example: dict[str, Any]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": ref(schema), "example": example}},
    }


JOB_EXAMPLE = {"meetingUrl": "https://meet.google.com/abc-defg-hij", "botName": "Recording Bot"}
MEETING_EXAMPLE = {
    "meeting_url": "https://meet.google.com/abc-defg-hij",
    "bot_name": "Recording Bot",
    "recording_mode": "speaker_view",
    "automatic_leave": {"waiting_room_timeout": 600, "noone_joined_timeout": 600},
}


def job_paths() -> dict[str, Any]:
    job = _json("JobResponse", "The job.")
    return {
        JOBS: {
            "post": _op(
                "Submit a job",
                "Queues a recording job; it starts at once when capacity is free and its "
                "`joinAt` is near. A repeated `dedupKey` or Idempotency-Key returns the job "
                "that holds it, with 200 and `duplicate: true`.",
                "Jobs",
                {"201": _json("JobResponse", "Queued."), "200": job, "429": AT_CAPACITY},
                BODY_ERRORS,
                operationId="submitJob",
                parameters=[IDEMPOTENCY_KEY, ON_CAPACITY],
                requestBody=_body("JobSpec", JOB_EXAMPLE),
            ),
            "get": _op(
                "List the caller's jobs",
                "Newest first, a page at a time: pass `nextCursor` back as `cursor`. An admin "
                "key (SCHEDULER_ADMIN_KEYS) reads every tenant's jobs, each with its `tenant`, "
                "as it does on GET of a job, its logs and events, and the stats; it changes "
                "none.",
                "Jobs",
                {"200": _json("JobList", "A page of jobs.")},
                ("400",),
                operationId="listJobs",
                parameters=LISTING,
            ),
        },
        JOBS + "/batch": {
            "post": _op(
                "Submit many jobs",
                "Each item is submitted on its own: 201 when all were, 207 when some were "
                "(the others are in `errors`), 400 when none was.",
                "Jobs",
                {
                    "201": _json("BatchResponse", "All submitted."),
                    "207": _json("BatchResponse", "Some submitted; see `errors`."),
                },
                BODY_ERRORS,
                operationId="submitBatch",
                parameters=[ON_CAPACITY],
                requestBody=_body("BatchRequest", {"jobs": [JOB_EXAMPLE]}),
            )
        },
    }


def job_item_paths() -> dict[str, Any]:
    job = _json("JobResponse", "The job.")
    return {
        JOB: {
            "get": _op(
                "Get a job",
                "The job and its state; while queued, its `queuePosition` and `estimatedStartAt`.",
                "Jobs",
                {"200": job},
                ("404",),
                operationId="getJob",
                parameters=[JOB_ID],
            ),
            "patch": _op(
                "Reschedule a queued job",
                f"Changes any of {', '.join(SCHEDULE_FIELDS)} of a queued job, checked as a "
                "submit checks them (null clears joinAt, deadline or maxRuntimeSeconds); a new "
                "joinAt moves the time it may start. The change is the event "
                "`job.rescheduled`. 409 `not_queued` (with `state`) once the job left the queue. "
                "A new joinAt or maxRuntimeSeconds takes the job's reservations and meeting "
                "slots for its new time in the same write, as a submit does: a full window is a "
                "409 `overbooked` (with `earliestStart`) under SCHEDULER_OVERBOOKING=reject, "
                "else the job moves holding no reservation (said in `warnings`); a meeting "
                "another job of yours has a bot for at about that time is a 409 "
                "`meeting_taken` (with that job's `jobId`). A refused move changes nothing.",
                "Jobs",
                {"200": _json("JobResponse", "The job, changed."), "409": MOVE_REFUSED},
                ("404", *BODY_ERRORS),
                operationId="rescheduleJob",
                parameters=[JOB_ID],
                requestBody=_body("JobChange", {"joinAt": "2030-01-01T10:30:00Z", "priority": 9}),
            ),
            "delete": _op(
                "Cancel a job",
                "A queued job is cancelled at once; a started one goes to `stopping` until "
                "the backend confirms its bot gone. 409 when it is already finished.",
                "Jobs",
                {"200": job},
                ("404", "409"),
                operationId="cancelJob",
                parameters=[JOB_ID],
            ),
        },
        JOB + "/logs": {
            "get": _op(
                "Get a job's logs",
                "What the bot printed; 404 before its run started.",
                "Jobs",
                {"200": _json("Logs", "The last lines.")},
                ("400", "404"),
                operationId="getJobLogs",
                parameters=[JOB_ID, TAIL],
            )
        },
    }


def by_key_paths() -> dict[str, Any]:
    keyed = "The job of the key: created (201), or changed, cancelled or kept (200)."
    return {
        BY_KEY: {
            "put": _op(
                "Set the job of your key",
                "Makes the job of `externalKey` (one per key and tenant, even under concurrent "
                "PUTs) what the body says. No job for the key: it is created (201). Queued: "
                "its joinAt, deadline, priority, maxRuntimeSeconds, botName, email, "
                "recordingMode, config, cpu, memory, metadata and webhookUrl become the body's "
                "(a field left out takes its default), and its meetingUrl when that is the same "
                "meeting spelt otherwise: the event `job.rescheduled`; another meeting cancels "
                "the job (reason `replaced`) and creates another (201). "
                "Started (provisioning, running, stopping): kept as it is (fields that differ "
                "are listed in `warnings`), but a moved joinAt is a 409 (a started bot is not "
                "moved). Ended: a new job (201) when it was cancelled or joinAt moved; else "
                'it stays (200, that occurrence has run). `"cancelled": true` cancels the '
                "job in any unfinished state (the rest of the body is not read; 404 when the "
                "key has no job). `dedupKey`, `onCapacity` and `allowSecondBot` count only "
                "when a job is created.",
                "Jobs",
                {
                    "201": _json("JobResponse", "Created."),
                    "200": _json("JobResponse", keyed),
                    "404": _error('`"cancelled": true`, and the key has no job.'),
                    "409": _error(
                        "`not_queued`: the job has started and the body moves its joinAt "
                        "(`state` says its state); `overbooked` or `meeting_taken`: the move "
                        "of a queued job is refused, as a PATCH's; or a concurrent change: "
                        "try again."
                    ),
                    "429": AT_CAPACITY,
                },
                BODY_ERRORS,
                operationId="putJobByKey",
                parameters=[EXTERNAL_KEY, ON_CAPACITY],
                requestBody=_body(
                    "DesiredJob",
                    {
                        "meetingUrl": "https://meet.google.com/abc-defg-hij",
                        "joinAt": "2030-01-01T10:00:00Z",
                    },
                ),
            )
        }
    }


def stats_and_meeting_paths() -> dict[str, Any]:
    meeting = _json("MeetingResponse", "The job, and the config its bot gets.")
    return {
        "/api/scheduler/stats": {
            "get": _op(
                "Queue and run counts",
                "The caller's jobs by state, the caps, and `estimatedWaitSeconds`.",
                "Jobs",
                {"200": _json("StatsResponse", "The counts (also under `stats`).")},
                operationId="getStats",
            )
        },
        "/api/scheduler/meetings": {
            "post": _op(
                "Submit a meeting with the bot's own config",
                "The original's snake_case body. The bot's config is filled with the defaults "
                "the meet-teams bot needs, the fields given over them and `config` over all. "
                "`bot_uuid` is the job's id (409 when in use).",
                "Meetings",
                {"201": _json("MeetingResponse", "Queued."), "200": meeting, "429": AT_CAPACITY},
                (*BODY_ERRORS, "409"),
                operationId="submitMeeting",
                parameters=[IDEMPOTENCY_KEY, ON_CAPACITY],
                requestBody=_body("MeetingRequest", MEETING_EXAMPLE),
            )
        },
    }


def service_paths() -> dict[str, Any]:
    return {
        "/health": {
            "get": {
                "tags": ["Service"],
                "summary": "Health",
                "description": "Whether the server can read its store, and its active jobs.",
                "operationId": "health",
                "security": [],
                "responses": {
                    "200": _json("Health", "Healthy."),
                    "503": _json("Health", "The store cannot be read."),
                },
            }
        },
        "/": {
            "get": {
                "tags": ["Service"],
                "summary": "API info",
                "description": "The API's name, version and operations.",
                "operationId": "info",
                "security": [],
                "responses": {"200": _json("Info", "The API.")},
            }
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics",
                "Jobs by state and transitions since start, in Prometheus' text format.",
                "Service",
                {
                    "200": {
                        "description": "The metrics.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                operationId="metrics",
            )
        },
    }


def paths(*more: dict[str, Any]) -> dict[str, Any]:
    """Every operation: the jobs', then `more`, then the service's."""
    found = {**job_paths(), **job_item_paths(), **by_key_paths(), **stats_and_meeting_paths()}
    for some in more:
        found.update(some)
    return {**found, **service_paths()}
