"""Changing a job after its submit: `PATCH /api/scheduler/jobs/{jobId}` while it is queued, and
`PUT /api/scheduler/jobs/by-key/{externalKey}`, the desired state of the job of a client's key.

The app runs over the memory store and the fake backend (its bots run until a test ends them).
The key's uniqueness under concurrent PUTs on every store: tests/contract/test_by_key.py.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from core.events import transition
from core.models import Execution, Job, JobState
from tests.api.conftest import JOBS, KEY_A, KEY_B, Api, MakeApi, assert_error, later
from tests.api.test_capacity import meeting

BY_KEY = f"{JOBS}/by-key"
KEY = "cal-5f2b0c1e@example.com:2030-01-01T10:00:00Z"


def at(job: dict[str, Any], name: str) -> datetime:
    return datetime.fromisoformat(job[name])


async def types(api: Api, job_id: str) -> list[str]:
    events = (await api.client.get(f"{JOBS}/{job_id}/events")).json()["events"]
    return [event["type"] for event in events]


async def patch(api: Api, job_id: str, **fields: Any) -> httpx.Response:
    return await api.client.patch(f"{JOBS}/{job_id}", json=fields)


async def put(api: Api, key: str = KEY, **body: Any) -> httpx.Response:
    if not body.get("cancelled"):
        body.setdefault("meetingUrl", meeting(1))
    return await api.client.put(f"{BY_KEY}/{key}", json=body)


# -- PATCH -----------------------------------------------------------------------------------


async def test_patch_moves_a_queued_job_and_says_so_in_an_event(api: Api) -> None:
    job = await api.submit(meetingUrl=meeting(1), joinAt=later(hours=1))
    new_time = later(hours=3)
    response = await patch(api, job["id"], joinAt=new_time, priority=9)
    assert response.status_code == 200
    changed = response.json()["job"]
    assert at(changed, "joinAt") == datetime.fromisoformat(new_time)
    assert changed["priority"] == 9 and changed["status"] == "queued"
    assert at(changed, "notBefore") > at(job, "notBefore") + timedelta(hours=1, minutes=59)
    assert changed["queuePosition"] == 0 and "estimatedStartAt" in changed
    assert await types(api, job["id"]) == ["job.queued", "job.rescheduled"]
    events = (await api.client.get(f"{JOBS}/{job['id']}/events")).json()["events"]
    assert at(events[-1]["data"], "joinAt") == datetime.fromisoformat(new_time)


async def test_patch_sets_and_clears_the_other_fields(api: Api) -> None:
    """A scheduled job's deadline is at most its meeting's window end (joinAt plus the late
    tolerance, when it fails `missed`): an earlier one is kept, a later one or none is that."""
    job = await api.submit(meetingUrl=meeting(1), joinAt=later(hours=1), maxRuntimeSeconds=60)
    window_end = at(job, "joinAt") + timedelta(seconds=api.settings.late_tolerance_seconds)
    assert at(job, "deadline") == window_end
    deadline = (at(job, "joinAt") + timedelta(seconds=30)).isoformat()
    changed = (await patch(api, job["id"], deadline=deadline, maxRuntimeSeconds=None)).json()
    assert at(changed["job"], "deadline") == datetime.fromisoformat(deadline)
    assert changed["job"]["maxRuntimeSeconds"] is None
    later_one = later(hours=2)
    kept = (await patch(api, job["id"], deadline=later_one)).json()["job"]
    assert at(kept, "deadline") == window_end
    cleared = (await patch(api, job["id"], deadline=None)).json()["job"]
    assert at(cleared, "deadline") == window_end
    stored = await api.stored(job["id"])
    assert stored.deadline == window_end and stored.maxRuntimeSeconds is None


async def test_patch_that_changes_nothing_writes_nothing(api: Api) -> None:
    job = await api.submit(meetingUrl=meeting(1), joinAt=later(hours=1), priority=7)
    version = (await api.stored(job["id"])).version
    response = await patch(api, job["id"], priority=7, joinAt=job["joinAt"])
    assert response.status_code == 200
    assert (await api.stored(job["id"])).version == version
    assert await types(api, job["id"]) == ["job.queued"]


async def test_patch_to_now_starts_the_job(api: Api) -> None:
    job = await api.submit(meetingUrl=meeting(1), joinAt=later(hours=1))
    await patch(api, job["id"], joinAt=datetime.now(UTC).isoformat())
    assert (await api.job(job["id"]))["status"] == "running"
    assert await types(api, job["id"]) == [
        "job.queued",
        "job.rescheduled",
        "job.provisioning",
        "job.running",
    ]


async def test_patch_of_a_started_or_ended_job_is_409_with_its_state(api: Api) -> None:
    job = await api.submit(meetingUrl=meeting(1))
    assert (await api.job(job["id"]))["status"] == "running"
    response = await patch(api, job["id"], priority=9)
    assert "running" in assert_error(response, 409, "not_queued")
    assert response.json()["state"] == "running"
    await api.client.delete(f"{JOBS}/{job['id']}")
    response = await patch(api, job["id"], priority=9)
    assert_error(response, 409, "not_queued")
    assert response.json()["state"] == "cancelled"


async def test_patch_of_another_tenants_job_is_404(make_api: MakeApi) -> None:
    api = await make_api({"SCHEDULER_API_KEYS": f"{KEY_A}:tenantA,{KEY_B}:tenantB"})
    job = await api.submit({"X-API-Key": KEY_A}, meetingUrl=meeting(1), joinAt=later(hours=1))
    response = await api.client.patch(
        f"{JOBS}/{job['id']}", json={"priority": 9}, headers={"X-API-Key": KEY_B}
    )
    assert_error(response, 404, "not_found")
    assert (await api.stored(job["id"])).priority == 5
    missing = await api.client.patch(
        f"{JOBS}/nope", json={"priority": 9}, headers={"X-API-Key": KEY_A}
    )
    assert_error(missing, 404, "not_found")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"priority": 101}, "priority"),
        ({"priority": "high"}, "priority"),
        ({"priority": True}, "priority"),
        ({"priority": None}, "priority"),
        ({"maxRuntimeSeconds": 0}, "maxRuntimeSeconds"),
        ({"joinAt": 1893491940}, "joinAt"),
        ({"joinAt": "tomorrow"}, "joinAt"),
        ({"deadline": "2001-01-01T00:00:00Z"}, "deadline"),
        ({"deadline": "PAST_JOIN"}, "deadline"),
        ({"meetingUrl": "https://meet.google.com/xyz-abcd-efg"}, "meetingUrl"),
        ({"colour": "red"}, "colour"),
        ({}, "nothing to change"),
        ([], "JSON object"),
    ],
)
async def test_patch_checks_values_as_a_submit_does(api: Api, body: Any, needle: str) -> None:
    job = await api.submit(meetingUrl=meeting(1), joinAt=later(hours=2))
    if body == {"deadline": "PAST_JOIN"}:
        body = {"deadline": later(hours=1)}  # before its joinAt
    response = await api.client.patch(f"{JOBS}/{job['id']}", json=body)
    assert needle in assert_error(response, 400, "validation_error")
    assert await types(api, job["id"]) == ["job.queued"]


async def test_patch_into_a_full_window_warns_or_is_409_overbooked(make_api: MakeApi) -> None:
    """A moved job takes the slots of its new window (core/moves.py): with one slot, a move onto
    another job's window holds none (overbooking queue: said in `warnings`), or is refused."""
    for overbooking in ("queue", "reject"):
        env = {"SCHEDULER_MAX_CONCURRENT_JOBS": "1", "SCHEDULER_OVERBOOKING": overbooking}
        api = await make_api(env)
        job = await api.submit(meetingUrl=meeting(1), joinAt=later(hours=1))
        taken = await api.submit(meetingUrl=meeting(2), joinAt=later(hours=5))
        response = await patch(api, job["id"], joinAt=taken["joinAt"])
        if overbooking == "queue":
            assert response.status_code == 200, response.text
            (warning,) = response.json()["warnings"]
            assert "queued without a reserved slot" in warning
        else:
            assert "earliest joinAt" in assert_error(response, 409, "overbooked")
            earliest = datetime.fromisoformat(response.json()["earliestStart"])
            assert earliest > at(taken, "joinAt")
            assert (await api.stored(job["id"])).joinAt == at(job, "joinAt")


async def test_patch_onto_a_meeting_another_job_has_a_bot_for_is_409(api: Api) -> None:
    first = await api.submit(meetingUrl=meeting(3), joinAt=later(hours=1))
    second = await api.submit(meetingUrl=meeting(3), joinAt=later(hours=6))
    response = await patch(api, second["id"], joinAt=later(hours=1, minutes=10))
    assert first["id"] in assert_error(response, 409, "meeting_taken")
    assert response.json()["jobId"] == first["id"]
    assert (await patch(api, second["id"], joinAt=later(hours=4))).status_code == 200


# -- PUT by key ------------------------------------------------------------------------------


async def test_put_creates_the_job_of_a_key_once(api: Api) -> None:
    response = await put(api, joinAt="2030-01-01T10:00:00Z")
    assert response.status_code == 201
    body = response.json()
    job = body["job"]
    assert body["created"] is True and job["externalKey"] == KEY
    assert job["status"] == "queued" and job["queuePosition"] == 0
    again = await put(api, joinAt="2030-01-01T10:00:00Z")
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["job"]["id"] == job["id"]
    assert await types(api, job["id"]) == ["job.queued"]  # the same state: no write


async def test_put_changes_a_queued_job_in_place(api: Api) -> None:
    job = (await put(api, joinAt="2030-01-01T10:00:00Z", priority=3)).json()["job"]
    response = await put(
        api,
        joinAt="2030-01-01T10:30:00Z",
        deadline="2030-01-01T11:00:00Z",
        config={"enter_message": "hello"},
        botName="Notes",
    )
    assert response.status_code == 200
    changed = response.json()["job"]
    assert changed["id"] == job["id"]
    assert changed["joinAt"] == "2030-01-01T10:30:00Z"
    assert changed["deadline"] == "2030-01-01T10:32:00Z"  # the window's end comes first
    assert changed["priority"] == 5  # left out: the default, as a new submit would have
    assert (changed["config"], changed["botName"]) == ({"enter_message": "hello"}, "Notes")
    stored = await api.stored(job["id"])
    assert stored.notBefore < stored.joinAt  # type: ignore[operator]
    assert await types(api, job["id"]) == ["job.queued", "job.rescheduled"]


async def test_put_with_another_meeting_replaces_a_queued_job(api: Api) -> None:
    old = (await put(api, joinAt="2030-01-01T10:00:00Z")).json()["job"]
    response = await put(api, meetingUrl=meeting(2), joinAt="2030-01-01T10:00:00Z")
    assert response.status_code == 201
    new = response.json()["job"]
    assert new["id"] != old["id"] and new["meetingUrl"] == meeting(2)
    replaced = await api.job(old["id"])
    assert (replaced["status"], replaced["reason"]) == ("cancelled", "replaced")
    assert (await put(api, meetingUrl=meeting(2), joinAt="2030-01-01T10:00:00Z")).status_code == 200


async def test_put_with_the_same_meeting_spelt_otherwise_changes_the_job(api: Api) -> None:
    old = (await put(api, joinAt="2030-01-01T10:00:00Z")).json()["job"]
    other_spelling = meeting(1) + "?authuser=1"
    response = await put(api, meetingUrl=other_spelling, joinAt="2030-01-01T10:00:00Z")
    assert response.status_code == 200
    assert response.json()["job"]["id"] == old["id"]
    assert response.json()["job"]["meetingUrl"] == other_spelling
    assert await types(api, old["id"]) == ["job.queued", "job.rescheduled"]


async def test_put_cancelled_cancels_a_queued_job(api: Api) -> None:
    job = (await put(api, joinAt="2030-01-01T10:00:00Z")).json()["job"]
    response = await put(api, cancelled=True)
    assert response.status_code == 200
    assert response.json()["job"]["id"] == job["id"]
    assert response.json()["job"]["status"] == "cancelled"
    again = await put(api, cancelled=True)  # already done: the same answer
    assert again.status_code == 200 and again.json()["job"]["status"] == "cancelled"


async def test_put_cancelled_stops_a_running_bot(api: Api) -> None:
    job = (await put(api)).json()["job"]  # no joinAt: starts at once
    assert (await api.job(job["id"]))["status"] == "running"
    response = await put(api, cancelled=True)
    assert response.status_code == 200
    assert response.json()["job"]["status"] == "cancelled"
    assert api.backend.stopped == [job["id"]]


async def test_put_cancelled_cancels_a_provisioning_job(api: Api) -> None:
    job = (await put(api, joinAt="2030-01-01T10:00:00Z")).json()["job"]
    stored = await api.stored(job["id"])
    claimed = stored.duplicate(status=JobState.PROVISIONING, attempts=1)  # its dispatcher died
    await api.store.update(claimed, stored.version or "")
    response = await put(api, cancelled=True)
    assert response.status_code == 200
    assert response.json()["job"]["status"] == "cancelled"
    assert await types(api, job["id"]) == ["job.queued", "job.stopping", "job.cancelled"]


async def test_put_does_not_move_a_started_bot(api: Api) -> None:
    job = (await put(api, priority=5)).json()["job"]
    assert (await api.job(job["id"]))["status"] == "running"
    moved = await put(api, joinAt=later(hours=1))
    assert "not moved" in assert_error(moved, 409, "not_queued")
    assert moved.json()["state"] == "running"
    kept = await put(api, priority=9, botName="Other")
    assert kept.status_code == 200
    assert kept.json()["job"]["priority"] == 5
    assert kept.json()["warnings"] == [
        "priority: not applied, the job has started",
        "botName: not applied, the job has started",
    ]


async def test_put_after_the_job_ended(api: Api) -> None:
    job = (await put(api)).json()["job"]
    api.backend.executions[job["id"]] = Execution(phase="succeeded", exitCode=0)
    await api.scheduler.drain_once()
    assert (await api.job(job["id"]))["status"] == "completed"
    same = await put(api)  # that occurrence ran: nothing to do
    assert same.status_code == 200 and same.json()["job"]["id"] == job["id"]
    moved = await put(api, joinAt="2030-01-01T10:00:00Z")  # a new time: a new job
    assert moved.status_code == 201
    new = moved.json()["job"]
    assert new["id"] != job["id"] and new["externalKey"] == KEY
    assert (await api.job(job["id"]))["status"] == "completed"  # the old job stays as it was
    assert (await put(api, cancelled=True)).json()["job"]["status"] == "cancelled"
    revived = await put(api, joinAt="2030-01-01T10:00:00Z")  # cancelled, then wanted again
    assert revived.status_code == 201
    assert revived.json()["job"]["id"] not in (job["id"], new["id"])


async def test_put_cancelled_for_a_key_without_a_job_is_404(api: Api) -> None:
    assert "no job" in assert_error(await put(api, cancelled=True), 404, "not_found")


async def test_keys_are_per_tenant(make_api: MakeApi) -> None:
    api = await make_api({"SCHEDULER_API_KEYS": f"{KEY_A}:tenantA,{KEY_B}:tenantB"})
    body = {"meetingUrl": meeting(1), "joinAt": "2030-01-01T10:00:00Z"}
    a = await api.client.put(f"{BY_KEY}/{KEY}", json=body, headers={"X-API-Key": KEY_A})
    b = await api.client.put(f"{BY_KEY}/{KEY}", json=body, headers={"X-API-Key": KEY_B})
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["job"]["id"] != b.json()["job"]["id"]
    cancel = {"cancelled": True}
    gone = await api.client.put(f"{BY_KEY}/{KEY}", json=cancel, headers={"X-API-Key": KEY_B})
    assert gone.json()["job"]["id"] == b.json()["job"]["id"]
    assert (await api.job(a.json()["job"]["id"], {"X-API-Key": KEY_A}))["status"] == "queued"


@pytest.mark.parametrize(
    ("key", "body", "needle"),
    [
        ("-starts-with-a-dash", {"meetingUrl": meeting(1)}, "externalKey"),
        ("k" * 201, {"meetingUrl": meeting(1)}, "externalKey"),
        ("a%20b", {"meetingUrl": meeting(1)}, "externalKey"),
        ("ok", {"cancelled": "yes"}, "cancelled"),
        ("ok", {"cancelled": False}, "meetingUrl"),
        ("ok", {"meetingUrl": meeting(1), "priority": 101}, "priority"),
        ("ok", [], "JSON object"),
    ],
)
async def test_put_refuses_bad_keys_and_bodies(api: Api, key: str, body: Any, needle: str) -> None:
    response = await api.client.put(f"{BY_KEY}/{key}", json=body)
    assert needle in assert_error(response, 400)
    assert (await api.client.get(JOBS)).json()["jobs"] == []


async def test_put_warns_of_unknown_fields(api: Api) -> None:
    response = await put(api, joinAt="2030-01-01T10:00:00Z", colour="red")
    assert response.json()["warnings"] == ["colour: unknown field, ignored"]


async def test_concurrent_puts_of_one_key_make_one_job(api: Api) -> None:
    times = [f"2030-01-01T10:{minute:02d}:00Z" for minute in range(20)]
    responses = await asyncio.gather(*(put(api, joinAt=when) for when in times))
    assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
    ids = {response.json()["job"]["id"] for response in responses}
    assert len(ids) == 1
    jobs = (await api.client.get(JOBS)).json()["jobs"]
    assert [job["id"] for job in jobs] == list(ids)


def test_only_a_change_of_a_queued_jobs_fields_is_a_rescheduling() -> None:
    now = datetime.now(UTC)
    queued = Job(
        id="j1", tenant="t", meetingUrl=meeting(1), createdAt=now, updatedAt=now, notBefore=now
    )
    moved = queued.model_copy(update={"joinAt": now + timedelta(hours=1), "notBefore": now})
    assert transition(queued, moved) == "job.rescheduled"
    assert transition(queued, queued.model_copy(update={"config": {"a": 1}})) == "job.rescheduled"
    assert transition(queued, queued.model_copy(update={"notBefore": now})) is None
    claimed = queued.model_copy(update={"status": JobState.PROVISIONING, "attempts": 1})
    assert transition(claimed, queued.model_copy(update={"attempts": 1})) == "job.retrying"
    assert transition(claimed, queued) == "job.queued"  # a claim undone
    running = claimed.model_copy(update={"status": JobState.RUNNING})
    assert transition(running, running.model_copy(update={"priority": 9})) is None
