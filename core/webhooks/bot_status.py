"""The bot's own status reports, relayed as the job's `botStatus` and as `bot.*` events.

The meet-teams bot reports its lifecycle when its config has `bot_id`, `bots_api_key` and
`bots_webhook_url`: it POSTs `{"event": "bot.status_change", "data": {"bot_id": ..., "status":
{"code": ..., "created_at": ...}}}` with `x-spoke-api-key: <bots_api_key>`. When the client has
not set `bots_webhook_url` and the scheduler knows its own address (SCHEDULER_PUBLIC_URL), each
start points the bot here: `bot_id` is the job id and `bots_api_key` a token made for that claim,
which only the bot is given (the job keeps its SHA-256). A report with another token, for another
job or for a finished job is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.config import Settings
from core.errors import JobFinished, Unauthorized
from core.models import Job

CALLBACK_PATH = "/api/scheduler/bot-status"
TOKEN_HEADER = "x-spoke-api-key"
NEWER_TOKEN_HEADER = "x-meeting-baas-api-key"  # what later versions of the bot send instead
CODE_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"


class BotStatusReport(BaseModel):
    model_config = ConfigDict(extra="ignore")
    code: str = Field(pattern=CODE_PATTERN)
    created_at: int | float | str | None = None


class BotReportData(BaseModel):
    model_config = ConfigDict(extra="ignore")
    bot_id: str = Field(min_length=1, max_length=200)
    status: BotStatusReport


class BotReport(BaseModel):
    model_config = ConfigDict(extra="ignore")
    event: str = Field(pattern=r"^bot\.status_change$")
    data: BotReportData


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def wants_callback(job: Job, settings: Settings) -> bool:
    """Whether this job's bot should report to the scheduler: the client left it unset."""
    return settings.public_url is not None and not job.config.get("bots_webhook_url")


def with_callback(job: Job, token: str, settings: Settings) -> Job:
    """The job as its bot is started: its config points the bot's reports here. In memory
    only: the store keeps the token's hash, never the token."""
    config = {
        **job.config,
        "bot_id": job.id,
        "bots_api_key": token,
        "bots_webhook_url": f"{settings.public_url}{CALLBACK_PATH}",
    }
    return job.model_copy(update={"config": config})


def check_report(job: Job | None, token: str | None) -> Job:
    """The job a report may change; Unauthorized (the same answer whether the job exists or
    not, so a token cannot probe for ids), or JobFinished for a job already over."""
    expected = job.botTokenHash if job is not None else None
    if job is None or expected is None or token is None:
        raise Unauthorized(f"invalid {TOKEN_HEADER} for this bot")
    if not hmac.compare_digest(expected, token_hash(token)):
        raise Unauthorized(f"invalid {TOKEN_HEADER} for this bot")
    if job.status.final:
        raise JobFinished(f"job {job.id} is already {job.status.value}")
    return job


def report_fields(report: BotReport, now: datetime) -> dict[str, Any]:
    return {"botStatus": report.data.status.code, "botStatusAt": now}
