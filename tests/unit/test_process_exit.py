"""ProcessBackend.wait_ended: the local server's drain wakes when a bot it started ends."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from core.backends.process import ProcessBackend
from core.models import Job


def make_job(job_id: str) -> Job:
    now = datetime.now(UTC)
    return Job(
        id=job_id,
        tenant="t1",
        meetingUrl="https://meet.example/abc",
        createdAt=now,
        updatedAt=now,
        notBefore=now,
    )


async def test_wait_ended_returns_when_a_bot_ends_and_only_once(tmp_path: Path) -> None:
    backend = ProcessBackend(["sh", "-c", "sleep 0.3"], tmp_path)
    ref = await backend.start(make_job("quick"))
    started = time.monotonic()
    assert await backend.wait_ended(10.0) is True
    assert 0.2 < time.monotonic() - started < 3.0
    assert (await backend.status(ref)).phase == "succeeded"
    waited = time.monotonic()
    assert await backend.wait_ended(0.3) is False  # the same end is not reported twice
    assert time.monotonic() - waited >= 0.3
    await backend.close()


async def test_wait_ended_times_out_while_bots_run(tmp_path: Path) -> None:
    backend = ProcessBackend(["sh", "-c", "sleep 30"], tmp_path)
    ref = await backend.start(make_job("slow"))
    try:
        assert await backend.wait_ended(0.3) is False
        assert (await backend.status(ref)).phase == "running"
    finally:
        await backend.stop(ref)
        await backend.close()
