"""A contract fake of the Kubernetes API server, for the kubernetes backend's tests.

No real API server installs offline on these machines, so this Starlette app, served over
httpx.ASGITransport, answers the calls the backend makes the way the official batch/v1 OpenAPI
document (`tests/api_specs/kubernetes/apis__batch__v1_openapi.json`) defines them:

- every batch/v1 request must use a path and method of the spec's `paths`; the core/v1 pod paths
  (whose document was not copied) are the two in CORE_V1_PATHS. The Job list's query parameters
  must be the operation's, with their types (`limit` an integer); a violation answers 400;
- every Job POSTed is validated with jsonschema against `io.k8s.api.batch.v1.Job`, strictly:
  unknown fields are rejected, as the API server does with fieldValidation=Strict (kubectl's
  default); DeleteOptions bodies against their schema too; names and label values are checked as
  the API server checks them (DNS-1123 label for a Job name, label value syntax). A violation
  answers 422 Invalid and is kept in `invalid`;
- the Job list (`labelSelector`: equality `k=v` and existence `k` terms; `limit` and
  `continue` paging) answers a JobList validated against `io.k8s.api.batch.v1.JobList`;
- errors are meta/v1 Status objects: 409 AlreadyExists on a duplicate name, 404 NotFound (also
  after a delete), 401 Unauthorized for a token not in `tokens`, 403 Forbidden for a permission
  in `denied`.

Tests play the Job controller and the kubelet: `run`, `complete`, `fail`, `add_pod`, and
other clients of the namespace: `add_foreign_job`. `calls`
records the (API group, resource, verb) of every request: the RBAC a Role must grant.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests import specs

SPEC = "kubernetes/apis__batch__v1_openapi.json"
SPEC_URI = "https://spec.test/apis__batch__v1_openapi.json"
JOBS = "/apis/batch/v1/namespaces/{namespace}/jobs"
JOB = JOBS + "/{name}"
PODS = "/api/v1/namespaces/{namespace}/pods"
POD_LOG = PODS + "/{name}/log"
CORE_V1_PATHS = {(PODS, "get"), (POD_LOG, "get")}
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
Permission = tuple[str, str, str]


def load_spec() -> dict[str, Any]:
    return specs.load_json(SPEC)


def require_spec() -> None:
    specs.require(SPEC)


def strict(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with `additionalProperties: false` on every object schema: unknown fields fail."""
    spec = copy.deepcopy(spec)
    for schema in spec["components"]["schemas"].values():
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    return spec


@lru_cache(maxsize=8)
def validator(schema_name: str) -> Draft202012Validator:
    registry: Registry[Any] = Registry().with_resource(
        SPEC_URI, DRAFT202012.create_resource(strict(load_spec()))
    )
    ref = {"$ref": f"{SPEC_URI}#/components/schemas/{schema_name}"}
    return Draft202012Validator(ref, registry=registry)


def schema_errors(schema_name: str, instance: Any) -> list[str]:
    errors = validator(schema_name).iter_errors(instance)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status(code: int, reason: str, message: str, **details: Any) -> JSONResponse:
    body = {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    assert not schema_errors("io.k8s.apimachinery.pkg.apis.meta.v1.Status", body)
    return JSONResponse(body, status_code=code)


class KubeFake:
    def __init__(self, namespace: str = "default") -> None:
        self.spec = load_spec()
        self.namespace = namespace
        self.jobs: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.pod_logs: dict[str, str] = {}
        self.creates: Counter[str] = Counter()  # Jobs actually created, by name
        self.create_attempts = 0
        self.calls: list[Permission] = []
        self.requests: list[Request] = []
        self.auth_headers: list[str | None] = []
        self.deletions: list[tuple[str, str | None]] = []  # (name, propagationPolicy)
        self.invalid: list[str] = []
        self.tokens: set[str] | None = None  # None: any credentials pass
        self.denied: set[Permission] = set()
        self.app = Starlette(
            routes=[
                Route(JOBS, self._create_job, methods=["POST"]),
                Route(JOBS, self._list_jobs, methods=["GET"]),
                Route(JOB, self._get_job, methods=["GET"]),
                Route(JOB, self._delete_job, methods=["DELETE"]),
                Route(PODS, self._list_pods, methods=["GET"]),
                Route(POD_LOG, self._pod_log, methods=["GET"]),
            ]
        )
        self.transport = httpx.ASGITransport(app=self.app)

    # -- playing the Job controller and the kubelet ------------------------------------------

    def run(self, name: str, ready: bool = True) -> dict[str, Any]:
        """The pod is created (and its container running when `ready`)."""
        pod = self._pod_of(name) or self.add_pod(name, phase="Pending")
        if ready:
            pod["status"]["phase"] = "Running"
            pod["status"]["containerStatuses"][0]["state"] = {"running": {"startedAt": now()}}
        self._set_status(name, startTime=now(), active=1, ready=1 if ready else 0)
        return pod

    def complete(self, name: str) -> None:
        self._terminate(name, 0, "Completed", "Succeeded")
        conditions = [self._condition("SuccessCriteriaMet"), self._condition("Complete")]
        self._set_status(name, active=0, ready=0, succeeded=1, conditions=conditions)
        self.jobs[name]["status"]["completionTime"] = now()
        self._validate_job(name)

    def fail(
        self,
        name: str,
        reason: str = "BackoffLimitExceeded",
        exit_code: int | None = 1,
        message: str = "Job has reached the specified backoff limit",
        container_reason: str = "Error",
    ) -> None:
        """The Job failed; with `exit_code` None its pod never got to run the bot."""
        if exit_code is not None:
            self._terminate(name, exit_code, container_reason, "Failed")
        conditions = [
            self._condition("FailureTarget", reason, message),
            self._condition("Failed", reason, message),
        ]
        self._set_status(name, active=0, ready=0, failed=1, conditions=conditions)

    def add_condition(self, name: str, kind: str, value: str = "True") -> None:
        conditions = [*self.jobs[name]["status"].get("conditions", []), self._condition(kind)]
        conditions[-1]["status"] = value
        self._set_status(name, conditions=conditions)

    def add_foreign_job(self, name: str, labels: dict[str, str]) -> dict[str, Any]:
        """A Job created in the namespace by someone else than the backend."""
        container = {"name": "main", "image": "registry.test/other:1"}
        template = {"spec": {"restartPolicy": "Never", "containers": [container]}}
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
            "spec": {"template": template},
            "status": {},
        }
        self.jobs[name] = job
        self._validate_job(name)
        return job

    def add_pod(
        self, job: str, phase: str = "Pending", log: str = "", created: str | None = None
    ) -> dict[str, Any]:
        pod_name = f"{job}-{len(self.pods):05d}"
        waiting = {"waiting": {"reason": "ContainerCreating"}}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": self.namespace,
                "creationTimestamp": created or now(),
                "labels": {"job-name": job, "batch.kubernetes.io/job-name": job},
            },
            "status": {
                "phase": phase,
                "containerStatuses": [{"name": "bot", "ready": False, "state": waiting}],
            },
        }
        self.pods[pod_name] = pod
        self.pod_logs[pod_name] = log
        return pod

    # -- routes ------------------------------------------------------------------------------

    async def _create_job(self, request: Request) -> Response:
        refused = self._admit(request, JOBS, ("batch", "jobs", "create"))
        if refused:
            return refused
        self.create_attempts += 1
        body = await request.json()
        errors = schema_errors("io.k8s.api.batch.v1.Job", body) + self._semantics(request, body)
        if errors:
            self.invalid.extend(errors)
            return status(422, "Invalid", "Job is invalid: " + "; ".join(errors))
        name = body["metadata"]["name"]
        if name in self.jobs:
            message = f'jobs.batch "{name}" already exists'
            return status(409, "AlreadyExists", message, name=name, group="batch", kind="jobs")
        body["metadata"].update(
            namespace=self.namespace, uid=f"uid-{name}", creationTimestamp=now()
        )
        body["status"] = {}
        self.jobs[name] = body
        self.creates[name] += 1
        return JSONResponse(body, status_code=201)

    async def _list_jobs(self, request: Request) -> Response:
        refused = self._admit(request, JOBS, ("batch", "jobs", "list"))
        errors = self._query_errors(request, JOBS, "get")
        if refused or errors:
            self.invalid.extend(errors)
            return refused or status(400, "BadRequest", "; ".join(errors))
        wanted = _selector(request.query_params.get("labelSelector", ""))
        names = [n for n, job in self.jobs.items() if _matches(job["metadata"], wanted)]
        start = int(request.query_params.get("continue") or 0)
        limit = int(request.query_params.get("limit") or 0) or len(names) or 1
        metadata: dict[str, Any] = {"resourceVersion": "1"}
        if start + limit < len(names):
            metadata["continue"] = str(start + limit)
        items = [self.jobs[name] for name in names[start : start + limit]]
        body = {"apiVersion": "batch/v1", "kind": "JobList", "metadata": metadata, "items": items}
        problems = schema_errors("io.k8s.api.batch.v1.JobList", body)
        assert not problems, problems  # what the fake serves holds to the spec too
        return JSONResponse(body)

    async def _get_job(self, request: Request) -> Response:
        refused = self._admit(request, JOB, ("batch", "jobs", "get"))
        name = request.path_params["name"]
        if refused or name not in self.jobs:
            return refused or self._not_found(name)
        return JSONResponse(self.jobs[name])

    async def _delete_job(self, request: Request) -> Response:
        refused = self._admit(request, JOB, ("batch", "jobs", "delete"))
        if refused:
            return refused
        name = request.path_params["name"]
        raw = await request.body()
        options = json.loads(raw) if raw else {}
        errors = schema_errors("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions", options)
        if errors:
            self.invalid.extend(errors)
            return status(422, "Invalid", "; ".join(errors))
        policy = options.get("propagationPolicy") or request.query_params.get("propagationPolicy")
        self.deletions.append((name, policy))
        if name not in self.jobs:
            return self._not_found(name)
        del self.jobs[name]
        if policy in ("Background", "Foreground"):  # else (Orphan, unset) the pods stay
            for pod_name in [p for p, pod in self.pods.items() if _job_of(pod) == name]:
                del self.pods[pod_name]
        return status(200, "", "", name=name, group="batch", kind="jobs")

    async def _list_pods(self, request: Request) -> Response:
        refused = self._admit(request, PODS, ("", "pods", "list"))
        if refused:
            return refused
        wanted = _selector(request.query_params.get("labelSelector", ""))
        items = [pod for pod in self.pods.values() if _matches(pod["metadata"], wanted)]
        return JSONResponse({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})

    async def _pod_log(self, request: Request) -> Response:
        refused = self._admit(request, POD_LOG, ("", "pods/log", "get"))
        if refused:
            return refused
        name = request.path_params["name"]
        if name not in self.pods:
            return status(404, "NotFound", f'pods "{name}" not found')
        container = request.query_params.get("container", "bot")
        state = self.pods[name]["status"]["containerStatuses"][0]["state"]
        if container != "bot":
            return status(400, "BadRequest", f"container {container} is not valid for pod {name}")
        if "waiting" in state:
            message = f'container "bot" in pod "{name}" is waiting to start: ContainerCreating'
            return status(400, "BadRequest", message)
        lines = self.pod_logs[name].splitlines(keepends=True)
        tail = request.query_params.get("tailLines")
        return PlainTextResponse("".join(lines[-int(tail) :] if tail else lines))

    # -- helpers -----------------------------------------------------------------------------

    def _admit(self, request: Request, template: str, permission: Permission) -> Response | None:
        """Record the call; check its path in the spec, the namespace, credentials and RBAC."""
        self.requests.append(request)
        self.calls.append(permission)
        header = request.headers.get("authorization")
        self.auth_headers.append(header)
        known = CORE_V1_PATHS if template.startswith("/api/v1/") else self._spec_paths()
        assert (template, request.method.lower()) in known, f"{request.method} {template}"
        assert request.path_params["namespace"] == self.namespace, request.url.path
        if self.tokens is not None and header not in {f"Bearer {t}" for t in self.tokens}:
            return status(401, "Unauthorized", "Unauthorized")
        if permission in self.denied:
            group, resource, verb = permission
            message = (
                f"{resource}{'.' + group if group else ''} is forbidden: User "
                f'"system:serviceaccount:{self.namespace}:botsched-scheduler" cannot {verb} '
                f'resource "{resource}" in API group "{group}" in the namespace "{self.namespace}"'
            )
            return status(403, "Forbidden", message, kind=resource, group=group)
        return None

    def _query_errors(self, request: Request, template: str, method: str) -> list[str]:
        """Query parameters the spec's operation does not declare, or of the wrong type."""
        item = self.spec["paths"][template]
        declared = {
            parameter["name"]: parameter["schema"].get("type")
            for parameter in [*item.get("parameters", []), *item[method].get("parameters", [])]
            if parameter["in"] == "query"
        }
        errors = []
        for name, value in request.query_params.items():
            if name not in declared:
                errors.append(f"query parameter {name!r} is not in the spec")
            elif declared[name] == "integer" and not value.isdigit():
                errors.append(f"query parameter {name!r} must be an integer, not {value!r}")
        return errors

    def _spec_paths(self) -> set[tuple[str, str]]:
        return {(path, method) for path, item in self.spec["paths"].items() for method in item}

    def _semantics(self, request: Request, job: dict[str, Any]) -> list[str]:
        """What the API server validates beyond the schema, for the fields the backend sets."""
        metadata, errors = job.get("metadata", {}), []
        name = metadata.get("name", "")
        if not (DNS_LABEL.fullmatch(name) and len(name) <= 63):
            errors.append(f"metadata.name: {name!r} is not a DNS-1123 label of at most 63")
        if metadata.get("namespace", self.namespace) != request.path_params["namespace"]:
            errors.append("metadata.namespace: does not match the request's namespace")
        template = job.get("spec", {}).get("template", {})
        for where, labels in (("metadata", metadata), ("template", template.get("metadata", {}))):
            for value in (labels.get("labels") or {}).values():
                if not (LABEL_VALUE.fullmatch(value) and len(value) <= 63):
                    errors.append(f"{where}.labels: invalid label value {value!r}")
        pod = template.get("spec", {})
        if pod.get("restartPolicy") not in ("Never", "OnFailure"):
            errors.append("spec.template.spec.restartPolicy: must be Never or OnFailure")
        if not all(c.get("image") for c in pod.get("containers", [])):
            errors.append("spec.template.spec.containers: image is required")
        return errors

    def _not_found(self, name: str) -> Response:
        return status(404, "NotFound", f'jobs.batch "{name}" not found', name=name, kind="jobs")

    def _pod_of(self, job: str) -> dict[str, Any] | None:
        pods = [pod for pod in self.pods.values() if _job_of(pod) == job]
        return pods[-1] if pods else None

    def _terminate(self, job: str, code: int, reason: str, phase: str) -> None:
        pod = self._pod_of(job) or self.add_pod(job)
        pod["status"]["phase"] = phase
        terminated = {"exitCode": code, "reason": reason, "finishedAt": now()}
        pod["status"]["containerStatuses"][0]["state"] = {"terminated": terminated}

    def _set_status(self, name: str, **fields: Any) -> None:
        self.jobs[name]["status"].update(fields)
        self._validate_job(name)

    def _validate_job(self, name: str) -> None:
        errors = schema_errors("io.k8s.api.batch.v1.Job", self.jobs[name])
        assert not errors, errors  # what the fake serves holds to the spec too

    @staticmethod
    def _condition(kind: str, reason: str = "", message: str = "") -> dict[str, Any]:
        condition = {"type": kind, "status": "True", "lastTransitionTime": now()}
        condition.update({k: v for k, v in (("reason", reason), ("message", message)) if v})
        return condition


def _job_of(pod: dict[str, Any]) -> str | None:
    labels: dict[str, str] = pod["metadata"]["labels"]
    return labels.get("job-name")


def _selector(text: str) -> dict[str, str | None]:
    """A label selector of equality (`a=b`) and existence (`a`) terms, the kinds the backend
    sends: key -> the value wanted, or None for "has the label"."""
    terms: dict[str, str | None] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, equals, value = part.partition("=")
        assert not re.search(r"[!<>()\s]", key) and "=" not in value, f"unsupported {part!r}"
        terms[key] = value if equals else None
    return terms


def _matches(metadata: dict[str, Any], wanted: dict[str, str | None]) -> bool:
    labels: dict[str, str] = metadata.get("labels") or {}
    return all(k in labels and v in (None, labels[k]) for k, v in wanted.items())
