"""HTTP plumbing shared by the routes: JSON bodies with a size limit, errors as JSON, API keys."""

from __future__ import annotations

import json
import logging
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from core.config import DEFAULT_TENANT, Settings
from core.errors import BadRequest, PayloadTooLarge, SchedulerError, Unauthorized, ValidationFailed

log = logging.getLogger("botsched.api")

M = TypeVar("M", bound=BaseModel)


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    body = {"success": False, "error": code, "message": message, **extra}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


async def on_scheduler_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SchedulerError)
    if exc.status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
    return error_response(exc.status, exc.code, exc.message, **exc.details)


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail))


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal error; see the server log")


async def read_json(request: Request, limit: int) -> Any:
    """The request body parsed as JSON; 413 past `limit` bytes (checked while streaming)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    if not body.strip():
        raise BadRequest("request body is empty; send a JSON object")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


def parse_model(model: type[M], data: Any) -> M:
    """Validate `data`; the error message names every bad field."""
    if not isinstance(data, dict):
        raise ValidationFailed("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(describe(exc), fields=fields_of(exc)) from None


def fields_of(exc: ValidationError) -> list[str]:
    return [".".join(str(part) for part in error["loc"]) or "body" for error in exc.errors()]


def describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "body"
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def api_key_of(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def tenant_of(request: Request, settings: Settings) -> str:
    """The caller's tenant, from its API key (X-API-Key or Authorization: Bearer)."""
    if not settings.auth_enabled:
        return DEFAULT_TENANT
    key = api_key_of(request)
    if key is None:
        raise Unauthorized("missing API key: send it as X-API-Key or Authorization: Bearer")
    tenant = settings.tenant_for(key)
    if tenant is None:
        raise Unauthorized("invalid API key")
    return tenant


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
