"""The list cursor every store shares: an opaque, url-safe `created_ms:id`."""

from __future__ import annotations

import base64
import binascii

from core.errors import BadRequest


def encode_cursor(created_ms: int, job_id: str) -> str:
    raw = f"{created_ms}:{job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_ms, _, job_id = raw.partition(":")
        return int(created_ms), job_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest("cursor: not a cursor this API returned") from None
