"""Where a webhook may be sent: https to a public address, checked as written and as resolved.

A webhook URL is the tenant's, but the request is the scheduler's, made from inside its network:
so it may not name (or resolve to) a loopback, private, link-local or otherwise non-global
address, unless the operator allows private targets for local use
(SCHEDULER_WEBHOOK_ALLOW_PRIVATE), which also allows plain http to a loopback host. Redirects
are never followed (core/webhooks/delivery.py), so the checked host is the one that answers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import sys
from urllib.parse import urlsplit

from core.meeting_urls import CONTROL, IPAddress, ip_literal

MAX_URL = 2048
RESOLVE_SECONDS = 5.0  # a resolver that does not answer must not hold the request
PRIVATE_HINT = "(an operator may allow it for local use with SCHEDULER_WEBHOOK_ALLOW_PRIVATE)"


def check_webhook_url(url: str, allow_private: bool) -> str:
    """The URL if deliveries may go there as written; ValueError saying why not."""
    if len(url) > MAX_URL or CONTROL.search(url):
        raise ValueError(f"must be at most {MAX_URL} characters, with no control characters")
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise ValueError(f"is not a valid URL: {exc}") from None
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError("must be an https URL")
    if "@" in parts.netloc:
        raise ValueError("must not carry a user name or password (user@host)")
    if parts.fragment:
        raise ValueError("must not have a #fragment")
    address = ip_literal(host)
    loopback = host == "localhost" or (address is not None and address.is_loopback)
    if parts.scheme == "http" and not (allow_private and loopback):
        raise ValueError(f"must be https (plain http only to a loopback host {PRIVATE_HINT})")
    if not allow_private and (loopback or _internal(host, address)):
        raise ValueError(f"{host} is a loopback, private or internal host {PRIVATE_HINT}")
    return url


async def check_resolved(url: str, allow_private: bool) -> None:
    """ValueError when the URL's host resolves to an address deliveries may not go to (or
    does not resolve at all)."""
    if allow_private or sys.platform == "emscripten":
        return  # a Worker has no resolver, and its fetch reaches the public internet only
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_SECONDS):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise ValueError(f"{host} did not resolve within {RESOLVE_SECONDS:g} s") from None
    except OSError as exc:
        raise ValueError(f"{host} does not resolve: {exc.strerror or exc}") from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not _global(address):
            raise ValueError(f"{host} resolves to {address}, not a public address {PRIVATE_HINT}")


def _internal(host: str, address: IPAddress | None) -> bool:
    if address is not None:
        return not _global(address)
    return "." not in host or host.endswith((".local", ".internal", ".localhost", ".lan"))


def _global(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast
