"""The bot's own status, end to end: a real `botsched serve` process (process backend, SQLite,
the demo bot) whose bots report `bot.status_change` to its /api/scheduler/bot-status, as the
meet-teams bot does; the reports become the job's `botStatus` and `bot.*` events among its
`job.*` events, and the token the bot reports with shows nowhere but in the bot's config."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.processes import ServeProcess, clean_env, free_port, server_env

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
JOBS = "/api/scheduler/jobs"
FINAL = ("completed", "failed", "cancelled")
MEETING = "https://meet.google.com/e2e-bot-status"
BOT_EVENTS = [
    "bot.joining_call",
    "bot.in_waiting_room",
    "bot.in_call_not_recording",
    "bot.in_call_recording",
    "bot.call_ended",
]


class Server(ServeProcess):
    """`botsched serve` on a data directory. Its bot keeps the config it was given in
    `configs/<job id>.json` (to know the token), then runs the demo bot."""

    def __init__(self, data_dir: Path, bot_seconds: float, *argv: str, **env: str) -> None:
        self.configs = data_dir / "configs"
        self.configs.mkdir(parents=True)
        port = free_port()
        keep = f'printenv BOT_CONFIG > "{self.configs}/$JOB_ID.json"; exec "$@"'
        demo = [sys.executable, "-m", "core.demo_bot"]
        bot = ["env", f"DEMO_BOT_SECONDS={bot_seconds}", "sh", "-c", keep, "sh", *demo]
        served = {**server_env(data_dir, port, shlex.join(bot)), **env}
        super().__init__(data_dir, served, port, [sys.executable, "-m", "core.cli", "serve", *argv])

    def submit(self, **spec: Any) -> dict[str, Any]:
        response = self.http.post(JOBS, json={"meetingUrl": MEETING, **spec})
        assert response.status_code == 201, response.text
        job: dict[str, Any] = response.json()["job"]
        return job

    def get(self, path: str) -> Any:
        response = self.http.get(path)
        assert response.status_code == 200, response.text
        return response.json()

    def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self.get(f"{JOBS}/{job_id}")["job"]
        return job

    def wait_until(self, job_id: str, states: tuple[str, ...], timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in states:
                return job
            time.sleep(0.05)
        pytest.fail(f"job {job_id} never reached {states}: {job}\n{self.log()[-5000:]}")

    def events(self, job_id: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.get(f"{JOBS}/{job_id}/events")["events"]
        return events

    def botsched(self, *argv: str) -> subprocess.CompletedProcess[str]:
        env = {**clean_env(), "BOTSCHED_URL": self.url}
        done = subprocess.run(
            [sys.executable, "-m", "core.cli", *argv],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr + done.stdout
        return done

    def bot_config(self, job_id: str) -> dict[str, Any]:
        config: dict[str, Any] = json.loads((self.configs / f"{job_id}.json").read_text())
        return config


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Bots of a second, reporting to the server: SCHEDULER_PUBLIC_URL is its own address."""
    data_dir = tmp_path_factory.mktemp("bot-status")
    made = Server(data_dir, 1.0, SCHEDULER_WEBHOOK_ALLOW_PRIVATE="true")
    made.env["SCHEDULER_PUBLIC_URL"] = made.url
    try:
        yield made.start()
    finally:
        made.close()


class Receiver:
    """A webhook endpoint on loopback: answers 204, keeps each event's type and id."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []
        got = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                got.append((body["type"], body["id"]))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 15.0) -> list[tuple[str, str]]:
        deadline = time.monotonic() + timeout
        while len(self.got) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.got

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def test_the_bots_statuses_arrive_in_order_among_the_jobs_events(server: Server) -> None:
    job = server.submit(botName="Status Bot")
    done = server.wait_until(job["id"], FINAL)
    assert (done["status"], done["exitCode"]) == ("completed", 0), done
    assert done["botStatus"] == "call_ended"
    assert done["startedAt"] <= done["botStatusAt"] <= done["completedAt"]

    events = server.events(job["id"])
    kinds = types(events)
    assert [kind for kind in kinds if kind.startswith("bot.")] == BOT_EVENTS, kinds
    assert [kind for kind in kinds if kind.startswith("job.")] == [
        "job.queued",
        "job.provisioning",
        "job.running",
        "job.completed",
    ], kinds
    # the bot is given its token when it is started, after the claim (here job.running is
    # written before its first report arrives, but nothing orders the two); it reports
    # call_ended (and is answered) before it exits, so before the drain that sees it gone
    assert kinds.index("job.provisioning") < kinds.index("bot.joining_call")
    assert kinds.index("bot.call_ended") == kinds.index("job.completed") - 1
    assert [event["id"] for event in events] == sorted(event["id"] for event in events)
    for event in events:
        if event["type"].startswith("bot."):
            assert event["data"]["botStatus"] == event["type"].removeprefix("bot.")
            assert event["data"]["status"] in ("provisioning", "running")

    assert_token_hidden(server, job["id"])


def assert_token_hidden(server: Server, job_id: str) -> None:
    """The bot was given its own token; the API, the bot's log and the server's log never
    show it."""
    config = server.bot_config(job_id)
    assert config["bot_id"] == job_id
    assert config["bots_webhook_url"] == f"{server.url}/api/scheduler/bot-status"
    token = config["bots_api_key"]
    assert len(token) >= 32
    shown = {
        "job": json.dumps(server.get(f"{JOBS}/{job_id}")),
        "list": json.dumps(server.get(JOBS)),
        "events": json.dumps(server.events(job_id)),
        "bot log": server.get(f"{JOBS}/{job_id}/logs")["logs"],
        "server log": server.log(),
    }
    assert [where for where, text in shown.items() if token in text] == []
    assert "bots_api_key" not in shown["job"]


def test_a_job_with_its_own_bots_webhook_url_keeps_it(server: Server) -> None:
    elsewhere = f"http://127.0.0.1:{free_port()}/their/bot-status"  # nothing listens there
    own = {"bots_webhook_url": elsewhere, "bot_id": "their-bot-7", "bots_api_key": "their-key"}
    job = server.submit(config=own)
    done = server.wait_until(job["id"], FINAL)
    assert (done["status"], done["exitCode"]) == ("completed", 0), done
    assert done["botStatus"] is None and done["botStatusAt"] is None
    assert done["config"] == own

    config = server.bot_config(job["id"])
    assert {key: config[key] for key in own} == own  # given to the bot untouched
    kinds = types(server.events(job["id"]))
    assert kinds == ["job.queued", "job.provisioning", "job.running", "job.completed"]
    logs = server.get(f"{JOBS}/{job['id']}/logs")["logs"]
    assert f"demo bot: cannot report joining_call to {elsewhere}" in logs  # it tried there
    assert "demo bot: status call_ended" in logs


def test_a_cancelled_bot_reports_call_ended_and_the_job_is_cancelled(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", 60.0, "--own-public-url")
    try:
        server.start()
        job = server.submit()
        deadline = time.monotonic() + 15
        while server.job(job["id"])["botStatus"] != "in_call_recording":
            assert time.monotonic() < deadline, server.job(job["id"])
            time.sleep(0.05)
        response = server.http.delete(f"{JOBS}/{job['id']}")
        assert response.status_code == 200, response.text
        # the bot's call_ended report, written while the stop waits for the bot, makes the
        # cancel's own final write lose its compare-and-set: the answer is then `stopping`,
        # and the next drain settles the job
        assert response.json()["job"]["status"] in ("stopping", "cancelled")
        done = server.wait_until(job["id"], FINAL, timeout=15)
        assert done["status"] == "cancelled", done
        assert done["botStatus"] == "call_ended"
        kinds = types(server.events(job["id"]))
        assert kinds.index("job.stopping") < kinds.index("bot.call_ended")
        assert kinds.index("bot.call_ended") < kinds.index("job.cancelled")
    finally:
        server.close()


def test_serve_own_public_url_is_what_make_run_does(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", 0.3, "--own-public-url")
    try:
        server.start()
        job = server.submit()
        done = server.wait_until(job["id"], FINAL)
        assert (done["status"], done["botStatus"]) == ("completed", "call_ended"), done
        assert f"bots report their status to {server.url}" in server.log()
    finally:
        server.close()


def test_cli_events_and_webhooks_against_the_server(server: Server) -> None:
    receiver = Receiver()
    try:
        argv = ["webhooks", "create", receiver.url, "--event", "bot.call_ended"]
        created = server.botsched(*argv, "--event", "job.completed", "--description", "e2e")
        hook = json.loads(created.stdout)
        hook_id = hook["webhook"]["id"]
        assert hook["secret"].startswith("whsec_") and "not shown again" in created.stderr
        listed = server.botsched("webhooks", "list").stdout.splitlines()
        assert [hook_id, "enabled", "job.completed,bot.call_ended", receiver.url] in [
            line.split() for line in listed
        ]

        submitted = server.botsched("submit", "--meeting-url", MEETING, "--wait")
        job_id = submitted.stdout.split()[2]
        got = receiver.wait_for(2)
        assert [kind for kind, _ in got] == ["bot.call_ended", "job.completed"], got

        timeline = server.botsched("events", job_id).stdout.splitlines()
        assert timeline[0].split() == ["TIME", "EVENT", "STATUS", "BOT"]
        rows = [line.split() for line in timeline[1:]]
        assert [row[1] for row in rows if row[1].startswith("bot.")] == BOT_EVENTS
        assert rows[-1][1:] == ["job.completed", "completed", "call_ended"]

        deliveries = server.botsched("webhooks", "deliveries", hook_id).stdout.splitlines()
        attempts = [line.split() for line in deliveries[1:]]  # newest first
        assert [(row[1], row[2], row[3], row[4]) for row in attempts] == [
            ("job.completed", got[1][1], "1", "204"),
            ("bot.call_ended", got[0][1], "1", "204"),
        ]
        assert all(row[5].isdigit() and row[6] == "-" for row in attempts)

        replayed = json.loads(server.botsched("webhooks", "replay", hook_id, got[0][1]).stdout)
        assert replayed["eventId"] == got[0][1]
        assert receiver.wait_for(3)[2] == got[0]
        server.botsched("webhooks", "delete", hook_id)
        assert hook_id not in server.botsched("webhooks", "list").stdout
    finally:
        receiver.close()
