"""Every event of a job reaches a real receiver, verified, once, in order, on EVERY store.

Real: the receiver (Starlette under uvicorn on a loopback port, in a thread of its own, checking
each Standard Webhooks signature with the `standardwebhooks` package), the stores (memory,
SQLite, D1 on its sqlite3 stand-in, Azure Table on Azurite, Firestore on its emulator), the
scheduler, the deliverer and the local server's delivery loop (core/loops.py deliver_forever),
real time and a real HTTP client. Fake: the backend (tests/fakes.py runs no bot; the test plays
the platform by ending each run).
"""

from __future__ import annotations

import asyncio

from core.ports import JobStore
from tests.webhooks.harness import (
    LIFECYCLE,
    Rig,
    accepted,
    assert_in_order_once,
    delivering,
    types_of,
    wait_delivered,
)
from tests.webhooks.receiver import Receiver, fingerprint

JOBS = 5


async def test_every_event_of_a_job_arrives_verified_in_order_once(
    store: JobStore, receiver: Receiver
) -> None:
    """A job's four events (queued, provisioning, running, completed), each sent once and
    accepted at the first attempt, verified, in order. Real: receiver, store, scheduler,
    delivery loop. Fake: backend."""
    rig = Rig(store)
    endpoint_id = await rig.endpoint(receiver)
    async with delivering(rig.scheduler):
        job_id = await rig.run_job()
        events = await rig.event_ids(job_id)
        await rig.wait_delivered(receiver, endpoint_id, {job_id: events})
        await asyncio.sleep(0.3)  # time for a duplicate to show, if one were sent

    entries = receiver.entries()
    assert types_of(entries, job_id) == LIFECYCLE
    assert_in_order_once(entries, {job_id: events})
    assert len(entries) == len(events)  # no failed attempt either: each sent once
    for event_id in events:
        delivery = await rig.delivery(endpoint_id, event_id)
        assert delivery.data["state"] == "delivered" and delivery.data["attempts"] == 1
        assert delivery.due is None
    attempts = await rig.attempts(endpoint_id)
    assert [(a["eventId"], a["status"]) for a in attempts] == [(e, 200) for e in events]


async def test_concurrent_jobs_reach_two_endpoints_each_in_order(
    store: JobStore, receiver: Receiver
) -> None:
    """JOBS jobs at once, to two endpoints of the tenant (paths /a and /b of one receiver, each
    with its own secret; /b wants two event types) and to one job's own webhookUrl (/job, signed
    with the tenant's job secret). Real: receiver, store, scheduler, delivery loop. Fake:
    backend."""
    rig = Rig(store)
    await rig.endpoint(receiver, "/a")
    await rig.endpoint(receiver, "/b", events=["job.queued", "job.completed"])
    await rig.endpoint(receiver, None)  # the secret of the jobs' own webhookUrl
    async with delivering(rig.scheduler):
        jobs = await asyncio.gather(
            rig.run_job(f"{receiver.url}/job"), *(rig.run_job() for _ in range(JOBS - 1))
        )
        expected = {job_id: await rig.event_ids(job_id) for job_id in jobs}
        chosen = {job: [events[0], events[-1]] for job, events in expected.items()}
        own = {jobs[0]: expected[jobs[0]]}
        for path, wanted in (("/a", expected), ("/b", chosen), ("/job", own)):
            await wait_delivered(receiver, wanted, path)
        await asyncio.sleep(0.3)  # time for a duplicate to show, if one were sent

    entries = receiver.entries()
    assert_in_order_once(entries, expected, "/a")
    assert_in_order_once(entries, chosen, "/b")
    assert_in_order_once(entries, own, "/job")
    for job_id in jobs:
        assert types_of([e for e in entries if e["path"] == "/a"], job_id) == LIFECYCLE
    signers = {e["path"]: e["secret"] for e in accepted(entries)}
    secrets = receiver.secrets_file.read_text().split()
    assert sorted(signers.values()) == sorted(fingerprint(secret) for secret in secrets)
    sent = [*expected.values(), *chosen.values(), *own.values()]
    assert len(entries) == sum(len(events) for events in sent)  # no failed attempt either
