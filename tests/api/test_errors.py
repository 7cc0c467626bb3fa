"""Bad requests get the JSON error shape with the right 4xx; repeats are idempotent."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.api import create_app
from core.config import Settings
from core.errors import BadRequest
from core.models import JobState
from core.runtime import Runtime
from core.scheduler import Scheduler
from core.stores.cursor import MS_MAX, decode_cursor, encode_cursor
from core.stores.sqlite import SqliteStore
from tests.api.conftest import JOBS, URL, Api, MakeApi, assert_error, later
from tests.fakes import FakeBackend

SMALL_BODY = {"SCHEDULER_MAX_BODY_BYTES": "2048"}


@pytest.fixture
async def small(make_api: MakeApi) -> Api:
    return await make_api(SMALL_BODY)


@pytest.mark.parametrize(
    ("body", "code", "needle"),
    [
        (b'{"meetingUrl": ', "bad_request", "JSON"),
        (b"{'meetingUrl': 'https://x.example'}", "bad_request", "JSON"),
        (b"\xff\xfe{}", "bad_request", "JSON"),
        (b"", "bad_request", "empty"),
        (b"  \n ", "bad_request", "empty"),
        (b'[{"meetingUrl": "https://meet.google.com/x"}]', "validation_error", "object"),
        (b'"https://meet.google.com/x"', "validation_error", "object"),
        (b"null", "validation_error", "object"),
    ],
    ids=["truncated", "single-quotes", "not-utf8", "empty", "blank", "array", "string", "null"],
)
@pytest.mark.parametrize("path", [JOBS, "/api/scheduler/meetings"])
async def test_unreadable_bodies_are_400(
    api: Api, path: str, body: bytes, code: str, needle: str
) -> None:
    response = await api.client.post(
        path, content=body, headers={"content-type": "application/json"}
    )
    assert needle.lower() in assert_error(response, 400, code).lower()


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"botName": "no url"}, "meetingUrl"),
        ({"meetingUrl": ""}, "meetingUrl"),
        ({"meetingUrl": "ftp://x"}, "meetingUrl"),
        ({"meetingUrl": "meet.google.com/abc"}, "meetingUrl"),
        ({"meetingUrl": 42}, "meetingUrl"),
        ({"meetingUrl": URL, "priority": 1000}, "priority"),
        ({"meetingUrl": URL, "priority": -1}, "priority"),
        ({"meetingUrl": URL, "priority": "high"}, "priority"),
        ({"meetingUrl": URL, "cpu": "lots"}, "cpu"),
        ({"meetingUrl": URL, "memory": "2 gigs"}, "memory"),
        ({"meetingUrl": URL, "joinAt": "tomorrow"}, "joinAt"),
        ({"meetingUrl": URL, "maxRuntimeSeconds": 0}, "maxRuntimeSeconds"),
        ({"meetingUrl": URL, "config": [1, 2]}, "config"),
        ({"meetingUrl": URL, "metadata": {"a": 1}}, "metadata"),
        (
            {
                "meetingUrl": URL,
                "joinAt": "2030-01-01T10:00:00Z",
                "deadline": "2030-01-01T09:00:00Z",
            },
            "deadline",
        ),
    ],
)
async def test_invalid_specs_name_the_field(api: Api, spec: dict[str, object], field: str) -> None:
    response = await api.client.post(JOBS, json=spec)
    assert field in assert_error(response, 400, "validation_error")
    assert field in response.json()["fields"][0] or field == "deadline"
    assert sum((await api.store.counts()).values()) == 0


async def test_deadline_equal_to_join_at_is_rejected(api: Api) -> None:
    moment = "2030-01-01T10:00:00+00:00"
    response = await api.client.post(
        JOBS, json={"meetingUrl": URL, "joinAt": moment, "deadline": moment}
    )
    assert "deadline" in assert_error(response, 400, "validation_error")


async def test_body_over_the_limit_with_content_length_is_413(small: Api) -> None:
    body = b'{"meetingUrl": "' + URL.encode() + b'", "botName": "' + b"x" * 3000 + b'"}'
    response = await small.client.post(JOBS, content=body)
    assert response.request.headers["content-length"] == str(len(body))
    assert_error(response, 413, "payload_too_large")
    assert sum((await small.store.counts()).values()) == 0


async def test_body_over_the_limit_streamed_without_length_is_413(small: Api) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"meetingUrl": "' + URL.encode() + b'", "config": {"pad": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}}'

    response = await small.client.post(
        JOBS, content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_error(response, 413, "payload_too_large")
    assert sum((await small.store.counts()).values()) == 0


async def test_a_lying_small_content_length_does_not_bypass_the_limit(small: Api) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"meetingUrl": "' + URL.encode() + b'", "botName": "'
        yield b"z" * 4000
        yield b'"}'

    response = await small.client.post(JOBS, content=chunks(), headers={"content-length": "10"})
    assert_error(response, 413, "payload_too_large")


async def test_body_under_the_limit_is_fine(small: Api) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"meetingUrl": "'
        yield URL.encode()
        yield b'", "botName": "' + b"n" * 150 + b'"}'

    response = await small.client.post(JOBS, content=chunks())
    assert response.status_code == 201


@pytest.mark.parametrize("path", [f"{JOBS}/batch", "/api/scheduler/meetings"])
async def test_other_posts_have_the_limit_too(small: Api, path: str) -> None:
    response = await small.client.post(path, content=b'{"jobs": [' + b" " * 3000 + b"]}")
    assert_error(response, 413, "payload_too_large")


async def test_unknown_job_is_404(api: Api) -> None:
    for method, suffix in [("GET", ""), ("DELETE", ""), ("GET", "/logs")]:
        response = await api.client.request(method, f"{JOBS}/no-such-job{suffix}")
        assert "no-such-job" in assert_error(response, 404, "not_found")


@pytest.mark.parametrize("path", ["/nope", "/api/scheduler", "/api/scheduler/jobs/x/y/z"])
async def test_unknown_route_is_404_json(api: Api, path: str) -> None:
    assert_error(await api.client.get(path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", JOBS),
        ("PUT", f"{JOBS}/abc"),
        ("POST", f"{JOBS}/abc"),
        ("GET", f"{JOBS}/by-key/k1"),
        ("DELETE", "/api/scheduler/stats"),
        ("POST", f"{JOBS}/abc/logs"),
        ("GET", "/api/scheduler/meetings"),
    ],
)
async def test_wrong_method_is_405_json(api: Api, method: str, path: str) -> None:
    response = await api.client.request(method, path)
    assert_error(response, 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"status": "done"}, "status"),
        ({"status": "QUEUED"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "!!!not-a-cursor"}, "cursor"),
    ],
)
async def test_bad_list_queries_are_400(api: Api, query: dict[str, str], field: str) -> None:
    response = await api.client.get(JOBS, params=query)
    assert field in assert_error(response, 400)


@pytest.mark.parametrize("tail", ["0", "-3", "x", "100000"])
async def test_bad_logs_tail_is_400(api: Api, tail: str) -> None:
    job = await api.submit()
    response = await api.client.get(f"{JOBS}/{job['id']}/logs", params={"tail": tail})
    assert "tail" in assert_error(response, 400, "validation_error")


@pytest.mark.parametrize(
    "body",
    [{}, {"jobs": []}, {"jobs": {"meetingUrl": URL}}, {"items": [{"meetingUrl": URL}]}],
    ids=["no-jobs", "empty", "object", "wrong-key"],
)
async def test_batch_without_a_job_list_is_400(api: Api, body: dict[str, object]) -> None:
    response = await api.client.post(f"{JOBS}/batch", json=body)
    assert "jobs" in assert_error(response, 400, "validation_error")


async def test_batch_of_only_bad_jobs_is_400(api: Api) -> None:
    items = [{"meetingUrl": "ftp://x"}, {"priority": 5}]
    response = await api.client.post(f"{JOBS}/batch", json={"jobs": items})
    assert_error(response, 400, "validation_error")
    body = response.json()
    assert (body["submitted"], body["failed"]) == (0, 2)
    assert [error["index"] for error in body["errors"]] == [0, 1]
    assert all("meetingUrl" in error["message"] for error in body["errors"])
    assert sum((await api.store.counts()).values()) == 0


async def test_batch_over_the_max_size_is_400(make_api: MakeApi) -> None:
    api = await make_api({"SCHEDULER_MAX_BATCH_SIZE": "5"})
    items = [{"meetingUrl": f"{URL}-{n}"} for n in range(6)]
    response = await api.client.post(f"{JOBS}/batch", json={"jobs": items})
    assert "5" in assert_error(response, 400, "validation_error")
    assert sum((await api.store.counts()).values()) == 0
    ok = await api.client.post(f"{JOBS}/batch", json={"jobs": items[:5]})
    assert ok.status_code == 201


# -- idempotency ---------------------------------------------------------------------------


async def test_same_idempotency_key_returns_the_same_job(api: Api) -> None:
    headers = {"Idempotency-Key": "retry-7f3a"}
    spec = {"meetingUrl": URL, "joinAt": later(hours=1)}
    first = await api.client.post(JOBS, json=spec, headers=headers)
    second = await api.client.post(JOBS, json=spec, headers=headers)
    assert first.status_code == 201
    assert "duplicate" not in first.json()
    assert second.status_code == 200
    assert second.json()["success"] is True
    assert second.json()["duplicate"] is True
    assert second.json()["job"]["id"] == first.json()["job"]["id"]
    assert sum((await api.store.counts()).values()) == 1
    other = await api.client.post(JOBS, json=spec, headers={"Idempotency-Key": "retry-other"})
    assert other.status_code == 201
    assert other.json()["job"]["id"] != first.json()["job"]["id"]


async def test_idempotent_repeat_of_a_started_job_does_not_start_it_again(api: Api) -> None:
    headers = {"Idempotency-Key": "once"}
    first = (await api.client.post(JOBS, json={"meetingUrl": URL}, headers=headers)).json()
    second = await api.client.post(JOBS, json={"meetingUrl": URL}, headers=headers)
    assert second.status_code == 200
    assert second.json()["job"]["status"] == "running"
    assert api.backend.starts[first["job"]["id"]] == 1
    assert len(api.backend.starts) == 1


async def test_same_dedup_key_returns_the_same_job(api: Api) -> None:
    spec = {"meetingUrl": URL, "dedupKey": "meeting-42", "joinAt": later(hours=1)}
    first = await api.client.post(JOBS, json=spec)
    second = await api.client.post(JOBS, json={**spec, "botName": "Another"})
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["duplicate"] is True
    assert second.json()["job"]["id"] == first.json()["job"]["id"]
    assert second.json()["job"]["botName"] == "Recording Bot"
    assert (await api.store.counts())[JobState.QUEUED] == 1


async def test_dedup_key_in_a_batch(api: Api) -> None:
    items = [{"meetingUrl": URL, "dedupKey": "same"}, {"meetingUrl": URL, "dedupKey": "same"}]
    response = await api.client.post(f"{JOBS}/batch", json={"jobs": items})
    assert response.status_code == 201
    jobs = response.json()["jobs"]
    assert jobs[0]["id"] == jobs[1]["id"]
    assert [job["duplicate"] for job in jobs] == [False, True]
    assert sum((await api.store.counts()).values()) == 1


@pytest.mark.parametrize("key", ["", "k" * 201])
async def test_bad_idempotency_key_is_400(api: Api, key: str) -> None:
    response = await api.client.post(
        JOBS, json={"meetingUrl": URL}, headers={"Idempotency-Key": key}
    )
    assert "Idempotency-Key" in assert_error(response, 400, "validation_error")


# -- inputs that used to reach a 500 ----------------------------------------------------------


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:30Z", "1999-12-31T23:59:59Z", "9999-12-31"])
@pytest.mark.parametrize("field", ["joinAt", "deadline"])
async def test_times_out_of_range_are_400(api: Api, field: str, moment: str) -> None:
    response = await api.client.post(JOBS, json={"meetingUrl": URL, field: moment})
    assert "between the years 2000 and 9000" in assert_error(response, 400, "validation_error")
    assert response.json()["fields"] == [field]
    assert sum((await api.store.counts()).values()) == 0


@pytest.mark.parametrize(
    ("created_ms", "job_id"),
    [(10**22, "x"), (-(10**22), "x"), (2**63, "a" * 50), (10**100, "z")],
)
async def test_a_cursor_with_a_huge_time_is_a_page_not_a_500_on_sqlite(
    tmp_path: Path, created_ms: int, job_id: str
) -> None:
    settings = Settings.from_env({"SCHEDULER_DATA_DIR": str(tmp_path)})
    store = SqliteStore(tmp_path / "jobs.db")
    await store.open()
    try:
        scheduler = Scheduler(store, FakeBackend(), settings)
        app = create_app(settings, Runtime(settings, scheduler))
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await client.post(JOBS, json={"meetingUrl": URL, "joinAt": later(hours=1)})
            cursor = encode_cursor(created_ms, job_id)
            response = await client.get(JOBS, params={"cursor": cursor})
    finally:
        await store.close()
    assert response.status_code == 200, response.text
    assert response.json()["nextCursor"] is None
    assert len(response.json()["jobs"]) == (1 if created_ms > 0 else 0)


@pytest.mark.parametrize(
    "raw", [b"12:" + b"i" * 200, b"5:", b"5:a\x00b", b"9" * 800 + b":x"], ids=str
)
def test_cursors_are_bounded_before_any_store_sees_them(raw: bytes) -> None:
    cursor = base64.urlsafe_b64encode(raw).decode()
    with pytest.raises(BadRequest, match="cursor"):
        decode_cursor(cursor)


def test_a_cursor_time_is_clamped_to_what_every_store_indexes() -> None:
    assert decode_cursor(encode_cursor(10**30, "job")) == (MS_MAX, "job")
    assert decode_cursor(encode_cursor(-5, "job")) == (0, "job")
    assert decode_cursor(encode_cursor(1_700_000_000_000, "job")) == (1_700_000_000_000, "job")


@pytest.mark.parametrize("levels", [33, 63])
async def test_a_config_nested_too_deeply_is_400(api: Api, levels: int) -> None:
    body = f'{{"meetingUrl": "{URL}", "config": {{"a": {nested(levels - 1)}}}}}'
    response = await api.client.post(JOBS, content=body)
    assert "config: nested more than 32 levels" in assert_error(response, 400)
    assert sum((await api.store.counts()).values()) == 0


async def test_a_config_nested_32_levels_is_fine(api: Api) -> None:
    body = f'{{"meetingUrl": "{URL}", "config": {{"a": {nested(31)}}}}}'
    response = await api.client.post(JOBS, content=body)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("levels", [100, 500, 1500, 100_000])
@pytest.mark.parametrize("path", [JOBS, f"{JOBS}/batch", "/api/scheduler/meetings"])
async def test_bodies_nested_deeply_are_400(api: Api, path: str, levels: int) -> None:
    body = f'{{"meetingUrl": "{URL}", "config": {{"a": {nested(levels)}}}}}'
    response = await api.client.post(path, content=body)
    assert "nests more than 64 levels" in assert_error(response, 400, "bad_request")


@pytest.mark.parametrize(
    "bad",
    [
        {"joinAt": "0001-01-01T00:00:30Z"},
        {"config": {"a": json.loads(nested(40))}},
        {"botName": "nul\x00"},
        {"deadline": "2001-01-01T00:00:00Z"},
    ],
    ids=["join-at-overflow", "deep-config", "nul", "past-deadline"],
)
async def test_a_bad_batch_item_creates_nothing_twice_and_is_no_500(
    api: Api, bad: dict[str, Any]
) -> None:
    items = [
        {"meetingUrl": URL, "dedupKey": "first"},
        {"meetingUrl": URL, **bad},
        {"meetingUrl": URL + "-3", "dedupKey": "third"},
    ]
    body = json.dumps({"jobs": items}).encode()
    for attempt in range(2):  # a client that retries gets the same jobs, no duplicates
        response = await api.client.post(f"{JOBS}/batch", content=body)
        assert response.status_code == 207, response.text
        reply = response.json()
        assert [job["index"] for job in reply["jobs"]] == [0, 2]
        assert [job["duplicate"] for job in reply["jobs"]] == [attempt == 1] * 2
        assert [error["index"] for error in reply["errors"]] == [1]
        assert reply["errors"][0]["error"] in ("validation_error", "bad_request")
    assert sum((await api.store.counts()).values()) == 2


async def test_a_batch_too_deep_as_a_whole_creates_nothing(api: Api) -> None:
    items = [{"meetingUrl": URL}, {"meetingUrl": URL, "config": {"a": json.loads(nested(600))}}]
    response = await api.client.post(f"{JOBS}/batch", json={"jobs": items})
    assert "nests more than 64 levels" in assert_error(response, 400, "bad_request")
    assert sum((await api.store.counts()).values()) == 0
