"""Deliveries through a receiver that is down, failing, hanging or gone for good, on the memory,
SQLite and Azure Table (Azurite) stores.

Real in every test: the receiver (Starlette under uvicorn on a loopback port, in a thread of its
own, verifying each Standard Webhooks signature with `standardwebhooks`; "down" stops its server,
so connections are refused), the stores, the scheduler and its deliverer, the local server's
delivery loop (core/routes.py), real time and HTTP. Fake: the backend (tests/fakes.py: the test
ends each run as the platform would).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import datetime

import pytest

from core.ports import JobStore
from core.webhooks.delivery import DeliveryReport
from core.webhooks.endpoints import JOB_URLS
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

FAULT_STORES = ["memory", "sqlite", "azure_table"]
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
    it once it is back, in order, each once, no attempt sooner than the schedule says."""
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
    the same id and body, the attempt log shows the 500s, each id is accepted once."""
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
    timeouts; everything reaches `hung`, in order, once it answers."""
    hung = other_receiver
    settings = fast_settings(webhook_timeout_seconds=HANG_TIMEOUT, webhook_retry_schedule=(0, 1, 1))
    rig = Rig(store, settings)
    healthy_id, hung_id = await rig.endpoint(receiver), await rig.endpoint(hung)
    hung.control("hang")
    async with delivering(rig.scheduler, drain=True):
        first = await rig.submit()
        await wait_until(lambda: any(e["answer"] == "hang" for e in hung.entries()), "a hang")
        submitted = time.monotonic()
        second = await rig.submit()
        running = await wait_until(lambda: rig.running(second), "the second job dispatched")
        second_events = {second: await rig.event_ids(second)}
        delivered = await rig.wait_delivered(receiver, healthy_id, second_events)
        assert await rig.attempts(hung_id) == []  # the first attempt at `hung` still hangs
        print(f"\nwhile an attempt hung: dispatched {running - submitted:.3f} s after the submit,")
        print(f"its events at the healthy endpoint {delivered - running:.3f} s after that")
        hung.control("ok")
        for job in (first, second):
            await rig.finish_job(job)
        expected = {job: await rig.event_ids(job) for job in (first, second)}
        await rig.wait_delivered(receiver, healthy_id, expected)
        await rig.wait_delivered(hung, hung_id, expected)

    assert_in_order_once(receiver.entries(), expected)
    assert_in_order_once(hung.entries(), expected)
    timeouts = [a for a in await rig.attempts(hung_id) if a["status"] is None]
    assert {a["eventId"] for a in timeouts} == {expected[first][0], expected[second][0]}
    assert all(a["error"] == f"no answer within {HANG_TIMEOUT:g} s" for a in timeouts)
    assert all(a["latencyMs"] >= HANG_TIMEOUT * 1000 for a in timeouts)
    assert not failed_attempts(await rig.attempts(healthy_id))


@on_fault_stores
async def test_dead_after_the_last_attempt_then_replayed_with_the_same_id(
    store: JobStore, receiver: Receiver
) -> None:
    """Every attempt answered 500: each delivery is dead after the schedule's three attempts (a
    job's events still one after the other); a replay sends each again with its webhook-id and
    the same body, once the receiver answers 200."""
    rig = Rig(store, fast_settings(webhook_retry_schedule=(0, 0.1, 0.2)))
    endpoint_id = await rig.endpoint(receiver)
    receiver.control("fail")
    async with delivering(rig.scheduler):
        job = await rig.run_job()
        events = await rig.event_ids(job)

        await rig.wait_states(endpoint_id, events, "dead")
        attempts = await rig.attempts(endpoint_id)
        receiver.control("ok")
        for event_id in events:
            replayed = await rig.scheduler.webhooks.replay(rig.tenant, endpoint_id, event_id)
            assert (replayed["state"], replayed["attempts"], replayed["replays"]) == (
                "pending",
                0,
                1,
            )
        await rig.wait_delivered(receiver, endpoint_id, {job: events})

    assert [a["eventId"] for a in attempts] == [e for e in events for _ in range(3)]
    assert {(a["status"], a["error"]) for a in attempts} == {(500, "HTTP 500")}
    entries = receiver.entries()
    assert [e["id"] for e in entries if e["answer"] == 500] == [e for e in events for _ in range(3)]
    assert [e["id"] for e in accepted(entries)] == events  # in order, each once
    for event_id in events:
        sent = {(e["bodySha256"], e["secret"]) for e in entries if e["id"] == event_id}
        assert len(sent) == 1  # the replay is the same message
        delivery = await rig.delivery(endpoint_id, event_id)
        assert (delivery.data["state"], delivery.data["attempts"]) == ("delivered", 1)


@on_fault_stores
async def test_an_endpoint_failing_too_long_is_disabled_and_says_so(
    store: JobStore, receiver: Receiver
) -> None:
    """Failing for longer than webhook_disable_after_seconds (0.3 s here) disables the endpoint:
    its view says since when, the delivery in flight dies saying why, later events are not
    sent to it; enabled again, a replay reaches it."""
    schedule = (0, 0.2, 0.2, 0.2, 0.2, 0.2)
    settings = fast_settings(webhook_retry_schedule=schedule, webhook_disable_after_seconds=0.3)
    rig = Rig(store, settings)
    endpoint_id = await rig.endpoint(receiver)
    receiver.control("fail", status=503)
    async with delivering(rig.scheduler):
        job = await rig.start_job()
        first = (await rig.event_ids(job))[0]

        await rig.wait_states(endpoint_id, [first], "dead")
        webhooks = rig.scheduler.webhooks
        shown = webhooks.view(await webhooks.get(rig.tenant, endpoint_id))
        await rig.finish_job(job)
        await wait_until(lambda: rig.fanned_out(job), "every event fanned out")
        never = await store.get_record(
            "delivery", f"{endpoint_id}:{(await rig.event_ids(job))[-1]}"
        )
        receiver.control("ok")
        await rig.scheduler.webhooks.change(rig.tenant, endpoint_id, enabled=True)
        await rig.scheduler.webhooks.replay(rig.tenant, endpoint_id, first)
        await rig.wait_delivered(receiver, endpoint_id, {job: [first]})

    assert shown["disabled"] is True and shown["failingSince"] is not None
    assert shown["disabledReason"] == f"every delivery failed since {shown['failingSince']}"
    assert never is None  # made after it was disabled: not for it
    attempts = await rig.attempts(endpoint_id)
    last = [a for a in attempts if a["eventId"] == first][-2]  # before the replay's
    assert last["error"] == f"endpoint disabled: {shown['disabledReason']}"
    assert last["status"] is None
    refused = [a for a in attempts if a["status"] == 503]
    assert moment(refused[-1]) - moment(refused[0]) >= 0.3
    assert [e["answer"] for e in receiver.entries()] == [503] * len(refused) + [200]


@pytest.mark.parametrize("store", ["memory", "sqlite"], indirect=True)
async def test_a_job_whose_id_extends_anothers_never_holds_it_up(
    store: JobStore, receiver: Receiver, other_receiver: Receiver
) -> None:
    """Job ids may be the client's (a bot_uuid: letters, digits and `._-`), so tenant t2's job
    `{id}_-x` has the key prefix of tenant t1's job `{id}` (`evt_{id}_`) and sorts before it;
    both jobs send to their own webhookUrl through the one endpoint id `wh_jobs`. t2's receiver
    answers 500 to everything; t1's job still gets every event at once, in order, while t2's
    first delivery is still being retried."""
    failing = other_receiver
    settings = fast_settings(webhook_retry_schedule=(0, 1, 1, 1, 1))
    rig, other = Rig(store, settings), Rig(store, settings, tenant="t2")
    await rig.endpoint(receiver, None)
    await other.endpoint(failing, None)
    failing.control("fail")
    async with delivering(rig.scheduler):
        blocker = await other.run_job(f"{failing.url}/job", job_id="job_-x")
        await wait_until(lambda: len(failing.entries()) >= 1, "a failed attempt of t2's job")
        job = await rig.run_job(f"{receiver.url}/job", job_id="job")
        expected = {job: await rig.event_ids(job)}
        await rig.wait_delivered(receiver, JOB_URLS, expected)
        held = await rig.states(JOB_URLS, (await other.event_ids(blocker))[:1])

    assert held == ["pending"]
    assert_in_order_once(receiver.entries(), expected)
    assert {e["jobId"] for e in failing.entries()} == {blocker}


@on_fault_stores
async def test_an_event_put_back_by_another_deliverer_goes_right_after_the_one_before(
    store: JobStore, receiver: Receiver
) -> None:
    """Two deliverers on one store (two schedulers: two instances). While A's attempt at a job's
    first event is in flight (the receiver answers after 0.5 s), B's round finds the second
    event due and puts it back to the first's lease. A, done with the first, sends the second
    and the third right away: none waits for the lease of an attempt that already ended."""
    rig, other = Rig(store), Rig(store)
    endpoint_id = await rig.endpoint(receiver)
    job = await rig.start_job()
    events = await rig.event_ids(job)
    receiver.control("ok", delay=0.5)
    deliverer = rig.scheduler.deliverer
    await deliverer.fan_out(DeliveryReport())
    first = asyncio.create_task(deliverer.deliver_due(DeliveryReport()))
    try:
        await wait_until(lambda: len(receiver.entries()) == 1, "the first attempt in flight")
        waited = await other.scheduler.deliverer.run_once()
        await first
    finally:
        await deliverer.close()
        await other.scheduler.deliverer.close()

    assert waited.waiting == 1 and waited.delivered == 0
    assert await rig.states(endpoint_id, events) == ["delivered"] * len(events)
    assert_in_order_once(receiver.entries(), {job: events})
