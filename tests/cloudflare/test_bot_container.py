"""The bot container Durable Object (infra/cloudflare/src/bot-container.ts) run for real under Node.

The class is the one wrangler bundles for upload (`wrangler deploy --dry-run --outdir`), with the
real @cloudflare/containers `Container` base class; only what workerd provides is a stand-in
(tests/cloudflare/containers_runtime.mjs): the Durable Object state and storage, and the
Containers runtime API (`ctx.container`) with the runtime's error messages. Each scenario plays
the scheduler's protocol (core/backends/cloudflare.py) against one object, in one Node process.

What it proves: a job's container starts once and a repeated start adopts the run; exit codes
arrive through onStop; a start that fails (refused, or the bot dies before it is up) leaves no run,
so the scheduler's find() sees none, retries the job, and the next start is a new run, never the
failed one adopted; a stop is recorded; the run survives the object's eviction.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.ci import unavailable
from tests.cloudflare import toolchain
from tests.cloudflare.toolchain import Toolchain, ToolchainUnavailable

RUNNER = Path(__file__).with_name("run_bot_container.mjs")
NO_INSTANCE = "there is no container instance that can be provided to this durable object"
ENV = {"JOB_ID": "job-1", "MEETING_URL": "https://meet.example.com/a", "BOT_CONFIG": "{}"}

Step = dict[str, Any]


def start(env: dict[str, str] | None = None) -> Step:
    body = {"jobId": "job-1", "env": env or ENV, "maxRuntimeSeconds": 3600}
    return {"fetch": {"method": "POST", "path": "/start", "body": body}}


STATUS: Step = {"fetch": {"method": "GET", "path": "/status"}}
STOP: Step = {"fetch": {"method": "POST", "path": "/stop", "body": {}}}
CONTAINER: Step = {"container": True}
ALARM: Step = {"alarm": True}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Toolchain, Path]:
    try:
        tools = toolchain.ensure()
    except ToolchainUnavailable as exc:
        unavailable(exc)
    outdir = tmp_path_factory.mktemp("bot-container")
    done = subprocess.run(
        [*tools.wrangler, "deploy", "--dry-run", "--outdir", str(outdir)],
        cwd=toolchain.CLOUDFLARE, env=toolchain.wrangler_env(), capture_output=True, text=True,
        timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return tools, outdir / "bot-container.js"


def play(bundle: tuple[Toolchain, Path], *steps: Step) -> list[dict[str, Any]]:
    tools, script = bundle
    command = [str(tools.node), "--disable-warning=ExperimentalWarning", str(RUNNER),
               str(script), json.dumps({"steps": list(steps)})]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(steps), done.stdout + done.stderr
    return lines


def test_starts_once_and_a_repeated_start_adopts_the_run(bundle: tuple[Toolchain, Path]) -> None:
    before, first, again, status, container = play(bundle, STATUS, start(), start(), STATUS,
                                                   CONTAINER)  # fmt: skip
    assert before["status"] == 404
    assert first["status"] == 200
    assert first["body"]["phase"] == "running"
    assert again["body"] == first["body"] == status["body"]
    assert [s["env"] for s in container["starts"]] == [ENV]
    assert container["running"] is True


@pytest.mark.parametrize(
    ("code", "phase", "reason"), [(0, "succeeded", None), (3, "failed", "exit code 3 (exit)")]
)
def test_the_exit_code_arrives_through_on_stop(
    bundle: tuple[Toolchain, Path], code: int, phase: str, reason: str | None
) -> None:
    *_, status = play(bundle, start(), {"exit": code}, ALARM, STATUS)
    run = status["body"]
    assert (run["phase"], run["exitCode"], run["reason"]) == (phase, code, reason)
    assert run["finishedAt"] is not None


def test_a_refused_start_is_retried_as_a_new_run(bundle: tuple[Toolchain, Path]) -> None:
    retry_env = {**ENV, "BOT_NAME": "second try"}
    _, failed, found, retried, status, container = play(
        bundle, {"failNextStart": NO_INSTANCE}, start(), STATUS, start(retry_env), STATUS,
        CONTAINER,
    )  # fmt: skip
    assert failed["status"] == 502  # the backend raises BackendError: the scheduler asks find()
    assert failed["body"]["error"] == "start_failed"
    assert NO_INSTANCE in failed["body"]["reason"]
    assert found["status"] == 404  # find() -> None: the job goes back to the queue
    assert NO_INSTANCE in found["body"]["lastStartFailure"]["reason"]
    assert retried["status"] == 200
    assert retried["body"]["phase"] == "running"  # a new run, not the failed one adopted
    assert status["body"] == retried["body"]
    assert [s["env"] for s in container["starts"]] == [retry_env]


def test_a_bot_that_dies_while_starting_is_retried_as_a_new_run(
    bundle: tuple[Toolchain, Path],
) -> None:
    _, failed, found, retried, container = play(
        bundle, {"crashNextStart": 1}, start(), STATUS, start(), CONTAINER
    )
    assert failed["status"] == 502
    assert "exit code: 1" in failed["body"]["reason"]
    assert found["status"] == 404
    assert retried["status"] == 200
    assert retried["body"]["phase"] == "running"
    assert retried["body"]["reason"] is None
    assert len(container["starts"]) == 2
    assert container["running"] is True


def test_a_start_cut_short_by_an_eviction_is_no_run(bundle: tuple[Toolchain, Path]) -> None:
    pending = {"jobId": "job-1", "phase": "pending", "exitCode": None, "reason": None,
               "startedAt": "2026-01-01T00:00:00.000Z", "finishedAt": None}  # fmt: skip
    _, found, retried, container = play(
        bundle, {"store": {"key": "run", "value": pending}}, STATUS, start(), CONTAINER
    )
    assert found["status"] == 404
    assert retried["status"] == 200
    assert retried["body"]["startedAt"] != pending["startedAt"]
    assert len(container["starts"]) == 1


def test_stop_records_the_run_as_stopped(bundle: tuple[Toolchain, Path]) -> None:
    _, stopped, _, _, status, container = play(
        bundle, start(), STOP, {"exit": 143}, ALARM, STATUS, CONTAINER
    )
    assert stopped["status"] == 200
    assert (stopped["body"]["phase"], stopped["body"]["reason"]) == ("failed", "stopped")
    assert status["body"]["reason"] == "stopped"  # the exit that follows does not overwrite it
    assert container["signals"] == [15]  # SIGTERM


def test_the_run_survives_an_eviction(bundle: tuple[Toolchain, Path]) -> None:
    first, _, after, again, _, _, done, container = play(
        bundle, start(), {"reset": True}, STATUS, start(), {"exit": 0}, ALARM, STATUS, CONTAINER
    )
    assert after["body"] == again["body"] == first["body"]
    assert done["body"]["phase"] == "succeeded"
    assert len(container["starts"]) == 1


def test_unknown_routes_and_stops_of_unknown_runs(bundle: tuple[Toolchain, Path]) -> None:
    route, stop = play(bundle, {"fetch": {"method": "GET", "path": "/nope"}}, STOP)
    assert route["status"] == 404
    assert route["body"]["error"] == "no_route"
    assert (stop["status"], stop["body"]) == (200, {})
