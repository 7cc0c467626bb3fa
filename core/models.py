"""The job and what travels with it. Field names are the wire's (camelCase), as in the seed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.spec import MAX_PRIORITY, RECORDING_MODES, JobSpec
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

__all__ = ["MAX_PRIORITY", "RECORDING_MODES", "JobSpec"]  # re-exported from core.spec
PRIVATE_FIELDS = frozenset(
    {"leaseOwner", "leaseUntil", "version", "tenant", "eventSeq", "botTokenHash", "budgetCharge"}
)
_PRIVATE = set(PRIVATE_FIELDS)
EXAMPLE_ID = "8f0c2b1e-5d3a-4c7e-9a61-2f4b8d0e7c35"
EXAMPLE_TIME = "2030-01-01T09:59:00Z"


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
    # PLATFORM listing several backends (core/backends/spill.py); a tuple, immutable, so that
    # copies of a job may share it
    backend: str | None = Field(
        default=None,
        description="When PLATFORM lists several backends: the backend its latest claim "
        "assigned it, where its run is started and counted against that backend's cap. Null "
        "with one backend.",
        examples=[None],
    )
    backends: tuple[str, ...] = Field(
        default=(),
        description="Every backend a claim of this job was assigned, in order: where a run of "
        "it may exist, each asked before the job is started anywhere again.",
        examples=[[]],
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
    meetingKey: str | None = Field(
        default=None,
        description="The meeting, whatever the URL's spelling: `meet:abc-defg-hij`, "
        "`zoom:81234567890`, `teams:…`, `webex:…`; one bot per meeting and time by default.",
        examples=["meet:abc-defg-hij"],
    )
    externalKey: str | None = Field(
        default=None,
        description="Your key for the calendar event occurrence this job records "
        "(PUT /api/scheduler/jobs/by-key/{externalKey}).",
        examples=[None],
    )
    botStatus: str | None = Field(
        default=None,
        description="What the bot last reported of itself: `joining_call`, `in_waiting_room`, "
        "`in_call_not_recording`, `in_call_recording`, `call_ended` (history: the job's events).",
        examples=[None],
    )
    botStatusAt: datetime | None = Field(
        default=None, description="When the bot reported `botStatus`.", examples=[None]
    )
    leaseOwner: str | None = None
    leaseUntil: datetime | None = None
    eventSeq: int = 0  # the events written for this job so far (core/events.py)
    botTokenHash: str | None = None  # SHA-256 of the token the bot reports its status with
    # the bot-minutes its admission charged its tenant's budget, and on which day and month
    # (core/budgets.py); None: its tenant had no budget when it was submitted
    budgetCharge: dict[str, Any] | None = None
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
    webhooks: dict[str, int] = Field(default_factory=dict)  # what `tick` delivered
