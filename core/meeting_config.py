"""`POST /api/scheduler/meetings`: the original's snake_case bot config, filled with the defaults
the meet-teams bot needs, as the original's API filled it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.errors import ValidationFailed
from core.formats import HTTP_URL_PREFIX, check_email, check_http_url, integral
from core.limits import check_no_nul
from core.models import EXAMPLE_ID, MAX_PRIORITY, RECORDING_MODES, Job

URL_SCHEMA: dict[str, Any] = {"format": "uri", "pattern": HTTP_URL_PREFIX}
# The models' validators are built on their first use (defer_build), not at import: a cold start
# that submits no meeting never pays for them.
# a job id names the bot's run on every backend: letters, digits and . _ - only
BOT_UUID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
# the fields of the request that are the scheduler's, not the bot's
SCHEDULING_FIELDS = frozenset({"priority", "config"})


class AutomaticLeave(BaseModel):
    """When the bot leaves by itself."""

    model_config = ConfigDict(extra="allow", strict=True, defer_build=True)

    waiting_room_timeout: int | float | None = Field(
        default=None,
        ge=0,
        description="Seconds in the waiting room before the bot gives up.",
        examples=[600],
    )
    noone_joined_timeout: int | float | None = Field(
        default=None,
        ge=0,
        description="Seconds alone in the meeting before the bot leaves.",
        examples=[600],
    )


class AzureStorage(BaseModel):
    """Where the bot uploads to, with `storage_provider` azure."""

    model_config = ConfigDict(extra="allow", strict=True, defer_build=True)

    container_name: str | None = Field(
        default=None, description="The blob container.", examples=["recordings"]
    )
    blob_path_template: str | None = Field(
        default=None,
        description="The blob path, `{meeting_id}` replaced.",
        examples=["/project/meetings/{meeting_id}"],
    )


def _text(description: str, example: Any, **extra: Any) -> Any:
    return Field(default=None, description=description, examples=[example], **extra)


class MeetingRequest(BaseModel):
    """The original's CreateMeeting body. Fields it did not list travel to the bot as they are;
    `config` is merged over everything (as the original did); null means not given."""

    model_config = ConfigDict(extra="allow", strict=True, defer_build=True)

    meeting_url: str = Field(
        max_length=2048,
        description="The meeting to record: an http or https URL (Google Meet, Teams, Zoom).",
        examples=["https://meet.google.com/abc-defg-hij"],
        json_schema_extra=URL_SCHEMA,
    )
    bot_name: str | None = _text(
        "The name the bot shows (default `Recording Bot`).",
        "Recording Bot",
        max_length=200,
        pattern=r"\S",
    )
    email: str | None = _text(
        "The bot's e-mail address (default `bot@scheduler.local`).",
        "bot@example.com",
        max_length=320,
        json_schema_extra={"format": "email"},
    )
    recording_mode: Literal["speaker_view", "gallery_view", "audio_only"] | None = _text(
        "What the bot records (default `speaker_view`).", "speaker_view"
    )
    bot_uuid: str | None = _text(
        "The job's id and the bot's uuid (default: a new UUID); an id in use is a 409.",
        EXAMPLE_ID,
        pattern=BOT_UUID_PATTERN,
    )
    priority: int = Field(
        default=5,
        ge=0,
        le=MAX_PRIORITY,
        description="0 to 100; higher starts first.",
        examples=[5],
    )
    user_id: int | float | None = _text("The bot's user id (default 999).", 999)
    user_token: str | None = _text("The bot's user token.", "scheduler-token")
    session_id: str | None = _text(
        "The session id (default `scheduler-<id>`); also the config's `id`.", "session-42"
    )
    bots_api_key: str | None = _text("The key the bot calls back with.", "secret-key")
    bots_webhook_url: str | None = _text(
        "Where the bot posts its events.",
        "https://example.com/webhook",
        max_length=2048,
        json_schema_extra=URL_SCHEMA,
    )
    enter_message: str | None = _text("What the bot says on joining.", "Recording this call")
    automatic_leave: AutomaticLeave | None = Field(
        default=None,
        description="When the bot leaves by itself (default: 600 s for both timeouts).",
        examples=[{"waiting_room_timeout": 600, "noone_joined_timeout": 600}],
    )
    custom_branding_bot_path: str | None = _text(
        "An image for the bot's video.",
        "https://example.com/bot.png",
        max_length=2048,
        json_schema_extra=URL_SCHEMA,
    )
    storage_provider: Literal["aws", "azure", "local"] | None = _text(
        "Where recordings go (default `azure`).", "azure"
    )
    mp4_s3_path: str | None = _text(
        "The recording's path (default `recordings/<id>.mp4`).", "recordings/meeting.mp4"
    )
    aws_s3_temporary_audio_bucket: str | None = _text(
        "The audio bucket (default `scheduler-audio`).", "scheduler-audio"
    )
    azure_storage: AzureStorage | None = Field(
        default=None,
        description="Azure upload target.",
        examples=[{"container_name": "recordings", "blob_path_template": "/meetings/{meeting_id}"}],
    )
    speech_to_text_provider: str | None = _text(
        "Transcription provider (default `Default`).", "Default"
    )
    streaming_input: str | None = _text("Audio stream into the meeting.", "")
    streaming_output: str | None = _text("Audio stream out of the meeting.", "")
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Merged over the whole bot config last.",
        examples=[{"vocabulary": ["Acme"]}],
    )

    @field_validator("meeting_url", "bots_webhook_url", "custom_branding_bot_path")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return None if value is None else check_http_url(value)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        return None if value is None else check_email(value)

    @field_validator("priority", mode="before")
    @classmethod
    def _integral(cls, value: Any) -> Any:
        return integral(value)

    def bot_config(self, job_id: str) -> dict[str, Any]:
        """The defaults the bot needs, the fields given over them, then `config` over all."""
        given = self.model_dump(
            exclude_unset=True, exclude_none=True, exclude=set(SCHEDULING_FIELDS)
        )
        return {**bot_defaults(job_id, self.session_id), **given, **self.config}

    def to_spec(self, job_id: str) -> dict[str, Any]:
        """The job body: the bot's config, with the job's fields taken from it."""
        config = self.bot_config(job_id)
        return {
            "meetingUrl": config.get("meeting_url"),
            "botName": config.get("bot_name"),
            "email": config.get("email"),
            "recordingMode": config.get("recording_mode"),
            "priority": self.priority,
            "config": config,
        }


def check_no_nul_fields(data: Any) -> None:
    """Each field of a meeting travels to the bot: one holding a NUL character is named (the
    job's checks would only name `config`, where the fields end up)."""
    for key, value in data.items() if isinstance(data, dict) else ():
        try:
            check_no_nul({key: value})
        except ValueError as exc:
            raise ValidationFailed(f"{key}: {exc}", fields=[key]) from None


def bot_defaults(job_id: str, session_id: str | None) -> dict[str, Any]:
    """What the original's API filled in for the meet-teams bot."""
    return {
        "id": session_id or f"meeting-bot-session-{job_id}",
        "bot_name": "Recording Bot",
        "email": "bot@scheduler.local",
        "bot_uuid": job_id,
        "recording_mode": RECORDING_MODES[0],
        "user_token": "scheduler-token",
        "user_id": 999,
        "session_id": f"scheduler-{job_id}",
        "environ": "scheduler",
        "local_recording_server_location": "docker",
        "bots_api_key": "",
        "automatic_leave": {"waiting_room_timeout": 600, "noone_joined_timeout": 600},
        "storage_provider": "azure",
        "mp4_s3_path": f"recordings/{job_id}.mp4",
        "aws_s3_temporary_audio_bucket": "scheduler-audio",
        "use_my_vocabulary": False,
        "vocabulary": [],
        "force_lang": False,
        "speech_to_text_provider": "Default",
        "speech_to_text_api_key": "",
        "streaming_input": "",
        "streaming_output": "",
        "streaming_audio_frequency": 24000,
        "remote": None,
    }


def meeting_view(job: Job) -> dict[str, Any]:
    """The original's `meeting` answer: the job, and the config its bot is started with."""
    public = job.public()
    return {
        "id": job.id,
        "containerId": public["containerId"],
        "meetingUrl": job.meetingUrl,
        "status": public["status"],
        "createdAt": public["createdAt"],
        "botConfig": job.bot_config(),
    }
