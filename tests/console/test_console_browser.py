"""The console in a real browser: Debian's headless Chromium (the docs page test's), driven by
selenium, against a real `botsched serve` (SQLite, the process backend, the demo bot) with two
tenants' keys and an admin key, every host but loopback unresolvable (no CDN could serve it).

One story, in order: four jobs queue behind a long-running one (cap 1); the queue shows them in
dispatch order to the admin key, and to each tenant only its own; the running bot's page follows
its logs, and its Cancel button cancels it; the queued jobs then run, and the finished view
filters them by state; a failed one is retried as a new job, a scheduled one rescheduled. Each
view's screenshot is written to docs/console/ (the README shows them). And with authentication
off, the console asks for no key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.api.live import live_api
from tests.api.test_docs_browser import find
from tests.console.server import ADMIN_KEY, FINAL, JOBS, KEY_A, KEY_B, Server
from tests.processes import ROOT

pytestmark = pytest.mark.e2e

WAIT = 20.0
SHOTS = ROOT / "docs" / "console"
ROW_IDS = "return [...document.querySelectorAll('table.jobs tbody tr')].map(r => r.dataset.jobId)"
MEETING = "https://meet.example.com/console-"
MARKUP = '<img src=x onerror="window.pwned = 1">sales'  # a botName: shown as text
CELLS = "return [...document.querySelectorAll('table.jobs tbody tr td')].map(c => c.textContent)"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("console")).start()
    try:
        yield server
    finally:
        server.close()


Check = Callable[[WebDriver], object]


def wait_for(browser: WebDriver, what: str, check: Check) -> None:
    """Until `check(browser)` is truthy; the failure names `what` and the page's status line."""
    try:
        WebDriverWait(browser, WAIT).until(check)
    except Exception as exc:
        raise AssertionError(f"{what}; the console says: {status(browser)!r}") from exc


def sign_in(browser: WebDriver, url: str, key: str) -> None:
    """A fresh tab state: no key kept; the console asks for one, and opens with it."""
    browser.get(url + "/console#/queue")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    find(browser, "#key-input").send_keys(key)
    find(browser, "#key-submit").click()
    find(browser, "#nav")


def go(browser: WebDriver, hash_route: str) -> None:
    browser.execute_script("location.hash = arguments[0]", hash_route)


def rows(browser: WebDriver) -> list[str]:
    ids: list[str] = browser.execute_script(ROW_IDS)
    return ids


def shows_rows(expected: list[str]) -> Check:
    return lambda browser: rows(browser) == expected


def screenshot(browser: WebDriver, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.get_screenshot_as_file(str(SHOTS / f"{name}.png"))


def text_of(browser: WebDriver, css: str) -> str:
    text: str = browser.execute_script(
        "const node = document.querySelector(arguments[0]); return node ? node.textContent : ''",
        css,
    )
    return text


def status(browser: WebDriver) -> str:
    return text_of(browser, "#status")


def shown_state(browser: WebDriver) -> str:
    """The state of the job whose page is shown."""
    state: str = browser.execute_script("return document.getElementById('view').dataset.state")
    return state


def submit_the_queue(server: Server) -> tuple[str, dict[str, str]]:
    """A long run that holds the only slot, then four jobs behind it; (its id, theirs)."""
    running = server.submit(KEY_A, meetingUrl=MEETING + "long", botName="long recording")
    server.wait_until(running, ("running",))
    failing = {"config": {"demo_exit_code": 3}}
    queued = {
        "a10": server.submit(KEY_A, meetingUrl=MEETING + "a10", priority=10, **failing),
        "a50": server.submit(KEY_A, meetingUrl=MEETING + "a50", botName="review", priority=50),
        "a90": server.submit(KEY_A, meetingUrl=MEETING + "a90", botName="board", priority=90),
        "b30": server.submit(KEY_B, meetingUrl=MEETING + "b30", botName=MARKUP, priority=30),
    }
    return running, queued


def check_the_admin_view(browser: WebDriver, url: str, running: str, everyone: list[str]) -> None:
    """Every tenant's queue, in dispatch order, each job with its tenant; the running bot."""
    sign_in(browser, url, ADMIN_KEY)
    wait_for(browser, f"the queue reads {everyone}", shows_rows(everyone))
    assert {"acme", "globex", MARKUP} <= set(browser.execute_script(CELLS))
    assert browser.execute_script("return [document.querySelector('#view img'), window.pwned]") == [
        None,
        None,
    ]
    wait_for(browser, "the caps", lambda b: "1 / 1" in text_of(b, "#caps"))
    wait_for(browser, "the chart", lambda b: "started (1)" in text_of(b, "#chart-caption"))
    screenshot(browser, "queue")
    go(browser, "#/running")
    wait_for(browser, "the running job", shows_rows([running]))
    wait_for(browser, "its bot's status", lambda b: "in_call" in text_of(b, "table.jobs"))
    cells = browser.execute_script(CELLS)
    assert {"acme", "running", "process", running} <= set(cells), cells
    assert "admin" in text_of(browser, "#who")
    assert not browser.execute_script("return document.querySelectorAll('button.cancel').length")
    screenshot(browser, "running")


def check_each_tenant_sees_its_own(
    browser: WebDriver, url: str, queued: dict[str, str], acme: list[str]
) -> None:
    sign_in(browser, url, KEY_B)
    wait_for(browser, "globex sees its one job", shows_rows([queued["b30"]]))
    sign_in(browser, url, KEY_A)
    wait_for(browser, "acme sees its three jobs", shows_rows(acme))
    go(browser, f"#/job/{queued['b30']}")  # another tenant's job, by its address
    wait_for(browser, "another tenant's job is not found", lambda b: "not found" in status(b))


def follow_and_cancel(browser: WebDriver, server: Server, running: str) -> None:
    """The running job's page shows what its bot prints; one click cancels it."""
    go(browser, f"#/job/{running}")
    wait_for(browser, "the logs", lambda b: f"JOB_ID: {running}" in text_of(b, "#logs"))
    wait_for(browser, "more logs", lambda b: "in_call_recording" in text_of(b, "#logs"))
    wait_for(browser, "the timeline", lambda b: "job.running" in text_of(b, "#timeline"))
    screenshot(browser, "job")
    find(browser, "#actions button[data-action=cancel]").click()
    wait_for(browser, "the job ends cancelled", lambda b: shown_state(b) == "cancelled")
    assert server.job(running, KEY_A)["status"] == "cancelled"
    assert "job.cancelled" in text_of(browser, "#timeline")


def filter_and_retry(browser: WebDriver, server: Server, finished: set[str], failed: str) -> None:
    go(browser, "#/finished?since=1h")
    wait_for(browser, "acme's finished jobs", lambda b: set(rows(b)) == finished)
    wait_for(browser, "the chart", lambda b: "finished (4)" in text_of(b, "#chart-caption"))
    screenshot(browser, "finished")
    find(browser, "#filter-state option[value=failed]").click()
    wait_for(browser, "only the failed job", shows_rows([failed]))
    assert "exit code 3" in browser.execute_script(CELLS)
    find(browser, "tr[data-job-id] button[data-action=retry]").click()
    wait_for(browser, "the retry's page", lambda b: "#/job/" in b.current_url)
    retry = browser.current_url.rsplit("/", 1)[1]
    assert retry != failed
    job = server.job(retry, KEY_A)
    assert (job["meetingUrl"], job["priority"], job["config"]) == (
        MEETING + "a10",
        10,
        {"demo_exit_code": 3},
    )


def reschedule(browser: WebDriver, server: Server) -> None:
    """A scheduled job's joinAt, moved from its page."""
    later = (datetime.now(UTC) + timedelta(hours=3)).isoformat()
    job_id = server.submit(KEY_A, meetingUrl=MEETING + "later", joinAt=later)
    go(browser, f"#/job/{job_id}")
    local = find(browser, "#join-at")
    expected: str = browser.execute_script(
        "const t = new Date(Date.now() + 4 * 3600e3); t.setSeconds(0, 0);"
        "const p = (n) => String(n).padStart(2, '0');"
        "arguments[0].value = `${t.getFullYear()}-${p(t.getMonth() + 1)}-${p(t.getDate())}`"
        " + `T${p(t.getHours())}:${p(t.getMinutes())}`;"
        "return t.toISOString();",
        local,
    )
    find(browser, "#reschedule button[type=submit]").click()
    wait_for(browser, "rescheduled", lambda b: "rescheduled" in status(b))
    moved = datetime.fromisoformat(server.job(job_id, KEY_A)["joinAt"])
    assert moved == datetime.fromisoformat(expected)


def test_the_console_in_a_browser(server: Server, browser: WebDriver) -> None:
    browser.set_window_size(1280, 900)
    running, queued = submit_the_queue(server)
    everyone = [queued[name] for name in ("a90", "a50", "b30", "a10")]  # dispatch order
    acme = [queued[name] for name in ("a90", "a50", "a10")]
    check_the_admin_view(browser, server.url, running, everyone)
    check_each_tenant_sees_its_own(browser, server.url, queued, acme)
    follow_and_cancel(browser, server, running)
    for job_id in everyone:  # the queue drains in dispatch order
        server.wait_until(job_id, FINAL)
    assert sorted(everyone, key=lambda job_id: server.job(job_id)["startedAt"]) == everyone
    filter_and_retry(browser, server, {running, *acme}, queued["a10"])
    reschedule(browser, server)
    assert [job["id"] for job in server.jobs(KEY_B)] == [queued["b30"]]
    for name in ("queue", "running", "finished", "job"):
        assert (SHOTS / f"{name}.png").stat().st_size > 10_000, name


def test_without_auth_it_asks_for_no_key(browser: WebDriver) -> None:
    with live_api({}) as live:  # no SCHEDULER_API_KEYS, on loopback: auth is off
        response = httpx.post(live.url + JOBS, json={"meetingUrl": MEETING + "open"}, timeout=10)
        assert response.status_code == 201, response.text
        browser.get(live.url + "/console#/running")
        browser.execute_script("sessionStorage.clear()")
        browser.refresh()
        wait_for(browser, "the running job", shows_rows([response.json()["job"]["id"]]))
        assert "no key needed" in text_of(browser, "#who")
        assert browser.execute_script("return document.getElementById('login').hidden")
