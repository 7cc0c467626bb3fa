"""The local timers: the drain, and the webhook deliveries beside it. `botsched serve` runs
both in its app's lifespan, `botsched drain` in its loop; serverless timers call `tick`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from core.scheduler import Scheduler

log = logging.getLogger("botsched.api")
BATCH_SECONDS = 0.1


async def drain_forever(scheduler: Scheduler, every: float) -> None:
    """The local timer: one drain per interval; a failed drain is logged, never fatal."""
    while True:
        try:
            report = await scheduler.drain_once()
            if report.dispatched or report.completed or report.failed or report.retried:
                log.info("drain: %s", report.model_dump(exclude_defaults=True))
        except Exception:
            log.exception("drain failed; trying again next interval")
        # a backend that can tell when one of its runs ends (process) cuts the wait short
        wait_ended = getattr(scheduler.backend, "wait_ended", None)
        await (wait_ended(every) if wait_ended else asyncio.sleep(every))


async def deliver_forever(scheduler: Scheduler, every: float) -> None:
    """The local server's webhook deliveries, apart from the drain so that neither waits for
    the other: a round per interval, or as soon as a write made events."""
    while True:
        scheduler.outbox_written.clear()
        await asyncio.sleep(BATCH_SECONDS)  # let a burst of writes gather: one round for all
        try:
            report = await scheduler.deliverer.run_once()
            if report.delivered or report.failed or report.dead:
                log.info("webhooks: %s", report.model_dump(exclude_defaults=True))
        except Exception:
            log.exception("webhook delivery failed; trying again next interval")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(scheduler.outbox_written.wait(), every)


@contextlib.asynccontextmanager
async def running(*loops: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run `loops` as tasks for the block; cancelled and awaited when it ends."""
    tasks = [asyncio.create_task(loop) for loop in loops]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
