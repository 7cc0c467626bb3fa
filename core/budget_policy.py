"""A tenant's bot-minute budget as configured (SCHEDULER_BUDGETS, or the admin API):
kept apart from core/budgets.py so that the settings can parse it without importing the store."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import ConfigError

DEFAULT = "*"  # the SCHEDULER_BUDGETS entry of every tenant not named
Period = Literal["day", "month"]


class Policy(BaseModel):
    """A tenant's budget: minutes per UTC day and per UTC month (null: no limit), and what
    happens to its running bots when it runs out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    day: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="Bot-minutes per UTC day."
    )
    month: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="Bot-minutes per UTC month."
    )
    onExhausted: Literal["stop", "finish"] = Field(
        default="stop",
        description="`stop`: a bot that runs past its charge when nothing is left is stopped "
        "(reason `budget_exhausted`); `finish`: running bots finish and are charged.",
    )

    def limit(self, period: Period) -> float | None:
        return self.day if period == "day" else self.month


def parse_budgets(raw: str) -> dict[str, Policy]:
    """SCHEDULER_BUDGETS: a JSON object of tenant (or `*`) -> {"day", "month", "onExhausted"}."""
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return {str(tenant): _policy(str(tenant), spec) for tenant, spec in data.items()}
    except ValueError as exc:
        example = '{"acme": {"day": 600, "month": 9000, "onExhausted": "finish"}, "*": {"day": 60}}'
        raise ConfigError(f"SCHEDULER_BUDGETS: {exc}; expected e.g. {example}") from None


def _policy(tenant: str, spec: object) -> Policy:
    try:
        return Policy.model_validate(spec)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in (tenant, *error["loc"]))
        raise ValueError(f"{where}: {error['msg']}") from None
