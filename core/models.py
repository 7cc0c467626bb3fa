"""The job and what travels with it. Field names are the wire's (camelCase), as in the seed."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.resources import cpu_nanos, memory_bytes


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


class JobSpec(BaseModel):
    """What a client asks for: the seed's request body plus our scheduling fields."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    meetingUrl: str = Field(min_length=1, max_length=2048)
    botName: str = Field(default="Recording Bot", min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    recordingMode: str = Field(default="speaker_view", min_length=1, max_length=64)
    priority: int = Field(default=5, ge=0, le=MAX_PRIORITY)
    config: dict[str, Any] = Field(default_factory=dict)
    joinAt: datetime | None = None
    deadline: datetime | None = None
    maxRuntimeSeconds: int | None = Field(default=None, ge=1, le=7 * 24 * 3600)
    dedupKey: str | None = Field(default=None, min_length=1, max_length=200)
    cpu: str | None = Field(default=None, max_length=16)
    memory: str | None = Field(default=None, max_length=16)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=50)

    @field_validator("meetingUrl")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError("must be an http(s) URL")
        return value

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, value: str | None) -> str | None:
        if value is not None:
            cpu_nanos(value)
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None:
            memory_bytes(value)
        return value

    @field_validator("joinAt", "deadline")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _deadline_after_join(self) -> JobSpec:
        if self.joinAt and self.deadline and self.deadline <= self.joinAt:
            raise ValueError("deadline must be after joinAt")
        return self


class ExecutionRef(BaseModel):
    """Which run on which backend belongs to a job."""

    backend: str
    id: str


Phase = Literal["pending", "running", "succeeded", "failed", "unknown"]


class Execution(BaseModel):
    """A backend's view of one run."""

    phase: Phase
    exitCode: int | None = None
    reason: str | None = None
    startedAt: datetime | None = None
    finishedAt: datetime | None = None


class Job(JobSpec):
    """A job as stored and as served. `version` is the store's, opaque to everything else."""

    model_config = ConfigDict(extra="ignore")

    id: str
    tenant: str
    status: JobState = JobState.QUEUED
    idempotencyKey: str | None = None
    attempts: int = 0
    error: str | None = None
    reason: str | None = None
    exitCode: int | None = None
    execution: ExecutionRef | None = None
    outcome: JobState | None = None  # in `stopping`: the final state once the run is gone
    statusErrors: int = 0  # status checks that failed in a row
    createdAt: datetime
    updatedAt: datetime
    notBefore: datetime
    startedAt: datetime | None = None
    completedAt: datetime | None = None
    leaseOwner: str | None = None
    leaseUntil: datetime | None = None
    version: str | None = None

    @property
    def sort_time(self) -> datetime:
        return self.joinAt or self.createdAt

    def public(self) -> dict[str, Any]:
        """The job as a client sees it: no lease, no store version."""
        return self.model_dump(
            mode="json", exclude={"leaseOwner", "leaseUntil", "version", "tenant"}
        )

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


class Page(BaseModel):
    jobs: list[Job]
    nextCursor: str | None = None


class DrainReport(BaseModel):
    """What one `drain_once` did."""

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
