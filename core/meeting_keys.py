"""Canonical meeting keys: one text per meeting, whatever the spelling of its URL.

    Google Meet  meet:{abc-defg-hij}       meet.google.com/abc-defg-hij, /_meet/…, ?authuser=…
                 meet:lookup:{name}        meet.google.com/lookup/{name}
    Zoom         zoom:{meeting id digits}  any *.zoom.us, zoom.com, zoomgov.com host: /j/, /s/,
                                           /w/, /wc/{id}/join, /wc/join/{id}, /join?confno=
                 zoom:my:{vanity}          /my/{vanity}
    Teams        teams:{thread id}         /l/meetup-join/{19:meeting_…@thread.v2}/…, also in a
                                           fragment or a launcher's url= parameter
                 teams:meet:{id}           teams.microsoft.com/meet/{id}, teams.live.com/meet/…
    Webex        webex:{site}:{name}       {site}.webex.com/meet/{name} (and /join/{name})
                 webex:mtid:{MTID}         {site}.webex.com/{site}/j.php?MTID=…
                 webex:{site}:{id}         /wbxmjs/joinservice/sites/{site}/meeting/download/{id}
    other        url:{host}{path}          query and fragment dropped, no trailing slash

Keys are lowercase, but for the path of a `url:` key. Passwords (`pwd=`, `p=`) and tracking
parameters are never part of a key: `meeting_password` reads the password apart. A platform URL
whose shape is not one of the above gets a `url:` key; `meet.google.com/` and `/new` (which open
a new meeting each time) get none. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qsl, unquote, urlsplit

from core.meeting_urls import platform_of

MEET_CODE = re.compile(r"([a-z]{3})-?([a-z]{4})-?([a-z]{3})")
DIGITS = re.compile(r"[0-9]{5,20}")
MEETUP_JOIN = re.compile(r"meetup-join/([^/?#&\s]+)")
WEBEX_DOWNLOAD = re.compile(
    r"/(?:wbxmjs/joinservice|webappng)/sites/([^/]+)/meeting/download/([^/?#]+)"
)
NO_MEETING = ""  # a platform page that is no one meeting: no key at all
PLATFORM_PREFIXES = ("meet:", "zoom:", "teams:", "webex:")
KEYS_KEPT = 1024


@dataclass(frozen=True)
class Parts:
    host: str  # lowercase, no trailing dot
    port: int | None
    path: str  # as sent
    query: dict[str, str]  # names lowercased; the first value of each
    fragment: str

    @property
    def segments(self) -> list[str]:
        """The path's segments, percent-decoded, empty ones left out."""
        return [unquote(part) for part in self.path.split("/") if part]


@lru_cache(maxsize=KEYS_KEPT)
def meeting_key(url: str) -> str | None:
    """The meeting `url` names, as a canonical key (see the module's table); None when it names
    none (not an http(s) URL, or a platform page that opens a new meeting). Remembered for the
    KEYS_KEPT URLs used last: a recurring meeting's URL comes back with each occurrence."""
    parts = _parts(url)
    if parts is None:
        return None
    parse = _PARSERS.get(platform_of(url))
    key = parse(parts) if parse is not None else None
    if key == NO_MEETING:
        return None
    return key if key is not None else _url_key(parts)


def is_platform_key(key: str | None) -> bool:
    """Whether `key` names a meeting of a known platform (not a `url:` key, which may drop the
    part of an unknown URL that tells its meetings apart)."""
    return key is not None and key.startswith(PLATFORM_PREFIXES)


def meeting_password(url: str) -> str | None:
    """The meeting's passcode the URL carries (Zoom `pwd=`, Teams `p=`), kept out of the key."""
    parts = _parts(url)
    if parts is None or platform_of(url) not in ("zoom", "teams", "webex"):
        return None
    for name in ("pwd", "p", "passcode", "password"):
        if parts.query.get(name):
            return parts.query[name]
    return None


def _parts(url: str) -> Parts | None:
    try:
        split = urlsplit(url.strip())
        host, port = split.hostname, split.port
    except ValueError:
        return None
    if split.scheme.lower() not in ("http", "https") or not host:
        return None
    query: dict[str, str] = {}
    for name, value in parse_qsl(split.query, keep_blank_values=True):
        query.setdefault(name.lower(), value)
    return Parts(host.rstrip("."), port, split.path, query, split.fragment)


def _url_key(parts: Parts) -> str:
    port = f":{parts.port}" if parts.port is not None else ""
    return f"url:{parts.host}{port}{parts.path.rstrip('/')}"


def _meet(parts: Parts) -> str | None:
    segments = [segment.lower() for segment in parts.segments]
    if not segments or segments[0] in ("new", "landing"):
        return NO_MEETING
    if segments[0] == "lookup":
        return f"meet:lookup:{segments[1]}" if len(segments) > 1 else None
    for segment in segments[:3]:
        code = MEET_CODE.fullmatch(segment)
        if code is not None:
            return "meet:" + "-".join(code.groups())
    return None


def _zoom(parts: Parts) -> str | None:
    segments = parts.segments
    head = [segment.lower() for segment in segments[:2]]
    if len(segments) >= 2 and head[0] == "my":
        return f"zoom:my:{segments[1].lower()}"
    if len(segments) >= 2 and head[0] in ("j", "s", "w"):
        return _zoom_id(segments[1])
    if len(segments) >= 3 and head == ["wc", "join"]:
        return _zoom_id(segments[2])
    if len(segments) >= 2 and head[0] == "wc":
        return _zoom_id(segments[1])
    if head[:1] == ["join"] and parts.query.get("confno"):
        return _zoom_id(parts.query["confno"])
    return None


def _zoom_id(text: str) -> str | None:
    digits = re.sub(r"[\s-]", "", text)
    return f"zoom:{digits}" if DIGITS.fullmatch(digits) else None


def _teams(parts: Parts) -> str | None:
    segments = parts.segments
    if len(segments) >= 2 and segments[0].lower() == "meet":
        digits = re.sub(r"[\s-]", "", segments[1])
        return f"teams:meet:{digits}" if DIGITS.fullmatch(digits) else None
    text = f"{parts.path}?{_raw_query(parts)}#{parts.fragment}"
    for _ in range(3):  # a thread id may come encoded once, twice (in a url= parameter), or not
        match = MEETUP_JOIN.search(text)
        if match is not None and "%" not in match[1]:
            return f"teams:{match[1].lower()}"
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    return None


def _raw_query(parts: Parts) -> str:
    return "&".join(f"{name}={value}" for name, value in parts.query.items())


def _webex(parts: Parts) -> str | None:
    site = parts.host.removesuffix("webex.com").rstrip(".")
    segments = parts.segments
    download = WEBEX_DOWNLOAD.search(unquote(parts.path))
    if download is not None:
        return f"webex:{download[1].lower()}:{download[2].lower()}"
    if segments and segments[-1].lower() == "j.php" and parts.query.get("mtid"):
        return f"webex:mtid:{parts.query['mtid'].lower()}"
    if site and len(segments) >= 2 and segments[0].lower() in ("meet", "join"):
        return f"webex:{site}:{segments[1].lower()}"
    return None


_PARSERS: dict[str, Callable[[Parts], str | None]] = {
    "google_meet": _meet,
    "zoom": _zoom,
    "teams": _teams,
    "webex": _webex,
}
