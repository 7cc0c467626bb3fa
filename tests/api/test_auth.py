"""API keys: who may call what, which tenant a key is, and that keys never leak."""

from __future__ import annotations

import pytest

from core.api import create_app
from core.config import Settings
from core.errors import ConfigError
from core.ratelimit import TokenBuckets
from core.routes import Routes
from tests.api.conftest import (
    API_KEYS,
    JOBS,
    KEY_A,
    KEY_B,
    URL,
    Api,
    MakeApi,
    assert_error,
    later,
)

A = {"X-API-Key": KEY_A}
B = {"X-API-Key": KEY_B}


def api_routes() -> list[tuple[str, str]]:
    """(method, path) of every route that needs a key, read from the app's own table."""
    pairs = []
    for route in Routes(Settings(), None).table():  # type: ignore[arg-type]
        if route.path.startswith("/api") or route.path == "/metrics":
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    pairs.append((method, route.path.replace("{jobId}", "some-job-id")))
    return pairs


ROUTES = api_routes()


def test_the_route_list_covers_the_api() -> None:
    one = f"{JOBS}/some-job-id"
    expected = {
        ("GET", "/metrics"),
        ("POST", JOBS),
        ("GET", JOBS),
        ("POST", f"{JOBS}/batch"),
        ("GET", one),
        ("DELETE", one),
        ("GET", f"{one}/logs"),
        ("GET", "/api/scheduler/stats"),
        ("POST", "/api/scheduler/meetings"),
    }
    assert expected <= set(ROUTES)


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_no_key_is_401_everywhere(auth_api: Api, method: str, path: str) -> None:
    body = {"meetingUrl": URL} if method == "POST" else None
    response = await auth_api.client.request(method, path, json=body)
    assert "API key" in assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": "wrong-key-123"},
        {"Authorization": "Bearer wrong-key-123"},
        {"Authorization": f"Basic {KEY_A}"},
        {"Authorization": "Bearer "},
        {"X-API-Key": KEY_A[:-1]},
    ],
    ids=["wrong-x-api-key", "wrong-bearer", "basic-scheme", "empty-bearer", "prefix"],
)
async def test_wrong_key_is_401(
    auth_api: Api, method: str, path: str, headers: dict[str, str]
) -> None:
    response = await auth_api.client.request(method, path, headers=headers)
    assert_error(response, 401, "unauthorized")


async def test_nothing_is_created_without_a_key(auth_api: Api) -> None:
    await auth_api.client.post(JOBS, json={"meetingUrl": URL})
    await auth_api.client.post(f"{JOBS}/batch", json={"jobs": [{"meetingUrl": URL}]})
    await auth_api.client.post("/api/scheduler/meetings", json={"meeting_url": URL})
    assert sum((await auth_api.store.counts()).values()) == 0


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": KEY_A},
        {"x-api-key": KEY_A},
        {"Authorization": f"Bearer {KEY_A}"},
        {"Authorization": f"bearer {KEY_A}"},
    ],
    ids=["x-api-key", "lowercase-header", "bearer", "lowercase-bearer"],
)
async def test_both_key_headers_work(auth_api: Api, headers: dict[str, str]) -> None:
    job = await auth_api.submit(headers=headers)
    assert (await auth_api.stored(job["id"])).tenant == "tenantA"
    assert (await auth_api.job(job["id"], headers=headers))["id"] == job["id"]


@pytest.mark.parametrize("path", ["/", "/health"])
async def test_info_and_health_need_no_key(auth_api: Api, path: str) -> None:
    assert (await auth_api.client.get(path)).status_code == 200


async def test_metrics_with_a_key(auth_api: Api) -> None:
    response = await auth_api.client.get("/metrics", headers=B)
    assert response.status_code == 200
    assert "botsched_jobs" in response.text


async def test_tenants_are_isolated(auth_api: Api) -> None:
    client = auth_api.client
    job = await auth_api.submit(headers=A, botName="A's bot")
    path = f"{JOBS}/{job['id']}"
    for method, suffix in [("GET", ""), ("GET", "/logs"), ("DELETE", "")]:
        response = await client.request(method, path + suffix, headers=B)
        assert_error(response, 404, "not_found")
    assert (await auth_api.job(job["id"], headers=A))["status"] == "running"
    assert (await client.get(f"{path}/logs", headers=A)).status_code == 200

    listed_b = (await client.get(JOBS, headers=B)).json()["jobs"]
    assert listed_b == []
    listed_a = (await client.get(JOBS, headers=A)).json()["jobs"]
    assert [item["id"] for item in listed_a] == [job["id"]]

    stats_b = (await client.get("/api/scheduler/stats", headers=B)).json()
    assert (stats_b["queueSize"], stats_b["runningJobs"], stats_b["totalJobs"]) == (0, 0, 0)
    stats_a = (await client.get("/api/scheduler/stats", headers=A)).json()
    assert (stats_a["runningJobs"], stats_a["totalJobs"]) == (1, 1)

    mine = await auth_api.submit(headers=B)
    assert (await client.delete(f"{JOBS}/{mine['id']}", headers=B)).status_code == 200
    assert (await auth_api.job(job["id"], headers=A))["status"] == "running"


async def test_dedup_keys_are_per_tenant(auth_api: Api) -> None:
    spec = {"meetingUrl": URL, "dedupKey": "standup"}
    a = await auth_api.client.post(JOBS, json=spec, headers=A)
    b = await auth_api.client.post(JOBS, json=spec, headers=B)
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["job"]["id"] != b.json()["job"]["id"]


async def test_raw_keys_never_leak(auth_api: Api) -> None:
    for headers in (A, B, {"Authorization": f"Bearer {KEY_A}"}, {}):
        job = (await auth_api.client.post(JOBS, json={"meetingUrl": URL}, headers=headers)).json()
        job_id = job.get("job", {}).get("id", "x")
        for method, path in ROUTES:
            path = path.replace("some-job-id", job_id)
            await auth_api.client.request(method, path, headers=headers)
        for path in ("/", "/health", "/openapi.json", "/docs"):
            await auth_api.client.get(path, headers=headers)
    assert len(auth_api.responses) > 40
    for response in auth_api.responses:
        for key in (KEY_A, KEY_B):
            assert key not in response.text
            assert all(key not in value for value in response.headers.values())
    settings = auth_api.settings
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert KEY_A not in text and KEY_B not in text


def test_keys_parse_to_tenants() -> None:
    settings = Settings.from_env({"SCHEDULER_API_KEYS": API_KEYS})
    assert settings.auth_enabled
    assert settings.tenant_for(KEY_A) == "tenantA"
    assert settings.tenant_for(KEY_B) == "tenantB"
    assert settings.tenant_for("key0000000") is None


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "scheduler.example.com"])
def test_refuses_to_serve_exposed_without_keys(host: str) -> None:
    with pytest.raises(ConfigError, match="SCHEDULER_API_KEYS"):
        create_app(Settings.from_env({"HOST": host}))
    with pytest.raises(ConfigError):
        create_app(Settings(), exposed=True)


def test_exposed_without_keys_only_with_auth_explicitly_disabled() -> None:
    settings = Settings.from_env({"HOST": "0.0.0.0", "SCHEDULER_AUTH_DISABLED": "true"})
    assert not settings.auth_enabled
    assert create_app(settings) is not None
    assert create_app(settings, exposed=True) is not None


def test_exposed_with_keys_is_fine() -> None:
    settings = Settings.from_env({"HOST": "0.0.0.0", "SCHEDULER_API_KEYS": API_KEYS})
    assert create_app(settings) is not None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
async def test_loopback_without_keys_serves_without_auth(make_api: MakeApi, host: str) -> None:
    api = await make_api({"HOST": host})
    job = await api.submit()
    assert (await api.stored(job["id"])).tenant == "default"
    assert (await api.client.get("/api/scheduler/stats")).status_code == 200


async def test_auth_disabled_ignores_keys(make_api: MakeApi) -> None:
    api = await make_api({"SCHEDULER_API_KEYS": API_KEYS, "SCHEDULER_AUTH_DISABLED": "true"})
    job = await api.submit()
    assert (await api.stored(job["id"])).tenant == "default"


# -- /metrics scope ------------------------------------------------------------------------

ADMIN_KEY = "admin-key-0123"


def gauge(text: str, state: str) -> int:
    line = next(
        line for line in text.splitlines() if line.startswith(f'botsched_jobs{{state="{state}"}}')
    )
    return int(line.rsplit(" ", 1)[1])


@pytest.fixture
async def admin_api(make_api: MakeApi) -> Api:
    api = await make_api({"SCHEDULER_API_KEYS": API_KEYS, "SCHEDULER_ADMIN_KEYS": ADMIN_KEY})
    for _ in range(2):
        await api.submit(headers=A, joinAt=later(hours=1))
    await api.submit(headers=B, joinAt=later(hours=1))
    return api


async def test_a_tenant_key_sees_only_its_own_jobs_in_metrics(admin_api: Api) -> None:
    text_a = (await admin_api.client.get("/metrics", headers=A)).text
    text_b = (await admin_api.client.get("/metrics", headers=B)).text
    assert (gauge(text_a, "queued"), gauge(text_b, "queued")) == (2, 1)
    for text in (text_a, text_b):
        assert "botsched_events_total" not in text  # process-wide: every tenant's submits
        assert "botsched_max_concurrent_jobs" in text


async def test_an_admin_key_sees_every_tenant_in_metrics(admin_api: Api) -> None:
    response = await admin_api.client.get("/metrics", headers={"X-API-Key": ADMIN_KEY})
    assert response.status_code == 200
    assert gauge(response.text, "queued") == 3
    assert 'botsched_events_total{event="submitted"} 3' in response.text


async def test_an_admin_key_reads_every_tenant_and_changes_nothing(admin_api: Api) -> None:
    admin = {"X-API-Key": ADMIN_KEY}
    jobs = (await admin_api.client.get(JOBS, headers=admin)).json()["jobs"]
    assert sorted(job["tenant"] for job in jobs) == ["tenantA", "tenantA", "tenantB"]
    response = await admin_api.client.delete(f"{JOBS}/{jobs[0]['id']}", headers=admin)
    assert_error(response, 401, "unauthorized")
    response = await admin_api.client.post(JOBS, json={"meetingUrl": URL}, headers=admin)
    assert_error(response, 401, "unauthorized")


def test_admin_keys_need_8_characters_and_are_kept_hashed() -> None:
    with pytest.raises(ConfigError, match="SCHEDULER_ADMIN_KEYS"):
        Settings.from_env({"SCHEDULER_ADMIN_KEYS": "short"})
    settings = Settings.from_env({"SCHEDULER_ADMIN_KEYS": ADMIN_KEY})
    assert settings.is_admin(ADMIN_KEY) and not settings.is_admin(KEY_A)
    assert ADMIN_KEY not in repr(settings) and ADMIN_KEY not in settings.model_dump_json()


# -- rate limits ---------------------------------------------------------------------------

LIMITED = {"SCHEDULER_API_KEYS": API_KEYS, "SCHEDULER_RATE_LIMIT_PER_SECOND": "0.5"}


async def test_a_key_past_its_burst_gets_429_with_retry_after(make_api: MakeApi) -> None:
    api = await make_api({**LIMITED, "SCHEDULER_RATE_LIMIT_BURST": "3"})
    statuses = [(await api.client.get(JOBS, headers=A)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = await api.client.get(JOBS, headers=A)
    assert "at most 0.5 a second" in assert_error(limited, 429, "rate_limited")
    assert limited.headers["retry-after"] == "2"
    assert limited.json()["retryAfter"] == 2
    assert (await api.client.get(JOBS, headers=B)).status_code == 200  # B has its own bucket
    assert (await api.client.get("/health", headers=A)).status_code == 200  # not limited


async def test_requests_without_a_valid_key_share_their_address_bucket(make_api: MakeApi) -> None:
    api = await make_api({**LIMITED, "SCHEDULER_RATE_LIMIT_BURST": "2"})
    guesses = [f"guess-{n:06d}" for n in range(3)]
    statuses = [
        (await api.client.get(JOBS, headers={"X-API-Key": key})).status_code for key in guesses
    ]
    assert statuses == [401, 401, 429]
    assert (await api.client.get(JOBS, headers=A)).status_code == 200


def test_token_buckets_refill_at_the_rate() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst=2, clock=lambda: now[0])
    assert [buckets.take("k") for _ in range(2)] == [0.0, 0.0]
    assert buckets.take("k") == pytest.approx(0.5)
    now[0] = 0.5
    assert buckets.take("k") == 0.0
    assert buckets.take("other") == 0.0


@pytest.mark.parametrize(
    ("env", "exposed", "rate"),
    [
        ({}, False, 0.0),
        ({}, True, 20.0),
        ({"SCHEDULER_RATE_LIMIT_PER_SECOND": "0"}, True, 0.0),
        ({"SCHEDULER_RATE_LIMIT_PER_SECOND": "5"}, False, 5.0),
    ],
)
def test_rate_limit_defaults(env: dict[str, str], exposed: bool, rate: float) -> None:
    assert Settings.from_env(env).rate_limit(exposed) == rate


async def test_loopback_has_no_rate_limit_by_default(api: Api) -> None:
    for _ in range(150):
        response = await api.client.get("/api/scheduler/stats")
    assert response.status_code == 200
