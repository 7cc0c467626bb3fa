"""Webhook deliveries a second against a loopback receiver, beside raw signed POSTs to it.

The receiver is the tests' (tests/webhooks/receiver.py: Starlette under uvicorn, its own process,
verifying each Standard Webhooks signature and logging each delivery). Ours: EVENTS events (one
`job.queued` each, written by submits) delivered by `Deliverer.run_once` rounds, one after another
until all are, at SCHEDULER_WEBHOOK_CONCURRENCY 16, on the memory and the SQLite store. The floor:
the same number of POSTs of an event body with its signed headers, by one httpx client, 16 at a
time, to the same receiver in the same run. Rounds interleave floor, memory, SQLite.

    .venv/bin/python bench/webhooks.py [--rounds 5] [--events 400]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.backend import RecordingBackend
from bench.table import Row, Sample, at_least, ratio_of, render
from core.config import Settings
from core.models import JobSpec
from core.ports import JobStore
from core.scheduler import Scheduler
from core.stores.memory import MemoryStore
from core.stores.sqlite import SqliteStore
from tests.processes import free_port
from tests.webhooks.receiver import ReceiverProcess

EVENTS = 400
CONCURRENCY = 16
STORES = ("memory", "sqlite")
GOALS = {"memory": 0.5, "sqlite": 0.4}  # of the floor's POSTs a second
SPEC = JobSpec(meetingUrl="https://meet.example.com/bench")  # jobs never share a bot


def settings() -> Settings:
    return Settings(webhook_allow_private=True, webhook_concurrency=CONCURRENCY)


async def _scheduler(store: JobStore, receiver: ReceiverProcess, events: int) -> Scheduler:
    """A scheduler whose tenant has one endpoint at the receiver, and `events` events due."""
    await store.open()
    scheduler = Scheduler(store, RecordingBackend(), settings())
    _, secret = await scheduler.webhooks.create("bench", f"{receiver.url}/hook", [], None)
    receiver.set_secrets([secret])
    for _ in range(events):
        await scheduler.submit("bench", SPEC)
    return scheduler


async def delivered_per_second(store: JobStore, receiver: ReceiverProcess, events: int) -> float:
    """Events delivered a second by run_once rounds, from `events` due to all delivered."""
    scheduler = await _scheduler(store, receiver, events)
    try:
        started, delivered = time.perf_counter(), 0
        while delivered < events:
            report = await scheduler.deliverer.run_once()
            if report.failed or report.dead:
                raise RuntimeError(f"deliveries failed: {report}")
            delivered += report.delivered
        return events / (time.perf_counter() - started)
    finally:
        await scheduler.deliverer.close()
        await store.close()


async def posts_per_second(receiver: ReceiverProcess, events: int) -> float:
    """Raw POSTs a second of one event's body with its signed headers (the receiver verifies
    them as it does ours), CONCURRENCY at a time, by one httpx client."""
    scheduler = await _scheduler(MemoryStore(), receiver, 1)
    event = (await scheduler.store.scan_records("event", "", 1))[0]
    endpoint = (await scheduler.webhooks.list("bench"))[0]
    body = event.data["body"]
    headers = scheduler.deliverer.sender.headers(event.key, body, endpoint)
    gate = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(timeout=10) as client:

        async def post() -> None:
            async with gate:
                answer = await client.post(f"{receiver.url}/hook", content=body, headers=headers)
                answer.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(post() for _ in range(events)))
        return events / (time.perf_counter() - started)


async def measure(rounds: int, events: int, tmp: Path) -> dict[str, Sample]:
    receiver = ReceiverProcess(free_port(), tmp / "receiver.secrets", tmp / "receiver.jsonl")
    receiver.start()
    found = {name: Sample() for name in ("floor", *STORES)}
    try:
        await posts_per_second(receiver, 50)  # warm up both sides
        await delivered_per_second(MemoryStore(), receiver, 50)
        for n in range(rounds):
            found["floor"].add(await posts_per_second(receiver, events))
            found["memory"].add(await delivered_per_second(MemoryStore(), receiver, events))
            sqlite = SqliteStore(tmp / f"round-{n}.db")
            found["sqlite"].add(await delivered_per_second(sqlite, receiver, events))
    finally:
        receiver.stop()
    return found


def rows(rounds: int, events: int = EVENTS) -> list[Row]:
    """The `make bench` rows: deliveries a second on each store ÷ raw POSTs a second."""
    with tempfile.TemporaryDirectory() as tmp:
        found = asyncio.run(measure(rounds, events, Path(tmp)))
    floor = found["floor"]
    name = f"webhook deliveries/s ÷ signed httpx POSTs/s ({events} events, {CONCURRENCY} at a time)"
    return [
        Row(
            f"{name}, {store} store",
            floor.text(),
            found[store].text(),
            ratio_of(found[store], floor),
            *at_least(GOALS[store]),
        )
        for store in STORES
    ]


def main() -> None:
    from bench.run import header

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved runs per figure")
    parser.add_argument("--events", type=int, default=EVENTS, help="events delivered per run")
    args = parser.parse_args()
    before = header()
    table = render(rows(args.rounds, args.events))
    print(f"\n{before} before the run\n")
    print(table)


if __name__ == "__main__":
    main()
