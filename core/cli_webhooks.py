"""`botsched events` and `botsched webhooks`: a job's timeline, and the tenant's webhook
endpoints with their delivery log (the routes of core/webhook_routes.py).

Registered by core/cli.py's parser; each command talks to the API through `cli.client`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from core import cli

WEBHOOKS = "/api/scheduler/webhooks"
SHOWN_ONCE = (
    "keep the secret now: it is not shown again (`botsched webhooks rotate {id}` makes a new one)"
)


def table(headers: Sequence[str], rows: list[list[str]]) -> None:
    """Columns as wide as their widest cell; the last one is not padded."""
    widths = [max(len(row[i]) for row in [list(headers), *rows]) for i in range(len(headers))]
    for row in [list(headers), *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())


def text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


# -- events --------------------------------------------------------------------------------


def cmd_events(args: argparse.Namespace) -> None:
    body = cli.client(args).call("GET", f"/api/scheduler/jobs/{args.job_id}/events")
    rows = [event_row(event) for event in body["events"]]
    table(["TIME", "EVENT", "STATUS", "BOT"], rows)


def event_row(event: dict[str, Any]) -> list[str]:
    """time, type, the job's status (and why), the bot's own status."""
    job = event.get("data") or {}
    state = text(job.get("status"))
    if job.get("reason"):
        state += f" ({job['reason']})"
    return [
        text(event.get("timestamp")),
        text(event.get("type")),
        state,
        text(job.get("botStatus")),
    ]


# -- webhooks ------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> None:
    webhooks = cli.client(args).call("GET", WEBHOOKS)["webhooks"]
    rows = [
        [
            hook["id"],
            "disabled" if hook.get("disabled") else "enabled",
            ",".join(hook.get("events") or []) or "all",
            hook.get("url") or "(each job's webhookUrl)",
        ]
        for hook in webhooks
    ]
    table(["ID", "STATE", "EVENTS", "URL"], rows)


def cmd_create(args: argparse.Namespace) -> None:
    spec: dict[str, Any] = {"url": args.endpoint_url}
    if args.events:
        spec["events"] = args.events
    if args.description is not None:
        spec["description"] = args.description
    shown_once(cli.client(args).call("POST", WEBHOOKS, json=spec))


def cmd_job_secret(args: argparse.Namespace) -> None:
    shown_once(cli.client(args).call("POST", f"{WEBHOOKS}/job-secret"))


def cmd_rotate(args: argparse.Namespace) -> None:
    shown_once(cli.client(args).call("POST", f"{WEBHOOKS}/{args.webhook_id}/rotate"))


def shown_once(body: dict[str, Any]) -> None:
    """The endpoint and its new secret on stdout, as JSON; the note on stderr."""
    cli.show({"webhook": body["webhook"], "secret": body["secret"]})
    print(f"botsched: {SHOWN_ONCE.format(id=body['webhook']['id'])}", file=sys.stderr)


def cmd_get(args: argparse.Namespace) -> None:
    cli.show(cli.client(args).call("GET", f"{WEBHOOKS}/{args.webhook_id}")["webhook"])


def cmd_delete(args: argparse.Namespace) -> None:
    cli.client(args).call("DELETE", f"{WEBHOOKS}/{args.webhook_id}")
    print(f"deleted webhook {args.webhook_id}")


def cmd_enable(args: argparse.Namespace) -> None:
    change = {"enabled": args.enabled}
    path = f"{WEBHOOKS}/{args.webhook_id}"
    cli.show(cli.client(args).call("PATCH", path, json=change)["webhook"])


def cmd_deliveries(args: argparse.Namespace) -> None:
    params = {"limit": args.limit, **({"cursor": args.cursor} if args.cursor else {})}
    path = f"{WEBHOOKS}/{args.webhook_id}/deliveries"
    page = cli.client(args).call("GET", path, params=params)
    headers = ["TIME", "EVENT", "EVENT ID", "ATTEMPT", "STATUS", "LATENCY MS", "ERROR"]
    table(headers, [delivery_row(attempt) for attempt in page["deliveries"]])
    if page.get("nextCursor"):
        print(f"(more: --cursor {page['nextCursor']})")


def delivery_row(attempt: dict[str, Any]) -> list[str]:
    fields = ("at", "type", "eventId", "attempt", "status", "latencyMs", "error")
    return [text(attempt.get(name)) for name in fields]


def cmd_replay(args: argparse.Namespace) -> None:
    path = f"{WEBHOOKS}/{args.webhook_id}/events/{args.event_id}/replay"
    cli.show(cli.client(args).call("POST", path)["delivery"])


# -- the parsers ---------------------------------------------------------------------------


def add_parsers(sub: Any) -> None:
    """`events` and `webhooks ...` on the `botsched` parser's subparsers."""
    events = sub.add_parser("events", help="show a job's events: its timeline")
    events.add_argument("job_id")
    events.set_defaults(run=cmd_events)
    hooks = sub.add_parser("webhooks", help="the tenant's webhook endpoints and deliveries")
    actions = hooks.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="list the endpoints").set_defaults(run=cmd_list)
    create = actions.add_parser("create", help="add an endpoint; prints its secret once")
    create.add_argument("endpoint_url", metavar="URL", help="the https URL events are POSTed to")
    create.add_argument(
        "--event",
        dest="events",
        action="append",
        metavar="TYPE",
        help="an event type to send, e.g. job.completed or bot.in_call_recording (repeat; "
        "default: every event)",
    )
    create.add_argument("--description")
    create.set_defaults(run=cmd_create)
    job_secret = actions.add_parser(
        "job-secret", help="make the secret that signs deliveries to jobs' own webhookUrl"
    )
    job_secret.set_defaults(run=cmd_job_secret)
    _one_endpoint_parsers(actions)


def _one_endpoint_parsers(actions: Any) -> None:
    for name, run, text_, enabled in [
        ("get", cmd_get, "show an endpoint", None),
        ("delete", cmd_delete, "delete an endpoint", None),
        ("enable", cmd_enable, "enable an endpoint (healthy again)", True),
        ("disable", cmd_enable, "disable an endpoint: nothing is sent to it", False),
        ("rotate", cmd_rotate, "a new secret, printed once; the old one signs for a while", None),
    ]:
        one = actions.add_parser(name, help=text_)
        one.add_argument("webhook_id", metavar="ID")
        one.set_defaults(run=run, enabled=enabled)
    deliveries = actions.add_parser("deliveries", help="an endpoint's delivery attempts")
    deliveries.add_argument("webhook_id", metavar="ID")
    deliveries.add_argument("--limit", type=int, default=50, help="attempts per page (1-200)")
    deliveries.add_argument("--cursor", help="the next page, as the last one said")
    deliveries.set_defaults(run=cmd_deliveries)
    replay = actions.add_parser("replay", help="send an event to an endpoint again")
    replay.add_argument("webhook_id", metavar="ID")
    replay.add_argument("event_id", metavar="EVENT_ID")
    replay.set_defaults(run=cmd_replay)
