"""The Worker entry, run for real in Pyodide (the interpreter of Cloudflare's Python Workers).

tests/cloudflare/run_worker.mjs loads Pyodide under Node, installs the wheels (starlette, pydantic,
pydantic-core's wasm build, the workers SDK) and mounts the Worker's build/ folder (what wrangler
uploads: worker.py and copies of core/ and handlers/, made by scripts/build-cloudflare-worker.py),
imports `worker` (`main` in infra/cloudflare/scheduler/wrangler.toml), instantiates its `Default`
as workerd would, and drives it: HTTP requests through the SDK's
ASGI bridge and cron `scheduled` events, with a D1 binding over sql.js and a Durable Object
namespace that plays the bot container protocol. One scenario runs in one Node process (Pyodide
takes a few seconds to start); each test reads its part of the transcript.

Without node/npm (or offline before the first preparation) this skips, except in CI (`CI` set),
where it fails.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.ci import unavailable
from tests.cloudflare.toolchain import build_worker
from tests.pyodide_env import PyodideUnavailable, ensure

RUNNER = Path(__file__).with_name("run_worker.mjs")
KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}


def _job(name: str, priority: int) -> dict[str, Any]:
    return {
        "method": "POST",
        "path": "/api/scheduler/jobs",
        "headers": AUTH,
        "body": {
            "meetingUrl": f"https://meet.example.com/{name}",
            "botName": name,
            "priority": priority,
        },
    }


SCENARIO: dict[str, Any] = {
    "vars": {
        "SCHEDULER_API_KEYS": f"{KEY}:acme",
        "SCHEDULER_MAX_CONCURRENT_JOBS": "1",
        "SCHEDULER_CONTAINER_IMAGE": "registry.example/bot:1",
    },
    "steps": [
        {"fetch": {"path": "/health"}},  # 0
        {"fetch": {**_job("nokey", 5), "headers": {"content-type": "application/json"}}},  # 1
        {"fetch": _job("first", 5)},  # 2 -> job0, dispatched at once (capacity is free)
        {"fetch": _job("low", 1)},  # 3 -> job1, queued (cap 1)
        {"fetch": _job("high", 9)},  # 4 -> job2, queued
        {"calls": True},  # 5
        {"fetch": {"path": "/api/scheduler/stats", "headers": AUTH}},  # 6
        {"container": {"phase": "succeeded", "exitCode": 0}},  # 7: job0 ends
        {"scheduled": True},  # 8: completes job0, dispatches job2 (best first)
        {"calls": True},  # 9
        {"container": {"phase": "failed", "exitCode": 3, "reason": "bot crashed"}},  # 10
        {"scheduled": True},  # 11: fails job2, dispatches job1
        {"container": {"phase": "succeeded", "exitCode": 0}},  # 12
        {"scheduled": True},  # 13: completes job1
        {"fetch": {"path": "/api/scheduler/jobs/{job0}", "headers": AUTH}},  # 14
        {"fetch": {"path": "/api/scheduler/jobs/{job2}", "headers": AUTH}},  # 15
        {"fetch": {"path": "/api/scheduler/jobs?limit=10", "headers": AUTH}},  # 16
        {"calls": True},  # 17
        {"sql": "SELECT id, status, version FROM jobs ORDER BY priority DESC"},  # 18
        {"fetch": {"path": "/console"}},  # 19: the console, from the build's bundled files
    ],
}


@pytest.fixture(scope="module")
def transcript() -> list[dict[str, Any]]:
    try:
        env = ensure()
    except PyodideUnavailable as exc:
        unavailable(exc)
    command = [env.node, str(RUNNER), str(build_worker()), str(env.home), json.dumps(SCENARIO),
               *map(str, env.wheels)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines and lines[0].get("ready"), done.stdout[-2000:] + done.stderr[-2000:]
    return lines[1:]


def _ids(transcript: list[dict[str, Any]]) -> list[str]:
    return [transcript[i]["body"]["job"]["id"] for i in (2, 3, 4)]


def _starts(step: dict[str, Any]) -> list[str]:
    return [call["name"] for call in step["calls"] if call["path"] == "/start"]


def test_runs_on_pyodide_python(transcript: list[dict[str, Any]]) -> None:
    assert transcript[0]["status"] == 200
    assert transcript[0]["body"]["status"] == "healthy"


def test_http_goes_through_the_asgi_bridge_with_auth(transcript: list[dict[str, Any]]) -> None:
    assert transcript[1]["status"] == 401
    assert transcript[1]["body"]["success"] is False
    for created in transcript[2:5]:
        assert created["status"] == 201, created
        assert created["contentType"] == "application/json"
        assert created["body"]["success"] is True


def test_submit_dispatches_at_once_with_the_bot_env(transcript: list[dict[str, Any]]) -> None:
    first, _low, _high = _ids(transcript)
    assert _starts(transcript[5]) == [first]
    start = next(call for call in transcript[5]["calls"] if call["path"] == "/start")
    env = start["body"]["env"]
    assert env["JOB_ID"] == first
    assert env["MEETING_URL"] == "https://meet.example.com/first"
    assert env["BOT_NAME"] == "first"
    assert json.loads(env["BOT_CONFIG"])["bot_uuid"] == first
    stats = transcript[6]["body"]
    assert stats["runningJobs"] == 1
    assert stats["queueSize"] == 2
    assert stats["maxConcurrentJobs"] == 1


def test_scheduled_polls_and_dispatches_best_first(transcript: list[dict[str, Any]]) -> None:
    first, low, high = _ids(transcript)
    assert transcript[7]["ended"] == [first]
    assert _starts(transcript[9]) == [first, high]  # priority 9 before 1, one at a time
    assert transcript[10]["ended"] == [high]
    assert transcript[12]["ended"] == [low]
    done, crashed = transcript[14]["body"]["job"], transcript[15]["body"]["job"]
    assert (done["id"], done["status"], done["exitCode"]) == (first, "completed", 0)
    assert (crashed["id"], crashed["status"], crashed["exitCode"]) == (high, "failed", 3)
    listed = {job["id"]: job["status"] for job in transcript[16]["body"]["jobs"]}
    assert listed == {first: "completed", low: "completed", high: "failed"}


def test_each_job_started_once_in_its_own_container(transcript: list[dict[str, Any]]) -> None:
    calls = transcript[17]["calls"]
    assert sorted(_starts(transcript[17])) == sorted(_ids(transcript))
    assert all(run["starts"] == 1 for run in transcript[17]["runs"].values())
    assert {call["path"] for call in calls} <= {"/start", "/status", "/stop"}


def test_jobs_are_kept_in_d1(transcript: list[dict[str, Any]]) -> None:
    rows = transcript[18]["results"]
    assert [row["status"] for row in rows] == ["failed", "completed", "completed"]
    assert all(int(row["version"]) >= 3 for row in rows)


def test_the_console_is_served_from_the_bundled_files(transcript: list[dict[str, Any]]) -> None:
    page = transcript[19]
    assert page["status"] == 200 and page["contentType"].startswith("text/html")
    assert "not part of this build" not in page["body"]
    assert 'src="console/assets/main.' in page["body"]  # named by the hash of the bundled file
