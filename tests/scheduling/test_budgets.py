"""Per-tenant bot-minute budgets (core/budgets.py) on EVERY store: memory, SQLite, Azure Table on
Azurite, Firestore on its emulator, D1 on its SQLite stand-in, PostgreSQL. The stores are real;
the backend (tests/fakes.py) and the clock are doubles. Two schedulers on one store play two
processes (each has its own caches and ledger hints). The same promises are measured from the
bots' side with real `botsched serve` processes in tests/stress/test_budgets_topology.py."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from core.budget_ledger import KIND as LEDGER
from core.budget_policy import Policy
from core.errors import BudgetExceeded
from core.models import JobSpec, JobState
from core.ports import JobStore
from core.scheduler import Scheduler
from tests.fakes import FakeBackend
from tests.scheduling.conftest import MakeScheduler
from tests.unit.conftest import MEETING, Clock

RUN = 180  # seconds: each job is charged 3 minutes


def job(**fields: Any) -> JobSpec:
    """A job of its own (a second bot is allowed, so no meeting slot is shared)."""
    return JobSpec(meetingUrl=MEETING, allowSecondBot=True, **{"maxRuntimeSeconds": RUN, **fields})


def budgeted(make: MakeScheduler, day: float | None = 10, **policy: Any) -> Scheduler:
    return make(
        max_concurrent_jobs=50,
        overbooking="queue",
        budgets={"acme": {"day": day, **policy}},
        expected_run_seconds=60,
    )


async def charged(scheduler: Scheduler, tenant: str = "acme") -> tuple[float, float]:
    use = await scheduler.budgets.usage(tenant)
    return use["day"]["chargedMinutes"], use["day"]["spentMinutes"]


async def test_concurrent_submits_never_charge_past_the_limit(
    make_scheduler: MakeScheduler,
) -> None:
    one, two = budgeted(make_scheduler), budgeted(make_scheduler)  # two processes
    results = await asyncio.gather(
        *(scheduler.submit("acme", job()) for scheduler in (one, two) * 10),
        return_exceptions=True,
    )
    created = [result for result in results if isinstance(result, tuple)]
    refused = [result for result in results if isinstance(result, BudgetExceeded)]
    assert len(created) == 3 and len(refused) == 17, results  # 3 x 3 min of 10
    assert await charged(one) == (9.0, 0.0)
    assert refused[0].details["remainingMinutes"] == 1.0
    assert refused[0].details["requiredMinutes"] == 3.0
    assert refused[0].status == 402 and refused[0].details["retryAfter"] > 0


async def test_a_cancel_gives_the_charge_back_once(make_scheduler: MakeScheduler) -> None:
    scheduler = budgeted(make_scheduler, day=6)
    first, _ = await scheduler.submit("acme", job())
    await scheduler.submit("acme", job())
    with pytest.raises(BudgetExceeded):
        await scheduler.submit("acme", job())
    await scheduler.cancel("acme", first.id)
    assert await charged(scheduler) == (3.0, 0.0)
    _, created = await scheduler.submit("acme", job())
    assert created and await charged(budgeted(make_scheduler, day=6)) == (6.0, 0.0)


async def test_a_finished_run_is_charged_its_real_minutes_exactly_once(
    make_scheduler: MakeScheduler, backend: FakeBackend, clock: Clock
) -> None:
    scheduler = budgeted(make_scheduler)
    queued, _ = await scheduler.submit("acme", job())
    await scheduler.drain_once()
    assert (await scheduler.get("acme", queued.id)).status is JobState.RUNNING
    clock.now += timedelta(seconds=90)
    backend.finish(queued.id)
    await scheduler.drain_once()
    await scheduler.drain_once()
    assert (await scheduler.get("acme", queued.id)).status is JobState.COMPLETED
    assert await charged(scheduler) == (1.5, 1.5)  # the 3 charged became the 1.5 it ran


async def test_a_run_lost_and_retried_counts_each_run_once(
    make_scheduler: MakeScheduler, backend: FakeBackend, clock: Clock
) -> None:
    scheduler = budgeted(make_scheduler)
    queued, _ = await scheduler.submit("acme", job())
    await scheduler.drain_once()
    clock.now += timedelta(seconds=60)
    backend.lost.add(queued.id)
    await scheduler.drain_once()  # the run is gone: back to the queue, its minute counted
    retried = await scheduler.get("acme", queued.id)
    assert retried.status is JobState.QUEUED
    assert await charged(scheduler) == (4.0, 1.0)  # still holding its 3, and the 1 it ran
    backend.lost.discard(queued.id)
    backend.executions.pop(queued.id)
    clock.now = retried.notBefore + timedelta(seconds=1)
    await scheduler.drain_once()
    clock.now += timedelta(seconds=30)
    backend.finish(queued.id)
    await scheduler.drain_once()
    assert (await scheduler.get("acme", queued.id)).status is JobState.COMPLETED
    assert await charged(scheduler) == (1.5, 1.5)


@pytest.mark.parametrize("on_exhausted", ["stop", "finish"])
async def test_a_bot_past_its_charge_is_stopped_when_nothing_is_left(
    make_scheduler: MakeScheduler, backend: FakeBackend, clock: Clock, on_exhausted: str
) -> None:
    scheduler = budgeted(make_scheduler, day=2, onExhausted=on_exhausted)
    running, _ = await scheduler.submit("acme", job(maxRuntimeSeconds=None))  # charged 1 min
    await scheduler.drain_once()
    clock.now += timedelta(seconds=90)  # 0.5 past its charge: 1.5 of 2 used
    await scheduler.drain_once()
    assert (await scheduler.get("acme", running.id)).status is JobState.RUNNING
    clock.now += timedelta(seconds=40)  # 2.17 of 2
    await scheduler.drain_once()
    await scheduler.drain_once()
    ended = await scheduler.get("acme", running.id)
    if on_exhausted == "finish":
        assert ended.status is JobState.RUNNING and not backend.stopped
        return
    assert ended.status is JobState.FAILED and ended.reason == "budget_exhausted"
    assert backend.stopped == [running.id]
    kinds = [event["type"] for event in await scheduler.job_events("acme", running.id)]
    assert kinds[-1] == "job.failed"
    assert await charged(scheduler) == (2.1667, 2.1667)


async def test_a_bot_within_its_charge_is_never_stopped(
    make_scheduler: MakeScheduler, backend: FakeBackend, clock: Clock
) -> None:
    scheduler = budgeted(make_scheduler, day=3)
    running, _ = await scheduler.submit("acme", job())  # charged all 3 minutes of 3
    await scheduler.drain_once()
    clock.now += timedelta(seconds=170)
    await scheduler.drain_once()
    assert (await scheduler.get("acme", running.id)).status is JobState.RUNNING
    assert not backend.stopped


async def test_a_new_process_finds_the_head_of_a_long_chain(
    make_scheduler: MakeScheduler,
) -> None:
    first = budgeted(make_scheduler, day=100, month=None)
    for _ in range(13):
        await first.submit("acme", job(maxRuntimeSeconds=60))
    later = budgeted(make_scheduler, day=100)  # no hints: doubles, then halves
    assert await charged(later) == (13.0, 0.0)
    await later.submit("acme", job(maxRuntimeSeconds=60))
    assert await charged(first) == (14.0, 0.0)


async def test_a_tenant_without_a_budget_writes_no_ledger(
    make_scheduler: MakeScheduler, store: JobStore
) -> None:
    scheduler = budgeted(make_scheduler)
    queued, created = await scheduler.submit("other", job())
    assert created and queued.budgetCharge is None
    assert await store.scan_records(LEDGER, "", 10) == []


async def test_a_stored_budget_overrides_the_settings(make_scheduler: MakeScheduler) -> None:
    scheduler = budgeted(make_scheduler, day=1)
    with pytest.raises(BudgetExceeded):
        await scheduler.submit("acme", job())
    await scheduler.budgets.set_policy("acme", Policy(day=30, onExhausted="finish"))
    assert (await scheduler.submit("acme", job()))[1]
    use = await scheduler.budgets.usage("acme")
    assert use["budget"] == {"day": 30.0, "month": None, "onExhausted": "finish"}
    assert use["day"]["remainingMinutes"] == 27.0
    await scheduler.budgets.set_policy("acme", None)
    with pytest.raises(BudgetExceeded):
        await scheduler.submit("acme", job())


async def test_a_repeated_key_gets_its_job_even_when_the_budget_is_spent(
    make_scheduler: MakeScheduler,
) -> None:
    scheduler = budgeted(make_scheduler, day=3)
    first, created = await scheduler.submit("acme", job(), idempotency_key="order-1")
    dedup, _ = await budgeted(make_scheduler, day=6).submit("acme", job(dedupKey="meet-2"))
    assert created
    again, created = await scheduler.submit("acme", job(), idempotency_key="order-1")
    assert (again.id, created) == (first.id, False)  # the retry, not a 402
    repeated, created = await scheduler.submit("acme", job(dedupKey="meet-2"))
    assert (repeated.id, created) == (dedup.id, False)
    with pytest.raises(BudgetExceeded):  # a new key is refused, and nothing was written
        await scheduler.submit("acme", job(), idempotency_key="order-2")
    assert len((await scheduler.list_jobs("acme")).jobs) == 2


async def test_admission_counts_what_running_bots_spent_past_their_charge(
    make_scheduler: MakeScheduler, clock: Clock
) -> None:
    scheduler = budgeted(make_scheduler, day=5, onExhausted="finish")
    await scheduler.submit("acme", job(maxRuntimeSeconds=None))  # charged 1 minute
    await scheduler.drain_once()
    clock.now += timedelta(seconds=150)  # 1.5 past its charge: 2.5 of 5 spent or held
    with pytest.raises(BudgetExceeded) as refused:
        await scheduler.submit("acme", job())  # 3 more would be 5.5
    assert refused.value.details["remainingMinutes"] == 2.5
    assert (await scheduler.submit("acme", job(maxRuntimeSeconds=120)))[1]  # 2 fit
