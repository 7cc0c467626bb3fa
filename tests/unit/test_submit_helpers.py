"""Helpers of the submit path: a JSON answer's members, remembered URL checks, record versions."""

from __future__ import annotations

import json

import pytest

from core.http import JSONText, json_response
from core.meeting_keys import meeting_key
from core.meeting_urls import check_meeting_url, policy
from core.stores.sql_records import VERSION_BITS, new_versions


def test_json_answers_write_literals_as_the_encoder_does() -> None:
    content = {"a": True, "b": False, "c": None, "d": 1, "e": "x", "f": [1], "g": JSONText("{}")}
    response = json_response(content)
    assert response.body == b'{"a":true,"b":false,"c":null,"d":1,"e":"x","f":[1],"g":{}}'
    assert json.loads(response.body) == {**content, "g": {}}


def test_a_remembered_url_check_still_refuses_each_time_and_follows_the_policy() -> None:
    url = "http://localhost:8080/meeting"
    for _ in range(2):  # a refusal is not remembered: raised again
        with pytest.raises(ValueError, match="local or internal host"):
            check_meeting_url(url, policy())
    assert check_meeting_url(url, policy(("localhost",))) == url
    with pytest.raises(ValueError):
        check_meeting_url(url, policy())


def test_a_remembered_meeting_key_is_the_same_key() -> None:
    url = "https://meet.google.com/abc-defg-hij?authuser=1"
    assert meeting_key(url) == meeting_key(url) == "meet:abc-defg-hij"


def test_versions_made_together_are_as_new_version_makes_them() -> None:
    versions = new_versions(5000)
    assert len(versions) == 5000
    assert all(1 <= version <= 2**VERSION_BITS for version in versions)
    assert len(set(versions)) == len(versions)
    assert max(versions) > 2 ** (VERSION_BITS - 2)  # the high bits are random too
    assert new_versions(0) == []
