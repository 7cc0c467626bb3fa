"""Bad requests get the JSON error shape with the right 4xx; repeats are idempotent."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from core.models import JobState
from tests.api.conftest import JOBS, URL, Api, MakeApi, assert_error, later

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
        ("PATCH", f"{JOBS}/abc"),
        ("POST", f"{JOBS}/abc"),
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
