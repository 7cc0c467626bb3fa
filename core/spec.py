"""What a client asks for: the job's fields a submit carries, each checked as it arrives."""

from __future__ import annotations

from datetime import UTC, datetime
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
from core.webhooks.urls import check_webhook_url

MAX_PRIORITY = 100
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

    onCapacity: Literal["queue", "reject"] = Field(
        default="queue",
        description="No slot free to start it now: `queue` it (the default), or `reject` the "
        "submit with a 429 and Retry-After instead (the header `X-On-Capacity: reject` says "
        "the same).",
        examples=["queue"],
    )
    allowSecondBot: bool = Field(
        default=False,
        strict=True,
        description="Start another bot even when an unfinished job of yours is for the same "
        "meeting at an overlapping time (by default the submit returns that job instead).",
        examples=[False],
    )
    webhookUrl: str | None = Field(
        default=None,
        min_length=1,
        max_length=2048,
        description="An https URL that receives this job's events, signed with the tenant's "
        "job-webhook secret (POST /api/scheduler/webhooks/job-secret), beside the tenant's "
        "endpoints.",
        examples=[None],
        json_schema_extra={"format": "uri"},
    )

    @field_validator("meetingUrl", mode="before")
    @classmethod
    def _http_url(cls, value: Any) -> Any:
        """As sent: no blanks around it or in it."""
        return check_http_url(value) if cls.checks_inputs and isinstance(value, str) else value

    @field_validator("webhookUrl")
    @classmethod
    def _webhook_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if cls.checks_inputs and value is not None:
            allow_private = bool(info.context and info.context.get("webhook_allow_private"))
            check_webhook_url(value, allow_private)
        return value

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
        if not self.checks_inputs:  # a stored job is read back as it was written
            return self
        if self.joinAt and self.deadline and self.deadline <= self.joinAt:
            raise ValueError("deadline must be after joinAt")
        return self
