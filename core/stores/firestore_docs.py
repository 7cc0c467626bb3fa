"""The document layout of the Firestore store (the design is in core/stores/firestore.py).

Everything a document holds is computed from the job alone (`job_fields`, `key_docs`), and every
document id is built by `part`, which escapes what Firestore forbids in an id.

The Firestore SDK is imported on first use (`sdk()`), never when this module is imported.
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

from core.errors import ConfigError, PayloadTooLarge
from core.models import MAX_PRIORITY, Job, JobState, to_ms

if TYPE_CHECKING:
    from google.api_core.exceptions import AlreadyExists, FailedPrecondition, NotFound
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.firestore_v1 import FieldFilter
    from google.cloud.firestore_v1.async_client import AsyncClient
    from proto.datetime_helpers import DatetimeWithNanoseconds  # type: ignore[import-untyped]

INSTALL_HINT = "pip install 'bot-scheduler[gcp]'"

DEFAULT_DATABASE = "(default)"
DEFAULT_COLLECTION = "botsched_jobs"
KEYS_SUFFIX = "_keys"
LEASES_SUFFIX = "_leases"
KEY_FIELDS = ("dedupKey", "idempotencyKey")
MAX_PART = 300  # escaped bytes of one id part; a longer one is hashed (ids may take 1,500 bytes)
MAX_DATA_BYTES = 1_000_000  # the job's JSON; a document may take 1 MiB in all
MS_MAX = 10**15 - 1  # epoch milliseconds as 15 digits in `queue_key` (until the year 33658)
_COLLECTION = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,99}$")

Fields = dict[str, Any]


class Sdk(NamedTuple):
    """The parts of google-cloud-firestore and google-api-core the store uses."""

    async_client: type[AsyncClient]
    anonymous_credentials: type[AnonymousCredentials]
    field_filter: type[FieldFilter]
    delete_field: Any  # the sentinel that removes a field in an update
    descending: str
    timestamp: type[DatetimeWithNanoseconds]
    already_exists: type[AlreadyExists]
    failed_precondition: type[FailedPrecondition]
    not_found: type[NotFound]


@functools.cache
def sdk() -> Sdk:
    try:
        from google.api_core.exceptions import AlreadyExists, FailedPrecondition, NotFound
        from google.auth.credentials import AnonymousCredentials
        from google.cloud.firestore_v1 import DELETE_FIELD, FieldFilter
        from google.cloud.firestore_v1.async_client import AsyncClient
        from google.cloud.firestore_v1.base_query import BaseQuery
        from proto.datetime_helpers import DatetimeWithNanoseconds
    except ImportError as exc:
        raise ConfigError(
            f"the Firestore store needs google-cloud-firestore: {INSTALL_HINT}"
        ) from exc
    return Sdk(
        AsyncClient, AnonymousCredentials, FieldFilter, DELETE_FIELD, BaseQuery.DESCENDING,
        DatetimeWithNanoseconds, AlreadyExists, FailedPrecondition, NotFound,
    )  # fmt: skip


def check_collection(name: str) -> str:
    if not _COLLECTION.match(name) or (name.startswith("__") and name.endswith("__")):
        raise ConfigError(
            f"FIRESTORE_COLLECTION={name!r}: 1-100 letters, digits, '_' or '-', starting with a "
            "letter"
        )
    return name


# -- ids --


def part(text: str) -> str:
    """`text` as (part of) a document id: '/' (and every other byte but letters, digits, '-' and
    '~') percent-escaped, so no id is '.', '..', `__x__` or holds a '/'; '|' separates parts. A
    part longer than MAX_PART is hashed ('%%' never occurs in escaped text)."""
    quoted = quote(text, safe="").replace(".", "%2E").replace("_", "%5F")
    if len(quoted) <= MAX_PART:
        return quoted
    return "%%" + hashlib.sha256(text.encode()).hexdigest()


def key_doc_id(field: str, tenant: str, key: str) -> str:
    return f"{part(tenant)}|{field}|{part(key)}"


# -- versions: the document's update time, RFC 3339 with nanoseconds --


def version(update_time: DatetimeWithNanoseconds) -> str:
    return f"{update_time:%Y-%m-%dT%H:%M:%S}.{update_time.nanosecond:09d}Z"


def timestamp(text: str) -> DatetimeWithNanoseconds | None:
    """The update time a version names, or None when `text` is not a version."""
    try:
        return sdk().timestamp.from_rfc3339(text)
    except (ValueError, TypeError):
        return None


# -- documents --


def queue_key(job: Job) -> str:
    """Sorts like the queue: priority desc, then joinAt or createdAt asc, then id."""
    sort_ms = min(max(to_ms(job.sort_time), 0), MS_MAX)
    return f"{MAX_PRIORITY - job.priority:03d}|{sort_ms:015d}|{job.id}"


def job_fields(job: Job, *, update: bool) -> Fields:
    """The job document: its JSON in `data` and the fields the queries use. `queue_key` is there
    only while the job is queued, `deadline_queued_ms` only while it is queued with a deadline;
    an update removes them otherwise (a create leaves them out)."""
    data = job.model_dump_json(exclude={"version"})
    if len(data.encode()) > MAX_DATA_BYTES:
        raise PayloadTooLarge(
            f"the job is larger than the Firestore store keeps ({MAX_DATA_BYTES} bytes of JSON)"
        )
    queued = job.status is JobState.QUEUED
    optional: Fields = {
        "queue_key": queue_key(job) if queued else None,
        "deadline_queued_ms": to_ms(job.deadline) if queued and job.deadline else None,
    }
    fields: Fields = {
        "id": job.id,
        "tenant": job.tenant,
        "state": job.status.value,
        "priority": job.priority,
        "created_ms": to_ms(job.createdAt),
        "not_before_ms": to_ms(job.notBefore),
        "data": data,
    }
    for name, value in optional.items():
        if value is not None:
            fields[name] = value
        elif update:
            fields[name] = sdk().delete_field
    return fields


def job_from(snapshot: Any) -> Job:
    job = Job.model_validate_json(snapshot.get("data"))
    job.version = version(snapshot.update_time)
    return job


def key_docs(job: Job) -> dict[str, Fields]:
    """One document per dedup or idempotency key, naming the job that holds it."""
    docs: dict[str, Fields] = {}
    for field in KEY_FIELDS:
        key = getattr(job, field)
        if key is not None:
            docs[key_doc_id(field, job.tenant, key)] = {
                "job": job.id, "tenant": job.tenant, "field": field, "key": key,
            }  # fmt: skip
    return docs
