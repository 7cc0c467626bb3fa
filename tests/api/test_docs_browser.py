"""The docs page in a real browser: Debian's headless Chromium, driven by selenium, against the app
served by uvicorn on loopback, with every host but loopback unresolvable (no CDN could serve it).

`make test` installs chromium and chromium-driver (scripts/browser-test-env.sh); without them the
test is skipped, except in CI, where it fails.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest

from core.openapi import openapi_document
from tests.api.conftest import KEY_A
from tests.api.live import LiveApi, live_api
from tests.ci import unavailable

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support import expected_conditions as ready  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,2000",
    # nothing but loopback resolves: a page that needed a CDN would not render
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
WAIT = 20.0
BOT_NAME = "Browser Bot"


def find(root: WebDriver | WebElement, css: str) -> WebElement:
    """The element under `root`, once it is there and visible."""
    driver = root.parent if isinstance(root, WebElement) else root
    located = (By.CSS_SELECTOR, css)
    if isinstance(root, WebElement):
        return WebDriverWait(driver, WAIT).until(lambda _: root.find_element(*located))
    return WebDriverWait(driver, WAIT).until(ready.visibility_of_element_located(located))


@pytest.fixture(scope="module")
def live() -> Iterator[LiveApi]:
    with live_api({"SCHEDULER_API_KEYS": f"{KEY_A}:tenantA"}) as api:
        yield api


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        unavailable(
            "chromium and chromium-driver are needed: bash scripts/browser-test-env.sh install"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


def rendered_operations(browser: WebDriver, url: str) -> set[tuple[str, str]]:
    browser.get(url)
    find(browser, ".opblock")
    operations = set()
    for block in browser.find_elements(By.CSS_SELECTOR, ".opblock"):
        method = block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text
        path = block.find_element(By.CSS_SELECTOR, ".opblock-summary-path").text
        operations.add((method.lower(), path.replace("\u200b", "")))
    return operations


@pytest.mark.parametrize("page", ["/docs", "/ui"])
def test_every_operation_renders(live: LiveApi, browser: WebDriver, page: str) -> None:
    doc = openapi_document()  # the routes, and the request each webhook delivery makes
    operations = {**doc["paths"], **doc["webhooks"]}
    documented = {(method, path) for path, item in operations.items() for method in item}
    assert rendered_operations(browser, live.url + page) == documented
    assert "Bot Scheduler API" in find(browser, ".info .title").text


def authorize(browser: WebDriver, key: str) -> None:
    find(browser, ".auth-wrapper .authorize").click()
    dialog = find(browser, ".modal-ux")
    for section in dialog.find_elements(By.CSS_SELECTOR, ".auth-container"):
        if "X-API-Key" in section.text:
            section.find_element(By.CSS_SELECTOR, "input").send_keys(key)
            section.find_element(By.CSS_SELECTOR, "button.authorize").click()
            break
    else:
        raise AssertionError("the Authorize dialog has no X-API-Key field")
    find(dialog, "button.btn-done").click()


def try_it_out(browser: WebDriver, operation: str, body: str) -> WebElement:
    """Open the operation, put `body` in its request editor, execute; its live response."""
    block = find(browser, f"#{operation}")
    block.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    find(block, ".try-out__btn").click()
    editor = find(block, "textarea.body-param__text")
    editor.clear()
    editor.send_keys(body)
    find(block, "button.execute").click()
    return find(block, ".live-responses-table .response")


def test_try_it_out_submits_a_job(live: LiveApi, browser: WebDriver) -> None:
    browser.get(live.url + "/docs")
    authorize(browser, KEY_A)
    body = f'{{"meetingUrl": "https://meet.google.com/abc-defg-hij", "botName": "{BOT_NAME}"}}'
    response = try_it_out(browser, "operations-Jobs-submitJob", body)
    assert find(response, ".response-col_status").text.strip() == "201"
    shown = find(response, ".response-col_description").text
    jobs = [job for job in live.jobs() if job.botName == BOT_NAME]
    assert len(jobs) == 1, [job.botName for job in live.jobs()]
    assert jobs[0].tenant == "tenantA"
    assert jobs[0].id in shown
