"""The OpenAPI document's part for bot-minute budgets (core/budget_routes.py): the schemas of a
budget and of its usage, the four operations, what /stats says of budgets, and the 402 a submit
over budget gets (added to the submit operations of core/openapi_paths.py)."""

from __future__ import annotations

from typing import Any

from core.budget_policy import Policy
from core.budget_routes import BUDGETS, ONE, TENANT_MAX_CHARS
from core.models import EXAMPLE_TIME
from core.openapi_paths import (
    BODY_ERRORS,
    BY_KEY,
    JOBS,
    REF,
    SUCCESS,
    _body,
    _error,
    _json,
    _op,
    _param,
)
from core.openapi_paths import ref as ref_
from core.openapi_webhooks import TIME, shape

TAG = {"name": "Budgets", "description": "Bot-minutes per tenant: limits, spend and refusals."}
RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds until the period that refused resets.",
        "schema": {"type": "integer"},
    }
}
OVER_BUDGET = _error(
    "`budget_exceeded`: the job's expected bot-minutes (its maxRuntimeSeconds, else "
    "SCHEDULER_EXPECTED_RUN_SECONDS) are more than its tenant's budget has left for the UTC day "
    "or month of its start (joinAt, else now). `period`, `limitMinutes`, `remainingMinutes`, "
    "`requiredMinutes` and `resetsAt` say which and how much; Retry-After and `retryAfter`, "
    "when it resets. A repeated Idempotency-Key or dedupKey is refused the same; only an "
    "unfinished job of yours for the same meeting and time is returned (200).",
    **RETRY_AFTER,
)
# the operations that create a job, and so may charge a budget: (method, path)
SUBMITS = (("post", JOBS), ("post", "/api/scheduler/meetings"), ("put", BY_KEY))
MINUTES = "Bot-minutes"
TENANT = _param(
    "path",
    "tenant",
    "A tenant, as SCHEDULER_API_KEYS names it (not `*`: that entry of SCHEDULER_BUDGETS is "
    "the settings' own).",
    "acme",
    type="string",
    pattern=f"^[^\\u0000-\\u001f\\u007f/.*][^\\u0000-\\u001f\\u007f/]{{0,{TENANT_MAX_CHARS - 1}}}$",
)
ADMIN_ONLY = _error(
    "A tenant's key: only an admin key (SCHEDULER_ADMIN_KEYS) changes budgets (`forbidden`)."
)
NOT_YOURS = _error("Another tenant's budget, to a tenant key (as another tenant's job is).")
BAD_TENANT = _error("The path's tenant is `*` or holds control characters (`validation_error`).")
NO_ROUTE = _error("No such route: the path's tenant holds a `/`.")


def policy_schema() -> dict[str, Any]:
    """Policy's own JSON schema (what a PUT validates), with an example of each limit."""
    schema = Policy.model_json_schema(ref_template=REF)
    examples = {"day": [600], "month": [9000]}
    for name, example in examples.items():
        schema["properties"][name]["examples"] = example
    return schema


def period_schema(period: str, example: str) -> dict[str, Any]:
    return shape(
        period=("string", f"The current UTC {period}.", example),
        limitMinutes=(["number", "null"], f"{MINUTES} the {period} allows; null: no limit.", 600),
        chargedMinutes=(
            "number",
            f"{MINUTES} charged this {period}: the expected minutes of admitted jobs not ended "
            "yet, and the real minutes of the runs that ended (counted on the day and month "
            "they started).",
            42.5,
        ),
        spentMinutes=("number", f"{MINUTES} of the runs that ended, of those.", 40.0),
        heldMinutes=("number", "Charged and not spent: held by jobs not ended yet.", 2.5),
        remainingMinutes=(
            ["number", "null"],
            "What a submit may still be charged; null: no limit.",
            557.5,
        ),
        resetsAt=("string", f"When the {period} ends (UTC).", EXAMPLE_TIME, TIME),
    )


def budget_schemas() -> dict[str, Any]:
    nullable_policy = {
        "anyOf": [ref_("Budget"), {"type": "null"}],
        "description": "Its budget: the one the admin API stored, else SCHEDULER_BUDGETS' "
        "entry of the tenant, else its `*`; null: none (its jobs are not counted).",
        "examples": [{"day": 600, "month": 9000, "onExhausted": "stop"}],
    }
    usage = shape(
        tenant=("string", "The tenant.", "acme"),
        budget=nullable_policy,
        day={**period_schema("day", "2030-01-01"), "description": "The current UTC day."},
        month={**period_schema("month", "2030-01"), "description": "The current UTC month."},
    )
    return {
        "Budget": policy_schema(),
        "BudgetUsage": usage,
        "BudgetResponse": shape(success=SUCCESS, usage=ref_("BudgetUsage")),
        "BudgetList": shape(
            success=SUCCESS,
            budgets={
                "type": "array",
                "items": ref_("BudgetUsage"),
                "description": "By tenant: every tenant with a budget (an admin key), or the "
                "caller's own tenant (a tenant key).",
            },
        ),
    }


def add_budget_stats(stats: dict[str, Any]) -> None:
    """The Stats schema's budget fields (optional: one or the other)."""
    stats["properties"].update(
        budget={
            "anyOf": [ref_("BudgetUsage"), {"type": "null"}],
            "description": "To a tenant's key: its budget's usage; null when it has no budget.",
            "examples": [None],
        },
        budgets={
            "type": "array",
            "items": ref_("BudgetUsage"),
            "description": "To an admin key: the usage of every tenant with a budget.",
        },
    )


def add_budget_errors(error: dict[str, Any]) -> None:
    """The fields a 402 `budget_exceeded` adds to the Error schema."""
    periods = {"enum": ["day", "month"]}
    error["properties"].update(
        period={
            "type": "string",
            "description": "With 402: the period without enough left.",
            "examples": ["day"],
            **periods,
        },
        limitMinutes={
            "type": "number",
            "description": "With 402: that period's limit.",
            "examples": [600],
        },
        remainingMinutes={
            "type": "number",
            "description": "With 402: what it has left.",
            "examples": [12.5],
        },
        requiredMinutes={
            "type": "number",
            "description": "With 402: what the job is expected to take.",
            "examples": [60],
        },
        resetsAt={
            "type": "string",
            "description": "With 402: when that period ends (UTC).",
            "examples": [EXAMPLE_TIME],
            "format": "date-time",
        },
    )
    error["properties"]["retryAfter"]["description"] = (
        "With 429 and 402: seconds to wait (as Retry-After)."
    )


def add_budget_refusals(paths: dict[str, Any]) -> None:
    """The 402 of each operation that submits a job; the batch reports it per item."""
    for method, path in SUBMITS:
        responses = paths[path][method]["responses"]
        responses["402"] = OVER_BUDGET
        paths[path][method]["responses"] = dict(sorted(responses.items()))
    batch = paths[JOBS + "/batch"]["post"]
    batch["description"] += (
        " A job over its tenant's bot-minute budget is refused in `errors` with "
        "`budget_exceeded`, as a submit alone would be with 402."
    )


def add_budgets(schemas: dict[str, Any], operations: dict[str, Any]) -> None:
    """The budgets' part of the document: its schemas, the budget fields of Stats and Error,
    and the 402 of the submit operations."""
    schemas.update(budget_schemas())
    add_budget_stats(schemas["Stats"])
    add_budget_errors(schemas["Error"])
    add_budget_refusals(operations)


def budget_paths() -> dict[str, Any]:
    usage = _json("BudgetResponse", "The tenant's budget and its usage now.")
    changed = _json("BudgetResponse", "The tenant's budget now, and its usage.")
    conflict = _error("Changed meanwhile by another PUT or DELETE; try again.")
    example = {"day": 600, "month": 9000, "onExhausted": "stop"}
    return {
        BUDGETS: {
            "get": _op(
                "List bot-minute budgets",
                "An admin key (SCHEDULER_ADMIN_KEYS), or no authentication: the usage of every "
                "tenant with a budget (named in SCHEDULER_BUDGETS, or stored by PUT), by "
                "tenant. A tenant's key: its own usage only.",
                "Budgets",
                {"200": _json("BudgetList", "The usages.")},
                operationId="listBudgets",
            )
        },
        ONE: {
            "get": _op(
                "Get a tenant's budget",
                "Its budget, and for the current UTC day and month what is charged, spent, "
                "held and left. A tenant's key reads its own only.",
                "Budgets",
                {"200": usage, "400": BAD_TENANT, "404": NOT_YOURS},
                operationId="getBudget",
                parameters=[TENANT],
            ),
            "put": _op(
                "Set a tenant's budget",
                "Stores the tenant's budget over SCHEDULER_BUDGETS' (every server applies it "
                "within 5 s). Admin keys only: the one change an admin key makes. Admitted "
                "jobs keep their charge; a lower limit refuses the next submits, and stops "
                "running bots past their charge as soon as nothing is left (`stop`).",
                "Budgets",
                {"200": changed, "403": ADMIN_ONLY, "404": NO_ROUTE, "409": conflict},
                BODY_ERRORS,
                operationId="setBudget",
                parameters=[TENANT],
                requestBody=_body("Budget", example),
            ),
            "delete": _op(
                "Remove a tenant's stored budget",
                "The budget PUT stored is removed: SCHEDULER_BUDGETS' applies again (or none). "
                "Admin keys only. Answers the usage under the budget that now applies.",
                "Budgets",
                {"200": changed, "400": BAD_TENANT, "403": ADMIN_ONLY, "404": NO_ROUTE},
                operationId="deleteBudget",
                parameters=[TENANT],
            ),
        },
    }
