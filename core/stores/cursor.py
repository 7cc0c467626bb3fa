"""The list cursor every store shares: an opaque, url-safe `created_ms:id`.

A decoded cursor is bounded before any store sees it: its time within 0..MS_MAX (every store's
integer column takes that, SQLite's and D1's 64-bit ones included) and its id at most
MAX_ID_CHARS long, so a forged cursor is at worst an empty page, never a store error.
"""

from __future__ import annotations

import base64
import binascii

from core.errors import BadRequest

MS_MAX = 10**15 - 1  # epoch milliseconds as 15 digits (until the year 33658)
MAX_ID_CHARS = 128
MAX_CURSOR_CHARS = 1024  # an id of MAX_ID_CHARS characters of up to 4 bytes, base64


def encode_cursor(created_ms: int, job_id: str) -> str:
    raw = f"{created_ms}:{job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    if len(cursor) > MAX_CURSOR_CHARS:
        raise BadRequest("cursor: not a cursor this API returned")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_ms, _, job_id = raw.partition(":")
        moment = int(created_ms)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest("cursor: not a cursor this API returned") from None
    if not job_id or len(job_id) > MAX_ID_CHARS or "\x00" in job_id:
        raise BadRequest("cursor: not a cursor this API returned")
    return min(max(moment, 0), MS_MAX), job_id
