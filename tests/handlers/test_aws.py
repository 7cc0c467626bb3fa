"""The AWS Lambda handler, invoked the way Lambda does: `handler(event, context)` with the event
shapes AWS documents (fixtures in `events/`), on a real SQLite store and the process backend
running the demo bot. Each test starts from a cold container (`aws.reset()`)."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from core.config import variable_names
from core.errors import ConfigError
from core.models import DrainReport
from handlers import aws

ROOT = Path(__file__).resolve().parents[2]
EVENTS = Path(__file__).parent / "events"
KEY = "aws-test-key-1"
JOBS = "/api/scheduler/jobs"
URL = "https://meet.example.com/abc-defg-hij"
SETTINGS_VARIABLES = tuple(variable_names())


@dataclass
class Context:
    """What the Lambda Python runtime passes as `context`."""

    function_name: str = "botsched"
    function_version: str = "$LATEST"
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:botsched"
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/botsched"
    log_stream_name: str = "2025/03/01/[$LATEST]0123456789abcdef0123456789abcdef"
    identity: None = None
    client_context: None = None

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


@pytest.fixture(autouse=True)
def lambda_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    for name in SETTINGS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    bot = f"env DEMO_BOT_SECONDS=0.2 {shlex.quote(sys.executable)} -m core.demo_bot"
    monkeypatch.setenv("SCHEDULER_STORE", "sqlite")
    monkeypatch.setenv("SCHEDULER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SCHEDULER_API_KEYS", f"{KEY}:tenantA")
    monkeypatch.setenv("PLATFORM", "process")
    monkeypatch.setenv("BOT_COMMAND", bot)
    aws.reset()
    yield tmp_path
    aws.reset()


# -- events, shaped like AWS's documented examples ---------------------------------------------


@cache
def _fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


def load(name: str) -> dict[str, Any]:
    return copy.deepcopy(_fixture(name))


def rest_v1(
    method: str,
    path: str,
    body: str | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An API Gateway REST API proxy event (payload 1.0), stage `prod`, resource `/{proxy+}`."""
    event = load("apigw_rest_v1.json")
    event.update(httpMethod=method, path=path, body=body, pathParameters={"proxy": path[1:]})
    event["requestContext"].update(httpMethod=method, path=f"/prod{path}")
    all_headers = dict(headers or {})
    if body is not None:
        all_headers["content-type"] = "application/json"
    for name, value in all_headers.items():
        event["headers"][name] = value
        event["multiValueHeaders"][name] = [value]
    if query:
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
    return event


def http_v2(
    method: str,
    path: str,
    body: str = "",
    headers: dict[str, str] | None = None,
    query: str = "",
    fixture: str = "http_api_v2.json",
) -> dict[str, Any]:
    """An HTTP API event (payload 2.0), or with `fixture="function_url.json"` a function URL's
    (same format; its body arrives base64-encoded)."""
    event = load(fixture)
    raw = body.encode()
    event["rawPath"], event["rawQueryString"] = path, query
    event["requestContext"]["http"].update(method=method, path=path)
    event["body"] = base64.b64encode(raw).decode() if event["isBase64Encoded"] else body
    event["headers"]["content-length"] = str(len(raw))
    event["headers"].update(headers or {})
    return event


def function_url(method: str, path: str, body: str = "", **kw: Any) -> dict[str, Any]:
    return http_v2(method, path, body, fixture="function_url.json", **kw)


def scheduled() -> dict[str, Any]:
    return load("eventbridge_scheduled.json")


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    return aws.handler(event, Context())


def body_of(response: dict[str, Any]) -> Any:
    assert not response["isBase64Encoded"]
    return json.loads(response["body"])


AUTH = {"x-api-key": KEY}


def submit(**spec: Any) -> dict[str, Any]:
    spec.setdefault("meetingUrl", URL)
    response = invoke(http_v2("POST", JOBS, json.dumps(spec), AUTH))
    assert response["statusCode"] == 201, response
    job: dict[str, Any] = body_of(response)["job"]
    return job


def status_of(job_id: str) -> str:
    response = invoke(rest_v1("GET", f"{JOBS}/{job_id}", headers=AUTH))
    assert response["statusCode"] == 200, response
    status: str = body_of(response)["job"]["status"]
    return status


def drain_until_final(*job_ids: str, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Scheduled invocations, with short sleeps, until every job is final; their reports."""
    reports: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        reports.append(invoke(scheduled()))
        states = {job_id: status_of(job_id) for job_id in job_ids}
        if all(state in ("completed", "failed", "cancelled") for state in states.values()):
            return reports
        assert time.monotonic() < deadline, f"jobs not final after {timeout}s: {states}"
        time.sleep(0.05)


# -- import ------------------------------------------------------------------------------------


def test_import_loads_no_mangum_or_aws_sdk_and_builds_nothing() -> None:
    code = (
        "import sys, json; import handlers.aws as aws; print(json.dumps({"
        "'loaded': sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('mangum', 'boto3', 'botocore')), "
        "'built': [aws._deployment is not None, aws._loop is not None]}))"
    )
    # No SCHEDULER_API_KEYS: a build at import time would raise here.
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARIABLES}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == {"loaded": [], "built": [False, False]}


# -- HTTP through mangum -----------------------------------------------------------------------


def test_submit_through_http_api_v2() -> None:
    response = invoke(http_v2("POST", JOBS, json.dumps({"meetingUrl": URL, "priority": 7}), AUTH))
    assert response["statusCode"] == 201
    assert response["headers"]["content-type"] == "application/json"
    body = body_of(response)
    assert body["success"] is True
    job = body["job"]
    assert job["meetingUrl"] == URL
    assert job["priority"] == 7
    assert job["status"] == "queued"
    uuid.UUID(job["id"])


def test_get_and_list_through_rest_v1() -> None:
    job = submit()
    response = invoke(rest_v1("GET", f"{JOBS}/{job['id']}", headers=AUTH))
    assert response["statusCode"] == 200
    assert "multiValueHeaders" in response  # the REST (v1) response shape
    assert body_of(response)["job"]["id"] == job["id"]

    listed = invoke(rest_v1("GET", JOBS, headers=AUTH, query={"limit": "5"}))
    assert listed["statusCode"] == 200
    assert [item["id"] for item in body_of(listed)["jobs"]] == [job["id"]]

    missing = invoke(rest_v1("GET", f"{JOBS}/{uuid.uuid4()}", headers=AUTH))
    assert missing["statusCode"] == 404
    assert body_of(missing)["error"] == "not_found"


def test_function_url_event() -> None:
    health = invoke(function_url("GET", "/health"))
    assert health["statusCode"] == 200
    assert body_of(health)["status"] == "healthy"

    meeting = {"meeting_url": URL, "bot_name": "Lambda Bot"}
    headers = {"authorization": f"Bearer {KEY}"}
    response = invoke(
        function_url("POST", "/api/scheduler/meetings", json.dumps(meeting), headers=headers)
    )
    assert response["statusCode"] == 201, response
    assert body_of(response)["job"]["botName"] == "Lambda Bot"

    stats = invoke(function_url("GET", "/api/scheduler/stats", headers=headers))
    assert body_of(stats)["totalJobs"] == 1


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "not-the-key-at-all"}])
def test_without_a_valid_api_key_401(headers: dict[str, str]) -> None:
    for event in (
        http_v2("POST", JOBS, json.dumps({"meetingUrl": URL}), headers),
        rest_v1("GET", JOBS, headers=headers),
        function_url("GET", JOBS, headers=headers),
    ):
        response = invoke(event)
        assert response["statusCode"] == 401
        assert response["headers"]["www-authenticate"] == "Bearer"
        body = body_of(response)
        assert (body["success"], body["error"]) == (False, "unauthorized")


def test_bad_json_400() -> None:
    for event in (
        http_v2("POST", JOBS, "{not json", AUTH),
        rest_v1("POST", JOBS, "{not json", AUTH),
        function_url("POST", JOBS, "{not json", headers=AUTH),
    ):
        response = invoke(event)
        assert response["statusCode"] == 400
        body = body_of(response)
        assert body["error"] == "bad_request"
        assert "not valid JSON" in body["message"]


# -- the schedule ------------------------------------------------------------------------------


def test_scheduled_event_returns_the_drain_report() -> None:
    report = invoke(scheduled())
    assert report == DrainReport().model_dump(mode="json")


def test_scheduled_events_drain_jobs_to_completed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER_MAX_CONCURRENT_JOBS", "1")
    first, second = submit(), submit()
    assert first["status"] == second["status"] == "queued"
    # the submit dispatched the first job at once; the second waits for the cap
    assert status_of(first["id"]) in ("running", "completed")
    assert status_of(second["id"]) == "queued"

    reports = drain_until_final(first["id"], second["id"])

    assert status_of(first["id"]) == status_of(second["id"]) == "completed"
    for report in reports:
        DrainReport.model_validate(report)
    assert sum(report["dispatched"] for report in reports) >= 1  # the second job, by a drain
    assert sum(report["completed"] for report in reports) == 2


def test_warm_container_drain_then_http_then_drain() -> None:
    assert invoke(scheduled())["dispatched"] == 0
    loop, built = aws._loop, aws._deployment
    job = submit()
    assert status_of(job["id"]) in ("running", "completed")
    drain_until_final(job["id"])
    assert status_of(job["id"]) == "completed"
    # one loop and one runtime for the container's whole life
    assert aws._loop is loop and aws._deployment is built


def test_two_http_invocations_in_a_row_and_a_loop_changed_in_between() -> None:
    first = submit()
    second = submit()
    assert first["id"] != second["id"]
    # Other code in the container may run asyncio.run(), which leaves no current loop behind;
    # mangum's get_event_loop() would then fail. The handler makes its loop current again.
    asyncio.run(asyncio.sleep(0))
    assert status_of(first["id"]) in ("running", "completed")
    drain_until_final(first["id"], second["id"])


# -- configuration -----------------------------------------------------------------------------


def test_missing_api_keys_is_a_json_500_for_http_and_raises_for_the_schedule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SCHEDULER_API_KEYS")
    for event in (http_v2("GET", JOBS), rest_v1("GET", "/health"), function_url("GET", "/")):
        response = invoke(event)
        assert response["statusCode"] == 500
        assert response["headers"]["content-type"] == "application/json"
        body = body_of(response)
        assert (body["success"], body["error"]) == (False, "config_error")
        assert "SCHEDULER_API_KEYS" in body["message"]
    with pytest.raises(ConfigError, match="SCHEDULER_API_KEYS"):
        invoke(scheduled())
    assert aws._deployment is None  # not cached: each invocation reports it again

    monkeypatch.setenv("SCHEDULER_API_KEYS", KEY)
    assert invoke(http_v2("GET", JOBS, headers=AUTH))["statusCode"] == 200


def test_bad_settings_value_is_a_json_500(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER_MAX_CONCURRENT_JOBS", "lots")
    response = invoke(http_v2("GET", "/health"))
    assert response["statusCode"] == 500
    assert "SCHEDULER_MAX_CONCURRENT_JOBS" in body_of(response)["message"]
    with pytest.raises(ConfigError, match="SCHEDULER_MAX_CONCURRENT_JOBS"):
        invoke(scheduled())


def test_unknown_store_is_a_json_500_for_http_and_raises_for_the_schedule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCHEDULER_STORE", "dynamodb")
    response = invoke(http_v2("GET", JOBS, headers=AUTH))
    assert response["statusCode"] == 500
    body = body_of(response)
    assert body["error"] == "config_error"
    assert "SCHEDULER_STORE" in body["message"]
    with pytest.raises(ConfigError, match="SCHEDULER_STORE"):
        invoke(scheduled())


def test_auth_disabled_serves_without_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCHEDULER_API_KEYS")
    monkeypatch.setenv("SCHEDULER_AUTH_DISABLED", "true")
    assert invoke(http_v2("GET", JOBS))["statusCode"] == 200


def test_data_dir_defaults_to_tmp_on_lambda() -> None:
    assert str(aws.settings_from_env({}).data_dir) == "/tmp/botsched"
    assert str(aws.settings_from_env({"SCHEDULER_DATA_DIR": " "}).data_dir) == "/tmp/botsched"
    assert str(aws.settings_from_env({"SCHEDULER_DATA_DIR": "/mnt/efs"}).data_dir) == "/mnt/efs"
