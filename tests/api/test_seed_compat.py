"""The TypeScript original's documented requests, replayed byte for byte, get the documented
answers (seeds: scheduler-implementation.md and scheduler-summary.md)."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api, MakeApi

SEED_STATES = {"queued", "provisioning", "running", "completed", "failed"}
JSON = {"Content-Type": "application/json"}
CURL_FORM = {"Content-Type": "application/x-www-form-urlencoded"}  # curl -d without -H
CURL = {"User-Agent": "curl/8.5.0", "Accept": "*/*"}

# scheduler-implementation.md, "4. Submit Jobs" (curl -d '...')
QUICK_START = b"""{
    "meetingUrl": "https://meet.google.com/abc-def-ghi",
    "botName": "Recording Bot",
    "priority": 5
  }"""

# scheduler-implementation.md, "API Endpoints / Submit Job"
FULL = b"""{
  "meetingUrl": "https://meet.google.com/abc-def-ghi",
  "botName": "Recording Bot",
  "email": "bot@example.com",
  "recordingMode": "speaker_view",
  "priority": 5,
  "config": {}
}"""

# scheduler-implementation.md, "Test Local Deployment"
TEST_BOT = b"""{
    "meetingUrl": "https://meet.google.com/test-abc-def",
    "botName": "Test Bot"
  }"""

# scheduler-summary.md, "1. Job Submission"
SUMMARY = b"""{
  "meetingUrl": "https://meet.google.com/abc-def-ghi",
  "botName": "Recording Bot",
  "priority": 5
}"""

# scheduler-summary.md, "Manual Test" (curl)
MANUAL = b'{"meetingUrl": "https://meet.google.com/test"}'

# scheduler-implementation.md, "Batch Submit": the documented shape; its "..." placeholders
# stand for meeting URLs, filled in here with every other byte kept.
BATCH_SHAPE = b"""{
  "jobs": [
    {"meetingUrl": "..."},
    {"meetingUrl": "..."}
  ]
}"""
BATCH = BATCH_SHAPE.replace(b'"..."', b'"https://meet.google.com/aaa-bbbb-ccc"', 1).replace(
    b'"..."', b'"https://teams.microsoft.com/l/meetup-join/xyz"', 1
)

# scheduler-implementation.md, "Pattern 2" (curl -d, no Content-Type), placeholder filled in
PATTERN_2 = b'{"meetingUrl": "https://meet.google.com/pat-tern-two"}'


@pytest.fixture
async def seed_api(make_api: MakeApi) -> Api:
    """Configured as the seed's .env.scheduler does."""
    return await make_api(
        {
            "PORT": "3000",
            "SCHEDULER_MAX_CONCURRENT_JOBS": "10",
            "SCHEDULER_POLLING_INTERVAL": "5000",
        }
    )


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        (
            QUICK_START,
            {**CURL, **JSON},
            {
                "meetingUrl": "https://meet.google.com/abc-def-ghi",
                "botName": "Recording Bot",
                "priority": 5,
            },
        ),
        (
            FULL,
            JSON,
            {
                "meetingUrl": "https://meet.google.com/abc-def-ghi",
                "botName": "Recording Bot",
                "email": "bot@example.com",
                "recordingMode": "speaker_view",
                "priority": 5,
                "config": {},
            },
        ),
        (
            TEST_BOT,
            {**CURL, **JSON},
            {"meetingUrl": "https://meet.google.com/test-abc-def", "botName": "Test Bot"},
        ),
        (
            SUMMARY,
            JSON,
            {
                "meetingUrl": "https://meet.google.com/abc-def-ghi",
                "botName": "Recording Bot",
                "priority": 5,
            },
        ),
        (MANUAL, {**CURL, **JSON}, {"meetingUrl": "https://meet.google.com/test"}),
        (PATTERN_2, {**CURL, **CURL_FORM}, {"meetingUrl": "https://meet.google.com/pat-tern-two"}),
    ],
    ids=["quick-start", "full", "test-bot", "summary", "manual-curl", "curl-without-json-type"],
)
async def test_seed_submit_bodies(
    seed_api: Api, body: bytes, headers: dict[str, str], expected: dict[str, object]
) -> None:
    response = await seed_api.client.post("/api/scheduler/jobs", content=body, headers=headers)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/json")
    reply = response.json()
    assert reply["success"] is True
    job = reply["job"]
    assert isinstance(job["id"], str) and job["id"]
    assert job["status"] in SEED_STATES
    for field, value in expected.items():
        assert job[field] == value, field

    # "Get Job Status": GET /api/scheduler/jobs/:jobId -> one of the seed's states
    status = await seed_api.client.get(f"/api/scheduler/jobs/{job['id']}")
    assert status.status_code == 200
    assert status.json()["success"] is True
    assert status.json()["job"]["id"] == job["id"]
    assert status.json()["job"]["status"] in SEED_STATES


async def test_seed_batch_body(seed_api: Api) -> None:
    response = await seed_api.client.post("/api/scheduler/jobs/batch", content=BATCH, headers=JSON)
    assert response.status_code == 201, response.text
    reply = response.json()
    assert reply["success"] is True
    assert [job["meetingUrl"] for job in reply["jobs"]] == [
        "https://meet.google.com/aaa-bbbb-ccc",
        "https://teams.microsoft.com/l/meetup-join/xyz",
    ]
    for job in reply["jobs"]:
        assert job["id"] and job["status"] in SEED_STATES


async def test_seed_batch_placeholders_are_rejected_cleanly(seed_api: Api) -> None:
    response = await seed_api.client.post(
        "/api/scheduler/jobs/batch", content=BATCH_SHAPE, headers=JSON
    )
    assert response.status_code == 400
    reply = response.json()
    assert reply["success"] is False
    assert [error["index"] for error in reply["errors"]] == [0, 1]
    assert all("meetingUrl" in error["message"] for error in reply["errors"])


async def test_seed_stats(seed_api: Api) -> None:
    for body in (QUICK_START, FULL, MANUAL):
        await seed_api.client.post("/api/scheduler/jobs", content=body, headers=JSON)
    response = await seed_api.client.get("/api/scheduler/stats")
    assert response.status_code == 200
    stats = response.json()
    for field in ("queueSize", "runningJobs", "maxConcurrentJobs"):
        assert type(stats[field]) is int, field
    assert stats["maxConcurrentJobs"] == 10
    assert stats["queueSize"] + stats["runningJobs"] + stats["provisioningJobs"] == 3
    assert stats["runningJobs"] == 3  # under the cap, submits start at once


async def test_seed_max_jobs_alias(make_api: MakeApi) -> None:
    api = await make_api({"MAX_JOBS": "4"})
    stats = (await api.client.get("/api/scheduler/stats")).json()
    assert stats["maxConcurrentJobs"] == 4


async def test_seed_health(seed_api: Api) -> None:
    response = await seed_api.client.get("/health", headers=CURL)
    assert response.status_code == 200
    assert response.json()["status"] == "healthy"
