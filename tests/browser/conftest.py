"""The Ops Console in a real browser: Debian's chromium (``make chromium``), driven by Playwright from PyPI
(never a browser download of Playwright's own), against the local stack (the ``stack`` fixture). One
browser per module; each test gets a fresh browser context (its own sessionStorage), and its pages are tabs
of that context.

Tests assert on what a person sees (roles, labels, text). A page that logs an error (a script error, a
request the Content-Security-Policy refused) fails its test.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from devcluster import browser as chromium
from devcluster.controlplane import REPO
from devcluster.supervisor import RECORD

AXE = REPO / "node_modules" / "axe-core" / "axe.min.js"
# `make screenshots` sets this to docs/: the README's pictures; otherwise the test's own folder.
SCREENSHOTS = os.environ.get("MDOPS_SCREENSHOTS")
EXECUTE = "/api/ops/runbooks/execute"
# A drill that logs "line 1", "line 2", ... every 0.2 s until the test releases it ($FILES/<request id>.go;
# 4 min at most).
CHATTY = (
    'RELEASE="$FILES/$MDOPS_REQUEST_ID.go"\ni=0\n'
    'while [ ! -e "$RELEASE" ] && [ "$i" -lt 1200 ]; do i=$((i + 1)); echo "INFO: line $i"; sleep 0.2; done\n'
)
LOGS = "document.querySelector('.logs')"  # a run panel's log box

# The tables whose box scrolls sideways: [name, how much wider the table is than its box] of each.
SIDEWAYS = """() => [...document.querySelectorAll('.scroll')]
  .filter((box) => box.scrollWidth > box.clientWidth)
  .map((box) => [box.getAttribute('aria-label') || box.querySelector('caption').textContent,
                 box.scrollWidth - box.clientWidth])"""
PHONE = 360  # px: a small phone's screen, held upright
# The labels of the page that are apart from their control: neither on its line nor right above it (a
# label at the end of a line, its control at the start of the next, reads as the next control's).
APART = """() => [...document.querySelectorAll('main label[for]')].filter((l) => l.offsetParent !== null)
  .filter((label) => {
    const l = label.getBoundingClientRect();
    const c = document.getElementById(label.htmlFor).getBoundingClientRect();
    const sameLine = l.top < c.bottom && c.top < l.bottom;
    return !sameLine && !(c.top >= l.bottom - 1 && Math.abs(c.left - l.left) < 2);
  }).map((label) => label.textContent)"""


def api_pid(stack) -> int:
    return json.loads((stack.workdir / RECORD).read_text())["components"]["api"]["pid"]


@contextlib.contextmanager
def api_stopped(stack):
    """The API process stopped (SIGSTOP): its port still accepts connections, it answers nothing."""
    pid = api_pid(stack)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.fixture(scope="module")
def browser() -> Browser:
    with sync_playwright() as playwright:
        launched = chromium.launch(playwright)
        yield launched
        launched.close()


@pytest.fixture
def console_errors() -> list[str]:
    """What the page logged as errors; a test that causes some on purpose removes them."""
    return []


@pytest.fixture
def context(browser, stack, console_errors) -> BrowserContext:
    """A fresh browser context: its own sessionStorage, Web Locks and connections (its tabs share them, as a
    browser's do). What any of its pages logs as an error fails the test."""
    made = browser.new_context(viewport={"width": 1200, "height": 860}, base_url=stack.api_url)
    # Chromium puts request interception into a running page's loaders a moment after Fetch.enable has
    # answered, so a page's first route could miss the requests just after it (seen: a POST sent 38 ms after
    # that answer, neither held nor reported as a request). Interception is on from each page's
    # start instead, by a route nothing requests; Playwright passes the rest on without asking this process.
    made.route("**/no-request-has-this-path", lambda route: route.abort())
    made.set_default_timeout(20_000)
    expect.set_options(timeout=20_000)
    errors = console_errors
    made.on("weberror", lambda error: errors.append(f"page error: {error.error}"))
    made.on("console", lambda m: m.type == "error" and not _expected(m.text) and errors.append(m.text))
    yield made
    made.close()
    assert not errors, errors


@pytest.fixture
def page(context) -> Page:
    return context.new_page()


# What a failed test's page showed, for a failure seen only in CI's output: its address, where the keyboard
# was, and its text (its dialogs' too).
PAGE_STATE = """(root) => {
  const focused = document.activeElement;
  const where = focused && focused !== document.body
    ? `${focused.tagName.toLowerCase()} "${(focused.textContent || focused.value || "").trim().slice(0, 80)}"`
    : "nothing";
  return `${location.href}\nfocus: ${where}\n${root.innerText}`;
}"""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    page = getattr(item, "funcargs", {}).get("page")
    if report.when == "call" and report.failed and page is not None and not page.is_closed():
        try:  # a locator's timeout: a page whose script hangs would hang page.evaluate, and the run with it
            shown = page.locator("body").evaluate(PAGE_STATE, timeout=5_000)
        except PlaywrightError as error:
            shown = f"not read: {error.message}"
        report.sections.append(("the page as the test failed", shown[:4000]))
    return report


def _expected(text: str) -> bool:
    """Console errors a test causes on purpose: the API's 401 for a wrong token, a 403, 404 or 409 it asks
    for."""
    return bool(re.search(r"status of (401|403|404|409|422)", text))


def sign_in(page: Page, token: str) -> None:
    page.goto("/console/")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("Signed in as")).to_be_visible()


def execute_requests(page: Page) -> list[str]:
    """The execute requests the page sends, as the browser sent them (filled in as they go)."""
    sent: list[str] = []
    page.on("request", lambda r: r.url.endswith(EXECUTE) and sent.append(r.post_data or ""))
    return sent


@contextlib.contextmanager
def held_requests(page: Page, url: str):
    """The page's requests to `url` (a glob) held on their way to the API while in the block, then sent on:
    what a slow answer leaves the page doing meanwhile."""
    held: list[Route] = []
    page.route(url, lambda route: held.append(route))
    try:
        yield held
    finally:
        for route in held:
            route.continue_()
        page.unroute(url)


def screenshot(page: Page, name: str, tmp_path: Path) -> Path:
    folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"console-{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def axe_violations(page: Page, impacts: tuple[str, ...] = ("serious", "critical")) -> list[dict]:
    """axe-core's violations of these impacts (serious and critical, unless asked for more: "minor",
    "moderate") on the page as it is now. axe is evaluated through the DevTools protocol (the page's
    Content-Security-Policy refuses an injected script tag, rightly)."""
    assert AXE.exists(), f"{AXE} is missing: run `make console` (npm ci)"
    page.evaluate(AXE.read_text())
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]]}
        for v in result["violations"]
        if v["impact"] in impacts
    ]
