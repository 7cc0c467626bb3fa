"""`botsched budgets`: the tenants' bot-minute budgets and what they spent (the routes of
core/budget_routes.py). Listing and showing need any key (a tenant key sees its own tenant);
`set` and `delete` need an admin key (SCHEDULER_ADMIN_KEYS), or a server without keys.

Registered by core/cli.py's parser; each command talks to the API through `cli.client`.
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from core import cli
from core.cli_webhooks import table, text

BUDGETS = "/api/scheduler/budgets"
HEADERS = ["TENANT", "DAY USED/LIMIT", "MONTH USED/LIMIT", "ON EXHAUSTED"]


def path(tenant: str) -> str:
    return f"{BUDGETS}/{quote(tenant, safe='')}"


def minutes(value: Any) -> str:
    """`12.5`, `600`; `-` for none."""
    return "-" if value is None else f"{float(value):g}"


def used(period: dict[str, Any]) -> str:
    """`charged/limit` in minutes (`12.5/600`, `0/-` without a limit)."""
    return f"{minutes(period['chargedMinutes'])}/{minutes(period['limitMinutes'])}"


def usage_row(usage: dict[str, Any]) -> list[str]:
    budget = usage.get("budget") or {}
    return [
        usage["tenant"],
        used(usage["day"]),
        used(usage["month"]),
        text(budget.get("onExhausted")),
    ]


def cmd_list(args: argparse.Namespace) -> None:
    usages = cli.client(args).call("GET", BUDGETS)["budgets"]
    table(HEADERS, [usage_row(usage) for usage in usages])


def cmd_show(args: argparse.Namespace) -> None:
    cli.show(cli.client(args).call("GET", path(args.tenant))["usage"])


def cmd_set(args: argparse.Namespace) -> None:
    """PUT the whole budget: a limit not given is none (the stored budget is replaced)."""
    if args.day is None and args.month is None:
        cli.fail("give --day and/or --month (minutes); to fall back on the settings: delete", 2)
    body = {"day": args.day, "month": args.month, "onExhausted": args.on_exhausted}
    cli.show(cli.client(args).call("PUT", path(args.tenant), json=body)["usage"])


def cmd_delete(args: argparse.Namespace) -> None:
    usage = cli.client(args).call("DELETE", path(args.tenant))["usage"]
    print(f"deleted the stored budget of {args.tenant}; now: {describe(usage.get('budget'))}")


def describe(budget: dict[str, Any] | None) -> str:
    """`day 600, month 9000 min (stop)`; `none` without a budget."""
    if not budget:
        return "none (SCHEDULER_BUDGETS has none for it)"
    limits = [
        f"{name} {minutes(budget[name])}" for name in ("day", "month") if budget[name] is not None
    ]
    return f"{', '.join(limits) or 'no limit'} min ({budget['onExhausted']}, from the settings)"


def non_negative(raw: str) -> float:
    """A number of minutes, 0 or more (argparse type)."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number of minutes") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{raw!r}: minutes are 0 or more")
    return value


def add_parsers(sub: Any) -> None:
    """`budgets [list|show|set|delete]` on the `botsched` parser's subparsers."""
    budgets = sub.add_parser("budgets", help="tenants' bot-minute budgets and their use")
    budgets.set_defaults(run=cmd_list)
    actions = budgets.add_subparsers(dest="action")
    actions.add_parser("list", help="every budget the key may see").set_defaults(run=cmd_list)
    show = actions.add_parser("show", help="a tenant's budget and use, as JSON")
    show.add_argument("tenant", metavar="TENANT")
    show.set_defaults(run=cmd_show)
    change = actions.add_parser(
        "set", help="store a tenant's budget over the settings' (admin key); replaces it whole"
    )
    change.add_argument("tenant", metavar="TENANT")
    change.add_argument("--day", type=non_negative, metavar="N", help="minutes per UTC day")
    change.add_argument("--month", type=non_negative, metavar="N", help="minutes per UTC month")
    change.add_argument(
        "--on-exhausted",
        choices=["stop", "finish"],
        default="stop",
        help="stop (default): stop bots past their charge when nothing is left; finish: let "
        "them finish",
    )
    change.set_defaults(run=cmd_set)
    delete = actions.add_parser(
        "delete", help="remove a tenant's stored budget: the settings' applies again (admin key)"
    )
    delete.add_argument("tenant", metavar="TENANT")
    delete.set_defaults(run=cmd_delete)
