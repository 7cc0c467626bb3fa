"""The routes of bot-minute budgets (core/budgets.py): what each tenant may spend per UTC day
and month, what it has spent, and an admin's changes to it.

`GET /api/scheduler/budgets` lists the usage of every tenant with a budget to an admin key (or
without authentication), a tenant key's own usage to that key. `GET .../budgets/{tenant}` shows
one (another tenant's is a 404 to a tenant key, as its jobs are). `PUT` and `DELETE
.../budgets/{tenant}` store or remove a tenant's own budget, over SCHEDULER_BUDGETS: the only
change an admin key (SCHEDULER_ADMIN_KEYS) makes; a tenant key gets 403.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from core.budget_policy import DEFAULT, Policy
from core.budgets import Budgets
from core.config import Settings
from core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from core.http import describe, fields_of, is_admin_request, read_json, tenant_of
from core.routing import method_route
from core.scheduler import Scheduler

BUDGETS = "/api/scheduler/budgets"
ONE = BUDGETS + "/{tenant}"
TENANT_MAX_CHARS = 200
WRITE_ATTEMPTS = 5  # a PUT that lost a compare-and-set of the budget record reads it again
ADMIN_ONLY = "only an admin key (SCHEDULER_ADMIN_KEYS) changes budgets; a tenant key reads its own"


def budget_scope(request: Request, settings: Settings) -> str | None:
    """Whose budgets the caller sees: every tenant's (None) with an admin key or without
    authentication; its own tenant's with a tenant key (401 without a valid key)."""
    if not settings.auth_enabled or is_admin_request(request, settings):
        return None
    return tenant_of(request, settings)


def check_tenant(tenant: str) -> str:
    """A tenant named in a path: 1-200 characters, no control character, not `*`."""
    if not 1 <= len(tenant) <= TENANT_MAX_CHARS:
        raise ValidationFailed(
            f"tenant: must be 1 to {TENANT_MAX_CHARS} characters", fields=["tenant"]
        )
    if any(ord(char) < 32 or ord(char) == 127 for char in tenant):
        raise ValidationFailed("tenant: must not contain control characters", fields=["tenant"])
    if tenant == DEFAULT:
        raise ValidationFailed(
            "tenant: `*` is the SCHEDULER_BUDGETS entry of every tenant not named there; it is "
            "set in that setting, not here",
            fields=["tenant"],
        )
    return tenant


def parse_policy(data: Any) -> Policy:
    """A budget as a body gives it, strictly: numbers are JSON numbers, no other field."""
    if not isinstance(data, dict):
        raise ValidationFailed("request body must be a JSON object")
    try:
        return Policy.model_validate(data, strict=True)
    except ValidationError as exc:
        raise ValidationFailed(describe(exc), fields=fields_of(exc)) from None


async def budgeted_tenants(budgets: Budgets, settings: Settings) -> list[str]:
    """Every tenant with a budget: named in SCHEDULER_BUDGETS (not `*`), or stored."""
    named = {tenant for tenant in settings.budgets if tenant != DEFAULT}
    return sorted(named | set(await budgets.stored_tenants()))


async def usages(budgets: Budgets, settings: Settings, scope: str | None) -> list[dict[str, Any]]:
    """The usage of each tenant `scope` sees (None: every budgeted tenant), by tenant."""
    tenants = [scope] if scope is not None else await budgeted_tenants(budgets, settings)
    return list(await asyncio.gather(*(budgets.usage(tenant) for tenant in tenants)))


async def stats_fields(scheduler: Scheduler, scope: str | None) -> dict[str, Any]:
    """What /stats says of budgets: to a tenant (`scope`), `budget`, its usage (null when it
    has no budget); to an admin key (None), `budgets`, every budgeted tenant's."""
    budgets = scheduler.budgets
    if scope is None:
        return {"budgets": await usages(budgets, scheduler.settings, None)}
    policy = await budgets.policy(scope)
    return {"budget": await budgets.usage(scope) if policy is not None else None}


class BudgetRoutes:
    def __init__(self, settings: Settings, scheduler: Callable[[], Awaitable[Scheduler]]):
        self.settings = settings
        self.scheduler = scheduler

    def table(self) -> list[Route]:
        return [
            method_route(BUDGETS, GET=self.list),
            method_route(ONE, GET=self.get, PUT=self.put, DELETE=self.delete),
        ]

    async def _budgets(self) -> Budgets:
        return (await self.scheduler()).budgets

    async def list(self, request: Request) -> Response:
        scope = budget_scope(request, self.settings)
        found = await usages(await self._budgets(), self.settings, scope)
        return JSONResponse({"success": True, "budgets": found})

    async def get(self, request: Request) -> Response:
        scope = budget_scope(request, self.settings)
        tenant = check_tenant(request.path_params["tenant"])
        if scope is not None and scope != tenant:
            raise NotFound(f"no budget of tenant {tenant} for this key")
        return await self._usage(tenant)

    async def put(self, request: Request) -> Response:
        tenant = self._admin_tenant(request)
        settings = self.settings
        body = await read_json(request, settings.max_body_bytes, settings.body_timeout_seconds)
        policy = parse_policy(body)
        budgets = await self._budgets()
        for attempt in range(WRITE_ATTEMPTS):
            try:
                await budgets.set_policy(tenant, policy)
                break
            except (Conflict, NotFound):  # another PUT or DELETE of it came first
                if attempt == WRITE_ATTEMPTS - 1:
                    raise Conflict(f"the budget of {tenant} kept changing; try again") from None
        return await self._usage(tenant)

    async def delete(self, request: Request) -> Response:
        """Remove the tenant's stored budget: the settings' applies again (or none)."""
        tenant = self._admin_tenant(request)
        await (await self._budgets()).set_policy(tenant, None)
        return await self._usage(tenant)

    def _admin_tenant(self, request: Request) -> str:
        """The path's tenant, for a change: 401 without a valid key, 403 with a tenant key."""
        if budget_scope(request, self.settings) is not None:
            raise Forbidden(ADMIN_ONLY)
        return check_tenant(request.path_params["tenant"])

    async def _usage(self, tenant: str) -> Response:
        usage = await (await self._budgets()).usage(tenant)
        return JSONResponse({"success": True, "usage": usage})
