"""The console as the app serves it (in process): the page and its hashed files, their cache
headers and Content-Security-Policy; the scripts never write job data as HTML; and the reads an
admin key is given for it (every tenant's jobs), which a tenant key is not."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.console import pages
from core.console.pages import CSP, FILES, STATIC
from tests.api.conftest import API_KEYS, JOBS, KEY_A, KEY_B, Api, MakeApi, assert_error, later

ADMIN_KEY = "console-admin-0123"
ADMIN = {"X-API-Key": ADMIN_KEY}
A = {"X-API-Key": KEY_A}
B = {"X-API-Key": KEY_B}
ASSET = re.compile(r'"console/assets/([^"]+)"')


@pytest.fixture
async def console(make_api: MakeApi) -> Api:
    """Two tenants and an admin key; two jobs of tenantA's, one of tenantB's, all queued."""
    api = await make_api({"SCHEDULER_API_KEYS": API_KEYS, "SCHEDULER_ADMIN_KEYS": ADMIN_KEY})
    for headers in (A, A, B):
        await api.submit(headers=headers, joinAt=later(hours=1))
    return api


async def test_the_page_names_its_files_by_their_hash(console: Api) -> None:
    page = await console.client.get("/console")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    names = ASSET.findall(page.text)
    assert len(names) == len(FILES)
    for name in names:
        stem, digest, suffix = name.split(".")
        assert f"{stem}.{suffix}" in FILES and re.fullmatch(r"[0-9a-f]{12}", digest)
        asset = await console.client.get(f"/console/assets/{name}")
        assert asset.status_code == 200
        assert asset.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert asset.content == (STATIC / f"{stem}.{suffix}").read_bytes()
        assert asset.headers["content-security-policy"] == CSP


async def test_a_browser_holding_a_version_gets_304(console: Api) -> None:
    page = await console.client.get("/console")
    again = await console.client.get("/console", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    name = ASSET.findall(page.text)[0]
    asset = await console.client.get(f"/console/assets/{name}")
    held = {"If-None-Match": asset.headers["etag"]}
    assert (await console.client.get(f"/console/assets/{name}", headers=held)).status_code == 304


async def test_an_unknown_file_is_a_404(console: Api) -> None:
    assert_error(await console.client.get("/console/assets/api.js"), 404, "not_found")
    assert_error(await console.client.get("/console/assets/..%2Fpages.py"), 404)


@pytest.fixture
def no_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A build without the console's files (neither static/ nor the bundled module)."""
    cached = (pages.contents, pages.hashed_names, pages.files, pages.page)
    monkeypatch.setattr(pages, "STATIC", tmp_path)
    for function in cached:
        function.cache_clear()
    yield
    for function in cached:
        function.cache_clear()


async def test_a_build_without_the_files_says_so(console: Api, no_files: None) -> None:
    page = await console.client.get("/console")
    assert page.status_code == 200 and "not part of this build" in page.text
    assert page.headers["content-security-policy"] == CSP


async def test_the_policy_forbids_inline_script_and_other_origins(console: Api) -> None:
    page = await console.client.get("/console")
    policy = dict(
        part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    for directive in ("script-src", "style-src", "connect-src"):
        assert policy[directive] == "'self'", directive
    assert "unsafe" not in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    # nothing inline for the policy to refuse: every script has a src, no style element or attribute
    assert re.findall(r"<script(?![^>]*\bsrc=)", page.text) == []
    assert "<style" not in page.text and " style=" not in page.text
    assert not re.search(r"\son[a-z]+=", page.text)


@pytest.mark.parametrize("name", [name for name in FILES if name.endswith(".js")])
def test_the_scripts_write_job_data_as_text_only(name: str) -> None:
    source = (STATIC / name).read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in source, sink
    assert "http://" not in source.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in source


async def test_the_info_route_links_the_console(console: Api) -> None:
    info = (await console.client.get("/")).json()
    assert info["console"] == "/console"
    assert info["endpoints"]["console"] == "GET /console"


async def test_an_admin_key_reads_every_tenants_jobs(console: Api) -> None:
    jobs = (await console.client.get(JOBS, headers=ADMIN)).json()["jobs"]
    assert sorted(job["tenant"] for job in jobs) == ["tenantA", "tenantA", "tenantB"]
    only_b = (await console.client.get(JOBS, params={"tenant": "tenantB"}, headers=ADMIN)).json()
    assert [job["tenant"] for job in only_b["jobs"]] == ["tenantB"]
    theirs = only_b["jobs"][0]["id"]
    job = (await console.client.get(f"{JOBS}/{theirs}", headers=ADMIN)).json()["job"]
    assert (job["tenant"], job["queuePosition"]) == ("tenantB", 0)
    events = (await console.client.get(f"{JOBS}/{theirs}/events", headers=ADMIN)).json()
    assert [event["type"] for event in events["events"]] == ["job.queued"]
    stats = (await console.client.get("/api/scheduler/stats", headers=ADMIN)).json()
    assert stats["queueSize"] == 3


async def test_an_admin_key_changes_nothing(console: Api) -> None:
    job = (await console.client.get(JOBS, headers=B)).json()["jobs"][0]
    path = f"{JOBS}/{job['id']}"
    assert_error(await console.client.delete(path, headers=ADMIN), 401, "unauthorized")
    assert_error(
        await console.client.patch(path, json={"priority": 9}, headers=ADMIN), 401, "unauthorized"
    )
    assert (await console.client.get(path, headers=B)).json()["job"]["status"] == "queued"


async def test_a_tenant_key_reads_its_own_jobs_only(console: Api) -> None:
    jobs = (await console.client.get(JOBS, headers=A)).json()["jobs"]
    assert len(jobs) == 2 and all("tenant" not in job for job in jobs)
    mine = await console.client.get(JOBS, params={"tenant": "tenantA"}, headers=A)
    assert len(mine.json()["jobs"]) == 2
    message = assert_error(
        await console.client.get(JOBS, params={"tenant": "tenantB"}, headers=A), 400
    )
    assert message.startswith("tenant:")
    stats = (await console.client.get("/api/scheduler/stats", headers=A)).json()
    assert stats["queueSize"] == 2


async def test_without_auth_the_console_and_its_reads_need_no_key(make_api: MakeApi) -> None:
    api = await make_api()
    await api.submit()
    assert (await api.client.get("/console")).status_code == 200
    jobs = (await api.client.get(JOBS)).json()["jobs"]
    assert len(jobs) == 1 and "tenant" not in jobs[0]
