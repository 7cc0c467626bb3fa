"""Signatures through a secret's rotation, and deliveries a receiver cannot verify.

Real: the receiver (Starlette under uvicorn, in a thread, verifying with `standardwebhooks`), the
memory store, the scheduler, its deliverer and the local server's delivery loop, real time and
HTTP. Fake: the backend (tests/fakes.py).
"""

from __future__ import annotations

import asyncio
import time

import httpx

from core.stores.memory import MemoryStore
from tests.webhooks.harness import Rig, accepted, delivering, fast_settings, wait_until
from tests.webhooks.receiver import Receiver, fingerprint

OVERLAP = 1.0  # seconds a rotated-out secret still signs, here


async def test_rotation_then_a_receiver_with_the_old_secret_answers_401_until_updated(
    receiver: Receiver,
) -> None:
    """During the overlap each delivery carries both signatures: a receiver knowing either
    secret verifies it. After it only the new secret signs: the receiver still on the old one
    cannot verify, answers 401 (logged as a failed attempt, and retried with the same id), and
    accepts the delivery once it has the new secret. Real: receiver, memory store, scheduler,
    delivery loop, signing. Fake: backend."""
    schedule = (0, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3)
    settings = fast_settings(
        webhook_secret_overlap_seconds=OVERLAP, webhook_retry_schedule=schedule
    )
    rig = Rig(MemoryStore(), settings)
    endpoint_id = await rig.endpoint(receiver)
    old = receiver.secrets_file.read_text().split()
    _, new = await rig.scheduler.webhooks.rotate(rig.tenant, endpoint_id)
    rotated = time.monotonic()
    async with delivering(rig.scheduler):
        by_new = await delivered_with(rig, receiver, endpoint_id, [new])
        by_old = await delivered_with(rig, receiver, endpoint_id, old)
        assert time.monotonic() - rotated < OVERLAP  # both were delivered within the overlap
        await asyncio.sleep(OVERLAP - (time.monotonic() - rotated))
        late = await rig.submit()
        event = (await rig.event_ids(late))[0]
        await wait_until(lambda: any(not e["verified"] for e in receiver.entries()), "a 401")
        receiver.set_secrets([new])
        await rig.wait_delivered(receiver, endpoint_id, {late: [event]})

    entries = receiver.entries()
    assert {e["secret"] for e in accepted(entries) if e["jobId"] == by_new} == {fingerprint(new)}
    assert {e["secret"] for e in accepted(entries) if e["jobId"] == by_old} == {fingerprint(old[0])}
    refused = [e for e in entries if not e["verified"]]
    assert {(e["id"], e["answer"], e["error"]) for e in refused} == {
        (event, 401, "No matching signature found")
    }
    assert [e["secret"] for e in entries if e["id"] == event][-1] == fingerprint(new)
    attempts = [a for a in await rig.attempts(endpoint_id) if a["eventId"] == event]
    assert [a["status"] for a in attempts] == [401] * len(refused) + [200]


async def delivered_with(rig: Rig, receiver: Receiver, endpoint_id: str, known: list[str]) -> str:
    """A job whose every event the receiver accepted, knowing only the secrets `known`."""
    receiver.set_secrets(known)
    job = await rig.run_job()
    await rig.wait_delivered(receiver, endpoint_id, {job: await rig.event_ids(job)})
    return job


async def test_a_forged_or_unsigned_delivery_is_refused_and_logged(receiver: Receiver) -> None:
    """The receiver itself: a body signed with another secret, or not signed, is answered 401
    and logged as unverified, whatever it was told to answer. Real: receiver, HTTP."""
    receiver.set_secrets(["whsec_" + "A" * 32])
    headers = {"webhook-id": "evt_x_000001", "webhook-timestamp": str(int(time.time()))}
    forged = {**headers, "webhook-signature": "v1,bm90IGEgc2lnbmF0dXJl"}
    async with httpx.AsyncClient(base_url=receiver.url) as client:
        answers = [
            (await client.post("/hook", content=b"{}", headers=forged)).status_code,
            (await client.post("/hook", content=b"{}", headers=headers)).status_code,
        ]
    assert answers == [401, 401]
    logged = [(e["verified"], e["answer"], e["error"]) for e in receiver.entries()]
    assert logged == [
        (False, 401, "No matching signature found"),
        (False, 401, "Missing required headers"),
    ]
