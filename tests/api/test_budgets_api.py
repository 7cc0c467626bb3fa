"""The budgets API (core/budget_routes.py): who may read and change a tenant's bot-minute budget,
what a PUT accepts, the 402 of a submit over budget with its Retry-After, and what /stats says.

Real: the app with its routes, auth and error handling, the scheduler and its budgets and ledger
(core/budgets.py), the memory store. Doubles: the backend (tests/fakes.py: its bots run nowhere,
and nothing polls them). The answers are checked against the published OpenAPI schemas. The
same promises with real `botsched serve` processes: tests/stress/test_budgets_topology.py.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.api.conftest import API_KEYS, JOBS, KEY_A, KEY_B, URL, Api, MakeApi, assert_error
from tests.api.test_openapi import validator

ADMIN_KEY = "admin-key-budgets-0123"
A = {"X-API-Key": KEY_A}  # tenantA
B = {"X-API-Key": KEY_B}  # tenantB
ADMIN = {"X-API-Key": ADMIN_KEY}
BUDGETS = "/api/scheduler/budgets"
# tenantA: 3 minutes a day; tenantB: 10 a month; any other tenant: 100 a month (`*`)
CONFIGURED = {"tenantA": {"day": 3}, "tenantB": {"month": 10, "onExhausted": "finish"}}
ENV = {
    "SCHEDULER_API_KEYS": API_KEYS,
    "SCHEDULER_ADMIN_KEYS": ADMIN_KEY,
    "SCHEDULER_BUDGETS": json.dumps({**CONFIGURED, "*": {"month": 100}}),
    "SCHEDULER_EXPECTED_RUN_SECONDS": "60",
}


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    return await make_api(ENV)


def tomorrow_at_ten() -> datetime:
    day = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0)
    return day + timedelta(days=1)


async def submit(api: Api, headers: dict[str, str], **spec: Any) -> httpx.Response:
    """A job of a minute, tomorrow at 10:00 UTC: it never starts during a test."""
    body = {"meetingUrl": URL, "joinAt": tomorrow_at_ten().isoformat(), "maxRuntimeSeconds": 60}
    return await api.client.post(JOBS, json={**body, **spec}, headers=headers)


async def shaped(api: Api, response: httpx.Response, schema: str) -> dict[str, Any]:
    """The JSON body, valid under `schema` of the served OpenAPI document."""
    doc = (await api.client.get("/openapi.json")).json()
    body: dict[str, Any] = response.json()
    errors = [error.message for error in validator(doc, schema).iter_errors(body)]
    assert not errors, (schema, errors, body)
    return body


# -- who reads what ------------------------------------------------------------------------


async def test_an_admin_key_lists_every_budgeted_tenant_a_tenant_key_its_own(api: Api) -> None:
    stored = await api.client.put(f"{BUDGETS}/initech", json={"day": 5}, headers=ADMIN)
    assert stored.status_code == 200, stored.text
    listed = await shaped(api, await api.client.get(BUDGETS, headers=ADMIN), "BudgetList")
    # the settings' tenants (not `*`) and the stored one, by tenant
    assert [use["tenant"] for use in listed["budgets"]] == ["initech", "tenantA", "tenantB"]
    by_tenant = {use["tenant"]: use for use in listed["budgets"]}
    assert by_tenant["tenantA"]["budget"] == {"day": 3.0, "month": None, "onExhausted": "stop"}
    assert by_tenant["initech"]["day"]["limitMinutes"] == 5.0
    for headers, tenant in ((A, "tenantA"), (B, "tenantB")):
        own = await shaped(api, await api.client.get(BUDGETS, headers=headers), "BudgetList")
        assert [use["tenant"] for use in own["budgets"]] == [tenant]


async def test_a_tenant_key_reads_its_own_budget_only(api: Api) -> None:
    own = await shaped(api, await api.client.get(f"{BUDGETS}/tenantA", headers=A), "BudgetResponse")
    assert own["usage"]["day"]["limitMinutes"] == 3.0
    other = await api.client.get(f"{BUDGETS}/tenantB", headers=A)
    assert "tenantB" in assert_error(other, 404, "not_found")
    await shaped(api, other, "Error")
    anyone = await api.client.get(f"{BUDGETS}/tenantB", headers=ADMIN)
    assert anyone.json()["usage"]["budget"]["onExhausted"] == "finish"
    unnamed = await api.client.get(f"{BUDGETS}/someone-else", headers=ADMIN)
    assert unnamed.json()["usage"]["budget"]["month"] == 100.0  # the settings' `*`


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize("path", [BUDGETS, f"{BUDGETS}/tenantA"])
async def test_every_budget_route_needs_a_key(api: Api, method: str, path: str) -> None:
    if path == BUDGETS and method != "GET":
        return
    body = {"day": 1} if method == "PUT" else None
    for headers in ({}, {"X-API-Key": "not-a-key-at-all"}):
        response = await api.client.request(method, path, json=body, headers=headers)
        assert_error(response, 401, "unauthorized")


async def test_the_tenant_star_is_not_a_path(api: Api) -> None:
    for method in ("GET", "PUT", "DELETE"):
        body = {"day": 1} if method == "PUT" else None
        response = await api.client.request(method, f"{BUDGETS}/*", json=body, headers=ADMIN)
        assert "SCHEDULER_BUDGETS" in assert_error(response, 400, "validation_error")
        assert response.json()["fields"] == ["tenant"]


# -- admin changes ---------------------------------------------------------------------------


async def test_only_an_admin_key_changes_a_budget(api: Api) -> None:
    for method, body in (("PUT", {"day": 100}), ("DELETE", None)):
        refused = await api.client.request(method, f"{BUDGETS}/tenantA", json=body, headers=A)
        assert "admin key" in assert_error(refused, 403, "forbidden")
        await shaped(api, refused, "Error")
    assert (await api.client.get(f"{BUDGETS}/tenantA", headers=A)).json()["usage"]["budget"][
        "day"
    ] == 3.0
    put = await api.client.put(f"{BUDGETS}/tenantA", json={"day": 1.5}, headers=ADMIN)
    assert (await shaped(api, put, "BudgetResponse"))["usage"]["day"]["limitMinutes"] == 1.5
    assert (await submit(api, A)).status_code == 201
    assert (await submit(api, A)).status_code == 402  # the stored 1.5 minutes, not the 3
    deleted = await api.client.delete(f"{BUDGETS}/tenantA", headers=ADMIN)
    usage = (await shaped(api, deleted, "BudgetResponse"))["usage"]
    assert usage["budget"] == {"day": 3.0, "month": None, "onExhausted": "stop"}  # settings'
    # the charge of tomorrow's first job stays: two more minutes fit the settings' 3, not three
    assert [(await submit(api, A)).status_code for _ in range(3)] == [201, 201, 402]


async def test_an_admin_key_still_changes_no_job(api: Api) -> None:
    """Budgets are the one thing an admin key changes."""
    assert_error(await submit(api, ADMIN), 401, "unauthorized")


async def test_without_keys_every_caller_is_an_admin(make_api: MakeApi) -> None:
    api = await make_api({"SCHEDULER_BUDGETS": json.dumps(CONFIGURED)})
    put = await api.client.put(f"{BUDGETS}/default", json={"month": 2, "onExhausted": "finish"})
    assert put.status_code == 200, put.text
    listed = (await api.client.get(BUDGETS)).json()["budgets"]
    assert [use["tenant"] for use in listed] == ["default", "tenantA", "tenantB"]
    stats = (await api.client.get("/api/scheduler/stats")).json()
    assert stats["budget"]["budget"]["month"] == 2.0  # everyone is the tenant `default`


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"day": -1}', "day"),
        ('{"day": "10"}', "day"),
        ('{"day": true}', "day"),
        ('{"month": 1e400}', "month"),
        ('{"month": NaN}', "month"),
        ('{"onExhausted": "never"}', "onExhausted"),
        ('{"day": 10, "colour": "red"}', "colour"),
        ("[1]", None),
        ('"day"', None),
    ],
)
async def test_a_bad_budget_is_a_400_naming_the_field(
    api: Api, body: str, field: str | None
) -> None:
    response = await api.client.put(
        f"{BUDGETS}/tenantA",
        content=body,
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    message = assert_error(response, 400, "validation_error")
    if field is not None:
        assert message.startswith(f"{field}:") and response.json()["fields"] == [field]
    assert (await api.client.get(f"{BUDGETS}/tenantA", headers=A)).json()["usage"]["budget"][
        "day"
    ] == 3.0


# -- the 402 -----------------------------------------------------------------------------


async def test_a_submit_over_budget_is_a_402_with_retry_after(api: Api) -> None:
    admitted = [await submit(api, A) for _ in range(3)]  # 3 x 1 minute: the day's 3
    assert [response.status_code for response in admitted] == [201, 201, 201]
    refused = await submit(api, A)
    assert "daily bot-minute budget has 0 of 3 minutes left" in assert_error(
        refused, 402, "budget_exceeded"
    )
    body = await shaped(api, refused, "Error")
    resets = tomorrow_at_ten().replace(hour=0) + timedelta(days=1)  # the end of joinAt's day
    assert body["period"] == "day"
    assert (body["limitMinutes"], body["remainingMinutes"], body["requiredMinutes"]) == (3, 0, 1)
    assert body["resetsAt"] == resets.isoformat().replace("+00:00", "Z")
    wait = (resets - datetime.now(UTC)).total_seconds()
    assert refused.headers["retry-after"] == str(body["retryAfter"])
    assert abs(body["retryAfter"] - math.ceil(wait)) <= 2
    # a job that fits what is left is still refused: nothing is left; another tenant is not
    assert (await submit(api, A, maxRuntimeSeconds=1)).status_code == 402
    assert (await submit(api, B)).status_code == 201


async def test_a_month_budget_refuses_with_the_month(api: Api) -> None:
    refused = await submit(api, B, maxRuntimeSeconds=11 * 60)  # 11 minutes of tenantB's 10
    assert refused.status_code == 402, refused.text
    body = await shaped(api, refused, "Error")
    assert (body["period"], body["limitMinutes"], body["requiredMinutes"]) == ("month", 10, 11)
    first_of_next = (tomorrow_at_ten().replace(day=1, hour=0) + timedelta(days=32)).replace(day=1)
    assert body["resetsAt"] == first_of_next.isoformat().replace("+00:00", "Z")


async def test_a_batch_refuses_the_jobs_over_budget_in_its_errors(api: Api) -> None:
    job = {"meetingUrl": URL, "joinAt": tomorrow_at_ten().isoformat(), "maxRuntimeSeconds": 60}
    response = await api.client.post(f"{JOBS}/batch", json={"jobs": [job] * 4}, headers=A)
    body = await shaped(api, response, "BatchResponse")
    assert response.status_code == 207 and body["submitted"] == 3
    assert [(e["index"], e["error"]) for e in body["errors"]] == [(3, "budget_exceeded")]


async def test_a_cancel_gives_the_minutes_back(api: Api) -> None:
    jobs = [(await submit(api, A)).json()["job"]["id"] for _ in range(3)]
    assert (await submit(api, A)).status_code == 402
    assert (await api.client.delete(f"{JOBS}/{jobs[0]}", headers=A)).status_code == 200
    assert (await submit(api, A)).status_code == 201


# -- /stats --------------------------------------------------------------------------------


async def test_stats_show_a_tenant_its_budget_and_an_admin_every_budget(api: Api) -> None:
    await submit(api, A)
    await submit(api, A, joinAt=datetime.now(UTC).isoformat(), maxRuntimeSeconds=30)
    mine = await shaped(
        api, await api.client.get("/api/scheduler/stats", headers=A), "StatsResponse"
    )
    today = mine["budget"]["day"]
    assert "budgets" not in mine and mine["budget"]["tenant"] == "tenantA"
    # today: the job of now (half a minute); the one of tomorrow is charged on its own day
    assert (today["chargedMinutes"], today["remainingMinutes"]) == (0.5, 2.5)
    assert mine["stats"]["budget"] == mine["budget"]
    admin = await shaped(
        api, await api.client.get("/api/scheduler/stats", headers=ADMIN), "StatsResponse"
    )
    assert "budget" not in admin
    assert [use["tenant"] for use in admin["budgets"]] == ["tenantA", "tenantB"]


async def test_stats_say_null_to_a_tenant_without_a_budget(make_api: MakeApi) -> None:
    env = {**ENV, "SCHEDULER_BUDGETS": json.dumps(CONFIGURED)}  # no `*`
    api = await make_api({**env, "SCHEDULER_API_KEYS": f"{API_KEYS},key-nobudget-1:initech"})
    stats = await api.client.get("/api/scheduler/stats", headers={"X-API-Key": "key-nobudget-1"})
    assert (await shaped(api, stats, "StatsResponse"))["budget"] is None
    one = await api.client.get(f"{BUDGETS}/initech", headers={"X-API-Key": "key-nobudget-1"})
    assert one.json()["usage"]["budget"] is None
