"""The row layout of the Azure Table store (the design is in core/stores/azure_table.py).

Every row a job needs is computed from the job alone (`job_entity`, `key_rows`, `index_rows`), so
a write diffs the rows of the stored job against those of the new one (`plan`) and applies the
difference in the same entity group transaction as the job row itself.

The Azure SDK is imported on first use (`sdk()`), never when this module is imported.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

from core.errors import BadRequest, ConfigError, PayloadTooLarge
from core.models import MAX_PRIORITY, Job, JobState, to_ms

if TYPE_CHECKING:
    from azure.core import MatchConditions
    from azure.core.credentials import AzureSasCredential
    from azure.core.exceptions import (
        HttpResponseError,
        ResourceExistsError,
        ResourceModifiedError,
        ResourceNotFoundError,
    )
    from azure.data.tables import EdmType, EntityProperty, TableTransactionError, UpdateMode
    from azure.data.tables.aio import TableServiceClient

INSTALL_HINT = "pip install 'bot-scheduler[azure]'"

JOBS = "jobs"  # the partition of job rows, key rows and index rows: one transaction scope
LEASES = "lease"
OPEN = "open"  # the state list rows carry for jobs not final (core/stores/azure_lists.py)
ALL = "*"  # the list scope of all tenants; never a tenant's scope (`part` escapes '*')
CHUNK_UNITS = 32_000  # a string property holds 64 KiB of UTF-16: at most 32,768 code units
MAX_CHUNKS = 15  # 15 x 32,000 UTF-16 units = 960,000 bytes, under the 1 MiB entity limit
MAX_ID_BYTES = 128  # job ids appear (hex-encoded) in RowKeys, which are limited to 1 KiB
MAX_PART = 200
MS_MAX = 10**15 - 1  # epoch milliseconds as 15 digits (until the year 33658)
KEY_FIELDS = ("dedupKey", "idempotencyKey")

Entity = dict[str, Any]
Op = tuple[str, Entity, dict[str, Any]]  # (operation, entity, keyword arguments)
Stamped = tuple[Job, str | None]  # a job as stored, with the stamp of the write that stored it


class Sdk(NamedTuple):
    """The parts of azure-core and azure-data-tables the store uses, loaded on first use."""

    service_client: type[TableServiceClient]
    sas_credential: type[AzureSasCredential]
    entity_property: type[EntityProperty]
    edm_type: type[EdmType]
    update_mode: type[UpdateMode]
    match_conditions: type[MatchConditions]
    transaction_error: type[TableTransactionError]
    not_found: type[ResourceNotFoundError]
    exists: type[ResourceExistsError]
    modified: type[ResourceModifiedError]
    http_error: type[HttpResponseError]


@functools.cache
def sdk() -> Sdk:
    try:
        import aiohttp  # noqa: F401  (the async transport of azure-core needs it at request time)
        from azure.core import MatchConditions
        from azure.core.credentials import AzureSasCredential
        from azure.core.exceptions import (
            HttpResponseError,
            ResourceExistsError,
            ResourceModifiedError,
            ResourceNotFoundError,
        )
        from azure.data.tables import EdmType, EntityProperty, TableTransactionError, UpdateMode
        from azure.data.tables.aio import TableServiceClient
    except ImportError as exc:
        raise ConfigError(
            f"the Azure Table store needs azure-data-tables and aiohttp: {INSTALL_HINT}"
        ) from exc
    return Sdk(
        TableServiceClient, AzureSasCredential, EntityProperty, EdmType, UpdateMode,
        MatchConditions, TableTransactionError, ResourceNotFoundError, ResourceExistsError,
        ResourceModifiedError, HttpResponseError,
    )  # fmt: skip


# -- values --


def int64(value: int) -> EntityProperty:
    """An Edm.Int64 value: epoch milliseconds overflow the Int32 an untyped int may become."""
    return sdk().entity_property(value, sdk().edm_type.INT64)


def as_int(value: Any) -> int:
    """An integer property as read back (Int64 values come back as EntityProperty tuples)."""
    return int(value[0] if isinstance(value, tuple) else value)


def ms(moment: Any) -> int:
    return min(max(to_ms(moment), 0), MS_MAX)


def part(text: str) -> str:
    """A user string as a key part: no '/', '\\', '#', '?', '|' or control characters (all
    percent-escaped), and bounded (a long one is hashed; '%%' never occurs in escaped text)."""
    quoted = quote(text, safe="")
    if len(quoted) <= MAX_PART:
        return quoted
    return "%%" + hashlib.sha256(text.encode()).hexdigest()


def check_id(job_id: str) -> None:
    if not job_id or len(job_id.encode()) > MAX_ID_BYTES:
        raise BadRequest(f"job ids are 1 to {MAX_ID_BYTES} bytes long in the Azure Table store")


def asc(job_id: str) -> str:
    """The id as a key part that sorts like the id itself (hex of its UTF-8)."""
    return job_id.encode().hex()


def desc(job_id: str) -> str:
    """The id as a key part that sorts like the id, reversed: each byte complemented, then '~'
    (above every hex digit), so that a longer id sorts before its own prefix."""
    return bytes(255 - byte for byte in job_id.encode()).hex() + "~"


def prefix_range(prefix: str) -> str:
    """A filter on the RowKeys starting with `prefix` (which ends with '|')."""
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return f"RowKey ge '{prefix}' and RowKey lt '{upper}'"


# -- row keys --


def job_key(job_id: str) -> str:
    return "j|" + quote(job_id, safe="")


def queue_key(job: Job) -> str:
    return f"q|{MAX_PRIORITY - job.priority:03d}|{ms(job.sort_time):015d}|{asc(job.id)}"


def deadline_key(deadline_ms: int, job_id: str) -> str:
    return f"d|{deadline_ms:015d}|{asc(job_id)}"


def active_key(job_id: str) -> str:
    return "a|" + quote(job_id, safe="")


def list_prefix(tenant: str | None) -> str:
    return f"l|{ALL if tenant is None else part(tenant)}|"


def list_key(tenant: str | None, created_ms: int, job_id: str) -> str:
    return f"{list_prefix(tenant)}{MS_MAX - created_ms:015d}|{desc(job_id)}"


def key_key(field: str, tenant: str, key: str) -> str:
    return f"k|{field}|{part(tenant)}|{part(key)}"


# -- rows --


def split_utf16(text: str, units: int) -> list[str]:
    """`text` in pieces of at most `units` UTF-16 code units, never splitting a surrogate pair."""
    raw = text.encode("utf-16-le")
    pieces, start = [], 0
    while start < len(raw):
        end = min(start + 2 * units, len(raw))
        if end < len(raw) and 0xD8 <= raw[end - 1] <= 0xDB:  # ends on a high surrogate
            end -= 2
        pieces.append(raw[start:end].decode("utf-16-le"))
        start = end
    return pieces


def data_name(index: int) -> str:
    return "data" if index == 0 else f"data{index}"


def job_entity(job: Job) -> Entity:
    """The job row: the job's JSON (in `data`, `data1`, ... when it exceeds one property) and
    typed copies of the fields an operator filters on."""
    entity: Entity = {
        "PartitionKey": JOBS,
        "RowKey": job_key(job.id),
        "jobId": job.id,
        "tenant": job.tenant,
        "state": job.status.value,
        "priority": job.priority,
        "sortMs": int64(ms(job.sort_time)),
        "notBeforeMs": int64(ms(job.notBefore)),
        "createdMs": int64(ms(job.createdAt)),
        "updatedMs": int64(ms(job.updatedAt)),
        **data_columns(job.model_dump_json(exclude={"version"}), "job"),
    }
    if job.deadline is not None:
        entity["deadlineMs"] = int64(ms(job.deadline))
    return entity


def data_columns(text: str, what: str) -> Entity:
    """`text` (JSON) as the columns `chunks`, `data`, `data1`, ...: PayloadTooLarge beyond
    MAX_CHUNKS (a job's JSON, a record's)."""
    chunks = split_utf16(text, CHUNK_UNITS)
    if len(chunks) > MAX_CHUNKS:
        raise PayloadTooLarge(
            f"the {what} is larger than the Azure Table store keeps ({MAX_CHUNKS * CHUNK_UNITS} "
            "UTF-16 code units of JSON)"
        )
    columns: Entity = {"chunks": len(chunks)}
    for index, chunk in enumerate(chunks):
        columns[data_name(index)] = chunk
    return columns


def data_text(entity: Any) -> str:
    """The text `data_columns` split."""
    return "".join(entity[data_name(index)] for index in range(as_int(entity["chunks"])))


def job_from_entity(entity: Any) -> Job:
    job = Job.model_validate_json(data_text(entity))
    job.version = entity.metadata["etag"]
    return job


def key_rows(job: Job) -> dict[str, Entity]:
    """One row per dedup or idempotency key, naming the job that holds it."""
    rows: dict[str, Entity] = {}
    for field in KEY_FIELDS:
        key = getattr(job, field)
        if key is not None:
            rows[key_key(field, job.tenant, key)] = {
                "jobId": job.id, "tenant": job.tenant, "field": field, "key": key,
            }  # fmt: skip
    return rows


def index_rows(job: Job, stamp: str | None = None) -> dict[str, Entity]:
    """The index rows the job has in its current state: two list rows (its tenant's and all
    tenants'), a queue row and a deadline row while queued, an active row while active. The
    queue and active rows carry the `stamp` of the write (`new_stamp`), as the job row does."""
    created = ms(job.createdAt)
    state = job.status.value if job.status.final else OPEN  # core/stores/azure_lists.py
    listed: Entity = {"jobId": job.id, "createdMs": int64(created), "state": state}
    rows = {list_key(job.tenant, created, job.id): listed, list_key(None, created, job.id): listed}
    stamped = {"stamp": stamp} if stamp is not None else {}
    if job.status is JobState.QUEUED:
        queued = {"jobId": job.id, "notBeforeMs": int64(ms(job.notBefore)), **stamped}
        rows[queue_key(job)] = queued
        if job.deadline is not None:
            rows[deadline_key(ms(job.deadline), job.id)] = {"jobId": job.id}
    if job.status.active:
        rows[active_key(job.id)] = {"jobId": job.id, **stamped}
    return rows


def new_stamp() -> str:
    """A mark unique to one write of a job: the job row and its queue and active rows carry it,
    all written in one transaction. A reader holding the job as that write left it (its latest
    read or write) knows from a queue or active row with the same mark that it is still current,
    and needs no point read (core/stores/azure_table.py `_checked`)."""
    return secrets.token_hex(8)


def stamp_of(entity: Any) -> str | None:
    stamp = entity.get("stamp")
    return stamp if isinstance(stamp, str) else None


def _row(row_key: str, properties: Entity) -> Entity:
    return {"PartitionKey": JOBS, "RowKey": row_key, **properties}


def plan(
    old: Stamped | None, new: Job, stamp: str, etag: str | None, missing: frozenset[str]
) -> list[Op]:
    """The transaction that writes `new` with `stamp` over `old` (the stored job and its stamp,
    None for a create) at `etag`: the job row first, then new key rows (create: a taken key
    fails the transaction), then the deletions and upserts of index rows. Rows in `missing` are
    not deleted."""
    s = sdk()
    job_row = {**job_entity(new), "stamp": stamp}
    old_job = old[0] if old is not None else None
    if old_job is None:
        ops: list[Op] = [("create", job_row, {})]
    else:
        condition = {"etag": etag, "match_condition": s.match_conditions.IfNotModified}
        ops = [("update", job_row, {"mode": s.update_mode.REPLACE, **condition})]
    old_keys = key_rows(old_job) if old_job else {}
    new_keys = key_rows(new)
    ops += [("create", _row(rk, row), {}) for rk, row in new_keys.items() if rk not in old_keys]
    old_index = index_rows(*old) if old is not None else {}
    new_index = index_rows(new, stamp)
    gone = [rk for rk in (*old_keys, *old_index) if rk not in new_keys and rk not in new_index]
    ops += [("delete", _row(rk, {}), {}) for rk in gone if rk not in missing]
    replace = {"mode": s.update_mode.REPLACE}
    ops += [
        ("upsert", _row(rk, row), replace)
        for rk, row in new_index.items()
        if old_index.get(rk) != row
    ]
    return ops
