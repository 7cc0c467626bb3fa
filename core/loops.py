"""The local timers: the drain, and the webhook deliveries beside it. `botsched serve` runs
both in its app's lifespan, `botsched drain` in its loop; serverless timers call `tick`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Literal

from core.models import DrainReport
from core.ports import Notifying
from core.scheduler import Scheduler

log = logging.getLogger("botsched.api")
BATCH_SECONDS = 0.1
NOTIFIED_BATCH_SECONDS = 0.05  # a burst of notified writes gathers into one dispatch
# at most one dispatch on notifications per this many seconds (drains count too): under a stream
# of them, every process of a deployment would otherwise dispatch at once on each
NOTIFIED_GAP_SECONDS = 0.5

Wake = Literal["ended", "notified"] | None
OnReport = Callable[[DrainReport], None]


async def drain_forever(
    scheduler: Scheduler, every: float, on_report: OnReport | None = None
) -> None:
    """The local timer: a drain (recover, poll, settle, reconcile, expire, dispatch) per
    interval, and at once when a bot this process started ends (the process backend). Between
    drains, a store that notifies (postgres) starts a dispatch as soon as any process made a job
    startable (NOTIFIED_BATCH_SECONDS later, and NOTIFIED_GAP_SECONDS after the last drain or
    dispatch at the soonest), without moving the next drain. A failure is logged, never fatal.
    `on_report` gets each drain's report (else the ones that did something are logged)."""
    while True:
        last = time.monotonic()
        await _drain(scheduler, on_report)
        next_drain = last + every
        while (left := next_drain - time.monotonic()) > 0:
            woke = await wait_for_work(scheduler, left)
            if woke == "ended":
                break
            if woke == "notified":
                gap = max(NOTIFIED_BATCH_SECONDS, last + NOTIFIED_GAP_SECONDS - time.monotonic())
                await asyncio.sleep(min(gap, max(next_drain - time.monotonic(), 0.0)))
                if time.monotonic() >= next_drain:
                    break  # the drain dispatches
                last = time.monotonic()
                await _dispatch(scheduler, on_report)


async def _drain(scheduler: Scheduler, on_report: OnReport | None) -> None:
    try:
        report = await scheduler.drain_once()
    except Exception:
        log.exception("drain failed; trying again next interval")
        return
    if on_report is not None:
        on_report(report)
    elif report.dispatched or report.completed or report.failed or report.retried:
        log.info("drain: %s", report.model_dump(exclude_defaults=True))


async def _dispatch(scheduler: Scheduler, on_report: OnReport | None) -> None:
    """A dispatch only (claim, verify, start): what a notification can have changed."""
    report = DrainReport()
    try:
        await scheduler.dispatch(report=report)
    except Exception:
        log.exception("dispatch on a notification failed; the next drain tries again")
        return
    if not (report.dispatched or report.failed or report.retried):
        return
    if on_report is not None:
        on_report(report)
    else:
        log.info("dispatch: %s", report.model_dump(exclude_defaults=True))


async def wait_for_work(scheduler: Scheduler, seconds: float) -> Wake:
    """Up to `seconds`: "ended" when a bot this process started ended (a backend with
    `wait_ended`: process), "notified" when the store notified a startable job (a store that is
    core/ports.py's Notifying: postgres), None when the time ran out. A wake-up source that
    fails is logged and the rest of the time slept."""
    sources: dict[str, Callable[[float], Awaitable[bool]]] = {}
    wait_ended = getattr(scheduler.backend, "wait_ended", None)
    if wait_ended is not None:
        sources["ended"] = wait_ended
    if isinstance(scheduler.store, Notifying):
        sources["notified"] = scheduler.store.wait_notified
    started = time.monotonic()
    try:
        return await _first_wake(sources, seconds)
    except Exception:
        log.exception("waiting for work failed; sleeping the interval instead")
        await asyncio.sleep(max(seconds - (time.monotonic() - started), 0.0))
        return None


async def _first_wake(
    sources: dict[str, Callable[[float], Awaitable[bool]]], seconds: float
) -> Wake:
    if not sources:
        await asyncio.sleep(seconds)
        return None
    tasks = {asyncio.ensure_future(wait(seconds)): name for name, wait in sources.items()}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    woke = {tasks[task] for task in done if task.result()}  # a source that raised raises here
    if "ended" in woke:
        return "ended"  # a drain: it polls the ended run, and dispatches too
    return "notified" if woke else None


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
