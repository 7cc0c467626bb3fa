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
    lines += lead_lines(scheduler)
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
        "missed",
        "undone",
        "status_errors",
        "stop_errors",
        "start_errors",
        "orphans_stopped",
    )
    lines += [f'botsched_events_total{{event="{e}"}} {scheduler.events[e]}' for e in events]
    return "\n".join(lines) + "\n"


def lead_lines(scheduler: Scheduler) -> list[str]:
    """The join lead learned for the backend and what it rests on (core/leads.py), as this
    process last read or wrote it (a scheduled submit, a start or the stats read it again when
    it is REFRESH_SECONDS old): no store read here."""
    lead = scheduler.leads.current()
    label = f'{{backend="{scheduler.backend.name}"}}'
    lines = [
        "# HELP botsched_join_lead_seconds How long before joinAt a scheduled job is started.",
        "# TYPE botsched_join_lead_seconds gauge",
        f"botsched_join_lead_seconds{label} {lead.seconds:g}",
        "# HELP botsched_start_latency_samples Start latencies the join lead is learned from.",
        "# TYPE botsched_start_latency_samples gauge",
        f"botsched_start_latency_samples{label} {lead.samples}",
    ]
    if lead.p95 is not None:
        lines += [
            "# HELP botsched_start_latency_p95_seconds The p95 of claim -> running over them.",
            "# TYPE botsched_start_latency_p95_seconds gauge",
            f"botsched_start_latency_p95_seconds{label} {lead.p95:g}",
        ]
    return lines
