"""One bot per meeting and overbooked windows, as the API answers them (the app over the memory
store and tests/fakes.py's FakeBackend; every store's atomicity: tests/scheduling/)."""

from __future__ import annotations

from datetime import datetime

from tests.api.conftest import JOBS, MakeApi, later

ZOOM = "https://us02web.zoom.us/j/81234567890?pwd=abc123"
SAME_ZOOM = "https://zoom.us/j/812-3456-7890"


async def test_a_second_submit_for_the_same_meeting_returns_the_first(make_api: MakeApi) -> None:
    api = await make_api()
    first = await api.submit(meetingUrl=ZOOM)
    assert first["meetingKey"] == "zoom:81234567890"
    again = await api.client.post(JOBS, json={"meetingUrl": SAME_ZOOM})
    assert again.status_code == 200, again.text
    body = again.json()
    assert body["duplicate"] is True and body["duplicateReason"] == "meeting"
    assert body["job"]["id"] == first["id"]
    second = await api.client.post(JOBS, json={"meetingUrl": SAME_ZOOM, "allowSecondBot": True})
    assert second.status_code == 201 and second.json()["job"]["id"] != first["id"]
    keyed = {"meetingUrl": "https://meet.google.com/xyz-abcd-efg", "dedupKey": "standup"}
    await api.client.post(JOBS, json=keyed)
    dup = (await api.client.post(JOBS, json=keyed)).json()
    assert dup["duplicateReason"] == "dedupKey"


async def test_an_overbooked_window_is_queued_with_a_warning(make_api: MakeApi) -> None:
    api = await make_api({"SCHEDULER_MAX_CONCURRENT_JOBS": "1"})
    join = later(hours=2)
    first = await api.client.post(JOBS, json={"meetingUrl": ZOOM, "joinAt": join})
    assert first.status_code == 201 and "warnings" not in first.json()
    other = {"meetingUrl": "https://meet.google.com/abc-defg-hij", "joinAt": join}
    second = await api.client.post(JOBS, json=other)
    assert second.status_code == 201, second.text
    assert any("SCHEDULER_OVERBOOKING=queue" in w for w in second.json()["warnings"])


async def test_an_overbooked_window_is_refused_when_the_policy_says_so(make_api: MakeApi) -> None:
    api = await make_api({"SCHEDULER_MAX_CONCURRENT_JOBS": "1", "SCHEDULER_OVERBOOKING": "reject"})
    join = later(hours=2)
    assert (
        await api.client.post(JOBS, json={"meetingUrl": ZOOM, "joinAt": join})
    ).status_code == 201
    other = {"meetingUrl": "https://meet.google.com/abc-defg-hij", "joinAt": join}
    refused = await api.client.post(JOBS, json=other)
    assert refused.status_code == 409, refused.text
    body = refused.json()
    earliest = datetime.fromisoformat(body["earliestStart"].replace("Z", "+00:00"))
    assert body["error"] == "overbooked"
    assert earliest > datetime.fromisoformat(join.replace("Z", "+00:00"))
