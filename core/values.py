"""Small helpers on plain values: new job ids, copies of JSON values."""

from __future__ import annotations

import os
from typing import Any


def json_copy(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists and scalars), faster than `copy.deepcopy`."""
    if isinstance(value, dict):
        return {key: json_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_copy(item) for item in value]
    return value


def new_job_id() -> str:
    """A random (version 4) UUID as `str(uuid.uuid4())` writes it, without building a UUID."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
