"""The job and what travels with it. Field names are the wire's (camelCase), as in the seed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from core.formats import (
    CPU_PATTERN,
    HTTP_URL_PREFIX,
    MEMORY_PATTERN,
    check_email,
    check_http_url,
    integral,
)
from core.limits import (
    check_config,
    check_cpu,
    check_deadline,
    check_memory,
    check_moment,
    check_no_nul,
    check_not_a_bool,
    check_not_a_number,
    meeting_policy,
)
from core.meeting_urls import check_meeting_url
from core.resources import cpu_nanos, memory_bytes
from core.values import json_copy


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_ms(moment: datetime) -> int:
    """Milliseconds since the epoch: how stores index times so that they sort as integers."""
    return int(moment.timestamp() * 1000)


class JobState(StrEnum):
    QUEUED = "queued"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    STOPPING = "stopping"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES

    @property
    def active(self) -> bool:
        return self in ACTIVE_STATES


FINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})
# Active jobs hold a slot of the concurrency caps: a run may exist for each of them. A job in
# `stopping` keeps its slot until the backend confirms its run gone, then takes its `outcome`.
ACTIVE_STATES = frozenset({JobState.PROVISIONING, JobState.RUNNING, JobState.STOPPING})

MAX_PRIORITY = 100
PRIVATE_FIELDS = frozenset({"leaseOwner", "leaseUntil", "version", "tenant"})
_PRIVATE = set(PRIVATE_FIELDS)
EXAMPLE_ID = "8f0c2b1e-5d3a-4c7e-9a61-2f4b8d0e7c35"
EXAMPLE_TIME = "2030-01-01T09:59:00Z"
# the bot's recording modes (the original API took the first two; its bot reads all three)
RECORDING_MODES = ("speaker_view", "gallery_view", "audio_only")


class JobSpec(BaseModel):
    """What a client asks for: the seed's request body plus our scheduling fields."""

    model_config = ConfigDict(extra="ignore")
    # stored jobs are read back as they were written, whatever these checks said at the time
    checks_inputs: ClassVar[bool] = True

    meetingUrl: str = Field(
        min_length=1,
        max_length=2048,
        description="The meeting to record: an http or https URL (Google Meet, Teams, Zoom).",
        examples=["https://meet.google.com/abc-defg-hij"],
        json_schema_extra={"format": "uri", "pattern": HTTP_URL_PREFIX},
    )
    botName: str = Field(
        default="Recording Bot",
        min_length=1,
        max_length=200,
        pattern=r"\S",
        description="The name the bot shows in the meeting.",
        examples=["Recording Bot"],
    )
    email: str | None = Field(
        default=None,
        max_length=320,
        description="The bot's e-mail address.",
        examples=["bot@example.com"],
        json_schema_extra={"format": "email"},
    )
    recordingMode: str = Field(
        default="speaker_view",
        description="What the bot records: the speaker, the gallery, or the audio alone.",
        examples=["speaker_view"],
        json_schema_extra={"enum": list(RECORDING_MODES)},
    )
    priority: int = Field(
        default=5,
        ge=0,
        le=MAX_PRIORITY,
        strict=True,
        description="0 to 100; higher starts first.",
        examples=[5],
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Passed to the bot as it is (its snake_case config: automatic_leave, …).",
        examples=[{"enter_message": "Recording this meeting"}],
    )
    joinAt: datetime | None = Field(
        default=None,
        description="When the bot should join (ISO 8601); not started before this time, less "
        "the join lead. Default: as soon as possible.",
        examples=["2030-01-01T10:00:00Z"],
    )
    deadline: datetime | None = Field(
        default=None,
        description="A job still queued at this time (ISO 8601) fails with reason `expired`.",
        examples=["2030-01-01T11:00:00Z"],
    )
    maxRuntimeSeconds: int | None = Field(
        default=None,
        ge=1,
        le=7 * 24 * 3600,
        strict=True,
        description="A run past this many seconds is stopped and the job fails.",
        examples=[7200],
    )
    dedupKey: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="A second job with the same key returns the first (200, duplicate: true).",
        examples=["standup-2030-01-01"],
    )
    cpu: str | None = Field(
        default=None,
        max_length=16,
        description="CPU for the bot, as Kubernetes writes it (`1`, `500m`); default: the "
        "server's.",
        examples=["1"],
        json_schema_extra={"pattern": CPU_PATTERN},
    )
    memory: str | None = Field(
        default=None,
        max_length=16,
        description="Memory for the bot, as Kubernetes writes it (`2Gi`, `512Mi`); default: "
        "the server's.",
        examples=["2Gi"],
        json_schema_extra={"pattern": MEMORY_PATTERN},
    )
    metadata: dict[str, str] = Field(
        default_factory=dict,
        max_length=50,
        description="Up to 50 string labels of yours, returned with the job.",
        examples=[{"team": "sales"}],
    )

    @field_validator("meetingUrl", mode="before")
    @classmethod
    def _http_url(cls, value: Any) -> Any:
        """As sent: no blanks around it or in it."""
        return check_http_url(value) if cls.checks_inputs and isinstance(value, str) else value

    @field_validator("email", mode="before")
    @classmethod
    def _email(cls, value: Any) -> Any:
        return check_email(value) if cls.checks_inputs and isinstance(value, str) else value

    @field_validator("priority", "maxRuntimeSeconds", mode="before")
    @classmethod
    def _integral(cls, value: Any) -> Any:
        if cls.checks_inputs:
            check_not_a_bool(value)
        return integral(value)

    @field_validator("recordingMode")
    @classmethod
    def _recording_mode(cls, value: str) -> str:
        if cls.checks_inputs and value not in RECORDING_MODES:
            raise ValueError(f"must be one of {', '.join(RECORDING_MODES)}")
        return value

    @field_validator("joinAt", "deadline", mode="before")
    @classmethod
    def _iso_time(cls, value: Any) -> Any:
        if value is None:
            return value
        if cls.checks_inputs:
            check_not_a_number(value)
        if not isinstance(value, str | datetime):
            raise ValueError("must be an ISO 8601 date-time string")
        return value

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, value: str | None) -> str | None:
        if value is not None:
            nanos = cpu_nanos(value)
            if cls.checks_inputs:
                check_cpu(nanos)
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None:
            size = memory_bytes(value)
            if cls.checks_inputs:
                check_memory(size)
        return value

    @field_validator("joinAt", "deadline")
    @classmethod
    def _aware(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        if value is None:
            return value
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if cls.checks_inputs:
            check_moment(value)
            if info.field_name == "deadline":
                check_deadline(value, info.context)
        return value

    @field_validator("meetingUrl")
    @classmethod
    def _meeting_host(cls, value: str, info: ValidationInfo) -> str:
        """A host a bot may be sent to (core/meeting_urls.py): not an internal one."""
        if cls.checks_inputs:
            check_meeting_url(value, meeting_policy(info.context))
        return value

    @field_validator("botName", "dedupKey", "metadata")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        """No NUL: the bot gets these in its environment (core/limits.py). The other texts
        are refused with a NUL by their own checks already."""
        if cls.checks_inputs and value is not None:
            check_no_nul(value)
        return value

    @field_validator("config")
    @classmethod
    def _config(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """A config that fits the bot's environment beside the fields before it."""
        if cls.checks_inputs:
            check_config(value, info.data)
        return value

    @model_validator(mode="after")
    def _deadline_after_join(self) -> JobSpec:
        if self.joinAt and self.deadline and self.deadline <= self.joinAt:
            raise ValueError("deadline must be after joinAt")
        return self


class ExecutionRef(BaseModel):
    """Which run on which backend belongs to a job."""

    backend: str = Field(description="The backend that runs it.", examples=["process"])
    id: str = Field(description="The run's id on that backend.", examples=["botsched-8f0c2b1e"])


Phase = Literal["pending", "running", "succeeded", "failed", "unknown"]


class Execution(BaseModel):
    """A backend's view of one run."""

    model_config = ConfigDict(defer_build=True)  # validators built on first use, not at import

    phase: Phase
    exitCode: int | None = None
    reason: str | None = None
    startedAt: datetime | None = None
    finishedAt: datetime | None = None


class Job(JobSpec):
    """A job as stored and as served. `version` is the store's, opaque to everything else."""

    model_config = ConfigDict(extra="ignore")
    checks_inputs: ClassVar[bool] = False

    id: str = Field(description="The job's id.", examples=[EXAMPLE_ID])
    tenant: str
    status: JobState = Field(default=JobState.QUEUED, description="Where the job is.")
    idempotencyKey: str | None = Field(
        default=None, description="The Idempotency-Key it was submitted with.", examples=[None]
    )
    attempts: int = Field(default=0, description="Runs started so far.", examples=[1])
    error: str | None = Field(
        default=None, description="Why the last run or start failed.", examples=[None]
    )
    reason: str | None = Field(
        default=None,
        description="Why the job ended: `expired`, `cancelled`, `max_runtime`, …",
        examples=[None],
    )
    exitCode: int | None = Field(
        default=None, description="The bot's exit code, once it ended.", examples=[0]
    )
    execution: ExecutionRef | None = Field(
        default=None,
        description="The backend's run of the job, once one started.",
        examples=[{"backend": "process", "id": "botsched-8f0c2b1e"}],
    )
    outcome: JobState | None = Field(
        default=None,
        description="In `stopping`: the final state the job takes once its run is gone.",
        examples=[None],
    )
    statusErrors: int = Field(
        default=0, description="Status checks of the run that failed in a row.", examples=[0]
    )
    createdAt: datetime = Field(description="When it was submitted.", examples=[EXAMPLE_TIME])
    updatedAt: datetime = Field(description="Its last change.", examples=[EXAMPLE_TIME])
    notBefore: datetime = Field(
        description="The earliest time it may start.", examples=[EXAMPLE_TIME]
    )
    startedAt: datetime | None = Field(
        default=None, description="When its run started.", examples=[EXAMPLE_TIME]
    )
    completedAt: datetime | None = Field(
        default=None, description="When it reached a final state.", examples=[None]
    )
    leaseOwner: str | None = None
    leaseUntil: datetime | None = None
    version: str | None = None

    @classmethod
    def from_spec(cls, spec: JobSpec, **fields: Any) -> Job:
        """A new job: a validated spec's values and the scheduler's own `fields` (ids and times,
        of their types), over a blank job's defaults: the spec is not validated a second time.
        Every Job field that has a default factory is the spec's, so no default is shared."""
        return _blank_job().model_copy(update={**spec.__dict__, **fields})

    def duplicate(self, **update: Any) -> Job:
        """A copy that shares nothing mutable with this job, with `update` applied: what the
        stores hand out. Only `config`, `metadata` and `execution` are mutable, so this is far
        cheaper than a deep `model_copy`."""
        owned = {
            "config": json_copy(self.config),
            "metadata": dict(self.metadata),
            "execution": self.execution.model_copy() if self.execution else None,
        }
        return self.model_copy(update={**owned, **update})

    @property
    def sort_time(self) -> datetime:
        return self.joinAt or self.createdAt

    def public(self) -> dict[str, Any]:
        """The job as a client sees it: no lease, no store version, no tenant; `containerId`
        (the original's name) is the backend's run id once a run exists."""
        public = self.model_dump(mode="json", exclude=_PRIVATE)
        public["containerId"] = self.execution.id if self.execution else None
        return public

    def public_json(self) -> str:
        """`public()` as JSON text, written by pydantic's serializer in one step."""
        text = self.model_dump_json(exclude=_PRIVATE)
        container = json.dumps(self.execution.id) if self.execution else "null"
        return f'{text[:-1]},"containerId":{container}}}'

    def bot_config(self) -> dict[str, Any]:
        """The JSON bot config the seed's bot reads (snake_case), with the job's own fields."""
        config: dict[str, Any] = dict(self.config)
        config.update(
            meeting_url=self.meetingUrl,
            bot_name=self.botName,
            bot_uuid=self.id,
            recording_mode=self.recordingMode,
        )
        if self.email:
            config["email"] = self.email
        return config


@cache
def _blank_job() -> Job:
    epoch = datetime.fromtimestamp(0, UTC)
    return Job(id="", tenant="", meetingUrl="-", createdAt=epoch, updatedAt=epoch, notBefore=epoch)


class Page(BaseModel):
    model_config = ConfigDict(defer_build=True)

    jobs: list[Job]
    nextCursor: str | None = None


class DrainReport(BaseModel):
    """What one `drain_once` did."""

    model_config = ConfigDict(defer_build=True)

    recovered: int = 0
    retried: int = 0
    polled: int = 0
    completed: int = 0
    failed: int = 0
    expired: int = 0
    stopped: int = 0
    dispatched: int = 0
    undone: int = 0
    orphans: int = 0
    conflicts: int = 0
    dispatchSkipped: bool = False
