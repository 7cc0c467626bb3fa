"""HTTP plumbing shared by the routes: JSON bodies with a size limit, errors as JSON, API keys."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from core.config import DEFAULT_TENANT, Settings, hash_key
from core.errors import (
    BadRequest,
    PayloadTooLarge,
    RequestTimeout,
    SchedulerError,
    Unauthorized,
    ValidationFailed,
)
from core.limits import MAX_BODY_DEPTH, depth_of

log = logging.getLogger("botsched.api")

M = TypeVar("M", bound=BaseModel)
DIGEST_SCOPE_KEY = "botsched.key_digest"


class JSONText(str):
    """JSON already written (a job, by pydantic's serializer): `json_response` embeds it as is."""


_dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def json_response(
    content: dict[str, Any], status_code: int = 200, background: BackgroundTask | None = None
) -> Response:
    """What JSONResponse(content) answers, with JSONText values embedded as they are. The keys
    are the API's own field names: plain ASCII, written as they are."""
    members = [f'"{key}":{_member(value)}' for key, value in content.items()]
    text = "{" + ",".join(members) + "}"
    return Response(text, status_code, media_type="application/json", background=background)


def _member(value: Any) -> str:
    """A value as JSON text: JSONText as it is, the literals without the encoder."""
    if isinstance(value, JSONText):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    return "null" if value is None else _dumps(value)


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    body = {"success": False, "error": code, "message": message, **extra}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if isinstance(extra.get("retryAfter"), int):
        headers["Retry-After"] = str(extra["retryAfter"])
    if status == 408:  # the rest of the body may still come: this connection is done
        headers["Connection"] = "close"
    return JSONResponse(body, status_code=status, headers=headers or None)


def error_of(exc: SchedulerError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, **exc.details)


async def on_scheduler_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SchedulerError)
    if exc.status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
    return error_of(exc)


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail))


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal error; see the server log")


async def read_json(request: Request, limit: int, within: float = 30.0) -> Any:
    """The request body parsed as JSON: 413 past `limit` bytes (checked while streaming), 408
    when it has not all arrived `within` seconds, 400 when it nests too deeply."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    try:
        async with asyncio.timeout(within):
            body = await _receive(request, limit)
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {within:g} s") from None
    if not body or body.isspace():
        raise BadRequest("request body is empty; send a JSON object")
    too_deep = f"request body nests more than {MAX_BODY_DEPTH} levels deep"
    try:
        data = json.loads(body)
    except RecursionError:  # deeper than the parser goes
        raise BadRequest(too_deep) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    # each level opens with a bracket: a body with few of them cannot nest deeply
    brackets = body.count(b"[") + body.count(b"{")
    if brackets > MAX_BODY_DEPTH and depth_of(data, MAX_BODY_DEPTH) > MAX_BODY_DEPTH:
        raise BadRequest(too_deep)
    return data


async def _receive(request: Request, limit: int) -> bytearray:
    """The body's messages, as `request.stream()` reads them, one layer fewer."""
    body = bytearray()
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        body.extend(message.get("body", b""))
        if len(body) > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes")
        if not message.get("more_body", False):
            return body


def parse_model(model: type[M], data: Any, context: Mapping[str, Any] | None = None) -> M:
    """Validate `data`; the error message names every bad field."""
    if not isinstance(data, dict):
        raise ValidationFailed("request body must be a JSON object")
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        message = describe(exc) + _near_misses(exc, data)
        raise ValidationFailed(message, fields=fields_of(exc)) from None


def normalised(name: str) -> str:
    """A field name without case, `_` or `-`: `meeting_url`, `meetingURL` -> `meetingurl`."""
    return name.replace("_", "").replace("-", "").lower()


def _near_misses(exc: ValidationError, data: dict[str, Any]) -> str:
    """For each required field missing: the key in `data` that was probably meant for it."""
    hints = []
    for error in exc.errors():
        if error["type"] != "missing" or len(error["loc"]) != 1:
            continue
        field = str(error["loc"][0])
        found = [key for key in data if key != field and normalised(key) == normalised(field)]
        if found:
            hints.append(
                f"the body has {found[0]}: this route takes {field} (/api/scheduler/jobs takes "
                "camelCase fields, /api/scheduler/meetings the bot's snake_case config)"
            )
    return "".join(f"; {hint}" for hint in hints)


def fields_of(exc: ValidationError) -> list[str]:
    return [".".join(str(part) for part in error["loc"]) or "body" for error in exc.errors()]


def describe(exc: ValidationError) -> str:
    """`field: what is wrong` for each error; a check of the whole body names its fields."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def api_key_of(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def key_digest(request: Request) -> str | None:
    """The hash_key() of the request's API key (None without one), computed once a request:
    the rate limiter and the route share it through the scope."""
    scope = request.scope
    if DIGEST_SCOPE_KEY not in scope:
        key = api_key_of(request)
        scope[DIGEST_SCOPE_KEY] = hash_key(key) if key is not None else None
    digest: str | None = scope[DIGEST_SCOPE_KEY]
    return digest


def tenant_of(request: Request, settings: Settings) -> str:
    """The caller's tenant, from its API key (X-API-Key or Authorization: Bearer)."""
    if not settings.auth_enabled:
        return DEFAULT_TENANT
    digest = key_digest(request)
    if digest is None:
        raise Unauthorized("missing API key: send it as X-API-Key or Authorization: Bearer")
    tenant = settings.tenant_for_digest(digest)
    if tenant is None:
        raise Unauthorized("invalid API key")
    return tenant


def metrics_scope(request: Request, settings: Settings) -> str | None:
    """Whose jobs `/metrics` shows: every tenant's (None) without auth or to an admin key
    (SCHEDULER_ADMIN_KEYS); the caller's own tenant to any other valid key."""
    if not settings.auth_enabled:
        return None
    return read_scope(request, settings)


def is_admin_request(request: Request, settings: Settings) -> bool:
    """Whether the request carries one of SCHEDULER_ADMIN_KEYS (auth on)."""
    if not settings.auth_enabled:
        return False
    digest = key_digest(request)
    return digest is not None and settings.is_admin_digest(digest)


def read_scope(request: Request, settings: Settings) -> str | None:
    """Whose jobs a read (list, get, logs, events, stats) shows: every tenant's (None) to an
    admin key, which reads but changes nothing; the caller's own tenant to any other key."""
    return None if is_admin_request(request, settings) else tenant_of(request, settings)


def listed_tenant(request: Request, scope: str | None) -> str | None:
    """Whose jobs a list shows: the caller's `read_scope`, narrowed by an admin key's `tenant`
    parameter; a tenant key may name only its own tenant."""
    wanted = request.query_params.get("tenant")
    if wanted is None or wanted == scope:
        return scope
    if scope is not None:
        raise ValidationFailed(
            "tenant: only an admin key (SCHEDULER_ADMIN_KEYS) lists another tenant's jobs",
            fields=["tenant"],
        )
    return wanted


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationFailed(f"{name}: must be an integer") from None
    if not low <= value <= high:
        raise ValidationFailed(f"{name}: must be between {low} and {high}")
    return value
