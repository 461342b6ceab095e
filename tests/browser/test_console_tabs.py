"""The Ops Console in many tabs of one browser, against a stack of its own (the API's heartbeat every second,
a drill that logs a line every 0.2 s until $FILES/<request id>.go). A browser opens at most six HTTP/1.1
connections to one origin, and an event stream holds one while it is open: the tabs signed in with one
token share one stream (live.js), and when the tab that holds it closes another resumes it."""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from devcluster.stack import NAMESPACE
from runbooks import models
from tests.browser.conftest import CHATTY, LOGS, sign_in
from tests.browser.test_console_faults import KILLED, api_ready, kill_api, without
from tests.conftest import scripted
from tests.runbook_client import reference_scripts

HEARTBEAT = 1  # seconds: a silent stream is noticed in 3 s
TABS = 10
LIST_LIVE = "Live: updated as runs change."
RUN_LIVE = "Live: updated as the run goes on."
LINE = re.compile(r"line \d+")  # a log line of CHATTY
SHARED = re.compile(r"/api/ops/events$")  # the shared stream (a run's own, ?request_id=, is read once)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tabs")
    reference_scripts(folder / "scripts", drill=CHATTY)
    return folder


@pytest.fixture(scope="module")
def stack_options(files) -> dict:
    return scripted(files, MDOPS_API_EVENTS_HEARTBEAT_SECONDS=str(HEARTBEAT))


def chatty_drill(stack, rid: str | None = None) -> str:
    """A dry-run drill, made with kubectl, that logs until released; its request id."""
    rid = rid or f"tabs-{secrets.token_hex(4)}"
    manifest = json.dumps(models.manifest(rid, {"command": "drill", "dryRun": True}))
    stack.cluster.kubectl("create", "-n", NAMESPACE, "-f", "-", input=manifest)
    return rid


def tab(context: BrowserContext, stack, view: str) -> Page:
    page = context.new_page()
    sign_in(page, stack.admin_token)
    page.goto(f"/console/{view}")
    return page


def drill_tabs(context: BrowserContext, stack, rid: str, count: int) -> list[Page]:
    """``count`` tabs on the page of the drill ``rid``, each once it shows the drill's lines."""
    tabs = [tab(context, stack, f"#/runbooks/{rid}") for _ in range(count)]
    for page in tabs:
        expect(run_panel(page).get_by_role("list", name="Logs")).to_contain_text("line 5")
    return tabs


def shared_streams(context: BrowserContext) -> list[tuple[Page, str | None]]:
    """The shared streams the context's tabs open, as they open them: (tab, its Last-Event-ID)."""
    opened: list[tuple[Page, str | None]] = []
    context.on(
        "request",
        lambda r: SHARED.search(r.url) and opened.append((r.frame.page, r.headers.get("last-event-id"))),
    )
    return opened


def run_panel(page: Page):
    return page.get_by_role("region", name="Run")


def shown_lines(page: Page) -> list[str]:
    return page.evaluate(f"[...{LOGS}.children].map((line) => line.lastChild.textContent)")


def test_ten_tabs_are_all_live_and_see_every_runs_end(context, stack, files):
    """Ten tabs of one browser, half on the runs list, half on the pages of three running drills: every one
    is live, and sees each drill's end."""
    rids = [chatty_drill(stack) for _ in range(3)]
    try:
        tabs = []
        for i in range(TABS):
            tabs.append(tab(context, stack, "#/runbooks" if i % 2 == 0 else f"#/runbooks/{rids[i % 3]}"))
        for i, page in enumerate(tabs):
            if i % 2 == 0:
                expect(page.get_by_role("status")).to_have_text(LIST_LIVE)
            else:
                expect(run_panel(page).get_by_text(RUN_LIVE)).to_be_visible()
                # Whichever line came: a tab opened late finds the first lines scrolled out of the status.
                expect(run_panel(page).get_by_role("list", name="Logs")).to_contain_text(LINE)
    finally:
        for rid in rids:
            (files / f"{rid}.go").touch()
    for i, page in enumerate(tabs):
        if i % 2 == 0:
            for rid in rids:
                row = page.get_by_role("row").filter(has=page.get_by_role("link", name=rid))
                expect(row).to_contain_text("success")
        else:
            expect(run_panel(page).get_by_role("status")).to_have_text("Status: success, exit code 0")


def test_another_tab_resumes_the_stream_when_its_tab_closes_without_a_lost_or_doubled_line(
    context, stack, files
):
    """Three tabs follow one drill's page; the first, which holds the stream, closes mid-run: another opens
    it again after the last event it saw (Last-Event-ID), and both tabs left show every line once, in order,
    to the run's end."""
    rid = chatty_drill(stack)
    streams = shared_streams(context)
    try:
        tabs = [tab(context, stack, f"#/runbooks/{rid}") for _ in range(3)]
        for page in tabs:
            expect(run_panel(page).get_by_text(RUN_LIVE)).to_be_visible()
            expect(run_panel(page).get_by_role("list", name="Logs")).to_contain_text("line 10")
        assert len(streams) == 1, streams  # one stream for the three tabs
        ((first, _),) = streams
        tabs.remove(first)
        with context.expect_event("request", lambda r: bool(SHARED.search(r.url))):
            first.close()
        assert len(streams) == 2 and streams[1][1], streams  # another tab, after the last event it saw
        for page in tabs:
            seen = len(shown_lines(page))
            page.wait_for_function(f"(seen) => {LOGS}.children.length > seen + 10", arg=seen)
        assert len(streams) == 2, streams
    finally:
        (files / f"{rid}.go").touch()
    for page in tabs:
        expect(run_panel(page).get_by_role("status")).to_have_text("Status: success, exit code 0")
        lines = [int(m[5:]) for m in shown_lines(page) if re.fullmatch(r"line \d+", m)]
        assert lines == list(range(lines[0], lines[0] + len(lines))), lines  # each once, in order, none lost


def test_a_tab_that_stops_running_has_the_stream_taken_from_it_and_nothing_is_missed(context, stack, files):
    """The tab that holds the stream stops running for 12 s (its main thread busy, as under a modal dialog or
    a debugger): the other tab, hearing nothing for twice the stream's watchdog (6 s here), takes the lock
    and opens the stream again after its last event; once the first tab runs again, it lets its own go, and
    both show every line once, in order, to the run's end."""
    rid = chatty_drill(stack)
    streams = shared_streams(context)
    try:
        tabs = drill_tabs(context, stack, rid, 2)
        ((leader, _),) = streams
        with context.expect_event("request", lambda r: bool(SHARED.search(r.url))):
            leader.evaluate("() => { const end = Date.now() + 12000; while (Date.now() < end); }")
        assert streams[1][0] != leader and streams[1][1], streams  # the other tab, after its last event
        for page in tabs:
            seen = len(shown_lines(page))
            page.wait_for_function(f"(seen) => {LOGS}.children.length > seen + 10", arg=seen)
        assert len(streams) == 2, streams  # the first did not take it back
    finally:
        (files / f"{rid}.go").touch()
    for page in tabs:
        expect(run_panel(page).get_by_role("status")).to_have_text("Status: success, exit code 0")
        lines = [int(m[5:]) for m in shown_lines(page) if re.fullmatch(r"line \d+", m)]
        assert lines == list(range(lines[0], lines[0] + len(lines))), lines


def test_tabs_signed_in_with_other_tokens_share_no_stream(context, stack):
    """Two tabs of one browser, signed in with two tokens: each token's stream is its own (the API shows each
    token only what it may read), both live."""
    streams = shared_streams(context)
    admin = tab(context, stack, "#/runbooks")
    viewer = context.new_page()
    sign_in(viewer, stack.viewer_token)
    viewer.goto("/console/#/runbooks")
    for page in (admin, viewer):
        expect(page.get_by_role("status")).to_have_text(LIST_LIVE)
    assert {page for page, _ in streams} == {admin, viewer}, streams


@pytest.mark.parametrize("refusals", [0, 4])
def test_every_tab_recovers_from_an_api_killed_while_its_run_ends(
    context, stack, files, console_errors, refusals
):
    """Three tabs follow one drill's page and one the runs list; the API is killed (SIGKILL), the drill ends
    while it is down, and its supervisor starts it again (a new epoch of event ids: the stream resumes with a
    reset): every tab shows the run's end, and each line it shows once, in order. With `refusals`, the
    run's own stream, which says how the run is now, is refused that many times first once the API is back
    (429: the token's streams all taken, as by other clients reconnecting at once): the tabs ask again. How
    many reads the tabs make is theirs to decide (none, when the shared stream brings the end first: seen
    once in a full `make test`), so only what they show is checked."""
    rid = chatty_drill(stack)
    refused = []

    def refuse(route):
        if len(refused) < refusals:
            refused.append(route.request.url)
            route.fulfill(status=429, json={"detail": "token 'admin' has 8 event streams open already"})
        else:
            route.continue_()

    try:
        tabs = drill_tabs(context, stack, rid, 3)
        listing = tab(context, stack, "#/runbooks")
        context.route(re.compile(r"/api/ops/events\?request_id="), refuse)
        kill_api(stack)
    finally:
        (files / f"{rid}.go").touch()
    api_ready(stack)
    for page in tabs:
        expect(run_panel(page).get_by_role("status")).to_have_text("Status: success, exit code 0")
        lines = [int(m[5:]) for m in shown_lines(page) if re.fullmatch(r"line \d+", m)]
        assert lines == sorted(set(lines)), lines  # each once, in order
    row = listing.get_by_role("row").filter(has=listing.get_by_role("link", name=rid))
    expect(row).to_contain_text("success")
    without(console_errors, KILLED + "|status of 429")


def test_tabs_on_a_runs_page_before_the_run_exists_show_it_once_it_is_made(context, stack, files):
    """Two tabs open a run's page before the run is made: each says there is no such run yet, then shows the
    run once it is made, its lines live, to its end."""
    rid = f"tabs-{secrets.token_hex(4)}"
    tabs = [tab(context, stack, f"#/runbooks/{rid}") for _ in range(2)]
    for page in tabs:
        expect(run_panel(page).get_by_role("status")).to_contain_text("No run has the request id")
        expect(run_panel(page).get_by_text(RUN_LIVE)).to_be_visible()
    chatty_drill(stack, rid)
    try:
        for page in tabs:
            expect(run_panel(page).get_by_role("list", name="Logs")).to_contain_text("line 10")
    finally:
        (files / f"{rid}.go").touch()
    for page in tabs:
        expect(run_panel(page).get_by_role("status")).to_have_text("Status: success, exit code 0")
        lines = [int(m[5:]) for m in shown_lines(page) if re.fullmatch(r"line \d+", m)]
        assert lines == list(range(1, len(lines) + 1)), lines
