"""Deliveries through a receiver that is down, failing, hanging or gone for good, on the memory,
SQLite, Azure Table (Azurite) and PostgreSQL stores.

"Real" in the tests' docstrings: the receiver (tests/webhooks/receiver.py: Starlette under
uvicorn on a loopback port, in a thread of its own, verifying each Standard Webhooks signature
with `standardwebhooks`; "down" stops its server, so connections are refused), the store, the
scheduler and its deliverer, the local server's loops (core/routes.py), real time and HTTP.
"Fake": the backend (tests/fakes.py runs nothing; the test ends each run as a platform would).
"""

from __future__ import annotations

import itertools
import time
from datetime import datetime

import pytest

from core.ports import JobStore
from tests.webhooks.harness import (
    Entry,
    Rig,
    accepted,
    assert_in_order_once,
    delivering,
    fast_settings,
    wait_until,
)
from tests.webhooks.receiver import Receiver

FAULT_STORES = ["memory", "sqlite", "azure_table", "postgres"]
HANG_TIMEOUT = 2.0  # the attempt timeout in the test of a receiver that hangs
on_fault_stores = pytest.mark.parametrize("store", FAULT_STORES, indirect=True)


def moment(attempt: Entry) -> float:
    return datetime.fromisoformat(attempt["at"]).timestamp()


def assert_on_schedule(attempts: list[Entry], schedule: tuple[float, ...]) -> None:
    """No attempt of a delivery came sooner than the schedule's delay after the one before."""
    for event_id in {a["eventId"] for a in attempts}:
        mine = sorted((a for a in attempts if a["eventId"] == event_id), key=moment)
        assert [a["attempt"] for a in mine] == list(range(1, len(mine) + 1))
        for before, after in itertools.pairwise(mine):
            assert moment(after) - moment(before) >= schedule[before["attempt"]] - 0.001


def failed_attempts(attempts: list[Entry]) -> list[Entry]:
    return [a for a in attempts if a["error"] is not None]


@on_fault_stores
async def test_receiver_down_for_a_while_then_up_loses_nothing(
    store: JobStore, receiver: Receiver
) -> None:
    """Two jobs' events made while the receiver refuses connections (its server stopped) reach
    it once it is back, in order, each once, no attempt sooner than the schedule says.
    Real: receiver (stopped, then started again), store, scheduler, delivery loop. Fake: backend."""
    schedule = (0, 0.25, 0.5, 1.0, 1.5, 2.0, 2.0)
    rig = Rig(store, fast_settings(webhook_retry_schedule=schedule))
    endpoint_id = await rig.endpoint(receiver)
    receiver.down()
    async with delivering(rig.scheduler):
        first = await rig.run_job()

        async def refused_thrice() -> bool:
            return len(failed_attempts(await rig.attempts(endpoint_id))) >= 3

        await wait_until(refused_thrice, "three refused attempts")
        second = await rig.run_job()  # made while it is down
        receiver.start()
        up_at = time.time()
        expected = {job: await rig.event_ids(job) for job in (first, second)}
        await rig.wait_delivered(receiver, endpoint_id, expected)

    entries = receiver.entries()
    assert_in_order_once(entries, expected)
    assert min(e["at"] for e in entries) >= up_at  # nothing arrived while it was down
    attempts = await rig.attempts(endpoint_id)
    refused = failed_attempts(attempts)
    assert refused and all(a["status"] is None and "Connect" in a["error"] for a in refused)
    assert_on_schedule(attempts, schedule)
    assert len(attempts) - len(refused) == len(entries) == 8


@on_fault_stores
async def test_500_then_200_delivers_each_id_once_after_the_retries(
    store: JobStore, receiver: Receiver
) -> None:
    """The receiver answers 500 (after verifying) until it is switched to 200: the retries carry
    the same id and body, the attempt log shows the 500s, each id is accepted once.
    Real: receiver, store, scheduler, delivery loop. Fake: backend."""
    rig = Rig(store)
    endpoint_id = await rig.endpoint(receiver)
    receiver.control("fail", status=500)
    async with delivering(rig.scheduler):
        job = await rig.run_job()
        events = await rig.event_ids(job)
        await wait_until(lambda: len(receiver.entries()) >= 2, "two 500s")
        receiver.control("ok")
        await rig.wait_delivered(receiver, endpoint_id, {job: events})

    entries = receiver.entries()
    assert_in_order_once(entries, {job: events})
    failures = [e for e in entries if e["answer"] == 500]
    assert len(failures) >= 2 and {e["id"] for e in failures} == {events[0]}
    assert len({(e["bodySha256"], e["secret"]) for e in entries if e["id"] == events[0]}) == 1
    attempts = await rig.attempts(endpoint_id)
    first = [(a["status"], a["error"]) for a in attempts if a["eventId"] == events[0]]
    assert first == [(500, "HTTP 500")] * len(failures) + [(200, None)]
    assert_on_schedule(attempts, rig.settings.webhook_retry_schedule)
    delivery = await rig.delivery(endpoint_id, events[0])
    assert delivery.data["state"] == "delivered"
    assert delivery.data["attempts"] == len(failures) + 1


@on_fault_stores
async def test_a_hanging_receiver_stalls_neither_the_dispatch_nor_a_healthy_endpoint(
    store: JobStore, receiver: Receiver, other_receiver: Receiver
) -> None:
    """`hung` takes requests and never answers; `receiver` is healthy. Both loops of `botsched
    serve` run (drain and delivery). While the first attempt at `hung` hangs (it times out after
    HANG_TIMEOUT s), a job submitted is dispatched and all its events reach the healthy endpoint:
    no attempt at `hung` has ended yet when they have. The hanging attempts are logged as
    timeouts; everything reaches `hung`, in order, once it answers.
    Real: both receivers, store, scheduler, drain and delivery loops. Fake: backend."""
    hung = other_receiver
    settings = fast_settings(webhook_timeout_seconds=HANG_TIMEOUT, webhook_retry_schedule=(0, 1, 1))
    rig = Rig(store, settings)
    healthy_id, hung_id = await rig.endpoint(receiver), await rig.endpoint(hung)
    hung.control("hang")
    async with delivering(rig.scheduler, drain=True):
        first = await rig.submit()
        await wait_until(lambda: any(e["answer"] == "hang" for e in hung.entries()), "a hang")
        second = await submitted_while_hung(rig, receiver, healthy_id)
        assert await rig.attempts(hung_id) == []  # the first attempt at `hung` still hangs
        hung.control("ok")
        for job in (first, second):
            await rig.finish_job(job)
        expected = {job: await rig.event_ids(job) for job in (first, second)}
        await rig.wait_delivered(receiver, healthy_id, expected)
        await rig.wait_delivered(hung, hung_id, expected)

    assert_in_order_once(receiver.entries(), expected)
    assert_in_order_once(hung.entries(), expected)
    assert not failed_attempts(await rig.attempts(healthy_id))
    timeouts = [a for a in await rig.attempts(hung_id) if a["status"] is None]
    assert {a["eventId"] for a in timeouts} == {expected[first][0], expected[second][0]}
    assert all(a["error"] == f"no answer within {HANG_TIMEOUT:g} s" for a in timeouts)
    assert all(a["latencyMs"] >= HANG_TIMEOUT * 1000 for a in timeouts)


async def submitted_while_hung(rig: Rig, receiver: Receiver, healthy_id: str) -> str:
    """A job submitted, dispatched by the drain loop, its events delivered to the healthy
    endpoint; says how long each took (shown with pytest -s; no test asserts a timing)."""
    submitted = time.monotonic()
    job = await rig.submit()
    running = await wait_until(lambda: rig.running(job), "the job dispatched")
    delivered = await rig.wait_delivered(receiver, healthy_id, {job: await rig.event_ids(job)})
    print(f"\nwhile an attempt hung: dispatched {running - submitted:.3f} s after the submit,")
    print(f"its events at the healthy endpoint {delivered - running:.3f} s after that")
    return job


@on_fault_stores
async def test_dead_after_the_last_attempt_then_replayed_with_the_same_id(
    store: JobStore, receiver: Receiver
) -> None:
    """Every attempt answered 500: each delivery is dead after the schedule's three attempts (a
    job's events still one after the other); a replay sends each again with its webhook-id and
    the same body, once the receiver answers 200.
    Real: receiver, store, scheduler, delivery loop, replay. Fake: backend."""
    rig = Rig(store, fast_settings(webhook_retry_schedule=(0, 0.1, 0.2)))
    endpoint_id = await rig.endpoint(receiver)
    receiver.control("fail")
    async with delivering(rig.scheduler):
        job = await rig.run_job()
        events = await rig.event_ids(job)
        await rig.wait_states(endpoint_id, events, "dead")
        attempts = await rig.attempts(endpoint_id)
        receiver.control("ok")
        replays = [await rig.scheduler.webhooks.replay(rig.tenant, endpoint_id, e) for e in events]
        await rig.wait_delivered(receiver, endpoint_id, {job: events})

    assert {(r["state"], r["attempts"], r["replays"]) for r in replays} == {("pending", 0, 1)}
    thrice = [event for event in events for _ in range(3)]
    assert [a["eventId"] for a in attempts] == thrice  # one event after the other
    assert {(a["status"], a["error"]) for a in attempts} == {(500, "HTTP 500")}
    entries = receiver.entries()
    assert [e["id"] for e in entries if e["answer"] == 500] == thrice
    assert [e["id"] for e in accepted(entries)] == events  # in order, each once
    for event_id in events:
        sent = {(e["bodySha256"], e["secret"]) for e in entries if e["id"] == event_id}
        assert len(sent) == 1  # the replay is the same message
    assert await rig.states(endpoint_id, events) == ["delivered"] * len(events)


@on_fault_stores
async def test_an_endpoint_failing_too_long_is_disabled_and_says_so(
    store: JobStore, receiver: Receiver
) -> None:
    """Failing for longer than webhook_disable_after_seconds (0.3 s here) disables the endpoint:
    its view says since when; the delivery being retried dies saying why, and so do the ones
    behind it, unsent; an event made later gets no delivery to it; enabled again, a replay
    reaches it.
    Real: receiver, store, scheduler, delivery loop, the endpoint's API. Fake: backend."""
    schedule = (0, 0.2, 0.2, 0.2, 0.2, 0.2)
    settings = fast_settings(webhook_retry_schedule=schedule, webhook_disable_after_seconds=0.3)
    rig = Rig(store, settings)
    endpoint_id = await rig.endpoint(receiver)
    receiver.control("fail", status=503)
    webhooks = rig.scheduler.webhooks
    async with delivering(rig.scheduler):
        job = await rig.start_job()
        first = (await rig.event_ids(job))[0]
        await rig.wait_states(endpoint_id, [first], "dead")
        shown = webhooks.view(await webhooks.get(rig.tenant, endpoint_id))
        await rig.finish_job(job)
        await wait_until(lambda: rig.fanned_out(job), "every event fanned out")
        events = await rig.event_ids(job)
        later = await rig.states(endpoint_id, events[1:])
        receiver.control("ok")
        await webhooks.change(rig.tenant, endpoint_id, enabled=True)
        await webhooks.replay(rig.tenant, endpoint_id, first)
        await rig.wait_delivered(receiver, endpoint_id, {job: [first]})

    assert shown["disabled"] is True and shown["failingSince"] is not None
    assert shown["disabledReason"] == f"every delivery failed since {shown['failingSince']}"
    assert later == ["dead", "dead", None]  # behind the first; the last made once disabled
    assert_disabled_said_so(await rig.attempts(endpoint_id), events, shown, receiver.entries())


def assert_disabled_said_so(
    attempts: list[Entry], events: list[str], shown: Entry, entries: list[Entry]
) -> None:
    """The 503s went on for longer than the limit; then the first delivery and the two behind
    it died "endpoint disabled: …" unsent; the replay after enabling was accepted."""
    refused = [a for a in attempts if a["status"] == 503]
    assert moment(refused[-1]) - moment(refused[0]) >= 0.3
    said = f"endpoint disabled: {shown['disabledReason']}"
    assert [a["eventId"] for a in attempts if a["error"] == said] == events[:3]
    assert [a["status"] for a in attempts if a["eventId"] == events[0]][-2:] == [None, 200]
    assert [e["answer"] for e in entries] == [503] * len(refused) + [200]
