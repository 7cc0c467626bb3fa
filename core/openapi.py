"""The OpenAPI document (built from the models, so it cannot drift from them) and a docs page
that renders it with no CDN, so it works offline."""

from __future__ import annotations

from functools import cache
from typing import Any

from core import __version__
from core.models import Job, JobSpec, JobState

REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _envelope(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": {"success": {"type": "boolean"}, **properties}}


ERRORS = {
    str(code): _json(_ref("Error"), text)
    for code, text in [
        (400, "bad input, the message names the field"),
        (401, "API key missing"),
        (404, "no such job (or another tenant's)"),
        (413, "body too large"),
    ]
}
JOB_ID = [{"name": "jobId", "in": "path", "required": True, "schema": {"type": "string"}}]
JOB_RESPONSE = _json(_envelope(job=_ref("Job")), "the job")


def _operation(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": {**responses, **ERRORS}, **extra}


def _paths() -> dict[str, Any]:
    body = {"required": True, "content": {"application/json": {"schema": _ref("JobSpec")}}}
    idem = [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "a retried POST returns the same job",
        }
    ]
    batch = {
        "type": "object",
        "required": ["jobs"],
        "properties": {"jobs": {"type": "array", "items": _ref("JobSpec")}},
    }
    meeting = {
        "type": "object",
        "required": ["meeting_url"],
        "additionalProperties": True,
        "properties": {
            "meeting_url": {"type": "string"},
            "bot_name": {"type": "string"},
            "email": {"type": "string"},
            "recording_mode": {"type": "string"},
            "priority": {"type": "integer"},
        },
    }
    listing = [
        {"name": "status", "in": "query", "schema": {"enum": [s.value for s in JobState]}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 200}},
        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
    ]
    jobs = "/api/scheduler/jobs"
    return {
        "/health": {"get": {"summary": "Liveness", "responses": {"200": _json({})}}},
        jobs: {
            "post": _operation(
                "Submit a job",
                {"201": JOB_RESPONSE, "200": JOB_RESPONSE},
                requestBody=body,
                parameters=idem,
            ),
            "get": _operation(
                "List the caller's jobs, newest first",
                {
                    "200": _json(
                        _envelope(
                            jobs={"type": "array", "items": _ref("Job")},
                            nextCursor={"type": "string"},
                        )
                    )
                },
                parameters=listing,
            ),
        },
        f"{jobs}/batch": {
            "post": _operation(
                "Submit many jobs; per-item results and errors",
                {"201": _json(_envelope()), "207": _json(_envelope())},
                requestBody={"required": True, "content": {"application/json": {"schema": batch}}},
            )
        },
        jobs + "/{jobId}": {
            "get": _operation("A job", {"200": JOB_RESPONSE}, parameters=JOB_ID),
            "delete": _operation(
                "Cancel a job (stops its bot)",
                {"200": JOB_RESPONSE, "409": _json(_ref("Error"), "already finished")},
                parameters=JOB_ID,
            ),
        },
        jobs + "/{jobId}/logs": {
            "get": _operation(
                "The bot's output",
                {"200": _json(_envelope(logs={"type": "string"}))},
                parameters=[
                    *JOB_ID,
                    {"name": "tail", "in": "query", "schema": {"type": "integer"}},
                ],
            )
        },
        "/api/scheduler/stats": {
            "get": _operation(
                "Queue and run counts",
                {
                    "200": _json(
                        _envelope(
                            queueSize={"type": "integer"},
                            runningJobs={"type": "integer"},
                            maxConcurrentJobs={"type": "integer"},
                        )
                    )
                },
            )
        },
        "/api/scheduler/meetings": {
            "post": _operation(
                "Submit the seed's snake_case bot config",
                {"201": JOB_RESPONSE},
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": meeting}},
                },
            )
        },
    }


@cache
def openapi_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in (JobSpec, Job):
        schema = model.model_json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    schemas["Error"] = {
        "type": "object",
        "required": ["success", "error", "message"],
        "properties": {
            "success": {"const": False},
            "error": {"type": "string"},
            "message": {"type": "string"},
        },
    }
    security: list[dict[str, list[str]]] = [{"apiKey": []}, {"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Bot Scheduler API", "version": __version__},
        "paths": _paths(),
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": security,
    }


DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Bot Scheduler API</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
.op{border:1px solid #ddd;border-radius:6px;margin:.6rem 0;padding:.5rem .8rem}
.m{display:inline-block;min-width:4.5rem;font-weight:700;text-transform:uppercase}
.get{color:#0a6}.post{color:#06c}.delete{color:#c30}
pre{background:#f6f6f6;padding:.6rem;overflow:auto;font-size:13px}
</style></head>
<body><h1>Bot Scheduler API</h1>
<p>Send your key as <code>X-API-Key</code> or <code>Authorization: Bearer</code>.
The machine-readable document is at <a href="openapi.json">openapi.json</a>.</p>
<div id="ops">Loading…</div>
<script>
fetch("openapi.json").then(r => r.json()).then(doc => {
  const out = document.getElementById("ops"); out.textContent = "";
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const el = document.createElement("div"); el.className = "op";
      const head = document.createElement("div");
      head.innerHTML = `<span class="m ${method}">${method}</span><code></code> `;
      head.querySelector("code").textContent = path;
      head.append(op.summary || "");
      el.append(head);
      const body = op.requestBody && op.requestBody.content["application/json"].schema;
      if (body) {
        const pre = document.createElement("pre");
        const ref = body.$ref ? doc.components.schemas[body.$ref.split("/").pop()] : body;
        pre.textContent = JSON.stringify(ref.properties || ref, null, 2);
        el.append(pre);
      }
      out.append(el);
    }
  }
});
</script></body></html>
"""
