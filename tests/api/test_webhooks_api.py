"""The webhook routes through the app: endpoints (made, listed, read, changed, rotated, deleted),
what they refuse, tenant isolation, a job's events, replay, and the job-URL secret.

Public hosts need DNS, which the tests do not have: an endpoint that is made uses
SCHEDULER_WEBHOOK_ALLOW_PRIVATE and a loopback http URL. The answers are checked against the
published OpenAPI document's schemas."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from core.events import FILTER_TYPES
from core.models import utcnow
from core.openapi import openapi_document
from core.webhooks.endpoints import signing_secrets
from tests.api.conftest import API_KEYS, JOBS, KEY_A, KEY_B, URL, Api, MakeApi, assert_error, later

WEBHOOKS = "/api/scheduler/webhooks"
A = {"X-API-Key": KEY_A}
B = {"X-API-Key": KEY_B}
LOCAL = "http://127.0.0.1:9/hook"  # made with SCHEDULER_WEBHOOK_ALLOW_PRIVATE
PUBLIC = "https://hooks.example.com/botsched"  # refused or accepted before any DNS look-up


def check(answer: httpx.Response, schema: str) -> dict[str, Any]:
    """The answer's body, after checking it against the published schema."""
    doc = openapi_document()
    registry = Registry().with_resource("doc", DRAFT202012.create_resource(doc))
    validator = Draft202012Validator(
        {"$ref": f"doc#/components/schemas/{schema}"},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    body: dict[str, Any] = answer.json()
    errors = [error.message for error in validator.iter_errors(body)]
    assert not errors, (schema, errors)
    return body


@pytest.fixture
async def local(make_api: MakeApi) -> Api:
    """Two tenants, and private targets allowed (so endpoints can be made without DNS)."""
    return await make_api(
        {"SCHEDULER_API_KEYS": API_KEYS, "SCHEDULER_WEBHOOK_ALLOW_PRIVATE": "true"}
    )


async def create(api: Api, headers: dict[str, str] = A, **spec: Any) -> dict[str, Any]:
    response = await api.client.post(WEBHOOKS, json={"url": LOCAL, **spec}, headers=headers)
    assert response.status_code == 201, response.text
    assert response.headers["cache-control"] == "no-store"
    return check(response, "WebhookSecret")


async def test_an_endpoint_made_listed_read_changed_and_deleted(local: Api) -> None:
    made = await create(local, events=["job.completed", "job.failed"], description="CRM sync")
    secret, webhook = made["secret"], made["webhook"]
    assert secret.startswith("whsec_") and len(secret) > 30
    assert webhook["id"].startswith("wh_") and webhook["id"] != "wh_jobs"
    assert (webhook["url"], webhook["description"]) == (LOCAL, "CRM sync")
    assert webhook["events"] == ["job.completed", "job.failed"]
    assert (webhook["disabled"], webhook["secrets"]) == (False, 1)
    one = f"{WEBHOOKS}/{webhook['id']}"

    read = await local.client.get(one, headers=A)
    assert read.status_code == 200
    assert check(read, "WebhookResponse")["webhook"] == webhook
    listed = await local.client.get(WEBHOOKS, headers=A)
    assert [w["id"] for w in check(listed, "WebhookList")["webhooks"]] == [webhook["id"]]
    for answer in (read, listed):  # the secret is shown once: never again
        assert secret not in answer.text and "secret" not in answer.json()

    changed = await local.client.patch(
        one, json={"description": "billing", "events": ["job.queued"]}, headers=A
    )
    assert changed.status_code == 200, changed.text
    after = check(changed, "WebhookResponse")["webhook"]
    assert (after["description"], after["events"], after["url"]) == (
        "billing",
        ["job.queued"],
        LOCAL,
    )
    assert secret not in changed.text
    every = await local.client.patch(one, json={"events": None}, headers=A)
    assert every.json()["webhook"]["events"] == []  # null: every type

    deleted = await local.client.delete(one, headers=A)
    assert deleted.status_code == 200
    assert check(deleted, "Deleted") == {"success": True}
    assert_error(await local.client.get(one, headers=A), 404, "not_found")
    assert (await local.client.get(WEBHOOKS, headers=A)).json()["webhooks"] == []
    assert_error(await local.client.delete(one, headers=A), 404)


async def test_patch_enabled_false_then_true(local: Api) -> None:
    one = f"{WEBHOOKS}/{(await create(local))['webhook']['id']}"
    off = await local.client.patch(one, json={"enabled": False}, headers=A)
    assert off.status_code == 200
    webhook = check(off, "WebhookResponse")["webhook"]
    assert webhook["disabled"] is True
    assert webhook["disabledReason"] == "disabled by its owner"
    assert (await local.client.get(one, headers=A)).json()["webhook"]["disabled"] is True
    on = await local.client.patch(one, json={"enabled": True}, headers=A)
    assert on.status_code == 200
    webhook = on.json()["webhook"]
    assert (webhook["disabled"], webhook["disabledReason"], webhook["failingSince"]) == (
        False,
        None,
        None,
    )


async def test_another_tenant_neither_sees_nor_touches_an_endpoint(local: Api) -> None:
    webhook = (await create(local))["webhook"]
    one = f"{WEBHOOKS}/{webhook['id']}"
    assert_error(await local.client.get(one, headers=B), 404, "not_found")
    assert_error(await local.client.patch(one, json={"enabled": False}, headers=B), 404)
    assert_error(await local.client.post(f"{one}/rotate", headers=B), 404)
    assert_error(await local.client.get(f"{one}/deliveries", headers=B), 404)
    assert_error(await local.client.delete(one, headers=B), 404)
    assert (await local.client.get(WEBHOOKS, headers=B)).json()["webhooks"] == []
    # untouched for its owner
    mine = (await local.client.get(one, headers=A)).json()["webhook"]
    assert mine == webhook
    assert_error(await local.client.get(WEBHOOKS), 401, "unauthorized")


async def test_tenants_whose_names_prefix_each_other_keep_their_own_endpoints(
    make_api: MakeApi,
) -> None:
    keys = "key1234567:team,key7654321:team:sales"
    api = await make_api({"SCHEDULER_API_KEYS": keys, "SCHEDULER_WEBHOOK_ALLOW_PRIVATE": "true"})
    await create(api, {"X-API-Key": "key7654321"})
    listed = await api.client.get(WEBHOOKS, headers={"X-API-Key": "key1234567"})
    assert listed.json()["webhooks"] == []


LOOPBACK_OR_PRIVATE = [
    "https://127.0.0.1/hook",
    "https://10.0.0.1/hook",
    "https://169.254.169.254/latest/meta-data",
    "https://[::1]/hook",
    "https://localhost/hook",
    "https://2130706433/hook",  # 127.0.0.1, written as one number
]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"url": "http://hooks.example.com/x"}, "must be https"),
        ({"url": "https://user:pass@hooks.example.com/x"}, "user name or password"),
        *[({"url": url}, "loopback, private or internal") for url in LOOPBACK_OR_PRIVATE],
        ({"url": "https://hooks.botsched.invalid/x"}, "does not resolve"),
        ({"url": "ftp://hooks.example.com/x"}, "https"),
        ({"url": PUBLIC + "#top"}, "fragment"),
        ({"url": PUBLIC, "events": ["job.exploded"]}, "unknown type 'job.exploded'"),
        ({"url": PUBLIC, "events": [*FILTER_TYPES, "job.queued"]}, "events"),
        ({"url": PUBLIC, "events": "job.queued"}, "events"),
        ({"url": PUBLIC, "colour": "blue"}, "colour"),
        ({"url": PUBLIC, "description": "x" * 201}, "description"),
        ({"events": ["job.queued"]}, "url"),
        ({"url": 5}, "url"),
    ],
)
async def test_a_bad_endpoint_is_a_clear_400(
    auth_api: Api, body: dict[str, Any], says: str
) -> None:
    response = await auth_api.client.post(WEBHOOKS, json=body, headers=A)
    message = assert_error(response, 400, "validation_error")
    assert says in message
    check(response, "Error")
    assert (await auth_api.client.get(WEBHOOKS, headers=A)).json()["webhooks"] == []


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"url": "http://hooks.example.com/x"}, "must be https"),  # http to loopback only
        ({"url": "http://user:pass@127.0.0.1:9/x"}, "user name or password"),
    ],
)
async def test_allowing_private_targets_allows_no_more(
    local: Api, body: dict[str, Any], says: str
) -> None:
    assert says in assert_error(await local.client.post(WEBHOOKS, json=body, headers=A), 400)


@pytest.mark.parametrize("content", [b"{not json", b"", b"[1, 2]", b'"text"'])
async def test_a_body_that_is_not_a_json_object_is_a_400(auth_api: Api, content: bytes) -> None:
    headers = {**A, "Content-Type": "application/json"}
    response = await auth_api.client.post(WEBHOOKS, content=content, headers=headers)
    assert_error(response, 400)


async def test_a_bad_change_is_a_clear_400_and_changes_nothing(local: Api) -> None:
    webhook = (await create(local))["webhook"]
    one = f"{WEBHOOKS}/{webhook['id']}"
    bad: list[tuple[dict[str, Any], str]] = [
        ({"url": "https://user:pw@127.0.0.1/x"}, "url"),
        ({"url": "http://hooks.example.com/x"}, "url"),
        ({"url": None}, "url"),
        ({"events": ["bot.dancing"]}, "unknown type"),
        ({"enabled": "yes"}, "enabled"),
        ({"secret": "mine"}, "secret"),
        ({"description": "x" * 201}, "description"),
    ]
    for body, says in bad:
        assert says in assert_error(await local.client.patch(one, json=body, headers=A), 400)
    assert_error(await local.client.patch(one, content=b"{", headers=A), 400, "bad_request")
    assert (await local.client.get(one, headers=A)).json()["webhook"] == webhook


async def test_an_unknown_or_odd_endpoint_id_is_a_404(auth_api: Api) -> None:
    for endpoint_id in ("wh_nope", "wh_jobs", "ä", "x" * 300, "a.b", "wh_jobs%0A"):
        one = f"{WEBHOOKS}/{endpoint_id}"
        assert_error(await auth_api.client.get(one, headers=A), 404, "not_found")
        assert_error(await auth_api.client.post(f"{one}/rotate", headers=A), 404)
        response = await auth_api.client.post(f"{one}/events/evt_x_000001/replay", headers=A)
        assert_error(response, 404)


async def test_job_secret_takes_post_only(auth_api: Api) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        response = await auth_api.client.request(method, f"{WEBHOOKS}/job-secret", headers=A)
        assert_error(response, 405)
        assert response.headers["allow"] == "POST"


async def test_rotate_keeps_the_old_secret_until_the_overlap_ends(local: Api) -> None:
    made = await create(local)
    one = f"{WEBHOOKS}/{made['webhook']['id']}"
    rotated = await local.client.post(f"{one}/rotate", headers=A)
    assert rotated.status_code == 200
    assert rotated.headers["cache-control"] == "no-store"
    body = check(rotated, "WebhookSecret")
    assert body["secret"].startswith("whsec_") and body["secret"] != made["secret"]
    assert body["webhook"]["secrets"] == 2
    read = await local.client.get(one, headers=A)
    assert read.json()["webhook"]["secrets"] == 2
    assert made["secret"] not in read.text and body["secret"] not in read.text
    webhooks = local.scheduler.webhooks
    record = await webhooks.get("tenantA", made["webhook"]["id"])
    now = utcnow()
    assert signing_secrets(record, local.settings, now) == [body["secret"], made["secret"]]

    overlap = local.settings.webhook_secret_overlap_seconds
    webhooks.clock = lambda: now + timedelta(seconds=overlap + 1)
    assert (await local.client.get(one, headers=A)).json()["webhook"]["secrets"] == 1
    assert (await local.client.get(WEBHOOKS, headers=A)).json()["webhooks"][0]["secrets"] == 1
    assert signing_secrets(record, local.settings, webhooks.clock()) == [body["secret"]]


async def test_a_jobs_events_in_order_and_only_to_its_tenant(auth_api: Api) -> None:
    job = await auth_api.submit(headers=A, joinAt=later(hours=1))
    assert (await auth_api.client.delete(f"{JOBS}/{job['id']}", headers=A)).status_code == 200
    response = await auth_api.client.get(f"{JOBS}/{job['id']}/events", headers=A)
    assert response.status_code == 200
    body = check(response, "JobEvents")
    assert body["jobId"] == job["id"]
    events = body["events"]
    assert [event["type"] for event in events] == ["job.queued", "job.cancelled"]
    assert [event["id"] for event in events] == [
        f"evt_{job['id']}_000001",
        f"evt_{job['id']}_000002",
    ]
    assert [event["data"]["status"] for event in events] == ["queued", "cancelled"]
    assert all(event["data"]["id"] == job["id"] for event in events)
    assert_error(await auth_api.client.get(f"{JOBS}/{job['id']}/events", headers=B), 404)
    assert_error(await auth_api.client.get(f"{JOBS}/nope/events", headers=A), 404)


async def test_a_started_job_lists_each_step(auth_api: Api) -> None:
    job = await auth_api.submit(headers=A)
    events = (await auth_api.client.get(f"{JOBS}/{job['id']}/events", headers=A)).json()
    assert [e["type"] for e in events["events"]] == [
        "job.queued",
        "job.provisioning",
        "job.running",
    ]


async def test_events_are_the_jobs_own_even_when_another_id_extends_its_id(auth_api: Api) -> None:
    """Job `abc` and another tenant's job `abc_000001`: the events' keys share a prefix."""
    meeting = {"meeting_url": URL}
    first = {**meeting, "bot_uuid": "abc"}
    other = {**meeting, "bot_uuid": "abc_000001"}
    for body, headers in ((first, A), (other, B)):
        response = await auth_api.client.post("/api/scheduler/meetings", json=body, headers=headers)
        assert response.status_code == 201, response.text
    events = (await auth_api.client.get(f"{JOBS}/abc/events", headers=A)).json()["events"]
    assert {event["data"]["id"] for event in events} == {"abc"}
    assert events[0]["type"] == "job.queued"


async def test_replay_of_an_unknown_or_another_tenants_event_is_a_404(local: Api) -> None:
    one = f"{WEBHOOKS}/{(await create(local))['webhook']['id']}"
    theirs = await local.submit(headers=B, joinAt=later(hours=1))
    mine = await local.submit(headers=A, joinAt=later(hours=1))
    for event_id in (f"evt_{theirs['id']}_000001", f"evt_{mine['id']}_000009", "nope", "ä"):
        response = await local.client.post(f"{one}/events/{event_id}/replay", headers=A)
        assert_error(response, 404, "not_found")
    replayed = await local.client.post(f"{one}/events/evt_{mine['id']}_000001/replay", headers=A)
    assert replayed.status_code == 202, replayed.text
    delivery = check(replayed, "ReplayResponse")["delivery"]
    assert (delivery["eventId"], delivery["jobId"]) == (f"evt_{mine['id']}_000001", mine["id"])
    assert (delivery["state"], delivery["attempts"], delivery["type"]) == (
        "pending",
        0,
        "job.queued",
    )
    again = await local.client.post(f"{one}/events/evt_{mine['id']}_000001/replay", headers=A)
    assert again.json()["delivery"]["replays"] == delivery["replays"] + 1


async def test_replay_to_a_disabled_endpoint_says_to_enable_it(local: Api) -> None:
    one = f"{WEBHOOKS}/{(await create(local))['webhook']['id']}"
    job = await local.submit(headers=A, joinAt=later(hours=1))
    await local.client.patch(one, json={"enabled": False}, headers=A)
    response = await local.client.post(f"{one}/events/evt_{job['id']}_000001/replay", headers=A)
    assert '"enabled": true' in assert_error(response, 409)


async def test_a_job_webhook_url_needs_the_job_secret_first(auth_api: Api) -> None:
    spec = {"meetingUrl": URL, "webhookUrl": PUBLIC}
    refused = await auth_api.client.post(JOBS, json=spec, headers=A)
    message = assert_error(refused, 400, "validation_error")
    assert "POST /api/scheduler/webhooks/job-secret" in message
    assert refused.json()["fields"] == ["webhookUrl"]

    made = await auth_api.client.post(f"{WEBHOOKS}/job-secret", headers=A)
    assert made.status_code == 201
    assert made.headers["cache-control"] == "no-store"
    body = check(made, "WebhookSecret")
    assert body["webhook"]["id"] == "wh_jobs" and body["webhook"]["url"] is None
    assert body["secret"].startswith("whsec_")
    assert "rotate" in assert_error(
        await auth_api.client.post(f"{WEBHOOKS}/job-secret", headers=A), 409
    )

    accepted = await auth_api.client.post(JOBS, json=spec, headers=A)
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["job"]["webhookUrl"] == PUBLIC
    # the secret is the tenant's: another tenant still needs its own
    assert_error(await auth_api.client.post(JOBS, json=spec, headers=B), 400)
    listed = (await auth_api.client.get(WEBHOOKS, headers=A)).json()["webhooks"]
    assert [w["id"] for w in listed] == ["wh_jobs"]
    url = await auth_api.client.patch(f"{WEBHOOKS}/wh_jobs", json={"url": PUBLIC}, headers=A)
    assert "webhookUrl" in assert_error(url, 400)


def test_the_document_says_how_each_webhook_route_is_called() -> None:
    doc = openapi_document()
    bot = doc["paths"]["/api/scheduler/bot-status"]["post"]
    assert bot["security"] == [{"botToken": []}]
    scheme = doc["components"]["securitySchemes"]["botToken"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "x-spoke-api-key")
    secret = doc["components"]["schemas"]["WebhookSecret"]["properties"]["secret"]
    assert "once" in secret["description"]
    shown = [
        doc["paths"][WEBHOOKS]["post"]["responses"]["201"],
        doc["paths"][f"{WEBHOOKS}/job-secret"]["post"]["responses"]["201"],
        doc["paths"][f"{WEBHOOKS}/{{webhookId}}/rotate"]["post"]["responses"]["200"],
    ]
    for response in shown:
        assert response["headers"]["Cache-Control"]["schema"]["const"] == "no-store"
        assert "once" in response["description"] or "secret" in response["description"]
    for path, item in doc["paths"].items():
        if path.startswith(WEBHOOKS) or path.endswith("/events"):
            for operation in item.values():
                assert operation.get("security") is None  # the API key, as everywhere
    delivered = doc["webhooks"]["event"]["post"]
    headers = {p["name"] for p in delivered["parameters"]}
    assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
