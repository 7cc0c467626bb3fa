"""One replica of the drain benchmark (bench/postgres.py), in a process of its own:

    python -m bench.drainer sqlite PATH GO_AT      # or: postgres URL GO_AT

opens the store, warms its connections, waits until GO_AT (epoch seconds, the same for every
replica), then drains as fast as it can (caps wide open, a backend that starts nothing) until no
job is queued or being claimed. Prints one JSON line: the jobs it dispatched, when it last
dispatched one and when it was ready to start (epoch seconds).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from bench.backend import RecordingBackend
from core.config import Settings
from core.models import JobState
from core.ports import JobStore
from core.scheduler import Scheduler
from core.stores.postgres import PostgresStore
from core.stores.sqlite import SqliteStore

CAP = 100_000


def store_of(kind: str, where: str) -> JobStore:
    return SqliteStore(where) if kind == "sqlite" else PostgresStore(where, migrate=True)


async def warm(store: JobStore, connections: int = 10) -> None:
    """Open the connections a busy replica holds (a pool grows on demand): not a start-up's
    cost, which is not what is measured."""
    for _ in range(2):
        await asyncio.gather(*(store.counts() for _ in range(connections)))
        await asyncio.sleep(0.2)


async def drain(kind: str, where: str, go_at: float) -> dict[str, float]:
    store = store_of(kind, where)
    await store.open()
    try:
        await warm(store)
        scheduler = Scheduler(store, RecordingBackend(), Settings(max_concurrent_jobs=CAP))
        ready = time.time()
        await asyncio.sleep(max(go_at - ready, 0.0))
        dispatched, last = 0, go_at
        while True:
            report = await scheduler.drain_once()
            if report.dispatched:
                dispatched, last = dispatched + report.dispatched, time.time()
                continue
            counts = await store.counts()
            if counts[JobState.QUEUED] == counts[JobState.PROVISIONING] == 0:
                return {"dispatched": dispatched, "last": last, "ready": ready}
    finally:
        await store.close()


def main() -> None:
    kind, where, go_at = sys.argv[1], sys.argv[2], float(sys.argv[3])
    print(json.dumps(asyncio.run(drain(kind, where, go_at))), flush=True)


if __name__ == "__main__":
    main()
