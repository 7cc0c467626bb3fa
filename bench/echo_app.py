"""The floor: bare Starlette and a pydantic model echoing the submit body, nothing else.

Served by uvicorn exactly as the scheduler is (`uvicorn bench.echo_app:app`), so that the ratio of
the two throughputs is what the scheduler's own work costs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


class Echo(BaseModel):
    """The job body's fields, with plain types and bounds."""

    meetingUrl: str = Field(min_length=1, max_length=2048)
    botName: str = Field(default="Recording Bot", max_length=200)
    email: str | None = None
    recordingMode: str = "speaker_view"
    priority: int = Field(default=5, ge=0, le=100)
    config: dict[str, Any] = Field(default_factory=dict)
    joinAt: datetime | None = None
    deadline: datetime | None = None
    maxRuntimeSeconds: int | None = None
    dedupKey: str | None = None
    cpu: str | None = None
    memory: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


async def submit(request: Request) -> Response:
    echo = Echo.model_validate(await request.json())
    return JSONResponse({"success": True, "job": echo.model_dump(mode="json")}, status_code=201)


app = Starlette(routes=[Route("/api/scheduler/jobs", submit, methods=["POST"])])
