"""A `botsched drain` SIGKILLed in the middle of a delivery: a second one delivers everything,
with the same ids, bodies and signing secret.

Real: two `botsched drain` processes, one after the other, on one SQLite file the test shares;
the receiver as a process of its own (`python -m tests.webhooks.receiver`), answering slowly so
that the SIGKILL lands while an attempt waits for its answer; the SIGKILL. Fake: the backend of
the test's own scheduler (tests/fakes.py), which takes the jobs through their states and so
writes their events before any drainer starts; the drainers' process backend has no run.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.stores.sqlite import SqliteStore
from tests.processes import free_port, terminate
from tests.stress.procs import ROOT, base_env, botsched
from tests.webhooks.harness import FAST, Entry, Rig, accepted, assert_no_overtaking, wait_until
from tests.webhooks.receiver import ReceiverProcess

TIMEOUT = 1.0  # a drainer's attempt timeout: its lease is this + the skew (0) + 5 s
SLOW_ANSWER = 5.0  # the receiver's answers while the first drainer runs: past the timeout


@pytest.fixture
def shared(sqlite_store: SqliteStore) -> SqliteStore:
    """The store both processes of a test use."""
    return sqlite_store


@pytest.fixture
def receiver_process(tmp_path: Path) -> Iterator[ReceiverProcess]:
    receiver = ReceiverProcess(free_port(), tmp_path / "r.secrets", tmp_path / "r.jsonl")
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


def drainer(tmp_path: Path, name: str) -> subprocess.Popen[bytes]:
    schedule = ",".join(str(delay) for delay in FAST["webhook_retry_schedule"])
    env = base_env() | {
        "SCHEDULER_STORE": "sqlite",
        "SCHEDULER_SQLITE_PATH": str(tmp_path / "jobs.db"),
        "SCHEDULER_DATA_DIR": str(tmp_path / name),
        "SCHEDULER_WEBHOOK_ALLOW_PRIVATE": "true",
        "SCHEDULER_WEBHOOK_TIMEOUT_SECONDS": str(TIMEOUT),
        "SCHEDULER_WEBHOOK_RETRY_SCHEDULE": schedule,
        "SCHEDULER_MAX_CLOCK_SKEW_SECONDS": "0",
        "SCHEDULER_POLLING_INTERVAL": "50",
    }
    with (tmp_path / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            [*botsched(ROOT), "drain"], cwd=ROOT, env=env, stdout=log, stderr=log
        )


async def test_a_drainer_killed_mid_delivery_loses_nothing(
    tmp_path: Path, shared: SqliteStore, receiver_process: ReceiverProcess
) -> None:
    """The receiver sees an id twice only across the crash: the ids whose attempt was in flight
    when the first drainer died come again, after their lease, from the second drainer, with
    the same body and signing secret; nothing is lost, and each job's events stay in order.
    Real: the two `botsched drain` processes, the SQLite file, the receiver's process, SIGKILL.
    Fake: the backend of the test's scheduler, which only writes the jobs' events."""
    receiver, rig = receiver_process, Rig(shared)
    endpoint_id = await rig.endpoint(receiver)
    jobs = [await rig.run_job() for _ in range(2)]
    expected = {job: await rig.event_ids(job) for job in jobs}
    receiver.control("ok", delay=SLOW_ANSWER)
    first = drainer(tmp_path, "drain-1")
    try:
        await wait_until(lambda: len(receiver.entries()) >= 1, "an attempt in flight")
    finally:
        first.kill()  # SIGKILL: no cleanup, the attempt's lease stays in the store
        first.wait()
    await asyncio.sleep(0.2)  # a request the dead drainer had sent is logged by now
    in_flight = {e["id"]: e for e in receiver.entries()}
    receiver.control("ok")
    second = drainer(tmp_path, "drain-2")
    try:
        await rig.wait_delivered(receiver, endpoint_id, expected)
    finally:
        terminate(second)

    entries = receiver.entries()
    assert_twice_only_across_the_crash(entries, expected, set(in_flight))
    await assert_the_crash_counted(rig, endpoint_id, in_flight, entries)


def assert_twice_only_across_the_crash(
    entries: list[Entry], expected: dict[str, list[str]], in_flight: set[str]
) -> None:
    """Every event arrived; those in flight at the crash twice (once before, once after), the
    others once; every arrival of an id the same message, verified with the same secret; each
    job's events in order."""
    seen = Counter(e["id"] for e in entries)
    assert set(seen) == {event for events in expected.values() for event in events}
    assert {event for event, times in seen.items() if times > 1} == in_flight
    assert all(seen[event] == 2 for event in in_flight)
    for event in seen:
        sent = {(e["bodySha256"], e["secret"], e["verified"]) for e in entries if e["id"] == event}
        assert len(sent) == 1, sent
    for job, events in expected.items():
        assert_no_overtaking([e for e in entries if e["jobId"] == job], events)
        firsts = dict.fromkeys(e["id"] for e in accepted(entries) if e["jobId"] == job)
        assert list(firsts) == events


async def assert_the_crash_counted(
    rig: Rig, endpoint_id: str, in_flight: dict[str, Entry], entries: list[Entry]
) -> None:
    """The attempt cut short counts (attempts 2) but left no log; its id came again only after
    its lease ran out."""
    attempts = await rig.attempts(endpoint_id)
    for event, before in in_flight.items():
        delivery = await rig.delivery(endpoint_id, event)
        assert (delivery.data["state"], delivery.data["attempts"]) == ("delivered", 2)
        assert [a["attempt"] for a in attempts if a["eventId"] == event] == [2]
        again = [e["at"] for e in entries if e["id"] == event][1]
        assert again - before["at"] >= TIMEOUT
    others = [a for a in attempts if a["eventId"] not in in_flight]
    assert all(a["attempt"] == 1 and a["status"] == 200 for a in others)
