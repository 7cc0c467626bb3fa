"""What the API accepts as a URL, an e-mail address or a quantity, one regular expression each.

URLs are RFC 3986's http(s) URIs (ASCII, percent-encoded, no user info); e-mail addresses are
ASCII dot-atoms at a dotted domain, within RFC 5321's lengths. The OpenAPI document says
`format: uri` with an http(s) prefix, and `format: email`: every value these checks take is one
of those. A meeting URL's host is also checked against the operator's policy (meeting_urls.py).
"""

from __future__ import annotations

import re
from typing import Any

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_PCT = r"%[0-9A-Fa-f]{2}"
_PATH = rf"(?:/(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|{_PCT})*)*"
_QUERY = rf"(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|{_PCT})*"


def _http_url(host: str) -> str:
    scheme = "[Hh][Tt][Tt][Pp][Ss]?"
    return rf"^{scheme}://{host}(?::[0-9]{{1,4}})?{_PATH}(?:\?{_QUERY})?(?:#{_QUERY})?$"


HTTP_URL_PATTERN = _http_url(rf"{_LABEL}(?:\.{_LABEL})*\.?")
# what the OpenAPI document adds to `format: uri`
HTTP_URL_PREFIX = "^[Hh][Tt][Tt][Pp][Ss]?://"
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
EMAIL_PATTERN = rf"^{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})+$"
# Kubernetes quantities greater than 0, as core.resources reads them (blanks around trimmed)
_POSITIVE = r"(?:[0-9]*[1-9][0-9]*(?:\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*)"
CPU_PATTERN = rf"^\s*{_POSITIVE}m?\s*$"
MEMORY_PATTERN = rf"^\s*{_POSITIVE}(?:Ki|Mi|Gi|Ti|k|K|M|G|T)?\s*$"

_HTTP_URL = re.compile(HTTP_URL_PATTERN)
_EMAIL = re.compile(EMAIL_PATTERN)
EMAIL_EXAMPLE = "bot@example.com"


def check_http_url(value: str) -> str:
    """`value` if it is an http(s) URL as above; ValueError otherwise."""
    if not _HTTP_URL.fullmatch(value):
        raise ValueError(
            "must be an http(s) URL: a host, then ASCII characters only (percent-encode the "
            "others), with no blanks and no user@"
        )
    return value


def check_email(value: str) -> str:
    """`value` if it is an e-mail address as above, within RFC 5321's lengths."""
    local, _, domain = value.rpartition("@")
    labels = domain.split(".")
    if (
        not _EMAIL.fullmatch(value)
        or len(local) > 64
        or len(value) > 254
        or any(len(label) > 63 for label in labels)
    ):
        raise ValueError(f"must be an e-mail address, like {EMAIL_EXAMPLE}")
    return value


def integral(value: Any) -> Any:
    """A JSON number without a fraction (`5.0`) as the integer JSON Schema says it is; anything
    else as it is (a string or a boolean is then refused by a strict int field)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
