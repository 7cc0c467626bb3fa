"""Canonical meeting keys (core/meeting_keys.py): real URL shapes of each platform, as calendar
invites, browsers and the platforms' own share buttons write them. Pure functions: no store."""

from __future__ import annotations

import pytest

from core.meeting_keys import is_platform_key, meeting_key, meeting_password

TEAMS_THREAD = "19:meeting_NjU0ZTM2ZjAtZDA2Ni00YjE0LWE1MzgtYzAxYTU2ZTc5YmEx@thread.v2"
TEAMS_KEY = "teams:" + TEAMS_THREAD.lower()
TEAMS_ENCODED = "19%3ameeting_NjU0ZTM2ZjAtZDA2Ni00YjE0LWE1MzgtYzAxYTU2ZTc5YmEx%40thread.v2"
TEAMS_CONTEXT = (
    "context=%7b%22Tid%22%3a%2272f988bf-86f1-41af-91ab-2d7cd011db47%22%2c%22Oid%22%3a"
    "%22a2b0c1d4-1111-2222-3333-444455556666%22%7d"
)
WEBEX_ID = "e9f1ab2c3d4e5f60718293a4b5c6d7e8"

KEYS = [
    # Google Meet
    ("https://meet.google.com/abc-defg-hij", "meet:abc-defg-hij"),
    ("https://meet.google.com/abc-defg-hij?authuser=1", "meet:abc-defg-hij"),
    ("https://meet.google.com/abc-defg-hij?pli=1&authuser=0", "meet:abc-defg-hij"),
    ("https://meet.google.com/abc-defg-hij?hl=en&authuser=2", "meet:abc-defg-hij"),
    ("https://meet.google.com/abc-defg-hij/", "meet:abc-defg-hij"),
    ("https://MEET.GOOGLE.COM/ABC-DEFG-HIJ", "meet:abc-defg-hij"),
    ("http://meet.google.com/abc-defg-hij", "meet:abc-defg-hij"),
    ("https://meet.google.com/abcdefghij", "meet:abc-defg-hij"),
    ("https://meet.google.com/_meet/abc-defg-hij?authuser=0&hs=122", "meet:abc-defg-hij"),
    ("https://meet.google.com./abc-defg-hij#fragment", "meet:abc-defg-hij"),
    ("https://meet.google.com/lookup/fvmbcgdzjf?authuser=0&hs=179", "meet:lookup:fvmbcgdzjf"),
    ("https://meet.google.com/new", None),
    ("https://meet.google.com/", None),
    ("https://meet.google.com/abc-def-ghi", "url:meet.google.com/abc-def-ghi"),  # not a code
    # Zoom
    ("https://zoom.us/j/81234567890", "zoom:81234567890"),
    ("https://zoom.us/j/81234567890?pwd=aBcDeFgH1234567890", "zoom:81234567890"),
    ("https://us02web.zoom.us/j/81234567890?pwd=aBcDeFgH1234567890", "zoom:81234567890"),
    ("https://us06web.zoom.us/j/81234567890?pwd=x.1&uname=Ann%20Lee#success", "zoom:81234567890"),
    ("https://acme.zoom.us/j/81234567890?utm_source=cal&utm_medium=email", "zoom:81234567890"),
    ("https://ACME.Zoom.US/J/81234567890/", "zoom:81234567890"),
    ("https://zoom.us/s/81234567890?zak=eyJhbGciOiJIUzI1NiJ9", "zoom:81234567890"),
    ("https://us02web.zoom.us/w/81234567890?tk=abc&pwd=xyz", "zoom:81234567890"),
    ("https://app.zoom.us/wc/81234567890/join?fromPWA=1&pwd=xyz", "zoom:81234567890"),
    ("https://zoom.us/wc/join/81234567890", "zoom:81234567890"),
    ("https://zoom.us/j/812%203456%207890", "zoom:81234567890"),
    ("https://zoom.us/j/812-3456-7890?pwd=1", "zoom:81234567890"),
    ("https://zoom.com/j/81234567890", "zoom:81234567890"),
    ("https://zoom.us/join?confno=81234567890&pwd=abc", "zoom:81234567890"),
    ("https://acme.zoom.us/my/Jane.Doe?pwd=abc", "zoom:my:jane.doe"),
    ("https://zoom.us/my/jane.doe", "zoom:my:jane.doe"),
    ("https://zoom.us/webinar/register/WN_aBcD", "url:zoom.us/webinar/register/WN_aBcD"),
    # Microsoft Teams
    (f"https://teams.microsoft.com/l/meetup-join/{TEAMS_ENCODED}/0?{TEAMS_CONTEXT}", TEAMS_KEY),
    (f"https://teams.microsoft.com/l/meetup-join/{TEAMS_ENCODED}/1712345678901", TEAMS_KEY),
    (f"https://teams.microsoft.com/l/meetup-join/{TEAMS_ENCODED.upper()}/0", TEAMS_KEY),
    (f"https://teams.microsoft.com/l/meetup-join/{TEAMS_THREAD}/0", TEAMS_KEY),
    (
        f"https://teams.microsoft.com/v2/?meetingjoin=true#/l/meetup-join/{TEAMS_ENCODED}/0"
        f"?{TEAMS_CONTEXT}&anon=true",
        TEAMS_KEY,
    ),
    (
        "https://teams.microsoft.com/dl/launcher/launcher.html?url=%2F_%23%2Fl%2Fmeetup-join%2F"
        + TEAMS_ENCODED.replace("%", "%25")
        + "%2F0&type=meetup-join&deeplinkId=abc&directDl=true&msLaunch=true",
        TEAMS_KEY,
    ),
    ("https://teams.microsoft.com/meet/2345678901234?p=AbCdEf123", "teams:meet:2345678901234"),
    ("https://teams.microsoft.com/meet/234 567 890 123 4?p=x", "teams:meet:2345678901234"),
    ("https://teams.live.com/meet/9312345678901?p=abcdef", "teams:meet:9312345678901"),
    ("https://teams.live.com/meet/9312345678901/", "teams:meet:9312345678901"),
    # Webex
    ("https://acme.webex.com/meet/jdoe", "webex:acme:jdoe"),
    ("https://ACME.webex.com/meet/JDoe/", "webex:acme:jdoe"),
    ("https://acme.my.webex.com/meet/jdoe", "webex:acme.my:jdoe"),
    ("https://acme.webex.com/join/jdoe", "webex:acme:jdoe"),
    (
        "https://acme.webex.com/acme/j.php?MTID=m1a2b3c4d5e6f708192a3b4c5d6e7f809",
        "webex:mtid:m1a2b3c4d5e6f708192a3b4c5d6e7f809",
    ),
    (
        "https://acme.webex.com/acme/j.php?mtid=M1A2B3C4D5E6F708192A3B4C5D6E7F809&utm_x=1",
        "webex:mtid:m1a2b3c4d5e6f708192a3b4c5d6e7f809",
    ),
    (
        f"https://acme.webex.com/wbxmjs/joinservice/sites/acme/meeting/download/{WEBEX_ID}"
        "?siteurl=acme&MTID=m1",
        f"webex:acme:{WEBEX_ID}",
    ),
    (
        f"https://acme.webex.com/webappng/sites/acme/meeting/download/{WEBEX_ID.upper()}",
        f"webex:acme:{WEBEX_ID}",
    ),
    # anything else
    ("https://whereby.com/team-standup?embed", "url:whereby.com/team-standup"),
    ("https://Meet.Jit.Si/MyRoom/", "url:meet.jit.si/MyRoom"),
    ("https://meet.example.com/abc-defg-hij#x", "url:meet.example.com/abc-defg-hij"),
    ("https://video.example.com:8443/room/1?x=1", "url:video.example.com:8443/room/1"),
    ("https://example.com", "url:example.com"),
    ("ftp://meet.google.com/abc-defg-hij", None),
    ("not a url", None),
]


@pytest.mark.parametrize(("url", "key"), KEYS)
def test_meeting_key(url: str, key: str | None) -> None:
    assert meeting_key(url) == key


def test_enough_rows_of_every_platform() -> None:
    keys = [key for _, key in KEYS if key]
    assert len(KEYS) >= 40
    for prefix in ("meet:", "zoom:", "teams:", "webex:", "url:"):
        assert sum(key.startswith(prefix) for key in keys) >= 4, prefix


@pytest.mark.parametrize(
    "urls",
    [
        ["https://meet.google.com/abc-defg-hij", "https://meet.google.com/abc-defg-hik"],
        ["https://meet.google.com/abc-defg-hij", "https://meet.google.com/lookup/abcdefghij"],
        ["https://zoom.us/j/81234567890", "https://zoom.us/j/81234567891"],
        ["https://zoom.us/j/81234567890", "https://zoom.us/my/81234567890"],
        ["https://zoom.us/my/jane", "https://zoom.us/my/john"],
        [
            f"https://teams.microsoft.com/l/meetup-join/{TEAMS_ENCODED}/0",
            f"https://teams.microsoft.com/l/meetup-join/{TEAMS_ENCODED.replace('NjU0', 'NjU1')}/0",
        ],
        [
            "https://teams.microsoft.com/meet/2345678901234?p=a",
            "https://teams.microsoft.com/meet/2345678901235?p=a",
        ],
        ["https://acme.webex.com/meet/jdoe", "https://globex.webex.com/meet/jdoe"],
        ["https://acme.webex.com/meet/jdoe", "https://acme.webex.com/meet/jroe"],
        ["https://whereby.com/room-a", "https://whereby.com/room-b"],
        ["https://zoom.us/j/81234567890", "https://meet.google.com/abc-defg-hij"],
    ],
)
def test_different_meetings_get_different_keys(urls: list[str]) -> None:
    keys = [meeting_key(url) for url in urls]
    assert None not in keys
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("https://us02web.zoom.us/j/81234567890?pwd=aBcD.1&uname=x", "aBcD.1"),
        ("https://teams.microsoft.com/meet/2345678901234?p=AbCdEf123", "AbCdEf123"),
        ("https://zoom.us/j/81234567890", None),
        ("https://meet.google.com/abc-defg-hij?pwd=nope", None),
    ],
)
def test_the_password_is_read_apart(url: str, password: str | None) -> None:
    assert meeting_password(url) == password


def test_platform_keys_are_told_from_url_keys() -> None:
    assert is_platform_key("zoom:81234567890")
    assert is_platform_key("meet:abc-defg-hij")
    assert not is_platform_key("url:whereby.com/room")
    assert not is_platform_key(None)
