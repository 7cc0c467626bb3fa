"""A contract fake of the Cloud Run Admin API v2, for the cloudrun backend's tests.

Cloud Run has no emulator, so this Starlette app, served by uvicorn on a free loopback port in a
background thread (the official SDK's REST transport talks real HTTP to it), answers the way the
official discovery document (`tests/api_specs/cloud-run-v2/run.v2.json`) defines the API:

- every request is matched to a discovery method by its HTTP method and `path` template, and its
  path parameters must match the method's `pattern`s; query parameters must be the method's, the
  discovery's global ones, or `$alt` (the system parameter the SDK's REST transport sends);
- request bodies are validated with jsonschema against the method's request schema (e.g.
  GoogleCloudRunV2RunJobRequest), converted from the discovery `schemas` strictly: unknown fields
  are rejected, `google-duration` and `int64` strings are checked. Beyond the schema, what Cloud
  Run checks for the fields the backend sets (env names, value size, reserved names, task count,
  timeout range). A violation answers 400 INVALID_ARGUMENT and is kept in `invalid`;
- responses are what the discovery's response schema says (validated too): Executions, lists and
  GoogleLongrunningOperation bodies whose `metadata` is the Execution (`@type`
  type.googleapis.com/google.cloud.run.v2.Execution); `done` only once the execution has ended,
  as on Cloud Run. Errors are Google JSON errors ({"error": {code, message, status}}).

Tests play the platform: `set_running`, `succeed`, `fail`, `lose` (delete); `deny` answers 403 for
a method, `fail_next` answers one error. A cancelled execution fails with execution reason
CANCELLED; cancelling an ended one answers 400 FAILED_PRECONDITION (what Cloud Run answers there
is not in the discovery document: an assumption). Enums are served by name, not as the integers
`$alt=json;enum-encoding=int` asks for: the SDK reads both.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests import specs

SPEC = "cloud-run-v2/run.v2.json"
EXECUTION_TYPE = "type.googleapis.com/google.cloud.run.v2.Execution"
SYSTEM_PARAMETERS = {"$alt"}
RESERVED_ENV = {"PORT", "CLOUD_RUN_JOB", "CLOUD_RUN_EXECUTION", "CLOUD_RUN_TASK_INDEX"}
RESERVED_ENV |= {"CLOUD_RUN_TASK_ATTEMPT", "CLOUD_RUN_TASK_COUNT"}
MAX_ENV_VALUE = 32768
MAX_TIMEOUT = 168 * 3600
FORMATS = {
    "google-duration": r"^-?\d+(\.\d{1,9})?s$",
    "google-datetime": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$",
    "int64": r"^-?\d+$",
    "uint64": r"^\d+$",
}
STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}
STATUS |= {404: "NOT_FOUND", 409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED"}
STATUS |= {500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE"}


def load_spec() -> dict[str, Any]:
    return specs.load_json(SPEC)


def require_spec() -> None:
    specs.require(SPEC)


# -- discovery schemas as JSON Schema ---------------------------------------------------------


def json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """One discovery schema as JSON Schema; `$ref: Name` -> `#/$defs/Name`; objects strict."""
    if "$ref" in schema:
        return {"$ref": f"#/$defs/{schema['$ref']}"}
    kind = schema.get("type")
    if kind == "any":
        return {}
    if kind == "array":
        return {"type": "array", "items": json_schema(schema.get("items", {"type": "any"}))}
    if kind == "object":
        out: dict[str, Any] = {"type": "object"}
        if "properties" in schema:
            out["properties"] = {k: json_schema(v) for k, v in schema["properties"].items()}
            out["additionalProperties"] = False
        if "additionalProperties" in schema:
            out["additionalProperties"] = json_schema(schema["additionalProperties"])
        return out
    out = {"type": kind} if kind in ("string", "integer", "number", "boolean") else {}
    if "enum" in schema:
        out["enum"] = schema["enum"]
    if schema.get("format") in FORMATS and kind == "string":
        out["pattern"] = FORMATS[schema["format"]]
    if schema.get("format") == "int32":
        out.update(minimum=-(2**31), maximum=2**31 - 1)
    return out


@lru_cache(maxsize=16)
def validator(schema_name: str) -> Draft202012Validator:
    schemas = load_spec()["schemas"]
    definitions = {name: json_schema(schema) for name, schema in schemas.items()}
    return Draft202012Validator({"$ref": f"#/$defs/{schema_name}", "$defs": definitions})


def schema_errors(schema_name: str, instance: Any) -> list[str]:
    errors = validator(schema_name).iter_errors(instance)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


# -- discovery methods ------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    id: str
    http_method: str
    path: re.Pattern[str]
    spec: dict[str, Any] = field(repr=False)

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The path parameters, when `method path` is this method's and they fit its patterns."""
        found = self.path.fullmatch(path) if method == self.http_method else None
        if not found:
            return None
        params = found.groupdict()
        for name, value in params.items():
            pattern = self.spec["parameters"][name].get("pattern")
            if pattern and not re.fullmatch(pattern, value):
                return None
        return params


@lru_cache(maxsize=1)
def methods() -> tuple[Method, ...]:
    found: list[Method] = []

    def walk(resource: dict[str, Any]) -> None:
        for method in resource.get("methods", {}).values():
            template = re.escape(method["path"])
            template = re.sub(r"\\\{\\\+(\w+)\\\}", r"(?P<\1>[^:]+)", template)
            template = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/:]+)", template)
            found.append(Method(method["id"], method["httpMethod"], re.compile(template), method))
        for child in resource.get("resources", {}).values():
            walk(child)

    walk(load_spec())
    return tuple(found)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def error(code: int, message: str, status: str | None = None) -> JSONResponse:
    status = status or STATUS.get(code, "UNKNOWN")
    body = {"error": {"code": code, "message": message, "status": status}}
    return JSONResponse(body, status_code=code)


@dataclass
class Call:
    method: str
    params: dict[str, str]
    query: dict[str, str]
    body: Any


class CloudRunFake:
    def __init__(self, project: str = "demo-botsched", region: str = "europe-west1") -> None:
        self.spec = load_spec()
        self.project, self.region = project, region
        self.app = Starlette(
            routes=[Route("/{path:path}", self._route, methods=["GET", "POST", "PATCH", "DELETE"])]
        )
        self._lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.executions: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, str] = {}  # operation name -> execution name
        self.calls: list[Call] = []
        self.auth_headers: list[str | None] = []
        self.invalid: list[str] = []
        self.denied: set[str] = set()
        self.failures: dict[str, list[tuple[int, str | None]]] = {}
        self.add_job("bot-job")

    def job_name(self, job: str = "bot-job") -> str:
        return f"projects/{self.project}/locations/{self.region}/jobs/{job}"

    def add_job(self, job: str) -> dict[str, Any]:
        """A job as `gcloud run jobs deploy` would leave it: one container, no retries."""
        container: dict[str, Any] = {
            "name": "bot",
            "image": "europe-docker.pkg.dev/demo/bots/meet-bot:1",
            "env": [{"name": "LOG_LEVEL", "value": "info"}],
        }
        template = {"containers": [container], "maxRetries": 0, "timeout": "600s"}
        name = self.job_name(job)
        body: dict[str, Any] = {
            "name": name,
            "template": {"taskCount": 1, "parallelism": 1, "template": template},
            "createTime": now(),
        }
        assert not schema_errors("GoogleCloudRunV2Job", body)
        self.jobs[name] = body
        return body

    # -- playing the platform --------------------------------------------------------------

    def deny(self, method_id: str) -> None:
        self.denied.add(method_id)

    def fail_next(self, method_id: str, code: int, status: str | None = None) -> None:
        """The next call of `method_id` answers `code` (with gRPC `status`, else the code's)."""
        self.failures.setdefault(method_id, []).append((code, status))

    def set_running(self, name: str) -> None:
        with self._lock:
            self._update(name, startTime=now(), runningCount=1)
            self._condition(name, "Started", "CONDITION_SUCCEEDED")

    def succeed(self, name: str) -> None:
        with self._lock:
            execution = self.executions[name]
            execution.setdefault("startTime", now())
            execution.pop("runningCount", None)
            self._update(name, succeededCount=1, completionTime=now())
            self._condition(name, "Completed", "CONDITION_SUCCEEDED")

    def fail(
        self,
        name: str,
        message: str = "Task bot-job-x-task0 failed with message: The container exited with "
        "an error.",
        execution_reason: str = "NON_ZERO_EXIT_CODE",
    ) -> None:
        with self._lock:
            execution = self.executions[name]
            execution.setdefault("startTime", now())
            execution.pop("runningCount", None)
            self._update(name, failedCount=1, completionTime=now())
            self._condition(
                name, "Completed", "CONDITION_FAILED", message, executionReason=execution_reason
            )

    def lose(self, name: str) -> None:
        with self._lock:
            del self.executions[name]

    def ended(self, name: str) -> bool:
        return "completionTime" in self.executions[name]

    def runs(self) -> int:
        return sum(1 for call in self.calls if call.method == "run.projects.locations.jobs.run")

    # -- routes ----------------------------------------------------------------------------

    async def _route(self, request: Request) -> Response:
        path = request.url.path.lstrip("/")
        matched = [(m, p) for m in methods() if (p := m.match(request.method, path)) is not None]
        if len(matched) != 1:
            self.invalid.append(f"{request.method} /{path}: {len(matched)} discovery methods")
            return error(404, f"no discovery method for {request.method} /{path}")
        method, params = matched[0]
        raw = await request.body()
        body = json.loads(raw) if raw else None
        query = dict(request.query_params)
        with self._lock:
            self.calls.append(Call(method.id, params, query, body))
            self.auth_headers.append(request.headers.get("authorization"))
            problems = self._check(method, query, body)
            if problems:
                self.invalid.extend(problems)
                return error(400, "; ".join(problems))
            if method.id in self.denied:
                message = f"Permission denied on resource '{next(iter(params.values()))}'"
                return error(403, message + " (or it may not exist).")
            if self.failures.get(method.id):
                code, status = self.failures[method.id].pop(0)
                return error(code, f"injected {status or STATUS.get(code, code)}", status)
            handler = HANDLERS.get(method.id)
            if handler is None:
                self.invalid.append(f"{method.id} is not served by the fake")
                return error(501, f"{method.id} is not served by the fake")
            response: Response = handler(self, params, query, body)
            return response

    def _check(self, method: Method, query: dict[str, str], body: Any) -> list[str]:
        spec = method.spec
        known = {k for k, v in spec.get("parameters", {}).items() if v["location"] == "query"}
        known |= set(self.spec["parameters"]) | SYSTEM_PARAMETERS
        problems = [f"{method.id}: unknown query parameter {k!r}" for k in query if k not in known]
        request_schema = spec.get("request", {}).get("$ref")
        if request_schema and body is not None:
            problems += [f"{method.id}: {e}" for e in schema_errors(request_schema, body)]
        elif body is not None and body != {}:
            problems.append(f"{method.id}: takes no body")
        return problems

    def _run(self, params: dict[str, str], query: dict[str, str], body: Any) -> Response:
        job = self.jobs.get(params["name"])
        if job is None:
            return error(404, f"Resource '{params['name']}' of kind 'JOB' was not found.")
        overrides = (body or {}).get("overrides", {})
        problems = _semantics(job, overrides)
        if problems:
            self.invalid.extend(problems)
            return error(400, "; ".join(problems))
        short = params["name"].rsplit("/", 1)[1]
        suffix = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(5))
        name = f"{params['name']}/executions/{short}-{suffix}"
        template = _apply(job["template"]["template"], overrides)
        execution = {
            "name": name,
            "uid": str(uuid.uuid4()),
            "generation": "1",
            "createTime": now(),
            "job": short,
            "launchStage": "GA",
            "parallelism": 1,
            "taskCount": overrides.get("taskCount", job["template"]["taskCount"]),
            "template": template,
            "conditions": [
                {"type": "ResourcesAvailable", "state": "CONDITION_RECONCILING"},
                {"type": "Started", "state": "CONDITION_PENDING"},
                {"type": "Completed", "state": "CONDITION_PENDING"},
            ],
            "logUri": f"https://console.cloud.google.com/logs/viewer?execution={short}-{suffix}",
            "etag": f'"{uuid.uuid4().hex}"',
        }
        self.executions[name] = execution
        self._validate(name)
        operation = f"projects/{self.project}/locations/{self.region}/operations/{uuid.uuid4()}"
        self.operations[operation] = name
        return self._operation(operation)

    def _get_job(self, params: dict[str, str], query: dict[str, str], body: Any) -> Response:
        job = self.jobs.get(params["name"])
        if job is None:
            return error(404, f"Resource '{params['name']}' of kind 'JOB' was not found.")
        return self._respond("GoogleCloudRunV2Job", job)

    def _get(self, params: dict[str, str], query: dict[str, str], body: Any) -> Response:
        execution = self.executions.get(params["name"])
        if execution is None:
            return error(404, f"Resource '{params['name']}' of kind 'EXECUTION' was not found.")
        return self._respond("GoogleCloudRunV2Execution", execution)

    def _list(self, params: dict[str, str], query: dict[str, str], body: Any) -> Response:
        parent = params["parent"]
        if parent not in self.jobs:
            return error(404, f"Resource '{parent}' of kind 'JOB' was not found.")
        size = int(query.get("pageSize") or 100)
        start = int(query.get("pageToken") or 0)
        mine = [e for n, e in self.executions.items() if n.startswith(parent + "/executions/")]
        mine.reverse()  # newest first, as Cloud Run lists them
        page: dict[str, Any] = {"executions": mine[start : start + size]}
        if start + size < len(mine):
            page["nextPageToken"] = str(start + size)
        return self._respond("GoogleCloudRunV2ListExecutionsResponse", page)

    def _cancel(self, params: dict[str, str], query: dict[str, str], body: Any) -> Response:
        name = params["name"]
        if name not in self.executions:
            return error(404, f"Resource '{name}' of kind 'EXECUTION' was not found.")
        if self.ended(name):
            return error(400, f"Execution {name} has already completed.", "FAILED_PRECONDITION")
        execution = self.executions[name]
        execution.pop("runningCount", None)
        done = execution.get("succeededCount", 0) + execution.get("failedCount", 0)
        self._update(name, cancelledCount=execution["taskCount"] - done, completionTime=now())
        message = "The execution was cancelled."
        self._condition(name, "Completed", "CONDITION_FAILED", message, executionReason="CANCELLED")
        operation = next(op for op, e in self.operations.items() if e == name)
        return self._operation(operation)

    def _get_operation(self, params: dict[str, str], query: dict[str, str], body: Any) -> Response:
        if params["name"] not in self.operations:
            return error(404, f"Operation {params['name']} was not found.")
        return self._operation(params["name"])

    # -- helpers ---------------------------------------------------------------------------

    def _operation(self, operation: str) -> Response:
        execution = copy.deepcopy(self.executions[self.operations[operation]])
        execution["@type"] = EXECUTION_TYPE
        body: dict[str, Any] = {"name": operation, "metadata": execution, "done": False}
        if "completionTime" in execution:
            body.update(done=True, response=execution)
        return self._respond("GoogleLongrunningOperation", body)

    def _respond(self, schema: str, body: dict[str, Any]) -> JSONResponse:
        errors = schema_errors(schema, body)
        for execution in [body.get("metadata") or {}, *body.get("executions", [])]:
            plain = {k: v for k, v in execution.items() if k != "@type"}
            errors += schema_errors("GoogleCloudRunV2Execution", plain) if plain else []
        assert not errors, errors  # what the fake serves holds to the spec too
        return JSONResponse(body)

    def _update(self, name: str, **fields: Any) -> None:
        self.executions[name].update(fields)
        self._validate(name)

    def _condition(self, name: str, kind: str, state: str, message: str = "", **more: str) -> None:
        conditions = [c for c in self.executions[name]["conditions"] if c["type"] != kind]
        condition = {"type": kind, "state": state, "lastTransitionTime": now(), **more}
        if message:
            condition["message"] = message
        self._update(name, conditions=[*conditions, condition])

    def _validate(self, name: str) -> None:
        errors = schema_errors("GoogleCloudRunV2Execution", self.executions[name])
        assert not errors, errors


def _semantics(job: dict[str, Any], overrides: dict[str, Any]) -> list[str]:
    """What Cloud Run checks beyond the schema, for the override fields."""
    problems: list[str] = []
    containers = {c.get("name", "") for c in job["template"]["template"]["containers"]}
    for override in overrides.get("containerOverrides", []):
        if override.get("name") and override["name"] not in containers:
            problems.append(f"containerOverrides.name: no container {override['name']!r}")
        if not override.get("name") and len(containers) > 1:
            problems.append("containerOverrides.name: required when the job has several")
        names = [env.get("name", "") for env in override.get("env", [])]
        if len(set(names)) != len(names):
            problems.append("containerOverrides.env: duplicate names")
        for env in override.get("env", []):
            if not re.fullmatch(r"[-._a-zA-Z][-._a-zA-Z0-9]*", env.get("name", "")):
                problems.append(f"containerOverrides.env.name: invalid {env.get('name')!r}")
            if env.get("name") in RESERVED_ENV:
                problems.append(f"containerOverrides.env.name: {env['name']} is reserved")
            if len(env.get("value", "").encode()) > MAX_ENV_VALUE:
                problems.append(f"containerOverrides.env.value: {env['name']} is too long")
    if not 0 <= overrides.get("taskCount", 1) <= 10000:
        problems.append("overrides.taskCount: out of range")
    if "timeout" in overrides and not 0 < float(overrides["timeout"][:-1]) <= MAX_TIMEOUT:
        problems.append("overrides.timeout: out of range (0, 168h]")
    return problems


def _apply(template: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The execution's task template: the job's, with env merged and args replaced."""
    template = copy.deepcopy(template)
    for override in overrides.get("containerOverrides", []):
        for container in template["containers"]:
            if override.get("name", container.get("name")) != container.get("name"):
                continue
            env = {e["name"]: e for e in container.get("env", [])}
            env.update({e["name"]: e for e in override.get("env", [])})
            container["env"] = list(env.values())
            if override.get("args") or override.get("clearArgs"):
                container["args"] = override.get("args", [])
    if "timeout" in overrides:
        template["timeout"] = overrides["timeout"]
    return template


HANDLERS = {
    "run.projects.locations.jobs.get": CloudRunFake._get_job,
    "run.projects.locations.jobs.run": CloudRunFake._run,
    "run.projects.locations.jobs.executions.get": CloudRunFake._get,
    "run.projects.locations.jobs.executions.list": CloudRunFake._list,
    "run.projects.locations.jobs.executions.cancel": CloudRunFake._cancel,
    "run.projects.locations.operations.get": CloudRunFake._get_operation,
}


def serve(fake: CloudRunFake) -> contextlib.AbstractContextManager[str]:
    """Serve `fake` on a free port of 127.0.0.1 in a background thread; yields its base URL."""
    return specs.serve_in_thread(fake.app)
