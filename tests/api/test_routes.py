"""Every route of the app, on its happy path (errors: test_errors.py; keys: test_auth.py)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from core.config import Settings
from core.models import JobState
from core.routes import Routes
from tests.api.conftest import JOBS, URL, Api, MakeApi, later

PUBLIC_FIELDS = {"id", "status", "meetingUrl", "botName", "priority", "createdAt"}
PRIVATE_FIELDS = {"leaseOwner", "leaseUntil", "version", "tenant"}


def assert_public(job: dict[str, Any]) -> None:
    assert job.keys() >= PUBLIC_FIELDS
    assert not PRIVATE_FIELDS & job.keys()


async def test_info_lists_the_endpoints(api: Api) -> None:
    response = await api.client.get("/")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "Bot Scheduler API"
    assert body["version"]
    assert body["endpoints"]["submitJob"] == "POST /api/scheduler/jobs"
    assert body["endpoints"]["health"] == "GET /health"


async def test_health(api: Api) -> None:
    response = await api.client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    datetime.fromisoformat(body["timestamp"])


async def test_submit_returns_the_queued_job_in_camel_case(api: Api) -> None:
    response = await api.client.post(
        JOBS, json={"meetingUrl": URL, "botName": "Note Taker", "priority": 7}
    )
    assert response.status_code == 201
    body = response.json()
    assert body["success"] is True
    assert "duplicate" not in body
    job = body["job"]
    assert_public(job)
    assert job["status"] == "queued"
    assert job["meetingUrl"] == URL
    assert job["botName"] == "Note Taker"
    assert job["priority"] == 7
    assert job["recordingMode"] == "speaker_view"
    datetime.fromisoformat(job["createdAt"])
    assert (await api.stored(job["id"])).tenant == "default"


async def test_submit_dispatches_at_once_without_a_drain(api: Api) -> None:
    job = await api.submit()
    # the response's background task has run by the time the client has the response
    assert (await api.job(job["id"]))["status"] in ("provisioning", "running")
    assert api.backend.starts[job["id"]] == 1


async def test_submit_does_not_start_a_job_before_its_join_time(api: Api) -> None:
    job = await api.submit(joinAt=later(hours=1))
    assert (await api.job(job["id"]))["status"] == "queued"
    assert not api.backend.starts


async def test_batch_all_valid_is_201(api: Api) -> None:
    items = [{"meetingUrl": f"{URL}-{n}", "priority": n} for n in range(3)]
    response = await api.client.post(f"{JOBS}/batch", json={"jobs": items})
    assert response.status_code == 201
    body = response.json()
    assert body["success"] is True
    assert (body["submitted"], body["failed"], body["errors"]) == (3, 0, [])
    assert [job["index"] for job in body["jobs"]] == [0, 1, 2]
    assert [job["meetingUrl"] for job in body["jobs"]] == [item["meetingUrl"] for item in items]
    for job in body["jobs"]:
        assert_public(job)
        assert (await api.job(job["id"]))["status"] in ("provisioning", "running")


async def test_batch_mixed_is_207_with_per_item_errors(api: Api) -> None:
    items: list[Any] = [
        {"meetingUrl": URL},
        {"meetingUrl": "ftp://x"},
        {"botName": "no url"},
        {"meetingUrl": URL, "priority": 1000},
        "not an object",
        {"meetingUrl": URL + "-2"},
    ]
    response = await api.client.post(f"{JOBS}/batch", json={"jobs": items})
    assert response.status_code == 207
    body = response.json()
    assert body["success"] is True  # some were submitted
    assert (body["submitted"], body["count"], body["failed"]) == (2, 2, 4)
    assert [job["index"] for job in body["jobs"]] == [0, 5]
    errors = {error["index"]: error for error in body["errors"]}
    assert sorted(errors) == [1, 2, 3, 4]
    for error in errors.values():
        assert error["error"] == "validation_error"
    assert "meetingUrl" in errors[1]["message"]
    assert "meetingUrl" in errors[2]["message"]
    assert "priority" in errors[3]["message"]
    # each error names its item's meetingUrl where it had one, as the original's errors did
    assert (errors[1]["meetingUrl"], errors[3]["meetingUrl"]) == ("ftp://x", URL)
    assert "meetingUrl" not in errors[2] and "meetingUrl" not in errors[4]
    assert (await api.store.counts())[JobState.QUEUED] + len(await api.store.active()) == 2


async def test_get_job(api: Api) -> None:
    job = await api.submit(botName="Getter")
    response = await api.client.get(f"{JOBS}/{job['id']}")
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["job"]["id"] == job["id"]
    assert body["job"]["botName"] == "Getter"
    assert_public(body["job"])


async def test_list_filters_by_status(api: Api) -> None:
    waiting = [await api.submit(joinAt=later(hours=1)) for _ in range(2)]
    started = await api.submit()
    response = await api.client.get(JOBS, params={"status": "queued"})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert {job["id"] for job in body["jobs"]} == {job["id"] for job in waiting}
    running = (await api.client.get(JOBS, params={"status": "running"})).json()["jobs"]
    assert [job["id"] for job in running] == [started["id"]]
    everything = (await api.client.get(JOBS)).json()
    assert len(everything["jobs"]) == 3
    assert everything["nextCursor"] is None
    for job in everything["jobs"]:
        assert_public(job)


async def test_list_limit_and_cursor_page_through_every_job_once(api: Api) -> None:
    ids = {(await api.submit(joinAt=later(hours=1)))["id"] for _ in range(7)}
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        body = (await api.client.get(JOBS, params=params)).json()
        assert len(body["jobs"]) <= 3
        seen += [job["id"] for job in body["jobs"]]
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 7
    assert set(seen) == ids
    first = (await api.client.get(JOBS, params={"limit": 2})).json()
    assert len(first["jobs"]) == 2 and first["nextCursor"]


async def test_cancel_then_cancel_again_is_409(api: Api) -> None:
    job = await api.submit()
    assert (await api.job(job["id"]))["status"] == "running"
    response = await api.client.delete(f"{JOBS}/{job['id']}")
    assert response.status_code == 200
    assert response.json()["job"]["status"] == "cancelled"
    assert (await api.job(job["id"]))["status"] == "cancelled"
    assert api.backend.stopped == [job["id"]]
    again = await api.client.delete(f"{JOBS}/{job['id']}")
    assert again.status_code == 409
    assert again.json()["error"] == "job_finished"


async def test_cancel_a_queued_job(api: Api) -> None:
    job = await api.submit(joinAt=later(hours=1))
    response = await api.client.delete(f"{JOBS}/{job['id']}")
    assert response.status_code == 200
    assert response.json()["job"]["status"] == "cancelled"
    assert not api.backend.stopped


async def test_logs_are_404_before_the_run_starts_then_served(api: Api) -> None:
    join_at = later(hours=1)
    job = await api.submit(joinAt=join_at)
    before = await api.client.get(f"{JOBS}/{job['id']}/logs")
    assert before.status_code == 404
    assert "not started" in before.json()["message"]
    report = await api.scheduler.drain_once(datetime.fromisoformat(join_at))
    assert report.dispatched == 1
    after = await api.client.get(f"{JOBS}/{job['id']}/logs", params={"tail": 2})
    assert after.status_code == 200
    body = after.json()
    assert body["success"] is True
    assert body["jobId"] == job["id"]
    assert body["logs"] == f"{job['id']} line 4\n{job['id']} line 5\n"


async def test_stats_count_queue_and_runs(make_api: MakeApi) -> None:
    api = await make_api({"SCHEDULER_MAX_CONCURRENT_JOBS": "2"})
    empty = (await api.client.get("/api/scheduler/stats")).json()
    assert (empty["queueSize"], empty["runningJobs"], empty["maxConcurrentJobs"]) == (0, 0, 2)
    jobs = [await api.submit() for _ in range(3)]
    response = await api.client.get("/api/scheduler/stats")
    assert response.status_code == 200
    stats = response.json()
    assert stats["success"] is True
    assert (stats["queueSize"], stats["runningJobs"], stats["maxConcurrentJobs"]) == (1, 2, 2)
    assert stats["totalJobs"] == 3
    assert stats["stats"]["queueSize"] == 1
    first_started = next(job["id"] for job in jobs if api.backend.starts[job["id"]])
    api.backend.finish(first_started)
    report = await api.scheduler.drain_once()
    assert (report.completed, report.dispatched) == (1, 1)
    stats = (await api.client.get("/api/scheduler/stats")).json()
    assert (stats["queueSize"], stats["runningJobs"], stats["completedJobs"]) == (0, 2, 1)


async def test_meetings_takes_the_seed_bot_config(api: Api) -> None:
    config = {
        "meeting_url": "https://teams.microsoft.com/l/meetup-join/abc",
        "bot_name": "Seed Bot",
        "recording_mode": "gallery_view",
        "automatic_leave": {"waiting_room_timeout": 60, "noone_joined_timeout": 60},
        "speech_to_text_provider": "Default",
        "enter_message": "Recording",
    }
    response = await api.client.post("/api/scheduler/meetings", json=config)
    assert response.status_code == 201, response.text
    job = response.json()["job"]
    assert_public(job)
    assert job["meetingUrl"] == config["meeting_url"]
    assert job["botName"] == "Seed Bot"
    assert job["recordingMode"] == "gallery_view"
    for key, value in config.items():
        assert job["config"][key] == value
    stored = await api.stored(job["id"])
    assert stored.bot_config()["automatic_leave"] == config["automatic_leave"]


async def test_meetings_needs_meeting_url(api: Api) -> None:
    response = await api.client.post("/api/scheduler/meetings", json={"bot_name": "x"})
    assert response.status_code == 400
    assert "meeting_url" in response.json()["message"]


async def test_openapi_document(api: Api) -> None:
    response = await api.client.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.1")
    assert doc["info"]["title"] and doc["info"]["version"]
    for route in Routes(Settings(), None).table():  # type: ignore[arg-type]
        if route.path.startswith("/api"):
            for method in route.methods or ():
                if method != "HEAD":
                    assert method.lower() in doc["paths"][route.path], (method, route.path)
    schemas = doc["components"]["schemas"]
    assert "meetingUrl" in schemas["JobSpec"]["required"]
    assert "meetingUrl" in schemas["JobSpec"]["properties"]
    assert {"apiKey", "bearer"} <= doc["components"]["securitySchemes"].keys()
    for ref in re.findall(r'"\$ref": "([^"]+)"', response.text):
        assert ref.startswith("#/components/schemas/")
        assert ref.rsplit("/", 1)[1] in schemas, ref


async def test_docs_page_is_self_contained(api: Api) -> None:
    response = await api.client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "openapi.json" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", html, re.IGNORECASE)


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in metrics"
    return float(match.group(1))


async def test_metrics_match_the_store(make_api: MakeApi) -> None:
    api = await make_api({"SCHEDULER_MAX_CONCURRENT_JOBS": "3"})
    for _ in range(4):
        await api.submit(joinAt=later(hours=1))
    await api.submit(maxRuntimeSeconds=600)  # ends before the reservations of the hour begin
    cancelled = await api.submit(joinAt=later(hours=1))
    await api.client.delete(f"{JOBS}/{cancelled['id']}")
    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# TYPE botsched_jobs gauge" in text
    assert metric(text, 'botsched_jobs{state="queued"}') == 4
    assert metric(text, 'botsched_jobs{state="running"}') == 1
    assert metric(text, 'botsched_jobs{state="cancelled"}') == 1
    assert metric(text, 'botsched_jobs{state="completed"}') == 0
    assert metric(text, "botsched_max_concurrent_jobs") == 3
    assert metric(text, 'botsched_events_total{event="submitted"}') == 6
    assert metric(text, 'botsched_events_total{event="dispatched"}') == 1
