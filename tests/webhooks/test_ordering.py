"""A job's deliveries to an endpoint go in order, and never wait for anything but each other.

Real: the receivers (tests/webhooks/receiver.py, Starlette under uvicorn, in threads of their
own, verifying every signature), the stores, the schedulers and their deliverers, real time and
HTTP. Fake: the backend (tests/fakes.py runs nothing).
"""

from __future__ import annotations

import asyncio

import pytest

from core.ports import JobStore
from core.webhooks.delivery import DeliveryReport
from core.webhooks.endpoints import JOB_URLS
from tests.webhooks.harness import (
    Rig,
    assert_in_order_once,
    delivering,
    fast_settings,
    wait_until,
)
from tests.webhooks.receiver import Receiver

ON_FAULT_STORES = ["memory", "sqlite", "azure_table", "postgres"]


@pytest.mark.parametrize("store", ["memory", "sqlite"], indirect=True)
async def test_a_job_whose_id_extends_anothers_never_holds_it_up(
    store: JobStore, receiver: Receiver, other_receiver: Receiver
) -> None:
    """Job ids may be the client's (a bot_uuid: letters, digits and `._-`): tenant t2's job
    `{id}_-x` would share the key prefix of tenant t1's job `{id}` (`evt_{id}_`), sorting before
    it, were `_` not escaped in event keys (core/events.py); the deliverer also keeps a chain to
    its own job's deliveries. Both jobs send to their own webhookUrl through the one endpoint id
    `wh_jobs`; t2's receiver answers 500 to everything; t1's job still gets every event at once,
    in order, while t2's first delivery is still being retried.
    Real: receivers, store, schedulers, delivery loop. Fake: backend."""
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


@pytest.mark.parametrize("store", ON_FAULT_STORES, indirect=True)
async def test_an_event_put_back_by_another_deliverer_goes_right_after_the_one_before(
    store: JobStore, receiver: Receiver
) -> None:
    """Two deliverers on one store (two schedulers: two instances). While A's attempt at a job's
    first event is in flight (the receiver answers after 0.5 s), B's round finds the second
    event due and puts it back to the first's lease. A, done with the first, sends the second
    and the third right away: none waits for the lease of an attempt that already ended.
    Real: receiver, store, two schedulers' deliverers (rounds run by the test). Fake: backend."""
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
