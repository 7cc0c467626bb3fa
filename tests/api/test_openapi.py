"""The published OpenAPI document says what the server does: every operation, parameter and field
described with an example, the responses it can give, the constraints it checks, and the shapes
it answers with (checked against real answers here; schemathesis checks many more)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from core.models import EXAMPLE_ID
from core.openapi import openapi_document
from core.openapi_paths import EXAMPLE_CURSOR
from core.stores.cursor import decode_cursor
from tests.api.conftest import JOBS, Api, MakeApi, later

ROOT = Path(__file__).resolve().parents[2]
DOC = openapi_document()
SCHEMAS = DOC["components"]["schemas"]
OPERATIONS = [
    (method, path, operation)
    for path, item in DOC["paths"].items()
    for method, operation in item.items()
]
JOB_OPERATIONS = {(m, p) for m, p, _ in OPERATIONS if "{jobId}" in p}
BODY_OPERATIONS = {(m, p) for m, p, op in OPERATIONS if "requestBody" in op}


def properties(schema: dict[str, Any], where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every property of a schema, through allOf, anyOf and nested objects."""
    for name, child in schema.get("properties", {}).items():
        yield f"{where}.{name}", child
        yield from properties(child, f"{where}.{name}")
    for key in ("allOf", "anyOf"):
        for index, part in enumerate(schema.get(key, [])):
            yield from properties(part, f"{where}.{key}[{index}]")


@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS)
def test_every_operation_is_described(method: str, path: str, operation: dict[str, Any]) -> None:
    assert operation["summary"] and operation["description"] and operation["operationId"]
    assert operation["tags"]
    codes = set(operation["responses"])
    for code, response in operation["responses"].items():
        assert response["description"], code
    public = operation.get("security") == []
    assert public or {"401", "429"} <= codes
    if (method, path) in JOB_OPERATIONS:
        assert "404" in codes
    if (method, path) in BODY_OPERATIONS:
        assert {"400", "408", "413"} <= codes
    if (method, path) in {("delete", JOBS + "/{jobId}"), ("post", "/api/scheduler/meetings")}:
        assert "409" in codes
    for parameter in operation.get("parameters", []):
        assert parameter["description"] and "example" in parameter, parameter["name"]


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_field_has_a_description_and_an_example(name: str) -> None:
    for where, schema in properties(SCHEMAS[name], name):
        if "$ref" in schema or "allOf" in schema:
            continue
        assert schema.get("description"), where
        if schema.get("type") != "array" and not {"const", "properties"} & schema.keys():
            assert schema.get("examples") or schema.get("enum"), where


def test_the_job_schema_is_what_the_server_serves() -> None:
    job = SCHEMAS["Job"]
    assert "tenant" not in job["properties"]
    assert set(job["required"]) == set(job["properties"])
    assert {"leaseOwner", "leaseUntil", "version"}.isdisjoint(job["properties"])
    assert job["properties"]["containerId"]["type"] == ["string", "null"]


def test_the_constraints_the_server_checks_are_published() -> None:
    spec = SCHEMAS["JobSpec"]["properties"]
    assert spec["meetingUrl"]["format"] == "uri"
    assert spec["meetingUrl"]["pattern"].startswith("^[Hh][Tt][Tt][Pp][Ss]?")
    assert spec["email"]["format"] == "email"
    assert spec["recordingMode"]["enum"] == ["speaker_view", "gallery_view", "audio_only"]
    assert (spec["priority"]["minimum"], spec["priority"]["maximum"]) == (0, 100)
    listing = {p["name"]: p["schema"] for p in DOC["paths"][JOBS]["get"]["parameters"]}
    assert (listing["limit"]["minimum"], listing["limit"]["maximum"]) == (1, 200)
    tail = DOC["paths"][JOBS + "/{jobId}/logs"]["get"]["parameters"][1]["schema"]
    assert (tail["minimum"], tail["maximum"]) == (1, 10_000)
    assert SCHEMAS["JobList"]["properties"]["nextCursor"]["type"] == ["string", "null"]
    batch = SCHEMAS["BatchRequest"]["properties"]["jobs"]
    assert (batch["minItems"], batch["maxItems"]) == (1, 100)


def test_the_cursor_example_is_one_the_api_makes() -> None:
    assert decode_cursor(EXAMPLE_CURSOR) == (1_893_491_940_000, EXAMPLE_ID)


async def test_the_batch_limit_is_the_servers(make_api: MakeApi) -> None:
    api = await make_api({"SCHEDULER_MAX_BATCH_SIZE": "7"})
    doc = (await api.client.get("/openapi.json")).json()
    assert doc["components"]["schemas"]["BatchRequest"]["properties"]["jobs"]["maxItems"] == 7


def validator(doc: dict[str, Any], name: str) -> Draft202012Validator:
    registry = Registry().with_resource("doc", DRAFT202012.create_resource(doc))
    return Draft202012Validator(
        {"$ref": f"doc#/components/schemas/{name}"},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


async def answers(api: Api) -> dict[str, Any]:
    """One real answer of each shape, by schema name."""
    queued = await api.submit(joinAt=later(hours=1), email="bot@example.com")
    meeting = await api.client.post(
        "/api/scheduler/meetings", json={"meeting_url": queued["meetingUrl"]}
    )
    batch = await api.client.post(
        f"{JOBS}/batch", json={"jobs": [{"meetingUrl": "x"}, {"meetingUrl": queued["meetingUrl"]}]}
    )
    return {
        "JobResponse": (await api.client.get(f"{JOBS}/{queued['id']}")).json(),
        "JobList": (await api.client.get(JOBS, params={"limit": 1})).json(),
        "MeetingResponse": meeting.json(),
        "BatchResponse": batch.json(),
        "StatsResponse": (await api.client.get("/api/scheduler/stats")).json(),
        "Health": (await api.client.get("/health")).json(),
        "Info": (await api.client.get("/")).json(),
        "Error": (await api.client.get(f"{JOBS}/nope")).json(),
    }


async def test_real_answers_match_their_schemas(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()
    for name, answer in (await answers(api)).items():
        errors = [error.message for error in validator(doc, name).iter_errors(answer)]
        assert not errors, (name, errors)


async def test_a_wrong_answer_would_not_match(api: Api) -> None:
    doc = (await api.client.get("/openapi.json")).json()
    job = (await api.client.get(JOBS)).json()
    assert validator(doc, "JobList").is_valid(job)
    assert not validator(doc, "JobList").is_valid({**job, "nextCursor": 5})
    queued = await api.submit(joinAt=later(hours=1))
    assert not validator(doc, "Job").is_valid(
        {k: v for k, v in queued.items() if k != "containerId"}
    )


def test_importing_the_api_loads_no_docs_or_test_tool() -> None:
    heavy = ("swagger_ui_bundle", "selenium", "schemathesis", "hypothesis", "jinja2")
    code = (
        "import sys, json; before = set(sys.modules); import core.api, handlers.local; "
        "new = set(sys.modules) - before; "
        f"print(json.dumps(sorted(m for m in new if m.split('.')[0] in {heavy!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []
