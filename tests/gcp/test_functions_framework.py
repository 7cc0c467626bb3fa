"""main.py served by the real functions-framework, as Cloud Functions runs it: the HTTP function
`api` in one process, the Pub/Sub-triggered `drain` in another, on one SQLite file, with the
process backend and the demo bot. Ticks arrive as the CloudEvent HTTP request Eventarc sends."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ci import unavailable
from tests.gcp.ff_env import (
    SUBSCRIPTION,
    TOPIC,
    Function,
    clean_env,
    kill_bots,
    pubsub_cloudevent,
    tick_request,
)
from tests.gcp.pubsub_env import EmulatorUnavailable, EventarcRelay, PubSubEmulator, start_pubsub

pytestmark = pytest.mark.e2e

JOBS = "/api/scheduler/jobs"
KEY = "gcf-test-key-0001"
AUTH = {"Authorization": f"Bearer {KEY}"}
MEETING = "https://meet.example.com/gcf-test-run"  # no platform: jobs never share a bot
FINAL = ("completed", "failed", "cancelled")
WAIT = 30.0


@dataclass
class Deployed:
    api: Function
    drain: Function
    data_dir: Path

    def submit(self, **spec: Any) -> dict[str, Any]:
        spec.setdefault("meetingUrl", MEETING)
        response = self.api.http.post(JOBS, json=spec, headers=AUTH)
        assert response.status_code == 201, response.text
        job: dict[str, Any] = response.json()["job"]
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.api.http.get(f"{JOBS}/{job_id}", headers=AUTH)
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()["job"]
        return job

    def tick(self) -> httpx.Response:
        headers, body = tick_request()
        response = self.drain.http.post("/", headers=headers, json=body)
        assert response.status_code == 200, f"{response.text}\n{self.drain.log()}"
        return response

    def tick_until(self, job_id: str, states: tuple[str, ...]) -> tuple[dict[str, Any], int]:
        """Tick (every 0.1 s) until the job is in one of `states`; the job and the ticks."""
        deadline = time.monotonic() + WAIT
        seen: list[str] = []
        ticks = 0
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if not seen or seen[-1] != job["status"]:
                seen.append(job["status"])
            if job["status"] in states:
                return job, ticks
            self.tick()
            ticks += 1
            time.sleep(0.1)
        pytest.fail(
            f"job {job_id} went {seen}, never {states}:\n{self.api.log()}\n{self.drain.log()}"
        )


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    root = tmp_path_factory.mktemp("gcf")
    data_dir = root / "data"
    data_dir.mkdir()
    bot = ["env", "DEMO_BOT_SECONDS=0.2", sys.executable, "-m", "core.demo_bot"]
    env = {
        **clean_env(),
        "SCHEDULER_STORE": "sqlite",
        "SCHEDULER_DATA_DIR": str(data_dir),
        "SCHEDULER_API_KEYS": KEY,
        "SCHEDULER_JOIN_LEAD_SECONDS": "0",
        "PLATFORM": "process",
        "BOT_COMMAND": shlex.join(bot),
        "BOT_STOP_GRACE_SECONDS": "2",
    }
    api = Function("api", env, root / "api.log")
    drain = Function("drain", env, root / "drain.log")
    try:
        api.start("/health")
        drain.start("/")  # the CloudEvent function answers GET with 405
        yield Deployed(api, drain, data_dir)
    finally:
        api.stop()
        drain.stop()
        kill_bots(data_dir)


@pytest.fixture(scope="module")
def pubsub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PubSubEmulator]:
    """The Pub/Sub emulator; skipped when it is not installed, except in CI (`CI` set)."""
    try:
        emulator = start_pubsub(tmp_path_factory.mktemp("pubsub"))
    except EmulatorUnavailable as exc:
        unavailable(exc)
    try:
        yield emulator
    finally:
        emulator.stop()


def test_the_framework_serves_the_app_in_asgi_mode(deployed: Deployed) -> None:
    health = deployed.api.http.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "healthy"
    # every route of the app, at its own path
    info = deployed.api.http.get("/")
    assert info.status_code == 200
    assert info.json()["name"] == "Bot Scheduler API"
    assert deployed.api.http.get("/openapi.json").json()["paths"]
    # the framework's own answer, not the app's: it serves the function under Starlette (ASGI)
    assert deployed.api.http.get("/favicon.ico").status_code == 404
    assert "uvicorn" in deployed.api.http.get("/health").headers.get("server", "")


def test_a_submitted_job_is_dispatched_at_once_and_polled_to_completed_by_ticks(
    deployed: Deployed,
) -> None:
    job = deployed.submit(botName="GCF Bot")
    assert job["status"] == "queued"
    # The response was held until the dispatch after the submit had run: the bot has started.
    assert deployed.job(job["id"])["status"] == "running"
    done, ticks = deployed.tick_until(job["id"], FINAL)
    assert done["status"] == "completed", done
    assert done["exitCode"] == 0
    assert done["startedAt"] and done["completedAt"]
    assert ticks >= 1  # the HTTP function started it; only a tick saw it finish


def test_a_tick_dispatches_a_job_that_became_due_then_polls_it_to_completed(
    deployed: Deployed,
) -> None:
    join_at = datetime.now(UTC) + timedelta(seconds=1.5)
    job = deployed.submit(joinAt=join_at.isoformat())
    deployed.tick()
    assert deployed.job(job["id"])["status"] == "queued"  # not due yet: nothing starts it
    time.sleep(max(0.0, (join_at - datetime.now(UTC)).total_seconds()))
    started, _ = deployed.tick_until(job["id"], ("provisioning", "running", *FINAL))
    assert started["attempts"] == 1
    assert started["execution"] == {"backend": "process", "id": job["id"]}
    done, _ = deployed.tick_until(job["id"], FINAL)
    assert done["status"] == "completed", done
    assert done["exitCode"] == 0


def test_get_job(deployed: Deployed) -> None:
    job = deployed.submit(priority=8, metadata={"case": "get"})
    got = deployed.api.http.get(f"{JOBS}/{job['id']}", headers=AUTH)
    assert got.status_code == 200
    body = got.json()
    assert body["success"] is True
    assert body["job"]["id"] == job["id"]
    assert (body["job"]["priority"], body["job"]["metadata"]) == (8, {"case": "get"})
    missing = deployed.api.http.get(f"{JOBS}/no-such-job", headers=AUTH)
    assert missing.status_code == 404
    assert missing.json()["success"] is False


def test_requests_without_a_valid_key_get_401(deployed: Deployed) -> None:
    for headers in ({}, {"Authorization": "Bearer not-the-key-000"}, {"X-API-Key": "wrong-key-0"}):
        response = deployed.api.http.post(JOBS, json={"meetingUrl": MEETING}, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    assert deployed.api.http.get(f"{JOBS}/anything").status_code == 401


def test_bad_json_gets_400(deployed: Deployed) -> None:
    headers = {**AUTH, "content-type": "application/json"}
    response = deployed.api.http.post(JOBS, content=b'{"meetingUrl": ', headers=headers)
    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False
    assert body["error"] == "bad_request"
    invalid = deployed.api.http.post(JOBS, json={"meetingUrl": 42}, headers=AUTH)
    assert invalid.status_code == 400
    assert invalid.json()["success"] is False


def test_the_tick_function_answers_the_eventarc_request_and_rejects_anything_else(
    deployed: Deployed,
) -> None:
    assert deployed.tick().text == "OK"
    # a Pub/Sub push without the CloudEvent headers is not a CloudEvent: the framework says 400
    headers, body = tick_request()
    plain = deployed.drain.http.post("/", json=body)
    assert plain.status_code == 400
    # a structured-mode CloudEvent is accepted too
    structured = {
        "specversion": "1.0",
        "id": headers["ce-id"],
        "source": headers["ce-source"],
        "type": headers["ce-type"],
        "datacontenttype": "application/json",
        "data": body,
    }
    response = deployed.drain.http.post(
        "/", json=structured, headers={"content-type": "application/cloudevents+json"}
    )
    assert response.status_code == 200, response.text


def test_the_cloudevent_helper_matches_the_pubsub_shape() -> None:
    headers, body = pubsub_cloudevent(
        {
            "message": {
                "data": "dGljaw==",
                "messageId": "7",
                "publishTime": "2025-01-01T00:00:00Z",
            },
            "subscription": "projects/P/subscriptions/S",
        },
        source="//pubsub.googleapis.com/projects/P/topics/T",
    )
    assert headers["ce-source"] == "//pubsub.googleapis.com/projects/P/topics/T"
    assert headers["ce-type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert (headers["ce-id"], headers["ce-specversion"]) == ("7", "1.0")
    assert body["message"]["data"] == "dGljaw=="


def test_cloud_scheduler_ticks_reach_the_drain_function_through_the_pubsub_emulator(
    deployed: Deployed, pubsub: PubSubEmulator
) -> None:
    """Cloud Scheduler publishes to the topic; the trigger's push subscription delivers each
    message, which Eventarc (the relay here) hands to the function as a CloudEvent."""
    relay = EventarcRelay(deployed.drain.url + "/", pubsub.project, TOPIC)
    try:
        pubsub.create_topic(TOPIC)
        pubsub.create_push_subscription(SUBSCRIPTION, TOPIC, relay.url)
        join_at = datetime.now(UTC) + timedelta(seconds=1)
        job = deployed.submit(joinAt=join_at.isoformat(), botName="Pub/Sub Bot")
        published: list[str] = []
        deadline = time.monotonic() + WAIT
        status = job["status"]
        while status not in FINAL and time.monotonic() < deadline:
            published.append(pubsub.publish(TOPIC, b"tick"))
            time.sleep(0.3)
            status = deployed.job(job["id"])["status"]
        done = deployed.job(job["id"])
        assert done["status"] == "completed", f"{done}\n{deployed.drain.log()}"
        assert done["exitCode"] == 0
        delivered = {d.message_id for d in relay.deliveries}
        assert len(delivered) >= 2  # one tick dispatched it, a later one saw it finish
        assert delivered <= set(published)
        assert all(d.status == 200 for d in relay.deliveries), relay.deliveries
    finally:
        relay.close()
