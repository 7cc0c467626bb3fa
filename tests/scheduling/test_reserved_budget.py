"""The claim's budget with reservations (core/reserved_budget.py), on its own: a pure object
over a given view of the reservations (no store); the scheduler's use of it on every store is
in test_reservations.py."""

from __future__ import annotations

from core.models import Job
from core.reserved_budget import Budget, Reserved, ReservedBudget
from tests.contract.conftest import make_job
from tests.unit.conftest import T0, settings

BUCKET = 900


def budget(reserved: list[list[tuple[str, str]]], active: list[Job], **caps: int) -> ReservedBudget:
    config = settings(reservation_bucket_seconds=BUCKET, expected_run_seconds=3600, **caps)
    first = int(T0.timestamp()) // BUCKET
    return ReservedBudget(
        Budget(config, active), Reserved(first, reserved), [j.id for j in active], config, T0
    )


def job(job_id: str, tenant: str = "a", run: int | None = None) -> Job:
    return make_job(id=job_id, tenant=tenant, maxRuntimeSeconds=run)


def test_a_job_leaves_every_reservation_over_its_run_its_slot() -> None:
    reserved = [[("X", "a")], [], [("Z", "b"), ("W", "b")], []]
    found = budget(reserved, [job("busy")], max_concurrent_jobs=3)
    assert not found.fits("a", job("long"))  # 1 active + 2 reserved at 1800..2700: full
    assert found.fits("a", job("short", run=BUCKET))  # only the current bucket: 1 + 1 < 3
    found.take("a")
    assert not found.fits("a", job("short2", run=BUCKET))  # 2 + 1 reserved now
    assert found.fits("a", job("X"))  # its own reservation: its slot
    found.take("a")
    assert found.free == 0


def test_a_reservation_taken_is_not_counted_again() -> None:
    found = budget([[("X", "a"), ("Y", "a")], []], [], max_concurrent_jobs=3)
    assert found.fits("a", job("X"))
    found.take("a")
    assert found.fits("a", job("plain", run=BUCKET))  # 1 claimed + 1 reserved (Y) < 3
    found.take("a")
    assert not found.fits("a", job("more", run=BUCKET))
    assert found.fits("a", job("Y"))


def test_active_jobs_reservations_are_counted_once_and_tenants_apart() -> None:
    active = [job("X")]  # reserved and running: counted as active only
    found = budget(
        [[("X", "a"), ("Q", "a")]], active, max_concurrent_jobs=4, max_concurrent_per_tenant=2
    )
    assert not found.fits("a", job("mine", run=BUCKET))  # a: 1 active + 1 reserved (Q) = 2
    assert found.fits("b", job("theirs", run=BUCKET))
    assert found.fits("a", job("Q"))
    assert found.fits("a")  # no job: the caps alone
