"""Which URLs a bot may be sent to: meeting platforms recognised, internal addresses refused.

A bot opens the meeting URL from inside the deployment's network, so an URL that names the
deployment itself (a cloud metadata service, a loopback or private address) is refused unless
the operator allows its host (`SCHEDULER_ALLOWED_MEETING_HOSTS`). Host names are not resolved
here: a public name that resolves to a private address is for the bot's network to stop.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# platform -> host suffixes (a host matches a suffix exactly or as a subdomain)
PLATFORMS: dict[str, tuple[str, ...]] = {
    "google_meet": ("meet.google.com",),
    "zoom": ("zoom.us", "zoom.com", "zoomgov.com"),
    "teams": ("teams.microsoft.com", "teams.live.com", "teams.microsoft.us"),
    "webex": ("webex.com",),
}
INTERNAL_SUFFIXES = ("localhost", "local", "internal", "localdomain", "home.arpa")
_INTERNAL_ENDINGS = tuple("." + suffix for suffix in INTERNAL_SUFFIXES)
LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# a letter no IP literal holds in any form (hexadecimal digits and the x of 0x aside), but for
# its zone after a %
NAME_LETTER = re.compile(r"[g-wyz]")
URLS_KEPT = 1024


@dataclass(frozen=True)
class MeetingPolicy:
    """`allowed_names` (exact, or `*.domain` for the domain and its subdomains) and
    `allowed_networks` are let through although internal; `platforms_only` refuses hosts that
    are no known meeting platform and not allowed."""

    allowed_names: tuple[str, ...] = ()
    allowed_networks: tuple[IPNetwork, ...] = ()
    platforms_only: bool = False

    def allows(self, host: str, address: IPAddress | None) -> bool:
        if address is not None:
            return any(address in network for network in self.allowed_networks)
        return any(
            _matches(host, name[2:]) if name.startswith("*.") else host == name
            for name in self.allowed_names
        )


@lru_cache(maxsize=16)
def policy(allowed: tuple[str, ...] = (), platforms_only: bool = False) -> MeetingPolicy:
    """The policy for a parsed `SCHEDULER_ALLOWED_MEETING_HOSTS` list (see parse_allowed)."""
    names, networks = [], []
    for entry in allowed:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.append(entry)
    return MeetingPolicy(tuple(names), tuple(networks), platforms_only)


def parse_allowed(raw: str) -> tuple[str, ...]:
    """`host, *.domain, 10.0.0.0/8, ::1` -> lowercase entries; ValueError names a bad one."""
    entries = []
    for item in raw.split(","):
        entry = item.strip().lower().rstrip(".")
        if not entry:
            continue
        if not _is_network(entry) and not all(
            LABEL.fullmatch(part) for part in entry.removeprefix("*.").split(".")
        ):
            raise ValueError(f"{item.strip()!r} is neither a host name nor an IP network")
        entries.append(entry)
    return tuple(entries)


def platform_of(url: str) -> str:
    """`google_meet`, `zoom`, `teams`, `webex`, or `other`."""
    host = (urlsplit(url).hostname or "").rstrip(".")
    for platform, suffixes in PLATFORMS.items():
        if any(_matches(host, suffix) for suffix in suffixes):
            return platform
    return "other"


@lru_cache(maxsize=URLS_KEPT)
def check_meeting_url(url: str, rules: MeetingPolicy) -> str:
    """The URL if a bot may be sent there; ValueError saying why not. The URLs let through
    lately are remembered (URLS_KEPT of them): a recurring meeting's comes back each time."""
    if CONTROL.search(url):
        raise ValueError("must not contain control characters or line breaks")
    try:
        parts = urlsplit(url)
        hostname = parts.hostname  # each of these properties parses the netloc again
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        raise ValueError(f"is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not hostname:
        raise ValueError("must be an http(s) URL")
    if "@" in parts.netloc:  # what urlsplit reads user info from
        raise ValueError("must not carry a user name or password (user@host)")
    host = hostname.rstrip(".")
    address = ip_literal(host)
    if rules.allows(host, address):
        return url
    if address is not None and not address.is_global:
        raise ValueError(
            f"{host} is a loopback, private or link-local address; a bot cannot join a meeting "
            "there (an operator may allow it with SCHEDULER_ALLOWED_MEETING_HOSTS)"
        )
    if address is None and _internal_name(host):
        raise ValueError(
            f"{host} names a local or internal host, not a meeting platform (an operator may "
            "allow it with SCHEDULER_ALLOWED_MEETING_HOSTS)"
        )
    if rules.platforms_only and platform_of(url) == "other":
        raise ValueError(
            f"{host} is not a meeting platform this scheduler accepts (Google Meet, Zoom, "
            "Microsoft Teams, Webex, or a host in SCHEDULER_ALLOWED_MEETING_HOSTS)"
        )
    return url


def ip_literal(host: str) -> IPAddress | None:
    """The address a host written as an IP literal names, in any form a resolver accepts
    (`169.254.169.254`, `2852039166`, `0xa9fea9fe`, `127.1`, `[::ffff:127.0.0.1]`)."""
    if "%" not in host and ":" not in host and NAME_LETTER.search(host.lower()):
        return None  # a name, as most hosts are: answered without raising and catching twice
    try:
        address: IPAddress | None = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        address = _legacy_ipv4(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """IPv4 as inet_aton reads it: 1 to 4 parts, each decimal, octal (0...) or hex (0x...),
    the last one filling the bytes left (`127.1`, `2130706433`, `0x7f.0.0.1`)."""
    parts = host.lower().split(".")
    if len(parts) > 4:
        return None
    try:
        numbers = [_ipv4_part(part) for part in parts]
    except ValueError:
        return None
    *leading, last = numbers
    if any(number > 255 for number in leading) or last >= 256 ** (4 - len(leading)):
        return None
    value = last
    for index, number in enumerate(leading):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _ipv4_part(part: str) -> int:
    if part.startswith("0x"):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8)
    if not part.isdigit():
        raise ValueError(part)
    return int(part)


def _is_network(entry: str) -> bool:
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False
    return True


def _internal_name(host: str) -> bool:
    """`localhost`, names under an internal suffix, and single-label names (which a resolver
    completes with its search domains: `metadata`, `kubernetes`, ...)."""
    return "." not in host or host in INTERNAL_SUFFIXES or host.endswith(_INTERNAL_ENDINGS)


def _matches(host: str, suffix: str) -> bool:
    return host == suffix or host.endswith("." + suffix)
