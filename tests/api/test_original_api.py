"""What users of the TypeScript original (apps/scheduler/src/scheduler/api/honoApp.ts) expect:
its health answer, /doc and /ui, the meetings route's filled bot config, `containerId`, its
recording modes and e-mail check, and 405 with Allow everywhere."""

from __future__ import annotations

from typing import Any

import pytest

from core import docs
from core.config import Settings
from core.meeting_config import bot_defaults
from core.routes import Routes
from tests.api.conftest import JOBS, URL, Api, assert_error, later

MEETINGS = "/api/scheduler/meetings"


async def test_health_answers_as_the_original(api: Api) -> None:
    await api.submit()  # started at once: running
    await api.submit(joinAt=later(hours=1))  # queued: not active
    body = (await api.client.get("/health")).json()
    assert (body["success"], body["status"]) == (True, "healthy")
    assert body["activeJobs"] == 1
    assert body["platform"] == api.settings.platform
    assert body["timestamp"].endswith("+00:00")


async def test_health_is_503_when_the_store_cannot_be_read(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken() -> list[Any]:
        raise OSError("disk gone")

    monkeypatch.setattr(api.store, "active", broken)
    api.client.event_hooks = {"response": []}  # the one 5xx meant to be: no conftest check
    response = await api.client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert (body["success"], body["status"]) == (False, "unhealthy")
    assert "disk gone" not in response.text  # the cause is logged, not served


async def test_doc_and_ui_are_the_originals_paths(api: Api) -> None:
    assert (await api.client.get("/doc")).json() == (await api.client.get("/openapi.json")).json()
    ui, docs = await api.client.get("/ui"), await api.client.get("/docs")
    assert ui.status_code == docs.status_code == 200
    assert ui.text == docs.text
    assert "docs/assets/swagger-ui-bundle.js" in ui.text
    info = (await api.client.get("/")).json()
    assert info["documentation"] == "/ui"
    assert (info["endpoints"]["doc"], info["endpoints"]["ui"]) == ("GET /doc", "GET /ui")


async def test_swagger_ui_files_come_from_the_app(api: Api) -> None:
    script = await api.client.get("/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "SwaggerUIBundle" in script.text
    css = await api.client.get("/docs/assets/swagger-ui.css")
    assert css.headers["content-type"].startswith("text/css")
    missing = await api.client.get("/docs/assets/index.html")
    assert_error(missing, 404)


async def test_a_page_without_javascript_still_lists_the_operations(api: Api) -> None:
    html = (await api.client.get("/docs")).text
    noscript = html.split("<noscript>", 1)[1].split("</noscript>", 1)[0]
    assert "<b>POST</b> <code>/api/scheduler/jobs</code> Submit a job" in noscript
    assert "<code>/api/scheduler/meetings</code>" in noscript


async def test_meetings_fill_the_bot_config_as_the_original(api: Api) -> None:
    response = await api.client.post(MEETINGS, json={"meeting_url": URL})
    assert response.status_code == 201, response.text
    body = response.json()
    meeting = body["meeting"]
    job_id = meeting["id"]
    assert body["job"]["id"] == job_id
    assert (meeting["meetingUrl"], meeting["status"]) == (URL, "queued")
    assert meeting["createdAt"] == body["job"]["createdAt"]
    expected = {**bot_defaults(job_id, None), "meeting_url": URL}
    assert meeting["botConfig"] == expected
    assert expected["id"] == f"meeting-bot-session-{job_id}"
    assert expected["session_id"] == f"scheduler-{job_id}"
    assert expected["mp4_s3_path"] == f"recordings/{job_id}.mp4"
    for absent in (
        "bots_webhook_url",
        "enter_message",
        "custom_branding_bot_path",
        "azure_storage",
    ):
        assert absent not in meeting["botConfig"]
    # what every backend sends as BOT_CONFIG is what the answer showed
    assert (await api.stored(job_id)).bot_config() == meeting["botConfig"]


async def test_meetings_fields_and_config_go_over_the_defaults(api: Api) -> None:
    request = {
        "meeting_url": URL,
        "bot_uuid": "standup-42",
        "session_id": "session-7",
        "bot_name": "Seed Bot",
        "email": "seed@example.com",
        "recording_mode": "gallery_view",
        "enter_message": "hello",
        "automatic_leave": {"waiting_room_timeout": 60},
        "storage_provider": "aws",
        "custom_field": [1, 2],
        "user_id": None,  # null is not given: the default stays
        "config": {"streaming_audio_frequency": 16000, "remote": {"api_server_baseurl": "x"}},
    }
    response = await api.client.post(MEETINGS, json=request)
    assert response.status_code == 201, response.text
    body = response.json()
    config = body["meeting"]["botConfig"]
    assert body["meeting"]["id"] == body["job"]["id"] == config["bot_uuid"] == "standup-42"
    assert (config["id"], config["session_id"]) == ("session-7", "session-7")
    assert (config["bot_name"], config["email"]) == ("Seed Bot", "seed@example.com")
    assert config["recording_mode"] == body["job"]["recordingMode"] == "gallery_view"
    assert config["automatic_leave"] == {"waiting_room_timeout": 60}
    assert (config["enter_message"], config["storage_provider"]) == ("hello", "aws")
    assert (config["custom_field"], config["user_id"]) == ([1, 2], 999)
    assert config["streaming_audio_frequency"] == 16000
    assert config["remote"] == {"api_server_baseurl": "x"}
    assert config["mp4_s3_path"] == "recordings/standup-42.mp4"
    assert (await api.stored("standup-42")).bot_config() == config


async def test_a_bot_uuid_in_use_is_a_409(api: Api) -> None:
    first = await api.client.post(MEETINGS, json={"meeting_url": URL, "bot_uuid": "dup-1"})
    assert first.status_code == 201
    again = await api.client.post(MEETINGS, json={"meeting_url": URL, "bot_uuid": "dup-1"})
    assert "dup-1" in assert_error(again, 409)
    every = (await api.store.list_jobs(None, limit=200)).jobs
    assert [job.id for job in every].count("dup-1") == 1


@pytest.mark.parametrize(
    ("request_body", "field"),
    [
        ({"meeting_url": URL, "bot_uuid": "../etc"}, "bot_uuid"),
        ({"meeting_url": URL, "bot_uuid": "a" * 129}, "bot_uuid"),
        ({"meeting_url": URL, "recording_mode": "AudioOnly"}, "recording_mode"),
        ({"meeting_url": URL, "email": "not-an-address"}, "email"),
        ({"meeting_url": URL, "storage_provider": "gcs"}, "storage_provider"),
        ({"meeting_url": URL, "bots_webhook_url": "ftp://x.example"}, "bots_webhook_url"),
        ({"meeting_url": URL, "user_id": "999"}, "user_id"),
        ({"meeting_url": " " + URL}, "meeting_url"),
        ({"meeting_url": URL, "enter_message": "hi\x00"}, "enter_message"),
    ],
)
async def test_meetings_name_the_bad_field(
    api: Api, request_body: dict[str, Any], field: str
) -> None:
    response = await api.client.post(MEETINGS, json=request_body)
    assert assert_error(response, 400, "validation_error").startswith(field)
    assert sum((await api.store.counts()).values()) == 0


async def test_a_repeated_idempotency_key_returns_the_same_meeting(api: Api) -> None:
    headers = {"Idempotency-Key": "meeting-once"}
    first = await api.client.post(MEETINGS, json={"meeting_url": URL}, headers=headers)
    again = await api.client.post(MEETINGS, json={"meeting_url": URL}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["duplicate"] is True
    assert again.json()["meeting"]["id"] == first.json()["meeting"]["id"]


async def test_a_retried_meeting_with_its_bot_uuid_finds_its_job(api: Api) -> None:
    body = {"meeting_url": URL, "bot_uuid": "retry-1"}
    first = await api.client.post(MEETINGS, json=body, headers={"Idempotency-Key": "k-1"})
    again = await api.client.post(MEETINGS, json=body, headers={"Idempotency-Key": "k-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["duplicate"] is True and again.json()["meeting"]["id"] == "retry-1"
    other = await api.client.post(MEETINGS, json=body, headers={"Idempotency-Key": "k-2"})
    assert_error(other, 409)


async def test_container_id_is_the_run_once_there_is_one(api: Api) -> None:
    waiting = await api.submit(joinAt=later(hours=1))
    assert waiting["containerId"] is None
    started = await api.job((await api.submit())["id"])
    run = (await api.stored(started["id"])).execution
    assert run is not None
    assert started["containerId"] == run.id
    listed = (await api.client.get(JOBS)).json()["jobs"]
    assert {job["id"]: job["containerId"] for job in listed} == {
        waiting["id"]: None,
        started["id"]: run.id,
    }


@pytest.mark.parametrize("mode", ["speaker_view", "gallery_view", "audio_only"])
async def test_the_bots_recording_modes_are_taken(api: Api, mode: str) -> None:
    assert (await api.submit(recordingMode=mode))["recordingMode"] == mode


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"recordingMode": "SpeakerView"}, "recordingMode"),
        ({"recordingMode": "video"}, "recordingMode"),
        ({"email": "bot"}, "email"),
        ({"email": "bot@localhost"}, "email"),
        ({"email": "bot @example.com"}, "email"),
        ({"email": "b" * 65 + "@example.com"}, "email"),
        ({"meetingUrl": "https://meet.google.com/a b"}, "meetingUrl"),
        ({"meetingUrl": "https://user@meet.google.com/x"}, "meetingUrl"),
        ({"priority": 5.5}, "priority"),
        ({"priority": "5"}, "priority"),
        ({"botName": "   "}, "botName"),
    ],
)
async def test_jobs_name_the_bad_field(api: Api, spec: dict[str, Any], field: str) -> None:
    response = await api.client.post(JOBS, json={"meetingUrl": URL, **spec})
    assert assert_error(response, 400, "validation_error").startswith(f"{field}: ")


async def test_an_integral_number_is_an_integer(api: Api) -> None:
    assert (await api.submit(priority=7.0))["priority"] == 7


async def test_stats_keep_the_seed_fields_and_the_originals_nesting(api: Api) -> None:
    await api.submit(joinAt=later(hours=1))
    body = (await api.client.get("/api/scheduler/stats")).json()
    assert body["success"] is True
    assert body["queueSize"] == body["stats"]["queueSize"] == 1
    assert {key: body[key] for key in body["stats"]} == body["stats"]


@pytest.mark.parametrize(
    ("query", "needle"),
    [("status=", "status"), ("limit=1&limit=2", "limit"), ("limit=", "limit")],
)
async def test_list_parameters_are_given_once_and_not_empty(
    api: Api, query: str, needle: str
) -> None:
    response = await api.client.get(f"{JOBS}?{query}")
    assert assert_error(response, 400).startswith(f"{needle}: ")


def routes_and_methods() -> list[tuple[str, set[str], set[str]]]:
    """(a path of each route, its route's methods, every method some route serves there): the
    path `/jobs/batch` is also a job id to `/jobs/{jobId}`."""
    table = Routes(Settings(), None).table()  # type: ignore[arg-type]
    cases = []
    for route in table:
        path = route.path.replace("{jobId}", "some-job").replace("{name}", "swagger-ui.css")
        served = {m for other in table if other.path_regex.match(path) for m in other.methods or ()}
        cases.append((path, set(route.methods or ()), served))
    return cases


@pytest.mark.parametrize(("path", "methods", "served"), routes_and_methods())
async def test_another_method_is_405_with_allow(
    api: Api, path: str, methods: set[str], served: set[str]
) -> None:
    for method in {"GET", "POST", "PUT", "PATCH", "DELETE"} - served:
        response = await api.client.request(method, path)
        assert_error(response, 405, "method_not_allowed")
        allowed = {value.strip() for value in response.headers["allow"].split(",")}
        assert allowed == methods, (method, path)


def test_without_the_swagger_package_the_page_is_the_plain_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(docs, "_bundle", lambda: None)  # as on the Worker: not installed
    docs.asset.cache_clear()
    docs.docs_page.cache_clear()
    try:
        page = docs.docs_page()
        assert "<script" not in page and "SwaggerUIBundle" not in page
        assert "<b>POST</b> <code>/api/scheduler/jobs</code>" in page
        assert docs.asset("swagger-ui.css") is None
    finally:
        docs.asset.cache_clear()
        docs.docs_page.cache_clear()
