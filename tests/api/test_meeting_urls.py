"""Meeting URLs: platforms recognised, internal addresses refused unless allowed
(core/meeting_urls.py), on both submit routes."""

from __future__ import annotations

import pytest

from core.config import Settings
from core.errors import ConfigError
from core.meeting_urls import check_meeting_url, ip_literal, platform_of, policy
from tests.api.conftest import JOBS, Api, MakeApi, assert_error

MEETINGS = "/api/scheduler/meetings"

INTERNAL = [
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://127.0.0.1:8080/api/scheduler/jobs",
    "http://127.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://0.0.0.0:8080/",
    "http://[::1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://10.1.2.3/meeting",
    "http://192.168.1.10/",
    "http://172.16.0.1/",
    "http://100.64.0.1/",
    "http://[fe80::1%25eth0]/",
    "http://localhost:3000/",
    "http://LOCALHOST./",
    "http://api.localhost/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata/computeMetadata/v1/",
    "http://printer.local/",
    "https://kubernetes.default.svc.cluster.local/",
]
PUBLIC = [
    ("https://meet.google.com/abc-defg-hij", "google_meet"),
    ("https://us02web.zoom.us/j/123456789?pwd=abc", "zoom"),
    ("https://zoom.us/j/123", "zoom"),
    ("https://app.zoom.com/wc/join/123", "zoom"),
    ("https://teams.microsoft.com/l/meetup-join/19%3ameeting", "teams"),
    ("https://teams.live.com/meet/9876", "teams"),
    ("https://acme.webex.com/meet/jdoe", "webex"),
    ("https://meet.example.com/room", "other"),
    ("https://meet.example/x", "other"),
    ("http://8.8.8.8/room", "other"),
]


@pytest.mark.parametrize("url", INTERNAL)
def test_internal_addresses_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="SCHEDULER_ALLOWED_MEETING_HOSTS"):
        check_meeting_url(url, policy())


@pytest.mark.parametrize(("url", "platform"), PUBLIC)
def test_public_hosts_pass_and_platforms_are_recognised(url: str, platform: str) -> None:
    assert check_meeting_url(url, policy()) == url
    assert platform_of(url) == platform


@pytest.mark.parametrize(
    "url", ["https://evilmeet.google.com.attacker.example/x", "https://notzoom.us/j/1"]
)
def test_look_alike_hosts_are_no_platform(url: str) -> None:
    assert platform_of(url) == "other"


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("https://user:pw@meet.google.com/x", "user name or password"),
        ("https://meet.google.com@169.254.169.254/", "user name or password"),
        ("https://meet.google.com:99999/x", "not a valid URL"),
        ("ftp://meet.google.com/x", "http(s)"),
        ("https:///nohost", "http(s)"),
    ],
)
def test_malformed_urls_say_why(url: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        check_meeting_url(url, policy())


def test_ip_literals_in_every_resolver_form() -> None:
    metadata = ip_literal("169.254.169.254")
    assert metadata is not None
    for form in ("2852039166", "0xa9fea9fe", "0251.0376.0251.0376", "::ffff:169.254.169.254"):
        assert ip_literal(form) == metadata, form
    assert ip_literal("meet.google.com") is None
    assert ip_literal("deadbeef.example") is None


def test_the_allow_list_lets_named_hosts_and_networks_through() -> None:
    rules = policy(("localhost", "*.corp.internal", "10.0.0.0/8"))
    allowed = ["http://localhost:3000/", "https://meet.corp.internal/", "http://10.9.8.7/"]
    for url in [*allowed, "https://corp.internal/"]:
        assert check_meeting_url(url, rules) == url
    for url in ("http://192.168.1.1/", "http://api.localhost/", "http://corp.internal.local/"):
        with pytest.raises(ValueError, match="SCHEDULER_ALLOWED_MEETING_HOSTS"):
            check_meeting_url(url, rules)


def test_platforms_only_refuses_other_hosts() -> None:
    rules = policy(("meet.corp.example",), platforms_only=True)
    assert check_meeting_url("https://meet.google.com/x", rules)
    assert check_meeting_url("https://meet.corp.example/x", rules)
    with pytest.raises(ValueError, match="not a meeting platform"):
        check_meeting_url("https://meet.example.com/x", rules)


@pytest.mark.parametrize("raw", ["meet..example", "a b,", "*."])
def test_a_bad_allow_list_entry_stops_startup(raw: str) -> None:
    with pytest.raises(ConfigError, match="SCHEDULER_ALLOWED_MEETING_HOSTS"):
        Settings.from_env({"SCHEDULER_ALLOWED_MEETING_HOSTS": raw})


@pytest.mark.parametrize("url", INTERNAL[:4] + INTERNAL[-4:])
async def test_both_submit_routes_refuse_internal_urls(api: Api, url: str) -> None:
    jobs = await api.client.post(JOBS, json={"meetingUrl": url})
    assert assert_error(jobs, 400, "validation_error").startswith("meetingUrl: ")
    meeting = await api.client.post(MEETINGS, json={"meeting_url": url})
    assert_error(meeting, 400, "validation_error")
    batch = await api.client.post(f"{JOBS}/batch", json={"jobs": [{"meetingUrl": url}]})
    assert_error(batch, 400, "validation_error")
    assert sum((await api.store.counts()).values()) == 0


async def test_the_allow_list_setting_reaches_the_api(make_api: MakeApi) -> None:
    api = await make_api({"SCHEDULER_ALLOWED_MEETING_HOSTS": "localhost, 10.0.0.0/8"})
    assert (await api.submit(meetingUrl="http://localhost:3000/room"))["id"]
    assert (await api.submit(meetingUrl="http://10.0.0.5/room"))["id"]
    refused = await api.client.post(JOBS, json={"meetingUrl": "http://169.254.169.254/"})
    assert_error(refused, 400, "validation_error")


async def test_platforms_only_setting_reaches_the_api(make_api: MakeApi) -> None:
    api = await make_api({"SCHEDULER_MEETING_PLATFORMS_ONLY": "true"})
    assert (await api.submit(meetingUrl="https://teams.live.com/meet/1"))["id"]
    other = await api.client.post(JOBS, json={"meetingUrl": "https://meet.example.com/x"})
    assert "not a meeting platform" in assert_error(other, 400, "validation_error")
