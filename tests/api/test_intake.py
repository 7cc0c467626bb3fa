"""What a submit accepts: nothing whose bot can never start, no coercion a client did not mean,
and unknown or misnamed fields said out loud (core/intake.py, core/limits.py)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from core.limits import MAX_BOT_CONFIG_BYTES
from tests.api.conftest import JOBS, URL, Api, assert_error, later

MEETINGS = "/api/scheduler/meetings"


async def nothing_stored(api: Api) -> bool:
    return sum((await api.store.counts()).values()) == 0


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"botName": "Recording\x00Bot"}, "botName"),
        ({"metadata": {"team": "sales\x00"}}, "metadata"),
        ({"metadata": {"te\x00am": "sales"}}, "metadata"),
        ({"config": {"enter_message": "hi\x00"}}, "config"),
        ({"config": {"nested": [{"deep": "x\x00"}]}}, "config"),
        ({"dedupKey": "k\x00"}, "dedupKey"),
    ],
)
async def test_a_nul_character_is_refused_where_it_would_reach_the_bot(
    api: Api, spec: dict[str, Any], field: str
) -> None:
    response = await api.client.post(JOBS, json={"meetingUrl": URL, **spec})
    message = assert_error(response, 400, "validation_error")
    assert field in message and "NUL" in message
    assert await nothing_stored(api)


@pytest.mark.parametrize("url", [URL + "\x00x", URL + "\nx", URL + "\x7f"])
async def test_control_characters_in_the_meeting_url_are_refused(api: Api, url: str) -> None:
    response = await api.client.post(JOBS, json={"meetingUrl": url})
    assert assert_error(response, 400, "validation_error").startswith("meetingUrl: ")
    assert await nothing_stored(api)


async def test_a_nul_in_the_meetings_config_is_refused(api: Api) -> None:
    response = await api.client.post(MEETINGS, json={"meeting_url": URL, "bot_name": "a\x00b"})
    assert "NUL" in assert_error(response, 400, "validation_error")
    assert await nothing_stored(api)


async def test_a_config_too_big_for_the_environment_is_refused(api: Api) -> None:
    config = {"padding": "x" * 140_000}
    response = await api.client.post(JOBS, json={"meetingUrl": URL, "config": config})
    message = assert_error(response, 400, "validation_error")
    assert re.match(r"config: the bot config is 140\d{3} bytes;", message)
    assert f"at most {MAX_BOT_CONFIG_BYTES} fit in the bot's environment" in message
    assert await nothing_stored(api)


async def test_the_size_counts_the_config_as_the_bot_gets_it(api: Api) -> None:
    # non-ASCII text is escaped in BOT_CONFIG: 6 bytes a character
    under = {"padding": "é" * 19_000}
    assert (await api.client.post(JOBS, json={"meetingUrl": URL, "config": under})).is_success
    over = {"padding": "é" * 21_000}
    response = await api.client.post(JOBS, json={"meetingUrl": URL, "config": over})
    assert "the bot config is 126" in assert_error(response, 400)


async def test_a_config_just_under_the_limit_is_fine(api: Api) -> None:
    config = {"padding": "x" * (MAX_BOT_CONFIG_BYTES - 500)}
    response = await api.client.post(JOBS, json={"meetingUrl": URL, "config": config})
    assert response.status_code == 201, response.text[:300]


@pytest.mark.parametrize(
    ("spec", "field", "needle"),
    [
        ({"maxRuntimeSeconds": True}, "maxRuntimeSeconds", ""),
        ({"priority": False}, "priority", ""),
        ({"deadline": 0}, "deadline", "ISO 8601"),
        ({"deadline": 1893456000}, "deadline", "ISO 8601"),
        ({"deadline": "1893456000"}, "deadline", "ISO 8601"),
        ({"joinAt": 1893456000.5}, "joinAt", "ISO 8601"),
        ({"joinAt": "2030"}, "joinAt", "ISO 8601"),
        ({"deadline": "2020-01-01T00:00:00Z"}, "deadline", "already past"),
        ({"cpu": "100000"}, "cpu", "at most 1024 CPUs"),
        ({"memory": "1"}, "memory", "6Mi"),
        ({"memory": "999Ti"}, "memory", "64Ti"),
    ],
)
async def test_values_a_client_cannot_have_meant_are_400(
    api: Api, spec: dict[str, Any], field: str, needle: str
) -> None:
    response = await api.client.post(JOBS, json={"meetingUrl": URL, **spec})
    message = assert_error(response, 400, "validation_error")
    assert message.startswith(field) and needle in message
    assert response.json()["fields"] == [field]
    assert await nothing_stored(api)


async def test_a_deadline_in_the_future_is_fine(api: Api) -> None:
    job = await api.submit(deadline=later(minutes=5))
    assert job["deadline"]


async def test_unknown_fields_are_warned_about_not_fatal(api: Api) -> None:
    response = await api.client.post(
        JOBS, json={"meetingUrl": URL, "colour": "blue", "joinAtt": later(hours=1)}
    )
    assert response.status_code == 201, response.text
    assert response.json()["warnings"] == [
        "colour: unknown field, ignored",
        "joinAtt: unknown field, ignored",
    ]


async def test_a_clean_submit_has_no_warnings(api: Api) -> None:
    response = await api.client.post(JOBS, json={"meetingUrl": URL})
    assert "warnings" not in response.json()


async def test_batch_items_carry_their_warnings(api: Api) -> None:
    items = [{"meetingUrl": URL, "extra": 1}, {"meetingUrl": URL}]
    response = await api.client.post(f"{JOBS}/batch", json={"jobs": items})
    jobs = response.json()["jobs"]
    assert jobs[0]["warnings"] == ["extra: unknown field, ignored"]
    assert "warnings" not in jobs[1]


@pytest.mark.parametrize("name", ["meeting_url", "meetingURL", "MeetingUrl", "meeting-url"])
async def test_a_misnamed_meeting_url_names_the_field_and_the_route(api: Api, name: str) -> None:
    response = await api.client.post(JOBS, json={name: URL})
    message = assert_error(response, 400, "validation_error")
    assert "meetingUrl: Field required" in message
    assert f"the body has {name}: this route takes meetingUrl" in message
    assert MEETINGS in message


@pytest.mark.parametrize(
    ("name", "meant"),
    [("bot_name", "botName"), ("join_at", "joinAt"), ("max_runtime_seconds", "maxRuntimeSeconds")],
)
async def test_a_misnamed_optional_field_is_400_not_ignored(
    api: Api, name: str, meant: str
) -> None:
    response = await api.client.post(JOBS, json={"meetingUrl": URL, name: "x"})
    message = assert_error(response, 400, "validation_error")
    assert f"{name}: not a field of this route; did you mean {meant}?" in message
    assert response.json()["fields"] == [name]
    assert await nothing_stored(api)


async def test_a_near_miss_beside_the_right_field_is_only_a_warning(api: Api) -> None:
    response = await api.client.post(JOBS, json={"meetingUrl": URL, "meeting_url": URL})
    assert response.status_code == 201
    assert response.json()["warnings"] == ["meeting_url: unknown field, ignored"]


async def test_meetings_with_a_camel_case_url_names_the_snake_case_field(api: Api) -> None:
    response = await api.client.post(MEETINGS, json={"meetingUrl": URL})
    message = assert_error(response, 400, "validation_error")
    assert "meeting_url" in message
    assert "the body has meetingUrl: this route takes meeting_url" in message
