"""New jobs: random version 4 UUIDs as ids, written as `str(uuid.uuid4())` writes them, and
jobs built from a spec as validation would build them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from core.models import Job, JobSpec
from core.values import new_job_id


def test_new_job_ids_are_random_version_4_uuids_in_canonical_form() -> None:
    ids = [new_job_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_a_job_built_from_a_spec_shares_no_default_with_other_jobs() -> None:
    """Job.from_spec copies a blank job: every field with a default factory (a mutable default)
    must come from the spec, or two jobs would share it."""
    factories = {name for name, field in Job.model_fields.items() if field.default_factory}
    assert factories <= set(JobSpec.model_fields)
    now = datetime.now(UTC)
    fields = {"tenant": "t", "createdAt": now, "updatedAt": now, "notBefore": now}
    spec = JobSpec(meetingUrl="https://meet.example.com/a", config={"k": [1]})
    built = Job.from_spec(spec, id="a", **fields)
    assert built == Job(**spec.model_dump(), id="a", **fields)
