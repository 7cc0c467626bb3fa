"""What a new job may hold so that its bot can start: checks on the values a submit accepts.

JobSpec's validators run these on the fields of a new job (never on a stored one). Each check
raises ValueError with a message for the client; pydantic names the field. The
validation context may carry `meeting_policy` (a MeetingPolicy from the settings) and `now` (the
API's clock: a deadline must be after it); without them the default policy applies and the
deadline is not compared with the clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from core.meeting_urls import MeetingPolicy, policy

# One environment variable holds at most MAX_ARG_STRLEN = 131072 bytes on Linux, its name and
# the terminating NUL included; BOT_CONFIG keeps a margin under that.
MAX_BOT_CONFIG_BYTES = 120_000
MAX_CONFIG_DEPTH = 32  # containers nested inside `config`
MAX_BODY_DEPTH = 64  # containers nested in a request body (a batch wraps a job in three)
MIN_YEAR, MAX_YEAR = 2000, 9000
MAX_CPUS = 1024
MIN_MEMORY_BYTES = 6 * 2**20  # Docker and Podman refuse a smaller memory limit
MAX_MEMORY_BYTES = 64 * 2**40
# a job id (a UUID) stands in for bot_uuid while the bot config is measured
JOB_ID_PLACEHOLDER = "00000000-0000-0000-0000-000000000000"


def depth_of(value: Any, stop: int) -> int:
    """How deeply lists and objects nest in `value` (a scalar is 0), counted without recursion
    and no further than `stop` + 1."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > stop:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth) for child in children)
    return deepest


def strings_in(value: Any) -> Iterator[str]:
    """Every string in a JSON value, object keys included."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def check_no_nul(value: Any) -> None:
    if isinstance(value, str):
        texts: Iterable[str] = (value,)
    elif isinstance(value, dict) and all(type(item) is str for item in value.values()):
        texts = (*value.keys(), *value.values())  # labels (metadata): no walk needed
    else:
        texts = strings_in(value)
    if any("\x00" in text for text in texts):
        raise ValueError(
            "contains a NUL character (\\u0000), which cannot reach the bot: "
            "its values travel in environment variables"
        )


def check_config_depth(config: dict[str, Any]) -> None:
    if depth_of(config, MAX_CONFIG_DEPTH) > MAX_CONFIG_DEPTH:
        raise ValueError(f"nested more than {MAX_CONFIG_DEPTH} levels deep")


def check_bot_config_size(bot_config: dict[str, Any]) -> None:
    """The bot config as BOT_CONFIG carries it (json.dumps, as every backend writes it)."""
    size = len(json.dumps(bot_config).encode())
    if size > MAX_BOT_CONFIG_BYTES:
        raise ValueError(
            f"the bot config is {size} bytes; at most {MAX_BOT_CONFIG_BYTES} fit in the bot's "
            "environment (BOT_CONFIG)"
        )


def check_moment(value: datetime) -> None:
    """A time the scheduler can compute with: years MIN_YEAR..MAX_YEAR."""
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"must be between the years {MIN_YEAR} and {MAX_YEAR}")


def check_future(value: datetime, now: datetime | None = None) -> None:
    now = now or datetime.now(UTC)
    moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    if moment <= now:
        raise ValueError(
            f"{value.isoformat()} is already past; a job past its deadline can never start"
        )


def check_not_a_number(value: Any) -> None:
    """Dates come as ISO 8601 text: a number (or a string of digits) is refused, not read as
    seconds since the epoch."""
    if isinstance(value, bool | int | float) or (
        isinstance(value, str) and value.strip().lstrip("+-").replace(".", "", 1).isdigit()
    ):
        raise ValueError("must be an ISO 8601 date and time, e.g. 2030-01-01T10:00:00Z")


def check_not_a_bool(value: Any) -> None:
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")


def check_cpu(nanos: int) -> None:
    if nanos > MAX_CPUS * 10**9:
        raise ValueError(f"at most {MAX_CPUS} CPUs")
    if nanos < 10**6:
        raise ValueError("at least 1m (a thousandth of a CPU)")


def check_memory(size: int) -> None:
    if not MIN_MEMORY_BYTES <= size <= MAX_MEMORY_BYTES:
        raise ValueError("must be between 6Mi and 64Ti")


def check_deadline(value: datetime, context: Mapping[str, Any] | None) -> None:
    """After the API's clock, when the validation context carries it as `now`."""
    if context and isinstance(context.get("now"), datetime):
        check_future(value, context["now"])


def check_config(config: dict[str, Any], data: Mapping[str, Any]) -> None:
    if not config:  # the job's own fields alone are far below the limit (their lengths are)
        return
    check_config_depth(config)
    check_no_nul(config)
    bot_config = dict(config)
    bot_config.update(
        meeting_url=data.get("meetingUrl", ""),
        bot_name=data.get("botName", ""),
        bot_uuid=JOB_ID_PLACEHOLDER,
        recording_mode=data.get("recordingMode", ""),
    )
    if data.get("email"):
        bot_config["email"] = data["email"]
    check_bot_config_size(bot_config)


def meeting_policy(context: Mapping[str, Any] | None) -> MeetingPolicy:
    """The validation context's `meeting_policy`, else the default one."""
    rules = context.get("meeting_policy") if context else None
    return rules if isinstance(rules, MeetingPolicy) else policy()
