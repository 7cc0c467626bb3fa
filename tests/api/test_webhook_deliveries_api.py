"""The delivery log of an endpoint (paged, each tenant's own: also for wh_jobs, the one id every
tenant's job-URL secret has), and the bot's status callback with its own token."""

from __future__ import annotations

import socket
from datetime import datetime
from typing import Any

import pytest

from core.models import Job, to_ms
from core.webhooks.bot_status import CALLBACK_PATH
from tests.api.conftest import API_KEYS, JOBS, Api, MakeApi, assert_error, later
from tests.api.test_webhooks_api import WEBHOOKS, A, B, check

PUBLIC_URL = "http://127.0.0.1:8080"


def closed_port() -> int:
    """A loopback port nothing listens on: every delivery there fails at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
async def local(make_api: MakeApi) -> Api:
    return await make_api(
        {"SCHEDULER_API_KEYS": API_KEYS, "SCHEDULER_WEBHOOK_ALLOW_PRIVATE": "true"}
    )


async def deliver(api: Api) -> None:
    """One round of fan-out and attempts, as the drain timer makes."""
    try:
        await api.scheduler.deliverer.run_once()
    finally:
        await api.scheduler.deliverer.close()


async def pages(api: Api, path: str, headers: dict[str, str], limit: int) -> list[dict[str, Any]]:
    """Every attempt of a listing, page by page, each page checked against the schema."""
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(20):
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await api.client.get(path, params=params, headers=headers)
        assert response.status_code == 200, response.text
        body = check(response, "DeliveryList")
        assert len(body["deliveries"]) <= limit
        seen += body["deliveries"]
        cursor = body["nextCursor"]
        if cursor is None:
            return seen
    raise AssertionError("the listing did not end")


async def test_an_endpoints_attempts_newest_first_page_by_page(local: Api) -> None:
    url = f"http://127.0.0.1:{closed_port()}/hook"
    made = await local.client.post(WEBHOOKS, json={"url": url}, headers=A)
    one = f"{WEBHOOKS}/{made.json()['webhook']['id']}"
    assert (await local.client.get(f"{one}/deliveries", headers=A)).json() == {
        "success": True,
        "deliveries": [],
        "nextCursor": None,
    }
    jobs = [await local.submit(headers=A, joinAt=later(hours=1)) for _ in range(3)]
    await local.submit(headers=B, joinAt=later(hours=1))  # not A's: not A's endpoint's
    await deliver(local)

    attempts = await pages(local, f"{one}/deliveries", A, limit=2)
    assert sorted(a["jobId"] for a in attempts) == sorted(job["id"] for job in jobs)
    for attempt in attempts:
        assert (attempt["type"], attempt["attempt"], attempt["status"]) == ("job.queued", 1, None)
        assert attempt["error"]
        assert attempt["eventId"] == f"evt_{attempt['jobId']}_000001"
        assert attempt["deliveryId"].startswith(one.rsplit("/", 1)[1] + ":")
    moments = [to_ms(datetime.fromisoformat(a["at"])) for a in attempts]  # the key's unit
    assert moments == sorted(moments, reverse=True)
    assert len({a["deliveryId"] for a in attempts}) == 3
    # the endpoint's health says so
    assert (await local.client.get(one, headers=A)).json()["webhook"]["failingSince"]


async def test_wh_jobs_lists_each_tenants_own_attempts(local: Api) -> None:
    url = f"http://127.0.0.1:{closed_port()}/hook"
    ids: dict[str, set[str]] = {}
    for name, headers in (("A", A), ("B", B)):
        assert (await local.client.post(f"{WEBHOOKS}/job-secret", headers=headers)).is_success
        submitted = [
            await local.submit(headers=headers, joinAt=later(hours=1), webhookUrl=url)
            for _ in range(3)
        ]
        ids[name] = {job["id"] for job in submitted}
    await deliver(local)
    for name, headers in (("A", A), ("B", B)):
        for limit in (1, 2, 50):
            attempts = await pages(local, f"{WEBHOOKS}/wh_jobs/deliveries", headers, limit)
            assert {a["jobId"] for a in attempts} == ids[name], (name, limit)
            assert len(attempts) == 3


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({"cursor": "nope"}, "cursor"),
        ({"cursor": "wh_other:998106508060000:evt_x_000001:01"}, "cursor"),
        ({"cursor": "wh_jobs:\u00e4"}, "cursor"),
        ({"limit": "0"}, "limit"),
        ({"limit": "201"}, "limit"),
        ({"limit": "ten"}, "limit"),
    ],
)
async def test_a_bad_listing_query_is_a_400(local: Api, query: dict[str, str], says: str) -> None:
    await local.client.post(f"{WEBHOOKS}/job-secret", headers=A)
    response = await local.client.get(f"{WEBHOOKS}/wh_jobs/deliveries", params=query, headers=A)
    assert says in assert_error(response, 400, "validation_error")


async def test_replay_for_wh_jobs_needs_a_job_with_a_webhook_url(local: Api) -> None:
    await local.client.post(f"{WEBHOOKS}/job-secret", headers=A)
    job = await local.submit(headers=A, joinAt=later(hours=1))
    path = f"{WEBHOOKS}/wh_jobs/events/evt_{job['id']}_000001/replay"
    assert "webhookUrl" in assert_error(await local.client.post(path, headers=A), 400)


# -- the bot's status callback ---------------------------------------------------------------


@pytest.fixture
async def bots(make_api: MakeApi, monkeypatch: pytest.MonkeyPatch) -> tuple[Api, dict[str, Any]]:
    """An app that knows its own address (so each bot is told to report to it), and the config
    each started bot was given, by job id."""
    api = await make_api({"SCHEDULER_API_KEYS": API_KEYS, "SCHEDULER_PUBLIC_URL": PUBLIC_URL})
    configs: dict[str, Any] = {}
    start = api.backend.start

    async def remembering(job: Job) -> Any:
        configs[job.id] = job.config
        return await start(job)

    monkeypatch.setattr(api.backend, "start", remembering)
    return api, configs


def report(bot_id: str, code: str = "in_call_recording") -> dict[str, Any]:
    status = {"code": code, "created_at": 1893491940}
    return {"event": "bot.status_change", "data": {"bot_id": bot_id, "status": status}}


async def test_a_bot_reports_its_status_with_its_token(bots: tuple[Api, dict[str, Any]]) -> None:
    api, configs = bots
    job = await api.submit(headers=A)
    config = configs[job["id"]]
    assert config["bot_id"] == job["id"]
    assert config["bots_webhook_url"] == PUBLIC_URL + CALLBACK_PATH
    token = {"x-spoke-api-key": config["bots_api_key"]}

    response = await api.client.post(CALLBACK_PATH, json=report(job["id"]), headers=token)
    assert response.status_code == 200, response.text
    body = check(response, "BotStatusResponse")
    assert (body["jobId"], body["botStatus"]) == (job["id"], "in_call_recording")
    assert (await api.job(job["id"], headers=A))["botStatus"] == "in_call_recording"
    events = (await api.client.get(f"{JOBS}/{job['id']}/events", headers=A)).json()["events"]
    assert events[-1]["type"] == "bot.in_call_recording"
    assert events[-1]["data"]["botStatus"] == "in_call_recording"
    # the token is not an API key, and an API key is not the token
    assert_error(await api.client.get(JOBS, headers=token), 401)
    response = await api.client.post(CALLBACK_PATH, json=report(job["id"]), headers=A)
    assert_error(response, 401, "unauthorized")

    assert (await api.client.delete(f"{JOBS}/{job['id']}", headers=A)).status_code == 200
    late = await api.client.post(CALLBACK_PATH, json=report(job["id"]), headers=token)
    assert_error(late, 409, "job_finished")


async def test_a_report_without_the_right_token_is_a_401(bots: tuple[Api, dict[str, Any]]) -> None:
    api, configs = bots
    job = await api.submit(headers=A)
    queued = await api.submit(headers=A, joinAt=later(hours=1))  # not started: no token yet
    other = await api.submit(headers=B)
    post = api.client.post

    missing = await post(CALLBACK_PATH, json=report(job["id"]))
    assert "x-spoke-api-key" in assert_error(missing, 401, "unauthorized")
    empty = await post(CALLBACK_PATH, json=report(job["id"]), headers={"x-spoke-api-key": ""})
    assert_error(empty, 401)
    assert_error(await post(CALLBACK_PATH, content=b"{", headers={}), 401)  # before the body

    wrong = {"x-spoke-api-key": "not-the-token"}
    messages = {
        assert_error(await post(CALLBACK_PATH, json=report(bot_id), headers=headers), 401)
        for bot_id, headers in [
            (job["id"], wrong),
            (queued["id"], wrong),
            ("no-such-job", wrong),
            ("no-such-job", {"x-spoke-api-key": configs[job["id"]]["bots_api_key"]}),
            (job["id"], {"x-spoke-api-key": configs[other["id"]]["bots_api_key"]}),
        ]
    }
    assert len(messages) == 1  # the same answer whether the job exists or not
    assert (await api.job(job["id"], headers=A))["botStatus"] is None


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"event": "bot.status_change"},
        {"event": "bot.other", "data": report("x")["data"]},
        report("x", code="In Call"),
        report("x", code=""),
        {"event": "bot.status_change", "data": {"bot_id": "x", "status": "in_call_recording"}},
        {"event": "bot.status_change", "data": {"bot_id": "", "status": {"code": "ok"}}},
        [report("x")],
        "text",
    ],
)
async def test_a_malformed_report_is_a_400(bots: tuple[Api, dict[str, Any]], body: Any) -> None:
    api, _ = bots
    headers = {"x-spoke-api-key": "some-token"}
    response = await api.client.post(CALLBACK_PATH, json=body, headers=headers)
    assert_error(response, 400, "validation_error")
    not_json = await api.client.post(CALLBACK_PATH, content=b"{nope", headers=headers)
    assert_error(not_json, 400, "bad_request")
