"""Bot-minute budgets in the production topology, measured from the bots' side.

Real: `botsched serve` processes (the installed entry point, as deployed), the SQLite store on
one file shared by them (and a private PostgreSQL server: tests/postgres_env.py), HTTP between
the test and the servers, the process backend, and tests/stress/bot.py as the bot, which appends
its own start and end (`term` when it got SIGTERM) to a log: how long each bot ran is read from
that log, not from the store. The ledger is read from the store the servers write
(core/budget_ledger.py), opened by the test as one more process. Nothing is a double.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.budget_ledger import KIND as LEDGER
from core.budget_ledger import Head
from core.budgets import chain
from core.config import Settings
from core.runtime import build_store
from tests.postgres_env import PostgresEnv
from tests.stress.analysis import BotRun, parse_log
from tests.stress.harness import Layout, Scenario, common_env, finish_bots, postgres_env
from tests.stress.procs import ROOT, Fleet, Proc, botsched, make_fleet

pytestmark = pytest.mark.stress

JOBS = "/api/scheduler/jobs"
BUDGETS = "/api/scheduler/budgets"
URL = "https://meet.example.com/budget"  # no platform: jobs never share a bot
ADMIN_KEY = "budget-admin-key-0123"
ADMIN = {"X-API-Key": ADMIN_KEY}
EXPECTED_S = 2.0  # SCHEDULER_EXPECTED_RUN_SECONDS: what a job without maxRuntimeSeconds is charged
POLL_S = 0.2  # SCHEDULER_POLLING_INTERVAL
GRACE_S = 2.0  # BOT_STOP_GRACE_SECONDS
EXHAUST_S = 6.0  # the day budget of the mid-run tenants: 0.1 minutes
SPREAD_S = 15.0  # the day budget of the overspend tenant: 0.25 minutes
# tenants t0..t3 (keys from Scenario.tenant_keys): t0 races, t1 is stopped, t2 finishes, t3 spreads
BUDGETS_ENV = {
    "t0": {"day": 10},
    "t1": {"day": EXHAUST_S / 60, "onExhausted": "stop"},
    "t2": {"day": EXHAUST_S / 60, "onExhausted": "finish"},
    "t3": {"day": SPREAD_S / 60},
}
SCENARIO = Scenario(
    tenants=4,
    cap=20,
    polling_ms=int(POLL_S * 1000),
    stop_grace=GRACE_S,
    extra_env={
        "SCHEDULER_BUDGETS": json.dumps(BUDGETS_ENV),
        "SCHEDULER_ADMIN_KEYS": ADMIN_KEY,
        "SCHEDULER_EXPECTED_RUN_SECONDS": str(EXPECTED_S),
    },
)
KEYS = SCENARIO.tenant_keys()


@asynccontextmanager
async def servers(
    tmp_path: Path, count: int, store_env: dict[str, str]
) -> AsyncIterator[tuple[list[Proc], Layout, dict[str, str]]]:
    """`count` healthy `botsched serve` processes on one store: their env, stopped at the end
    with every bot they started."""
    layout = Layout(tmp_path).make()
    env = common_env(SCENARIO, layout, store_env)
    fleet = make_fleet(count, 0, lambda index, command: env, layout.logs, seed=7)
    try:
        await fleet.start()
        yield fleet.servers, layout, env
    finally:
        await fleet.stop()
        finish_bots(layout)


async def ledger_head(env: dict[str, str], tenant: str, moment: datetime) -> tuple[Head, list[Any]]:
    """The head of `tenant`'s day chain of `moment`, and its entries, as the store holds them."""
    store = build_store(Settings.from_env(env))
    await store.open()
    try:
        key = chain(tenant, "day", moment)
        entries = await store.scan_records(LEDGER, key, 1000)
    finally:
        await store.close()
    last = entries[-1].data if entries else {"charged": 0.0, "spent": 0.0}
    return Head(key, len(entries), last["charged"], last["spent"]), entries


def job(tenant: str, **spec: Any) -> tuple[dict[str, Any], dict[str, str]]:
    return {"meetingUrl": URL, **spec}, {"X-API-Key": KEYS[tenant]}


async def post(http: httpx.AsyncClient, server: Proc, tenant: str, **spec: Any) -> httpx.Response:
    body, headers = job(tenant, **spec)
    return await http.post(server.url + JOBS, json=body, headers=headers)


# -- b: submits racing for the last minutes ------------------------------------------------


async def race(tmp_path: Path, store_env: dict[str, str]) -> None:
    """40 parallel POSTs of 1-minute jobs, split over two servers, for a 10-minute day: exactly
    10 are admitted, all others refused with 402 and Retry-After; the ledger holds exactly the
    admitted jobs' charges; a cancel gives a minute back, and one more submit is admitted."""
    join_at = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()  # nothing starts
    spec = {"joinAt": join_at, "maxRuntimeSeconds": 60}
    async with servers(tmp_path, 2, store_env) as (procs, layout, env):
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            answers = await asyncio.gather(
                *(post(http, procs[index % 2], "t0", **spec) for index in range(40))
            )
            admitted = [r.json()["job"]["id"] for r in answers if r.status_code == 201]
            refused = [r for r in answers if r.status_code == 402]
            assert (len(admitted), len(refused)) == (10, 30), [r.text for r in answers]
            for response in refused:
                body = response.json()
                assert (body["error"], body["period"], body["requiredMinutes"]) == (
                    "budget_exceeded",
                    "day",
                    1.0,
                )
                assert response.headers["retry-after"] == str(body["retryAfter"])
            head, entries = await ledger_head(env, "t0", datetime.fromisoformat(join_at))
            assert (head.seq, head.charged, head.spent) == (10, 10.0, 0.0)
            assert sorted(entry.data["jobId"] for entry in entries) == sorted(admitted)
            assert {entry.data["chargedMinutes"] for entry in entries} == {1.0}
            cancel = await http.delete(procs[1].url + f"{JOBS}/{admitted[0]}", headers=job("t0")[1])
            assert cancel.json()["job"]["status"] == "cancelled"
            assert (await post(http, procs[0], "t0", **spec)).status_code == 201
            assert (await post(http, procs[1], "t0", **spec)).status_code == 402
            head, _ = await ledger_head(env, "t0", datetime.fromisoformat(join_at))
            assert (head.seq, head.charged) == (12, 10.0)  # -1 by the cancel, +1 by the submit
        assert parse_log(layout.bot_log) == []  # and no bot started


async def test_racing_submits_never_charge_past_the_limit_on_sqlite(tmp_path: Path) -> None:
    await race(tmp_path, {})


async def test_racing_submits_never_charge_past_the_limit_on_postgres(
    tmp_path: Path, postgres: PostgresEnv
) -> None:
    await race(tmp_path, postgres_env(postgres.fresh_url()))


# -- c, d: one server, bots that run past their charge ---------------------------------------


class Server:
    """One `botsched serve` (SQLite, the process backend, the stress bot) for the module."""

    def __init__(self, proc: Proc, layout: Layout, env: dict[str, str]) -> None:
        self.proc, self.layout, self.env = proc, layout, env
        self.http = httpx.Client(base_url=proc.url, timeout=30)

    def submit(self, tenant: str, bot_seconds: float, **spec: Any) -> httpx.Response:
        body, headers = job(tenant, config={"stress_seconds": str(bot_seconds)}, **spec)
        return self.http.post(JOBS, json=body, headers=headers)

    def final(self, job_id: str, tenant: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found: dict[str, Any] = self.http.get(
                f"{JOBS}/{job_id}", headers=job(tenant)[1]
            ).json()["job"]
            if found["status"] in ("completed", "failed", "cancelled"):
                return found
            time.sleep(0.1)
        pytest.fail(f"job {job_id} not final after {timeout}s: {found}\n{self.proc.log_tail()}")

    def run_of(self, job_id: str, timeout: float = 5.0) -> BotRun:
        """The job's one bot, once the log has its end."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = [run for run in parse_log(self.layout.bot_log) if run.job_id == job_id]
            if runs and runs[0].end is not None:
                assert len(runs) == 1, runs
                return runs[0]
            time.sleep(0.05)
        pytest.fail(f"the bot of {job_id} left no end in the log")

    def events(self, job_id: str, tenant: str) -> list[dict[str, Any]]:
        answer = self.http.get(f"{JOBS}/{job_id}/events", headers=job(tenant)[1])
        events: list[dict[str, Any]] = answer.json()["events"]
        return events


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    layout = Layout(tmp_path_factory.mktemp("budgets")).make()
    env = common_env(SCENARIO, layout, {})
    fleet: Fleet = make_fleet(1, 0, lambda index, command: env, layout.logs, seed=8)
    try:
        asyncio.run(fleet.start())
        yield Server(fleet.servers[0], layout, env)
    finally:
        asyncio.run(fleet.stop())
        finish_bots(layout)


async def test_a_bot_is_stopped_when_its_tenants_budget_runs_out(server: Server) -> None:
    """t1 (`stop`, 6 s a day), one job charged 2 s (no maxRuntimeSeconds), a bot of 60 s: the
    budget runs out 6 s into the run, and the bot's own log shows its SIGTERM right after."""
    submitted = server.submit("t1", 60)
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["job"]["id"]
    ended = server.final(job_id, "t1")
    assert (ended["status"], ended["reason"]) == ("failed", "budget_exhausted"), ended
    failed = [e for e in server.events(job_id, "t1") if e["type"] == "job.failed"]
    assert [e["data"]["reason"] for e in failed] == ["budget_exhausted"]
    run = server.run_of(job_id)
    ran = run.end - run.start  # type: ignore[operator]
    assert run.terminated, "the bot was not sent SIGTERM"
    assert EXHAUST_S - 1.0 <= ran <= EXHAUST_S + EXPECTED_S + POLL_S + GRACE_S, ran
    head, _ = await ledger_head(server.env, "t1", datetime.fromtimestamp(run.start, UTC))
    assert head.charged == head.spent  # settled: nothing held
    assert abs(head.spent * 60 - ran) < 1.0, (head, ran)
    refused = server.submit("t1", 1)
    assert (refused.status_code, refused.json()["remainingMinutes"]) == (402, 0), refused.text


async def test_a_bot_finishes_when_its_tenants_policy_is_finish(server: Server) -> None:
    """t2 (`finish`, 6 s a day), one job charged 2 s, a bot of 9 s: it runs to its end past the
    budget (exit 0, job completed), and the ledger charges what it really ran."""
    submitted = server.submit("t2", 9)
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["job"]["id"]
    ended = server.final(job_id, "t2")
    assert (ended["status"], ended["exitCode"]) == ("completed", 0), ended
    run = server.run_of(job_id)
    ran = run.end - run.start  # type: ignore[operator]
    assert not run.terminated and ran >= 9.0
    head, _ = await ledger_head(server.env, "t2", datetime.fromtimestamp(run.start, UTC))
    assert head.charged == head.spent
    assert abs(head.spent * 60 - ran) < 1.0, (head, ran)  # from the bot's log, not the store's


async def test_parallel_bots_overspend_at_most_a_job_and_a_poll_each(server: Server) -> None:
    """t3 (`stop`, 15 s a day), six jobs at once, each charged 2 s (12 s), bots of 60 s: past
    their charges they share the 3 s left, and are stopped once their runs add up to the
    budget. From the bots' own log: the tenant's bot-seconds stay within the budget plus one
    job's expected seconds plus, per bot, a polling interval and the stop's slack."""
    submitted = [server.submit("t3", 60) for _ in range(6)]
    assert [r.status_code for r in submitted] == [201] * 6, [r.text for r in submitted]
    assert server.submit("t3", 1, maxRuntimeSeconds=4).status_code == 402  # 12 + 4 > 15
    ids = [r.json()["job"]["id"] for r in submitted]
    ended = [server.final(job_id, "t3") for job_id in ids]
    assert {(e["status"], e["reason"]) for e in ended} == {("failed", "budget_exhausted")}
    runs = [server.run_of(job_id) for job_id in ids]
    total = sum(run.end - run.start for run in runs)  # type: ignore[operator]
    slack_per_bot = POLL_S + 0.5
    assert all(run.terminated for run in runs)
    assert SPREAD_S - 6 * 0.5 <= total <= SPREAD_S + EXPECTED_S + 6 * slack_per_bot, total
    head, _ = await ledger_head(server.env, "t3", datetime.fromtimestamp(runs[0].start, UTC))
    assert abs(head.spent * 60 - total) < 6 * 0.5, (head, total)


def test_the_cli_against_a_real_server(server: Server) -> None:
    """`botsched budgets` as a subprocess, as an operator runs it."""

    def cli(*argv: str, key: str = ADMIN_KEY) -> subprocess.CompletedProcess[str]:
        env = {**server.env, "BOTSCHED_URL": server.proc.url, "BOTSCHED_API_KEY": key}
        return subprocess.run(
            [*botsched(ROOT), *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )

    listed = cli("budgets")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == ["t0", "t1", "t2", "t3"]
    changed = cli("budgets", "set", "t9", "--day", "30", "--on-exhausted", "finish")
    assert changed.returncode == 0, changed.stderr
    assert json.loads(changed.stdout)["budget"] == {
        "day": 30,
        "month": None,
        "onExhausted": "finish",
    }
    refused = cli("budgets", "delete", "t9", key=KEYS["t0"])
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("botsched: forbidden: ") and "Traceback" not in refused.stderr
    assert len(refused.stderr.splitlines()) == 1
    assert cli("budgets", "delete", "t9").returncode == 0
