"""Prometheus text exposition, written by hand: a few gauges and counters need no client library."""

from __future__ import annotations

from core.models import JobState
from core.scheduler import Scheduler


def render_metrics(
    counts: dict[JobState, int], scheduler: Scheduler, tenant: str | None = None
) -> str:
    """Every tenant's jobs and this process's events, or with `tenant` that tenant's jobs
    alone (the event counters mix tenants, so they are left out)."""
    whose = "all tenants" if tenant is None else "the caller's tenant"
    lines = [
        f"# HELP botsched_jobs Jobs in the store, by state ({whose}).",
        "# TYPE botsched_jobs gauge",
    ]
    lines += [f'botsched_jobs{{state="{state.value}"}} {counts[state]}' for state in JobState]
    lines += [
        "# HELP botsched_max_concurrent_jobs The global concurrency cap.",
        "# TYPE botsched_max_concurrent_jobs gauge",
        f"botsched_max_concurrent_jobs {scheduler.settings.max_concurrent_jobs}",
    ]
    if tenant is not None:
        return "\n".join(lines) + "\n"
    lines += [
        "# HELP botsched_events_total Transitions made by this process since it started.",
        "# TYPE botsched_events_total counter",
    ]
    events = (
        "submitted",
        "dispatched",
        "completed",
        "failed",
        "cancelled",
        "retried",
        "expired",
        "undone",
        "status_errors",
        "stop_errors",
        "start_errors",
        "orphans_stopped",
    )
    lines += [f'botsched_events_total{{event="{e}"}} {scheduler.events[e]}' for e in events]
    return "\n".join(lines) + "\n"
