"""Records: the small documents beside the jobs that events and webhooks keep in a store.

A record is a JSON object under a `kind` ("event", "webhook", "delivery", "attempt") and a `key`
unique within its kind. Keys are short texts of KEY_CHARS; scans walk them in ascending order
(plain code-point order), so a key names its place: `evt_{job}_{seq:06d}` lists a job's events
in order. A record may carry `due` (epoch milliseconds): `due_records` finds those whose time has
come, earliest first, through an index. Every write is a compare-and-set on the version the store
handed out, as for jobs, and the records written with a job (its events: the outbox) are written
in the same atomic write as the job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

KEY_CHARS = r"A-Za-z0-9_.:~-"
_KEY = re.compile(rf"^[{KEY_CHARS}]{{1,200}}$")
_KIND = re.compile(r"^[a-z]{1,20}$")
SEPARATORS = "_.:"  # what keys may hold beside letters, digits and `-`; `~` is the escape


@dataclass(frozen=True)
class Record:
    kind: str
    key: str
    data: dict[str, Any] = field(default_factory=dict)
    due: int | None = None  # epoch ms; None: not in the due index
    version: str | None = None

    def __post_init__(self) -> None:
        if not _KIND.match(self.kind):
            raise ValueError(f"record kind {self.kind!r}: 1-20 lowercase letters")
        if not _KEY.match(self.key):
            raise ValueError(f"record key {self.key!r}: 1-200 of {KEY_CHARS}")

    def but(self, **changes: Any) -> Record:
        """A copy with `changes`, keeping the version it was read at (for the next CAS)."""
        return replace(self, **changes)


def key_part(text: str, keep: str = "") -> str:
    """`text` as a piece of a record key: any character but letters, digits, `-` and those of
    SEPARATORS in `keep` becomes `~XX` (its UTF-8 bytes in hex). So distinct texts stay
    distinct, and a separator left out of `keep` can follow the part unambiguously."""
    unsafe = _unsafe(keep)
    return unsafe.sub(lambda match: "".join(f"~{b:02X}" for b in match[0].encode()), text)


@cache
def _unsafe(keep: str) -> re.Pattern[str]:
    return re.compile(f"[^A-Za-z0-9{re.escape(keep)}-]")


def prefix_end(prefix: str) -> str:
    """The first key after every key that starts with `prefix` (for range queries)."""
    return prefix + "\x7f"
