"""`botsched`: run the scheduler, drain its queue, and talk to its API from a shell (jobs here;
a job's events and the webhook endpoints in core/cli_webhooks.py, budgets in core/cli_budgets.py).

Exit codes: 0 done; 1 the API answered an error (or a waited-for job did not complete);
2 a usage error, a setting that stops serve or drain from starting, or no server to talk to.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn
from urllib.parse import quote

import httpx

from core.config import Settings
from core.errors import SchedulerError

FINAL = ("completed", "failed", "cancelled")


class Client:
    """A small synchronous client for the scheduler's HTTP API."""

    def __init__(self, url: str, api_key: str | None, timeout: float = 30.0) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError:
            fail(f"cannot reach the scheduler at {self.url}: is `botsched serve` running?", 2)
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            fail(f"{method} {path}: HTTP {response.status_code}, not JSON")
        if response.status_code >= 400:
            message = f"{body.get('error', 'error')}: {body.get('message', response.status_code)}"
            if response.status_code == 401:
                message += "; set BOTSCHED_API_KEY (or --api-key) to a key in SCHEDULER_API_KEYS"
            fail(message)
        return body


def fail(message: str, code: int = 1) -> NoReturn:
    print(f"botsched: {message}", file=sys.stderr)
    raise SystemExit(code)


def show(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def cmd_serve(args: argparse.Namespace) -> None:
    from handlers.local import serve

    overrides = {"HOST": args.host, "PORT": args.port and str(args.port)}
    settings = settings_with({k: v for k, v in overrides.items() if v})
    try:
        serve(settings, own_public_url=args.own_public_url)
    except SchedulerError as exc:
        fail(exc.message, 2)


def cmd_drain(args: argparse.Namespace) -> None:
    """Drain the store the settings name, directly: no server (nor BOTSCHED_URL) is involved."""
    from core.preflight import check_runtime, store_description

    settings = settings_with({})
    try:
        check_runtime(settings, existing_store=True)
    except SchedulerError as exc:
        fail(exc.message, 2)
    note = " (directly: BOTSCHED_URL is not used)" if os.environ.get("BOTSCHED_URL") else ""
    print(f"botsched: draining the {store_description(settings)}{note}", file=sys.stderr)
    try:
        asyncio.run(_drain(settings, args.once))
    except SchedulerError as exc:  # the store went away between the check and the drain
        fail(exc.message, 2)


async def _drain(settings: Settings, once: bool) -> None:
    from core.loops import deliver_forever, drain_forever
    from core.runtime import Runtime

    runtime = Runtime(settings)
    try:
        scheduler = await runtime.scheduler()
        if once:
            _print_report(await scheduler.tick())
            return
        # the webhook deliveries beside the drains, as `serve` runs them: neither waits
        delivering = asyncio.create_task(deliver_forever(scheduler, settings.polling_interval))
        try:  # as `serve`'s drain loop: a failed drain is logged, never fatal
            await drain_forever(scheduler, settings.polling_interval, _print_report)
        finally:
            delivering.cancel()
    finally:
        await runtime.close()


def _print_report(report: Any) -> None:
    print(json.dumps(report.model_dump(exclude_defaults=True) or {"idle": True}), flush=True)


def cmd_submit(args: argparse.Namespace) -> None:
    spec: dict[str, Any] = {"meetingUrl": args.meeting_url, "priority": args.priority}
    optional = {
        "botName": args.bot_name,
        "joinAt": args.join_at,
        "deadline": args.deadline,
        "maxRuntimeSeconds": args.max_runtime,
        "dedupKey": args.dedup_key,
        "webhookUrl": args.webhook_url,
        "onCapacity": args.on_capacity,
    }
    spec.update({k: v for k, v in optional.items() if v is not None})
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
    job = client(args).call("POST", "/api/scheduler/jobs", json=spec, headers=headers)["job"]
    if not args.wait:
        show(job)
        return
    print(f"submitted job {job['id']}", flush=True)
    progress = progress_printer()
    progress(job, 0.0)
    final = wait_for(client(args), job["id"], args.timeout, progress)
    show(final)
    raise SystemExit(0 if final["status"] == "completed" else 1)


def wait_for(
    api: Client, job_id: str, timeout: float, report: Callable[[dict[str, Any], float], None]
) -> dict[str, Any]:
    """Poll the job until it is final, reporting each look; a timeout is an error."""
    started = time.monotonic()
    while True:
        job: dict[str, Any] = api.call("GET", f"/api/scheduler/jobs/{job_id}")["job"]
        elapsed = time.monotonic() - started
        report(job, elapsed)
        if job["status"] in FINAL:
            return job
        if elapsed > timeout:
            fail(f"job {job_id} still {job['status']} after {timeout:.0f}s")
        time.sleep(1.0)


def progress_printer() -> Callable[[dict[str, Any], float], None]:
    """A live line through the states: `[  4s] queued -> provisioning -> running`; while queued,
    its place and estimated start; and the moment its bot started, once."""
    seen: list[str] = []
    live = sys.stdout.isatty()
    shown: dict[str, Any] = {}

    def report(job: dict[str, Any], elapsed: float) -> None:
        status = job["status"]
        position = job.get("queuePosition") if status == "queued" else None
        if not seen or seen[-1] != status:
            seen.append(status)
        elif not live and position == shown.get("position"):
            return  # a new line when the state or the place in the queue changes
        shown["position"] = position
        line = f"[{elapsed:4.0f}s] {' -> '.join(seen)}{waiting(job) if status == 'queued' else ''}"
        if status in FINAL and job.get("reason"):
            line += f" ({job['reason']})"
        print(f"\r{line}\x1b[K" if live else line, end="" if live else "\n", flush=True)
        if job.get("startedAt") and not shown.get("started"):
            shown["started"] = True
            print(("\n" if live else "") + f"bot started at {job['startedAt']}", flush=True)
        if live and status in FINAL:
            print()

    return report


def waiting(job: dict[str, Any]) -> str:
    """` (position 2, starts in ~3m 5s, at 2030-01-01T10:42:07Z)`, from a queued job's answer."""
    if "queuePosition" not in job:
        return ""
    position = job["queuePosition"]
    text = f" (position {position}{'+' if position >= 1000 else ''}"
    start = job.get("estimatedStartAt")
    if start:
        moment = datetime.fromisoformat(start)
        left = (moment - datetime.now(UTC)).total_seconds()
        text += f", starts in ~{span(left)}, at {start}" if left >= 1 else ", starts now"
    return text + ")"


def span(seconds: float) -> str:
    """`45s`, `3m 5s`, `2h 10m`, `3d 4h`."""
    whole = int(seconds)
    for unit, size, smaller, small_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "m", 60),
        ("m", 60, "s", 1),
    ):
        if whole >= size:
            return f"{whole // size}{unit} {whole % size // small_size}{smaller}"
    return f"{whole}s"


def cmd_reschedule(args: argparse.Namespace) -> None:
    """PATCH the options given; a time of `none` clears it (JSON null)."""
    body: dict[str, Any] = {}
    for name, value in (("joinAt", args.join_at), ("deadline", args.deadline)):
        if value is not None:
            body[name] = None if value.lower() == "none" else value
    for name, number in (("priority", args.priority), ("maxRuntimeSeconds", args.max_runtime)):
        if number is not None:
            body[name] = number
    if not body:
        fail("give one or more of --join-at, --deadline, --priority, --max-runtime", 2)
    show(client(args).call("PATCH", f"/api/scheduler/jobs/{args.job_id}", json=body)["job"])


def cmd_put_by_key(args: argparse.Namespace) -> None:
    if args.cancel:
        body: dict[str, Any] = {"cancelled": True}
    elif not args.meeting_url:
        fail("--meeting-url is needed (or --cancel)", 2)
    else:
        body = {"meetingUrl": args.meeting_url, "priority": args.priority}
        optional = {
            "botName": args.bot_name,
            "joinAt": args.join_at,
            "deadline": args.deadline,
            "maxRuntimeSeconds": args.max_runtime,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
    answer = client(args).call(
        "PUT", f"/api/scheduler/jobs/by-key/{quote(args.key, safe='')}", json=body
    )
    for warning in answer.get("warnings", []):
        print(f"botsched: warning: {warning}", file=sys.stderr)
    show(answer["job"])


def cmd_status(args: argparse.Namespace) -> None:
    show(client(args).call("GET", f"/api/scheduler/jobs/{args.job_id}")["job"])


def cmd_list(args: argparse.Namespace) -> None:
    params = {"limit": args.limit, **({"status": args.status} if args.status else {})}
    page = client(args).call("GET", "/api/scheduler/jobs", params=params)
    for job in page["jobs"]:
        print(f"{job['id']}  {job['status']:<12} p{job['priority']:<3} {job['meetingUrl']}")
    if page.get("nextCursor"):
        print(f"(more: cursor {page['nextCursor']})")


def cmd_cancel(args: argparse.Namespace) -> None:
    show(client(args).call("DELETE", f"/api/scheduler/jobs/{args.job_id}")["job"])


def cmd_stats(args: argparse.Namespace) -> None:
    stats = client(args).call("GET", "/api/scheduler/stats")
    show({k: v for k, v in stats.items() if k not in ("success", "stats")})


def cmd_logs(args: argparse.Namespace) -> None:
    body = client(args).call(
        "GET", f"/api/scheduler/jobs/{args.job_id}/logs", params={"tail": args.tail}
    )
    print(body["logs"], end="")


def settings_with(overrides: dict[str, str]) -> Settings:
    try:
        return Settings.from_env({**os.environ, **overrides})
    except SchedulerError as exc:
        fail(exc.message, 2)


def client(args: argparse.Namespace) -> Client:
    return Client(args.url, args.api_key)


def parser() -> argparse.ArgumentParser:
    port = os.environ.get("PORT", "8080")
    main = argparse.ArgumentParser(prog="botsched", description=__doc__)
    main.add_argument(
        "--url",
        default=os.environ.get("BOTSCHED_URL", f"http://127.0.0.1:{port}"),
        help="scheduler API base URL (env BOTSCHED_URL)",
    )
    main.add_argument(
        "--api-key",
        default=os.environ.get("BOTSCHED_API_KEY"),
        help="API key (env BOTSCHED_API_KEY)",
    )
    sub = main.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the API and the drain loop")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--own-public-url",
        action="store_true",
        help="when SCHEDULER_PUBLIC_URL is unset, the server listens on loopback and PLATFORM is "
        "process: set it to the server's own address, so the bots report their status to it",
    )
    serve.set_defaults(run=cmd_serve)
    drain = sub.add_parser("drain", help="recover, poll, expire and dispatch on the interval")
    drain.add_argument("--once", action="store_true", help="one drain, then exit")
    drain.set_defaults(run=cmd_drain)
    submit = sub.add_parser("submit", help="submit a job")
    submit.add_argument("--meeting-url", required=True)
    submit.add_argument("--bot-name")
    submit.add_argument("--priority", type=int, default=5)
    submit.add_argument("--join-at", help="ISO 8601 time the bot should join")
    submit.add_argument("--deadline", help="ISO 8601 time after which it must not start")
    submit.add_argument("--max-runtime", type=int, help="seconds before the bot is stopped")
    submit.add_argument("--dedup-key")
    submit.add_argument("--idempotency-key")
    submit.add_argument("--webhook-url", help="https URL this job's events are POSTed to")
    submit.add_argument(
        "--on-capacity",
        choices=["queue", "reject"],
        help="reject: refuse the job (exit 1) when it cannot start now, rather than queue it",
    )
    submit.add_argument("--wait", action="store_true", help="follow the job to its end")
    submit.add_argument("--timeout", type=float, default=3600.0, help="seconds --wait waits")
    submit.set_defaults(run=cmd_submit)
    for name, run, text in [
        ("status", cmd_status, "show a job"),
        ("cancel", cmd_cancel, "cancel a job"),
    ]:
        one = sub.add_parser(name, help=text)
        one.add_argument("job_id")
        one.set_defaults(run=run)
    reschedule = sub.add_parser("reschedule", help="change a queued job's time or priority")
    reschedule.add_argument("job_id")
    reschedule.add_argument(
        "--join-at", help="ISO 8601 time the bot should join; none: as soon as possible"
    )
    reschedule.add_argument("--deadline", help="ISO 8601 time; none: no deadline")
    reschedule.add_argument("--priority", type=int)
    reschedule.add_argument("--max-runtime", type=int, help="seconds before the bot is stopped")
    reschedule.set_defaults(run=cmd_reschedule)
    keyed = sub.add_parser(
        "put-by-key", help="create, change or cancel the job of your key (e.g. calendar event)"
    )
    keyed.add_argument("key", help="e.g. {calendarUid}:{occurrenceStart}")
    keyed.add_argument("--meeting-url")
    keyed.add_argument("--bot-name")
    keyed.add_argument("--priority", type=int, default=5)
    keyed.add_argument("--join-at", help="ISO 8601 time the bot should join")
    keyed.add_argument("--deadline", help="ISO 8601 time after which it must not start")
    keyed.add_argument("--max-runtime", type=int, help="seconds before the bot is stopped")
    keyed.add_argument("--cancel", action="store_true", help="cancel the key's job")
    keyed.set_defaults(run=cmd_put_by_key)
    logs = sub.add_parser("logs", help="show a job's bot output")
    logs.add_argument("job_id")
    logs.add_argument("--tail", type=int, default=200)
    logs.set_defaults(run=cmd_logs)
    listing = sub.add_parser("list", help="list jobs, newest first")
    listing.add_argument("--status")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(run=cmd_list)
    sub.add_parser("stats", help="queue and run counts").set_defaults(run=cmd_stats)
    from core import cli_budgets, cli_migrate, cli_webhooks

    cli_webhooks.add_parsers(sub)
    cli_budgets.add_parsers(sub)
    cli_migrate.add_parser(sub)
    return main


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
