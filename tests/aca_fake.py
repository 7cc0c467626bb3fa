"""A contract fake of Azure Resource Manager's Container Apps Jobs API, for the azure backend.

No emulator of Container Apps exists, so this Starlette app answers the calls the official SDK
(azure-mgmt-appcontainers) makes the way the official Swagger 2.0 spec
(`tests/api_specs/azure-container-apps/2026-01-01/Jobs.json` + CommonDefinitions.json + the ARM
common-types, whose `../../../../../../common-types/` refs are rewritten to `../common-types/` as
the specs' README says) defines them:

- every request must match a path and method of Jobs.json `paths`; its path and query parameters
  are checked against the operation's parameters (patterns, lengths, required, none undeclared) and
  `api-version` must be the spec's `2026-01-01`. The one path outside the spec is the LRO's
  Location, which ARM makes up (the spec only says Location is a string);
- request bodies are validated with jsonschema (Draft 4, as Swagger 2.0 schemas are) against the
  operation's body schema, strictly: unknown fields and readOnly fields are rejected. The platform's
  own checks for what the backend sets: a container image, and a CPU/memory pair Consumption
  accepts (0.25 steps up to 4 cores, memory = 2 x cores Gi; ContainerAppInvalidResourceTotal);
- responses are shaped like the spec's examples and validated against its response schemas:
  Jobs_Start answers 202 with Location and the JobExecutionBase body (`start_body = False`: an empty
  202, as in Job_Start.json, so the client must poll), Location polls answer 202 `pending_polls`
  times then 200 with JobExecutionBase; Jobs_StopExecution answers 202 with Location; lists page
  by `page_size` with nextLink; errors are DefaultErrorResponse bodies (404 ResourceNotFound, 401
  without a known bearer token, and any status injected with `fail`).

Tests play the platform: `set_status(name, "Succeeded")`. The app is served over HTTPS by uvicorn
in a thread (`serve`): azure-core's bearer-token policy refuses plain http, and the SDK's real
aiohttp transport then runs as in production, trusting a certificate made at test time.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import ipaddress
import json
import re
import secrets
from collections import deque
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode

from jsonschema import Draft4Validator
from referencing import Registry
from referencing.jsonschema import DRAFT4
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests import specs

SPEC_DIR = "azure-container-apps"
API_VERSION = "2026-01-01"
BASE = "https://spec.test/azure-container-apps/"
JOBS_URI = BASE + "2026-01-01/Jobs.json"
FILES = (
    "2026-01-01/Jobs.json",
    "2026-01-01/CommonDefinitions.json",
    "common-types/resource-management/v3/types.json",
    "common-types/resource-management/v3/managedidentity.json",
    "common-types/resource-management/v5/types.json",
)
UPSTREAM_COMMON = "../../../../../../common-types/"
# the fake's own LRO status path (ARM makes Location URLs up; the spec only says "string")
LOCATION_PATH = (
    "/subscriptions/{subscriptionId}/providers/Microsoft.App/locations/{location}"
    "/jobOperationResults/{operation}"
)
SERVER_QUERY = {"$skiptoken"}  # what nextLinks this fake makes carry
REGION = "eastus"
PARAMETER_KEYWORDS = ("type", "pattern", "minLength", "maxLength", "enum")
ENDED = {"Succeeded", "Failed", "Stopped"}


@lru_cache(maxsize=1)
def load_documents() -> dict[str, dict[str, Any]]:
    """The spec files by URI, with the upstream common-types prefix rewritten."""
    documents = {}
    for name in FILES:
        text = specs.load_text(f"{SPEC_DIR}/{name}").replace(
            f'"{UPSTREAM_COMMON}', '"../common-types/'
        )
        documents[BASE + name] = json.loads(text)
    return documents


def require_spec() -> dict[str, Any]:
    """Jobs.json; without the specs, the test fails when CI is set and is skipped otherwise."""
    specs.require(f"{SPEC_DIR}/{FILES[0]}")
    return load_documents()[JOBS_URI]


def _strict(document: dict[str, Any], request: bool) -> dict[str, Any]:
    """Every object schema closed (`additionalProperties: false`); for requests, readOnly
    properties forbidden too (the SDK must not send them)."""
    document = copy.deepcopy(document)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            properties = node.get("properties")
            if isinstance(properties, dict) and "allOf" not in node:
                node.setdefault("additionalProperties", False)
                if request:
                    for key, schema in properties.items():
                        if isinstance(schema, dict) and schema.get("readOnly"):
                            properties[key] = {"not": {}}
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for section in ("definitions", "parameters"):
        walk(document.get(section, {}))
    return document


@lru_cache(maxsize=2)
def registry(request: bool) -> Registry[Any]:
    resources = [
        (uri, DRAFT4.create_resource(_strict(doc, request)))
        for uri, doc in load_documents().items()
    ]
    return Registry().with_resources(resources)


def resolve(ref: str, base: str = JOBS_URI) -> Any:
    return registry(False).resolver(base_uri=base).lookup(ref).contents


@lru_cache(maxsize=64)
def _validator(ref: str, request: bool) -> Draft4Validator:
    return Draft4Validator({"$ref": ref}, registry=registry(request))


def schema_errors(ref: str, instance: Any, request: bool = False) -> list[str]:
    """`ref` is relative to Jobs.json (`#/definitions/JobExecution`) or absolute."""
    absolute = ref if ref.startswith("https://") else JOBS_URI + ref
    errors = _validator(absolute, request).iter_errors(instance)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<body>'}: {e.message}" for e in errors]


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _operations() -> list[tuple[re.Pattern[str], str, dict[str, Any]]]:
    found = []
    for template, item in require_spec()["paths"].items():
        regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        for method, operation in item.items():
            if method != "parameters":
                found.append((re.compile(regex), method.upper(), operation))
    return found


class ContainerAppsFake:
    """Container Apps as one job `job_name` in `resource_group` of `subscription` sees it."""

    def __init__(self, subscription: str, resource_group: str, job_name: str, token: str) -> None:
        self.subscription = subscription
        self.resource_group = resource_group
        self.job_name = job_name
        self.tokens = {token}
        self.base_url = ""  # set by `serve`
        self.executions: dict[str, dict[str, Any]] = {}
        self.starts = 0
        self.stops: list[str] = []
        self.calls: list[str] = []  # operationIds (and "Location" for LRO polls), in order
        self.queries: list[dict[str, str]] = []
        self.invalid: list[str] = []
        self.start_body = True
        self.pending_polls = 0
        self.page_size = 50
        self.refuse_stop_when_ended = False
        self.replica_retry_limit = 0  # the Job's, as infra/azure/main.bicep sets it
        self.replica_timeout = 14400
        self._failures: dict[str, deque[tuple[int, str, str]]] = {}
        self._operations = _operations()
        self._polls: dict[str, tuple[int, str]] = {}  # operation -> (polls left, execution)
        self.app = Starlette(
            routes=[Route("/{path:path}", self._handle, methods=["GET", "POST", "PUT", "DELETE"])]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    # -- playing the platform ----------------------------------------------------------------

    def set_status(self, name: str, status: str) -> None:
        enum = resolve("#/definitions/JobExecution")["properties"]["properties"]
        assert status in enum["properties"]["status"]["enum"], status
        properties = self.executions[name]["properties"]
        properties["status"] = status
        if status in ENDED:
            properties["endTime"] = now()
        assert not schema_errors("#/definitions/JobExecution", self.executions[name])

    def fail(self, operation_id: str, status: int, code: str, message: str, times: int = 1) -> None:
        """The next `times` calls of `operation_id` answer `status` with an ARM error body."""
        queue = self._failures.setdefault(operation_id, deque())
        queue.extend([(status, code, message)] * times)

    def env(self, name: str) -> dict[str, str]:
        (container,) = self.executions[name]["properties"]["template"]["containers"]
        return {var["name"]: var["value"] for var in container.get("env", [])}

    def add_execution(
        self, job_id: str | None, status: str = "Running", started: str | None = None
    ) -> str:
        """An execution started behind the backend's back (by a dispatcher that died); with
        `job_id` None, one started by hand, with no JOB_ID in its env."""
        env = [{"name": "JOB_ID", "value": job_id}] if job_id is not None else []
        template = {"containers": [{"name": "bot", "image": "img", "env": env}]}
        name = self._create(template, started)
        self.set_status(name, status)
        return name

    # -- the API -----------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        try:
            return await self._route(request)
        except AssertionError as exc:  # the fake broke its own contract: fail the test
            self.invalid.append(f"fake: {exc}")
            return self._error(500, "InternalServerError", "the fake failed an assertion")

    async def _route(self, request: Request) -> Response:
        path = "/" + request.path_params["path"]
        refused = self._authorize(request)
        if refused:
            return refused
        location = re.fullmatch(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", LOCATION_PATH), path)
        if location and request.method == "GET":
            self.calls.append("Location")
            return self._poll(location["operation"])
        for pattern, method, operation in self._operations:
            match = pattern.fullmatch(path)
            if match and method == request.method:
                return await self._operation(request, operation, match.groupdict())
        self.invalid.append(f"{request.method} {path}: not in Jobs.json paths")
        return self._error(404, "NoRegisteredProviderFound", f"no route for {path}")

    async def _operation(
        self, request: Request, operation: dict[str, Any], path: dict[str, str]
    ) -> Response:
        operation_id = operation["operationId"]
        self.calls.append(operation_id)
        self.queries.append(dict(request.query_params))
        raw = await request.body()
        errors = self._check_parameters(request, operation, path, raw)
        if errors:
            self.invalid.extend(f"{operation_id}: {e}" for e in errors)
            return self._error(400, "InvalidRequestContent", "; ".join(errors))
        failures = self._failures.get(operation_id)
        if failures:
            return self._error(*failures.popleft())
        params = {k: unquote(v) for k, v in path.items()}
        if (params["subscriptionId"], params["resourceGroupName"], params["jobName"]) != (
            self.subscription,
            self.resource_group,
            self.job_name,
        ):
            return self._error(404, "ResourceNotFound", f"job {params['jobName']} was not found")
        handler = getattr(self, "_" + operation_id.lower(), None)
        assert handler is not None, f"the fake does not serve {operation_id}"
        body = json.loads(raw) if raw else None
        response: Response = handler(request, params, body)
        return response

    def _check_parameters(
        self, request: Request, operation: dict[str, Any], path: dict[str, str], raw: bytes
    ) -> list[str]:
        errors: list[str] = []
        declared: set[str] = set()
        for parameter in operation.get("parameters", []):
            if "$ref" in parameter:
                parameter = resolve(parameter["$ref"])
            name, where = parameter["name"], parameter["in"]
            declared.add(name)
            if where == "body":
                content_type = request.headers.get("content-type", "").split(";")[0]
                if raw and content_type != "application/json":
                    errors.append("body: Content-Type must be application/json")
                elif raw:
                    schema_ref = parameter["schema"]["$ref"]
                    errors += schema_errors(schema_ref, json.loads(raw), request=True)
                elif parameter.get("required"):
                    errors.append(f"body {name} is required")
                continue
            value = path.get(name) if where == "path" else request.query_params.get(name)
            if value is None:
                if parameter.get("required"):
                    errors.append(f"{where} parameter {name} is missing")
                continue
            schema = {k: parameter[k] for k in PARAMETER_KEYWORDS if k in parameter}
            found = Draft4Validator(schema).iter_errors(unquote(value))
            errors += [f"{name}: {e.message}" for e in found]
        if request.query_params.get("api-version") != API_VERSION:
            errors.append(f"api-version must be {API_VERSION}")
        undeclared = set(request.query_params) - declared - SERVER_QUERY
        errors += [f"query parameter {name} is not in the spec" for name in sorted(undeclared)]
        return errors

    def _jobs_get(self, request: Request, params: dict[str, str], body: Any) -> Response:
        """The Job as main.bicep makes it: manual trigger, one replica, its retries and timeout."""
        job = {
            "id": self._base("x")["id"].rsplit("/executions/", 1)[0],
            "name": self.job_name,
            "type": "Microsoft.App/jobs",
            "location": REGION,
            "properties": {
                "provisioningState": "Succeeded",
                "configuration": {
                    "triggerType": "Manual",
                    "replicaTimeout": self.replica_timeout,
                    "replicaRetryLimit": self.replica_retry_limit,
                    "manualTriggerConfig": {"parallelism": 1, "replicaCompletionCount": 1},
                },
                "template": {"containers": [{"name": "bot", "image": "job-default"}]},
            },
        }
        # the Job schema's allOf (TrackedResource) defeats the strict check: its configuration
        configuration = job["properties"]["configuration"]  # type: ignore[index]
        assert not schema_errors("#/definitions/JobConfiguration", configuration)
        return JSONResponse(job)

    def _jobs_start(self, request: Request, params: dict[str, str], body: Any) -> Response:
        template = body or {"containers": [{"name": "bot", "image": "job-default"}]}
        problem = _platform_check(template)
        if problem:
            return self._error(400, *problem)
        name = self._create(template)
        self.starts += 1
        started = self._base(name)
        assert not schema_errors("#/definitions/JobExecutionBase", started)
        headers = {"Location": self._location(name)}
        content = json.dumps(started).encode() if self.start_body else b""
        return Response(content, 202, headers, media_type="application/json")

    def _jobexecution(self, request: Request, params: dict[str, str], body: Any) -> Response:
        execution = self.executions.get(params["jobExecutionName"])
        if execution is None:
            return self._not_found(params["jobExecutionName"])
        assert not schema_errors("#/definitions/JobExecution", execution)
        return JSONResponse(execution)

    def _jobsexecutions_list(self, request: Request, params: dict[str, str], body: Any) -> Response:
        names = list(self.executions)
        skip = int(request.query_params.get("$skiptoken", "0"))
        page: dict[str, Any] = {
            "value": [self.executions[n] for n in names[skip : skip + self.page_size]]
        }
        if skip + self.page_size < len(names):
            query = urlencode({"api-version": API_VERSION, "$skiptoken": skip + self.page_size})
            page["nextLink"] = f"{self.base_url}{request.url.path}?{query}"
        assert not schema_errors("#/definitions/ContainerAppJobExecutions", page)
        return JSONResponse(page)

    def _jobs_stopexecution(self, request: Request, params: dict[str, str], body: Any) -> Response:
        name = params["jobExecutionName"]
        execution = self.executions.get(name)
        self.stops.append(name)
        if execution is None:
            return self._not_found(name)
        if execution["properties"]["status"] in ENDED:
            if self.refuse_stop_when_ended:
                return self._error(400, "BadRequest", f"execution {name} has already completed")
        else:
            self.set_status(name, "Stopped")
        return Response(b"", 202, {"Location": self._location(name)})

    def _poll(self, operation: str) -> Response:
        left, name = self._polls[operation]
        if left > 0:
            self._polls[operation] = (left - 1, name)
            return Response(b"", 202, {"Location": self.base_url + self._location_path(operation)})
        body = self._base(name)
        assert not schema_errors("#/definitions/JobExecutionBase", body)
        return JSONResponse(body)

    # -- helpers -----------------------------------------------------------------------------

    def _create(self, template: dict[str, Any], started: str | None = None) -> str:
        name = f"{self.job_name}-{secrets.token_hex(4)[:7]}"
        self.executions[name] = {
            "id": self._base(name)["id"],
            "name": name,
            "type": "Microsoft.App/jobs/executions",
            "properties": {
                "status": "Running",
                "startTime": started or now(),
                "template": template,
            },
        }
        return name

    def _base(self, name: str) -> dict[str, str]:
        job = (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.App/jobs/{self.job_name}"
        )
        return {"name": name, "id": f"{job}/executions/{name}"}

    def _location(self, name: str) -> str:
        operation = secrets.token_hex(8)
        self._polls[operation] = (self.pending_polls, name)
        return f"{self.base_url}{self._location_path(operation)}"

    def _location_path(self, operation: str) -> str:
        path = LOCATION_PATH.format(
            subscriptionId=self.subscription, location=REGION, operation=operation
        )
        return f"{path}?api-version={API_VERSION}"

    def _authorize(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        if header.removeprefix("Bearer ") in self.tokens and header.startswith("Bearer "):
            return None
        return self._error(401, "InvalidAuthenticationToken", "The access token is invalid.")

    def _not_found(self, name: str) -> Response:
        message = f"The execution '{name}' of job '{self.job_name}' was not found."
        return self._error(404, "ResourceNotFound", message)

    @staticmethod
    def _error(status: int, code: str, message: str) -> Response:
        body = {"error": {"code": code, "message": message}}
        ref = BASE + "2026-01-01/CommonDefinitions.json#/definitions/DefaultErrorResponse"
        assert not schema_errors(ref, body)
        return JSONResponse(body, status_code=status)


def _platform_check(template: dict[str, Any]) -> tuple[str, str] | None:
    """What Container Apps validates beyond the schema, for the fields the backend sets."""
    cpu, memory = 0.0, 0.0
    for container in template.get("containers") or []:
        if not container.get("image"):
            return "ContainerAppImageRequired", "every container needs an image"
        resources = container.get("resources") or {}
        cpu += float(resources.get("cpu", 0.5))
        text = str(resources.get("memory", "1Gi"))
        if not text.endswith("Gi"):
            return "ContainerAppInvalidMemoryFormat", f"memory {text!r} must be in Gi"
        memory += float(text.removesuffix("Gi"))
    if not template.get("containers"):
        return "ContainerAppNoContainers", "a job execution needs a container"
    if cpu * 4 != int(cpu * 4) or not 0.25 <= cpu <= 4 or memory != cpu * 2:
        return "ContainerAppInvalidResourceTotal", (
            f"The total requested CPU and memory resources for this application (CPU: {cpu:g}, "
            f"memory: {memory:g}) is invalid. Total CPU and memory for all containers must add "
            "up to one of the CPU - Memory combinations: [cpu: 0.25, memory: 0.5Gi]; ..."
        )
    return None


# -- serving over HTTPS ----------------------------------------------------------------------


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (test-only), and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "management.test")])
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "aca-test.crt", directory / "aca-test.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class Switch:
    """An ASGI app forwarding to whichever fake the current test set."""

    def __init__(self) -> None:
        self.target: ContainerAppsFake | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.target is not None, "no fake is being served"
        await self.target(scope, receive, send)


def serve(app: Switch, cert: Path, key: Path) -> contextlib.AbstractContextManager[str]:
    """Serve `app` over HTTPS on a loopback port in a thread; yields the base URL."""
    return specs.serve_in_thread(app, "https", ssl_certfile=str(cert), ssl_keyfile=str(key))
