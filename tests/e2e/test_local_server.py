"""The real local server (`python -m handlers.local`) with the process backend, the SQLite store
and the demo bot, driven over HTTP and through the `botsched` CLI, each in its own process."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.backends.process import _is_run
from core.demo_bot import LABEL
from tests.processes import clean_env, free_port, server_env, wait_healthy

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
JOBS = "/api/scheduler/jobs"
FINAL = ("completed", "failed", "cancelled")
MEETING = "https://meet.google.com/e2e-test-run"


class Server:
    """One `python -m handlers.local` process on a data directory."""

    def __init__(self, data_dir: Path, bot_seconds: float, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        bot = ["env", f"DEMO_BOT_SECONDS={bot_seconds}", sys.executable, "-m", "core.demo_bot"]
        self.env = server_env(data_dir, self.port, shlex.join(bot))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "server.log"
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def start(self, timeout: float = 20.0) -> Server:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "handlers.local"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        failed = wait_healthy(self.proc, self.healthy, timeout)
        if failed:
            pytest.fail(f"server {failed}:\n{self.log()}")
        return self

    def healthy(self) -> bool:
        return self.http.get("/health").status_code == 200

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not end in time; returns its exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def kill_bots(self) -> None:
        """Kill the process groups of bots this server started that still run."""
        for pid_file in (self.data_dir / "runs").glob("*/pid"):
            try:
                pid = int(pid_file.read_text())
            except (OSError, ValueError):
                continue
            if _is_run(pid, pid_file.with_name("exit")):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)

    def close(self) -> None:
        self.stop()
        self.kill_bots()
        self.http.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    # -- the API ---------------------------------------------------------------------------

    def submit(self, **spec: Any) -> dict[str, Any]:
        spec.setdefault("meetingUrl", MEETING)
        response = self.http.post(JOBS, json=spec)
        assert response.status_code == 201, response.text
        job: dict[str, Any] = response.json()["job"]
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"{JOBS}/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()["job"]
        return job

    def wait_until(self, job_id: str, states: tuple[str, ...], timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if not seen or seen[-1] != job["status"]:
                seen.append(job["status"])
            if job["status"] in states:
                return job
            time.sleep(0.05)
        pytest.fail(f"job {job_id} went {seen}, never {states}:\n{self.log()}")

    def botsched(self, *argv: str, timeout: float = 40.0) -> subprocess.CompletedProcess[str]:
        env = {**clean_env(), "BOTSCHED_URL": self.url}
        return subprocess.run(
            [sys.executable, "-m", "core.cli", *argv],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


MakeServer = Callable[..., Server]


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[MakeServer]:
    servers: list[Server] = []

    def make(bot_seconds: float, data_dir: Path | None = None, port: int | None = None) -> Server:
        data = data_dir or tmp_path / f"data{len(servers)}"
        data.mkdir(exist_ok=True)
        server = Server(data, bot_seconds, port)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.close()


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose demo bots take half a second."""
    server = Server(tmp_path_factory.mktemp("fast"), bot_seconds=0.5)
    try:
        yield server.start()
    finally:
        server.close()


def test_a_job_runs_to_completed(fast: Server) -> None:
    job = fast.submit(botName="E2E Bot")
    assert job["status"] == "queued"
    done = fast.wait_until(job["id"], FINAL)
    assert done["status"] == "completed", done
    assert done["exitCode"] == 0
    assert done["startedAt"] and done["completedAt"]
    logs = fast.http.get(f"{JOBS}/{job['id']}/logs")
    assert logs.status_code == 200
    text = logs.json()["logs"]
    assert LABEL in text
    assert f"meeting_url: {MEETING}" in text
    assert "bot_name: E2E Bot" in text
    assert f"JOB_ID: {job['id']}" in text
    stats = fast.http.get("/api/scheduler/stats").json()
    assert stats["completedJobs"] >= 1 and stats["platform"] == "process"


def test_a_failing_bot_fails_the_job_with_its_exit_code(fast: Server) -> None:
    job = fast.submit(config={"demo_exit_code": 3})
    done = fast.wait_until(job["id"], FINAL)
    assert done["status"] == "failed", done
    assert done["exitCode"] == 3
    assert "exit code 3" in done["reason"]


def test_the_seed_meetings_route_runs_the_bot_with_its_config(fast: Server) -> None:
    body = {"meeting_url": MEETING + "-seed", "bot_name": "Seed", "demo_exit_code": 4}
    response = fast.http.post("/api/scheduler/meetings", json=body)
    assert response.status_code == 201, response.text
    done = fast.wait_until(response.json()["job"]["id"], FINAL)
    assert (done["status"], done["exitCode"]) == ("failed", 4)


def test_cli_submit_wait_status_list_stats_logs(fast: Server) -> None:
    submitted = fast.botsched(
        "submit",
        "--meeting-url",
        MEETING + "-cli",
        "--bot-name",
        "CLI",
        "--wait",
        "--timeout",
        "30",
    )
    assert submitted.returncode == 0, submitted.stderr + submitted.stdout
    out = submitted.stdout
    job_id = re.search(r"^submitted job (\S+)$", out, re.MULTILINE)
    assert job_id, out
    job_id_text = job_id.group(1)
    progress = re.findall(r"^\[\s*\d+s\] (.+)$", out, re.MULTILINE)
    assert progress and progress[-1].split(" -> ")[-1].startswith("completed"), out
    assert " -> " in progress[-1], out  # it saw the job before its end too
    states = progress[-1].split(" (")[0].split(" -> ")
    assert set(states) <= {"queued", "provisioning", "running", "completed"}
    final = json.loads(out[out.index("{") :])
    assert (final["id"], final["status"], final["exitCode"]) == (job_id_text, "completed", 0)

    status = fast.botsched("status", job_id_text)
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert (shown["id"], shown["status"], shown["botName"]) == (job_id_text, "completed", "CLI")

    listing = fast.botsched("list", "--status", "completed")
    assert listing.returncode == 0, listing.stderr
    assert any(
        line.split()[:2] == [job_id_text, "completed"] for line in listing.stdout.splitlines()
    ), listing.stdout

    stats = fast.botsched("stats")
    assert stats.returncode == 0, stats.stderr
    numbers = json.loads(stats.stdout)
    assert numbers["completedJobs"] >= 1
    assert numbers["maxConcurrentJobs"] == 10
    assert {"queueSize", "runningJobs"} <= numbers.keys()

    logs = fast.botsched("logs", job_id_text)
    assert logs.returncode == 0, logs.stderr
    assert LABEL in logs.stdout and MEETING + "-cli" in logs.stdout


def test_cli_errors_from_the_server(fast: Server) -> None:
    missing = fast.botsched("status", "no-such-job")
    assert missing.returncode == 1
    assert missing.stderr == "botsched: not_found: job no-such-job not found\n"
    bad = fast.botsched("submit", "--meeting-url", "ftp://x")
    assert bad.returncode == 1
    assert "validation_error" in bad.stderr and "meetingUrl" in bad.stderr


def test_cli_cancel_stops_a_running_bot(make_server: MakeServer) -> None:
    server = make_server(bot_seconds=60)
    job = server.submit()
    server.wait_until(job["id"], ("running",), timeout=15)
    pid_file = server.data_dir / "runs" / job["id"] / "pid"
    pid = int(pid_file.read_text())
    assert _is_run(pid, pid_file.with_name("exit"))

    cancelled = server.botsched("cancel", job["id"])
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["status"] == "cancelled"
    assert server.job(job["id"])["status"] == "cancelled"
    assert not _is_run(pid, pid_file.with_name("exit"))
    logs = server.http.get(f"{JOBS}/{job['id']}/logs").json()["logs"]
    assert "got SIGTERM" in logs

    again = server.botsched("cancel", job["id"])
    assert again.returncode == 1
    assert "job_finished" in again.stderr
    time.sleep(0.5)  # a few drains later it is still cancelled
    assert server.job(job["id"])["status"] == "cancelled"


def test_a_running_job_survives_a_server_restart(make_server: MakeServer) -> None:
    first = make_server(bot_seconds=3)
    job = first.submit()
    first.wait_until(job["id"], ("running",), timeout=15)
    # SIGTERM: a clean shutdown (uvicorn re-raises the signal once it has shut down)
    assert first.stop() in (0, -signal.SIGTERM), first.log()
    assert "Application shutdown complete" in first.log()

    pid_file = first.data_dir / "runs" / job["id"] / "pid"
    assert _is_run(int(pid_file.read_text()), pid_file.with_name("exit"))  # the bot lives on

    second = make_server(bot_seconds=3, data_dir=first.data_dir)
    assert second.job(job["id"])["status"] in ("running", "completed")  # never re-queued
    done = second.wait_until(job["id"], FINAL, timeout=30)
    assert (done["status"], done["exitCode"]) == ("completed", 0), done
    assert done["attempts"] == 1
    logs = second.http.get(f"{JOBS}/{job['id']}/logs").json()["logs"]
    assert logs.count(LABEL) == 1  # one bot, adopted, not started again
    assert "done, exit code 0" in logs
