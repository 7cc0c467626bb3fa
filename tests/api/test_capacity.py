"""Capacity you can see (core/capacity.py): a queued job's `queuePosition` and `estimatedStartAt`
on submit and GET, `estimatedWaitSeconds` in the stats, and `onCapacity: reject` (body or
X-On-Capacity header) refused with 429 and Retry-After.

The app runs over the memory store and the fake backend, whose bots run until a test ends them;
the typical run is SCHEDULER_EXPECTED_RUN_SECONDS (RUN) until a job completed.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core import capacity
from core.models import Execution, JobState
from tests.api.conftest import JOBS, KEY_A, KEY_B, Api, MakeApi, assert_error, later

RUN = 600
KEYS = {"SCHEDULER_API_KEYS": f"{KEY_A}:tenantA,{KEY_B}:tenantB"}
A, B = {"X-API-Key": KEY_A}, {"X-API-Key": KEY_B}
ONE_SLOT = {
    "SCHEDULER_MAX_CONCURRENT_JOBS": "1",
    "SCHEDULER_EXPECTED_RUN_SECONDS": str(RUN),
    "SCHEDULER_OVERBOOKING": "queue",
}


def meeting(n: int) -> str:
    """A distinct meeting for each job (one bot per meeting is the default)."""
    code = "".join(chr(97 + (n // 26**i) % 26) for i in (2, 1, 0))
    return f"https://meet.google.com/abc-defg-{code}"


def eta(job: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(job["estimatedStartAt"])


def near(moment: datetime, expected: datetime, slack: float = 3.0) -> bool:
    return abs((moment - expected).total_seconds()) <= slack


@pytest.fixture
async def one_slot(make_api: MakeApi) -> Api:
    return await make_api(ONE_SLOT)


async def running(
    api: Api, n: int = 0, headers: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    """A job that took a slot: started by the dispatch after its submit."""
    job = await api.submit(headers, meetingUrl=meeting(n), **spec)
    job = await api.job(job["id"], headers)
    assert job["status"] == "running" and "queuePosition" not in job
    return job


async def queue(api: Api, n: int, **spec: Any) -> dict[str, Any]:
    """Submit a job, then let a millisecond pass: jobs of one priority are ordered by creation
    time to the millisecond, then by id, so the next one is behind it."""
    job = await api.submit(meetingUrl=meeting(n), **spec)
    await asyncio.sleep(0.002)
    return job


def started(job: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(job["startedAt"])


async def test_a_job_with_a_free_slot_is_next_and_starts_now(api: Api) -> None:
    before = datetime.now(UTC)
    job = await api.submit(meetingUrl=meeting(1))
    assert job["status"] == "queued"
    assert job["queuePosition"] == 0
    assert before - timedelta(seconds=1) <= eta(job) <= datetime.now(UTC)


async def test_queued_jobs_show_their_place_and_when_a_slot_frees(one_slot: Api) -> None:
    api = one_slot
    first = await running(api)
    end = started(first) + timedelta(seconds=RUN)
    second = await queue(api, 1)
    third = await queue(api, 2)
    assert (second["queuePosition"], third["queuePosition"]) == (0, 1)
    assert near(eta(second), end)
    assert near(eta(third), end + timedelta(seconds=RUN))

    urgent = await api.submit(meetingUrl=meeting(3), priority=9)  # jumps the queue
    assert urgent["queuePosition"] == 0 and near(eta(urgent), end)
    third = await api.job(third["id"])
    assert third["queuePosition"] == 2
    assert near(eta(third), end + timedelta(seconds=2 * RUN))
    listed = (await api.client.get(JOBS)).json()["jobs"]  # a listing stays cheap: no estimate
    assert all("queuePosition" not in job for job in listed)


async def test_a_running_job_ends_by_its_max_runtime_or_the_typical_run(make_api: MakeApi) -> None:
    api = await make_api({**ONE_SLOT, "SCHEDULER_MAX_CONCURRENT_JOBS": "2"})
    short = await running(api, 0, maxRuntimeSeconds=60)
    await running(api, 1)
    waiting = await api.submit(meetingUrl=meeting(2))
    assert near(eta(waiting), started(short) + timedelta(seconds=60))


async def test_the_typical_run_is_the_median_of_recent_runs(one_slot: Api) -> None:
    api = one_slot
    for n, minutes in enumerate((2, 4, 30)):  # median: 4 minutes
        job = await running(api, n + 10)
        stored = await api.stored(job["id"])
        done = stored.startedAt + timedelta(minutes=minutes)  # type: ignore[operator]
        await api.store.update(
            stored.duplicate(status=JobState.COMPLETED, completedAt=done), stored.version or ""
        )
    capacity.forget(api.store)
    first = await running(api)
    waiting = await api.submit(meetingUrl=meeting(1))
    assert near(eta(waiting), started(first) + timedelta(minutes=4))


async def test_a_scheduled_job_counts_only_the_jobs_still_ahead_at_its_time(
    one_slot: Api,
) -> None:
    api = one_slot
    first = await running(api)
    end = started(first) + timedelta(seconds=RUN)
    await queue(api, 1)  # starts at end
    await queue(api, 2)  # at end + RUN
    capacity.forget(api.store)
    soon = await api.submit(meetingUrl=meeting(3), joinAt=later(seconds=RUN + 60))
    assert soon["queuePosition"] == 1  # the first queued job will have started by then
    assert near(eta(soon), end + timedelta(seconds=2 * RUN))
    late = await api.submit(meetingUrl=meeting(4), joinAt=later(hours=5))
    assert late["queuePosition"] == 0
    assert eta(late) == datetime.fromisoformat(late["notBefore"])  # never before notBefore


async def test_a_position_past_the_limit_says_at_least(
    one_slot: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(capacity, "POSITION_LIMIT", 5)
    monkeypatch.setattr(capacity, "FIRST_WINDOW", 2)
    await running(one_slot)
    jobs = [await queue(one_slot, n + 1) for n in range(7)]
    assert [job["queuePosition"] for job in jobs] == [0, 1, 2, 3, 4, 5, 5]


async def test_stats_estimate_the_wait_of_a_new_job(one_slot: Api) -> None:
    stats = (await one_slot.client.get("/api/scheduler/stats")).json()
    assert stats["estimatedWaitSeconds"] == stats["stats"]["estimatedWaitSeconds"] == 0
    await running(one_slot)
    await one_slot.submit(meetingUrl=meeting(1))
    wait = (await one_slot.client.get("/api/scheduler/stats")).json()["estimatedWaitSeconds"]
    assert 2 * RUN - 5 <= wait <= 2 * RUN


# -- onCapacity: reject ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ({"onCapacity": "reject"}, {}),
        ({}, {"X-On-Capacity": "reject"}),
        ({}, {"X-On-Capacity": "REJECT"}),
    ],
    ids=["body", "header", "header-any-case"],
)
async def test_reject_refuses_a_job_that_cannot_start_now(
    one_slot: Api, body: dict[str, str], headers: dict[str, str]
) -> None:
    first = await running(one_slot)
    response = await one_slot.client.post(
        JOBS, json={"meetingUrl": meeting(1), **body}, headers=headers
    )
    message = assert_error(response, 429, "at_capacity")
    assert "1 of 1 slots busy" in message
    error = response.json()
    wait = (started(first) + timedelta(seconds=RUN) - datetime.now(UTC)).total_seconds()
    assert int(response.headers["Retry-After"]) == error["retryAfter"]
    assert wait - 3 <= error["retryAfter"] <= wait + 1
    assert near(
        datetime.fromisoformat(error["estimatedStartAt"]), started(first) + timedelta(seconds=RUN)
    )
    assert (await one_slot.store.counts())[JobState.QUEUED] == 0  # nothing was queued


async def test_reject_with_a_free_slot_is_an_ordinary_submit(api: Api) -> None:
    job = await api.submit(meetingUrl=meeting(1), onCapacity="reject")
    assert job["onCapacity"] == "reject"
    assert (await api.job(job["id"]))["status"] == "running"


async def test_the_body_says_more_than_the_header(one_slot: Api) -> None:
    await running(one_slot)
    job = await one_slot.submit(
        {"X-On-Capacity": "reject"}, meetingUrl=meeting(1), onCapacity="queue"
    )
    assert job["status"] == "queued" and job["onCapacity"] == "queue"


async def test_reject_refuses_a_job_behind_a_queue_even_with_free_slots(
    make_api: MakeApi,
) -> None:
    api = await make_api({**ONE_SLOT, "SCHEDULER_MAX_CONCURRENT_JOBS": "2"})
    await running(api)
    # a job waits for its retry: due, but not started, so it takes the free slot first
    ahead = await api.submit(meetingUrl=meeting(1), joinAt=later(hours=1), priority=9)
    stored = await api.stored(ahead["id"])
    past = datetime.now(UTC) - timedelta(seconds=5)
    await api.store.update(stored.duplicate(notBefore=past, joinAt=None), stored.version or "")
    response = await api.client.post(
        JOBS, json={"meetingUrl": meeting(2)}, headers={"X-On-Capacity": "reject"}
    )
    assert "1 queued ahead" in assert_error(response, 429, "at_capacity")


async def test_reject_never_refuses_a_scheduled_job_for_the_present(one_slot: Api) -> None:
    await running(one_slot)
    job = await one_slot.submit(
        {"X-On-Capacity": "reject"}, meetingUrl=meeting(1), joinAt=later(hours=2)
    )
    assert job["status"] == "queued" and job["onCapacity"] == "reject"


async def test_reject_holds_the_tenant_cap_too(make_api: MakeApi) -> None:
    env = {**ONE_SLOT, "SCHEDULER_MAX_CONCURRENT_JOBS": "5"}
    api = await make_api({**env, "SCHEDULER_MAX_CONCURRENT_PER_TENANT": "1"})
    await running(api)
    response = await api.client.post(JOBS, json={"meetingUrl": meeting(1), "onCapacity": "reject"})
    assert "1 of your 1" in assert_error(response, 429, "at_capacity")


async def test_a_batch_reports_each_refusal(one_slot: Api) -> None:
    await running(one_slot)
    items = [{"meetingUrl": meeting(1)}, {"meetingUrl": meeting(2), "joinAt": later(hours=3)}]
    response = await one_slot.client.post(
        f"{JOBS}/batch", json={"jobs": items}, headers={"X-On-Capacity": "reject"}
    )
    assert response.status_code == 207
    body = response.json()
    assert [error["error"] for error in body["errors"]] == ["at_capacity"]
    assert [job["index"] for job in body["jobs"]] == [1]


@pytest.mark.parametrize("value", ["", "later", "reject,queue"])
async def test_a_bad_header_is_a_400(api: Api, value: str) -> None:
    response = await api.client.post(
        JOBS, json={"meetingUrl": meeting(1)}, headers={"X-On-Capacity": value}
    )
    assert "X-On-Capacity" in assert_error(response, 400, "validation_error")


async def test_a_meeting_submit_takes_the_header(one_slot: Api) -> None:
    await running(one_slot)
    response = await one_slot.client.post(
        "/api/scheduler/meetings",
        json={"meeting_url": meeting(1)},
        headers={"X-On-Capacity": "reject"},
    )
    assert_error(response, 429, "at_capacity")


async def test_a_finished_run_frees_its_slot_for_the_estimate(one_slot: Api) -> None:
    first = await running(one_slot)
    one_slot.backend.executions[first["id"]] = Execution(phase="succeeded", exitCode=0)
    await one_slot.scheduler.drain_once()
    job = await one_slot.submit({"X-On-Capacity": "reject"}, meetingUrl=meeting(1))
    assert job["queuePosition"] == 0


async def test_the_tenant_cap_delays_only_its_own_jobs(make_api: MakeApi) -> None:
    env = {**ONE_SLOT, "SCHEDULER_MAX_CONCURRENT_JOBS": "5"}
    api = await make_api({**env, "SCHEDULER_MAX_CONCURRENT_PER_TENANT": "1", **KEYS})
    first = await running(api, 0, headers=A)
    mine = await api.submit(A, meetingUrl=meeting(1))
    await asyncio.sleep(0.002)  # created a millisecond apart: ordered by creation
    theirs = await api.submit(B, meetingUrl=meeting(2))
    assert near(eta(mine), started(first) + timedelta(seconds=RUN))
    # ahead of it in the queue is the other tenant's job, which waits for its own tenant's slot
    assert theirs["queuePosition"] == 1 and near(eta(theirs), datetime.now(UTC))
