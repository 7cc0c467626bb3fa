"""What the list rows of the Azure Table store carry, and how listings and counts read them (the
design is in core/stores/azure_table.py).

A list row carries the job's state when it is final, and `ix.OPEN` ("open") while the job is
queued or active: the writes that claim a job, start its run and stop it leave its list rows
alone, so each costs its transaction two operations fewer. The active jobs are few (the caps
bound them) and have their own index, so a listing of an active state and the counts of the
active states read them there; a listing of queued jobs reads the open rows and skips the active
jobs among them. Rows written before "open" existed name the job's state, queued or active: they
read as open.
"""

from __future__ import annotations

from collections.abc import Iterable

from core.models import Job, JobState, Page
from core.stores import azure_index as ix
from core.stores.cursor import decode_cursor, encode_cursor

_OPEN_STATES = (ix.OPEN, *(state.value for state in JobState if not state.final))


def state_filter(status: JobState) -> str:
    """The filter on list rows of jobs that may be in `status` (queued or final: an active
    state is listed from the active jobs, `active_page`)."""
    if status.final:
        return f"state eq '{status.value}'"
    return "(" + " or ".join(f"state eq '{state}'" for state in _OPEN_STATES) + ")"


def active_page(
    active: Iterable[Job], tenant: str | None, status: JobState, limit: int, cursor: str | None
) -> Page:
    """A page of the active jobs in `status` (of `tenant`, or of all), in the order of the list
    rows (newest first) and after `cursor` as a listing of the rows would be."""
    after = None
    if cursor is not None:
        created_ms, job_id = decode_cursor(cursor)
        after = ix.list_key(tenant, min(max(created_ms, 0), ix.MS_MAX), job_id)
    keyed = sorted(
        (ix.list_key(tenant, ix.ms(job.createdAt), job.id), job)
        for job in active
        if job.status is status and (tenant is None or job.tenant == tenant)
    )
    rest = [job for key, job in keyed if after is None or key > after]
    shown = rest[: max(limit, 0)]
    more = len(rest) > len(shown) and bool(shown)
    next_cursor = encode_cursor(ix.ms(shown[-1].createdAt), shown[-1].id) if more else None
    return Page(jobs=shown, nextCursor=next_cursor)


def tally(
    row_states: Iterable[str], active: Iterable[Job], tenant: str | None
) -> dict[JobState, int]:
    """The jobs in each state, from the states of the scope's list rows and the active jobs: the
    open rows less the active jobs are the queued ones."""
    counts = dict.fromkeys(JobState, 0)
    open_rows = 0
    for state in row_states:
        if state in _OPEN_STATES:
            open_rows += 1
        else:
            counts[JobState(state)] += 1
    for job in active:
        if tenant is None or job.tenant == tenant:
            counts[job.status] += 1
            open_rows -= 1
    counts[JobState.QUEUED] = max(open_rows, 0)
    return counts
