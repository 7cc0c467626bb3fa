"""A real `botsched serve` for the console's browser test: the SQLite store, the process backend,
the demo bot (a long run when its botName says `long`, else half a second), two tenants' keys
and an admin key, one bot at a time."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.processes import ServeProcess, free_port, server_env

KEY_A = "console-key-acme-0001"
KEY_B = "console-key-globex-0002"
ADMIN_KEY = "console-admin-key-0003"
JOBS = "/api/scheduler/jobs"
FINAL = ("completed", "failed", "cancelled")
LONG_RUN_SECONDS = 60
SHORT_RUN_SECONDS = 0.5


def bot_command() -> str:
    """The demo bot, its duration chosen from the job's botName (BOT_NAME in its environment)."""
    choose = (
        f'case "$BOT_NAME" in *long*) export DEMO_BOT_SECONDS={LONG_RUN_SECONDS};; '
        f'*) export DEMO_BOT_SECONDS={SHORT_RUN_SECONDS};; esac; exec "$@"'
    )
    return shlex.join(["sh", "-c", choose, "sh", sys.executable, "-m", "core.demo_bot"])


class Server(ServeProcess):
    def __init__(self, data_dir: Path) -> None:
        port = free_port()
        env = {
            **server_env(data_dir, port, bot_command()),
            "SCHEDULER_API_KEYS": f"{KEY_A}:acme,{KEY_B}:globex",
            "SCHEDULER_ADMIN_KEYS": ADMIN_KEY,
            "SCHEDULER_MAX_CONCURRENT_JOBS": "1",
        }
        argv = [sys.executable, "-m", "core.cli", "serve", "--own-public-url"]
        super().__init__(data_dir, env, port, argv)

    def submit(self, key: str, **spec: Any) -> str:
        response = self.http.post(JOBS, json=spec, headers={"X-API-Key": key})
        assert response.status_code == 201, response.text
        job_id: str = response.json()["job"]["id"]
        return job_id

    def job(self, job_id: str, key: str = ADMIN_KEY) -> dict[str, Any]:
        response = self.http.get(f"{JOBS}/{job_id}", headers={"X-API-Key": key})
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()["job"]
        return job

    def jobs(self, key: str = ADMIN_KEY) -> list[dict[str, Any]]:
        response = self.http.get(JOBS, params={"limit": 200}, headers={"X-API-Key": key})
        assert response.status_code == 200, response.text
        jobs: list[dict[str, Any]] = response.json()["jobs"]
        return jobs

    def wait_until(self, job_id: str, states: tuple[str, ...], timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        job = self.job(job_id)
        while job["status"] not in states:
            if time.monotonic() > deadline:
                pytest.fail(f"job {job_id} never reached {states}: {job}\n{self.log()}")
            time.sleep(0.05)
            job = self.job(job_id)
        return job
