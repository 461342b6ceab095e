"""The Ops Console when the API or its event stream fails it, in Debian's chromium against a stack of its
own: the API's heartbeat every second (a silent stream is noticed in 3 s), its watch said down (/readyz
503) 2 s after the kube-apiserver's last answer, a token with status:read only (and two that a test
revokes), a health_check that holds while $FILES/hold exists (until $FILES/<request id>.go), a drill that
logs a line every 0.2 s until $FILES/<request id>.go, a failback that writes 300 lines at once when told,
and a supervisor that restarts a killed API after 8 s. The faults are real: the token's event streams all
taken by other clients, the API or the kube-apiserver under it stopped (SIGSTOP), the API killed
(SIGKILL), a status written by hand; the browser's routes stand for what the stack cannot do on demand (a
venue's session that changes, a read refused, an internal error)."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import secrets
import signal
import threading
from pathlib import Path

import httpx
import pytest
import yaml
from playwright.sync_api import Locator, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from devcluster.private import write_private
from devcluster.processes import answers_200, wait_until
from devcluster.stack import NAMESPACE, SCRIPTS
from devcluster.supervisor import Backoff
from runbooks import models
from tests.browser.conftest import (
    CHATTY,
    EXECUTE,
    LOGS,
    api_pid,
    api_stopped,
    axe_violations,
    execute_requests,
    sign_in,
)
from tests.conftest import scripted
from tests.runbook_client import HOLD, reference_scripts

HEARTBEAT = 1  # seconds: the API's heartbeat here, so that the console's watchdog fires after 3 s
WATCH_GRACE = 2  # seconds: how long the API's watch may be down before its /readyz says not ready
STREAMS = 8  # the API's default MDOPS_API_EVENTS_STREAMS_PER_TOKEN
READER = "reader-" + secrets.token_urlsafe(16)  # a token with status:read only
SHIFT = "shift-" + secrets.token_urlsafe(16)  # status:read and runbooks:execute: revoked by a test
CHECKER = "checker-" + secrets.token_urlsafe(16)  # runbooks:execute:health_check only: revoked by a test
TOKENS = [{"name": "reader", "token": READER, "permissions": ["status:read"]}]
REVOKED = [
    {"name": "shift", "token": SHIFT, "permissions": ["status:read", "runbooks:execute"]},
    {"name": "checker", "token": CHECKER, "permissions": ["runbooks:execute:health_check"]},
]
SUMMARY = "/api/ops/metrics/summary"
# What the browser logs of requests cut short by a killed API, refused while it is down, or answered 503
# while it starts again.
KILLED = "|".join(
    (
        "ERR_CONNECTION_REFUSED",
        "ERR_EMPTY_RESPONSE",
        "ERR_CONNECTION_RESET",
        "ERR_INCOMPLETE_CHUNKED",
        "ERR_CONTENT_LENGTH_MISMATCH",
        "ERR_SOCKET_NOT_CONNECTED",
        "of 503",
    )
)
# A failback that logs "first 1" to "first 10", then, once $FILES/<request id>.burst exists, "burst 1" to
# "burst 300" at once (more than a run's status keeps between two of its updates), then "done" once released.
BURST = (
    'RELEASE="$FILES/$MDOPS_REQUEST_ID.go"\n'
    'i=0; while [ "$i" -lt 10 ]; do i=$((i + 1)); echo "INFO: first $i"; done\n'
    'BURST="$FILES/$MDOPS_REQUEST_ID.burst"\n'
    'i=0; while [ ! -e "$BURST" ] && [ "$i" -lt 1200 ]; do i=$((i + 1)); sleep 0.05; done\n'
    'i=0; while [ "$i" -lt 300 ]; do i=$((i + 1)); echo "INFO: burst $i"; done\n'
    + HOLD
    + 'echo "INFO: done"\n'
)
TILES = ("Coverage", "Throughput", "Failover latency", "Consumer backlog", "Last runbook exit code")
FULL_AND_AT_THE_END = f"""() => {{
  const box = {LOGS};
  const full = box.scrollHeight > box.clientHeight + 100;
  return full && box.scrollTop + box.clientHeight >= box.scrollHeight - 1;
}}"""
SELECT_THE_NEWEST_LINE = f"""() => {{
  getSelection().selectAllChildren({LOGS}.lastElementChild);
  return getSelection().toString();
}}"""


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """The stack's scripts (the reference ones; health_check held while $FILES/hold exists, restart until
    released) and its tokens."""
    folder = tmp_path_factory.mktemp("faults")
    held = 'RELEASE="$FILES/$MDOPS_REQUEST_ID.go"\nif [ -e "$FILES/hold" ]; then\n' + HOLD + "fi\n"
    reference_scripts(
        folder / "scripts",
        health_check=held + f"exec {SCRIPTS / 'health_check'}\n",
        drill=CHATTY,
        failback=BURST,
        restart=HOLD,  # until released: one with a short timeout is stopped at it, reporting nothing
    )
    write_private(folder / "tokens.yaml", yaml.safe_dump({"tokens": TOKENS + REVOKED}))
    return folder


@pytest.fixture(scope="module")
def stack_options(files) -> dict:
    api_env = {
        "MDOPS_API_EVENTS_HEARTBEAT_SECONDS": str(HEARTBEAT),
        "MDOPS_API_WATCH_GRACE_SECONDS": str(WATCH_GRACE),
        "MDOPS_API_TOKENS_FILE": str(files / "tokens.yaml"),
    }
    # 8 s each time: the API killed by one test and again by the next (within the default 2 min that a
    # crash must follow for the wait to double) waited 16 s the second time, for nothing.
    return {**scripted(files, **api_env), "backoff": Backoff(initial=8.0, reset_after=1.0)}


def admin(stack) -> dict[str, str]:
    return {"Authorization": f"Bearer {stack.admin_token}"}


@contextlib.contextmanager
def kube_apiserver_stopped(stack):
    """The stack's kube-apiserver stopped (SIGSTOP): its port accepts connections, it answers nothing, and
    the API's watch of it does not end (it just stays quiet); continued (SIGCONT) after."""
    apiserver = next(p for p in stack.cluster.processes if p.name == "kube-apiserver")
    os.kill(apiserver.popen.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(apiserver.popen.pid, signal.SIGCONT)


def kill_api(stack) -> None:
    """SIGKILL the API; its supervisor starts it again (this module's, 8 s later)."""
    os.kill(api_pid(stack), signal.SIGKILL)


@contextlib.contextmanager
def holding(files: Path):
    """health_checks that start in the block hold until released (``$FILES/<request id>.go``)."""
    (files / "hold").touch()
    try:
        yield
    finally:
        (files / "hold").unlink(missing_ok=True)


def api_ready(stack) -> None:
    wait_until(lambda: answers_200(f"{stack.api_url}/readyz"), 90, "the API to be ready again")


def tile(page: Page, name: str):
    return page.get_by_role("region", name=name, exact=True)


def without(console_errors: list[str], pattern: str) -> None:
    """Remove the console errors a test caused on purpose (the browser logs each failed request)."""
    console_errors[:] = [e for e in console_errors if not re.search(pattern, e)]


def test_a_tab_past_the_tokens_event_streams_reads_and_shows_the_runs(page, stack, console_errors):
    """Other clients hold all the token's event streams: this tab's list, run page and run form read the
    API all the same and say that the live updates are paused; the list is live again once one is free."""
    answer = httpx.post(
        f"{stack.api_url}/api/ops/runbooks/execute",
        json={"command": "health_check", "reason": "before the streams"},
        headers=admin(stack),
        timeout=120,
    )
    rid = answer.json()["runbook"]["request_id"]
    client = httpx.Client(base_url=stack.api_url, headers=admin(stack), timeout=30)
    with client, contextlib.ExitStack() as streams:
        for _ in range(STREAMS):
            opened = streams.enter_context(client.stream("GET", "/api/ops/events"))
            assert opened.status_code == 200
        assert client.get("/api/ops/events").status_code == 429  # a witness: the next one is refused

        sign_in(page, stack.admin_token)
        page.get_by_role("link", name="Runbooks").click()
        expect(page.get_by_role("status")).to_have_text(re.compile("^Live updates paused: Too many requests"))
        page.get_by_role("link", name=rid).click()
        run = page.get_by_role("region", name="Run")
        expect(run.get_by_role("heading", name=f"health_check · {rid}")).to_be_visible()
        expect(run.get_by_role("status")).to_have_text("Status: success, exit code 0")

        page.get_by_role("link", name="Run a command").click()
        page.get_by_label("Command", exact=True).select_option("health_check")
        page.get_by_role("button", name="Run", exact=True).click()
        expect(run.get_by_role("status")).to_have_text("Status: success, exit code 0")
        expect(run.get_by_role("heading", name=re.compile("^health_check · "))).to_be_visible()

        page.get_by_role("link", name="Runbooks").click()
        expect(page.get_by_role("status")).to_have_text(re.compile("^Live updates paused: Too many requests"))
    expect(page.get_by_role("status")).to_have_text("Live: updated as runs change.", timeout=30_000)
    without(console_errors, "status of 429")


def test_a_hung_api_is_noticed_by_the_live_updates_and_the_overview(page, stack, console_errors):
    """The API stops answering (SIGSTOP), its connections open: the stream, silent for three heartbeats, is
    dropped and asked again, and the overview's requests time out and mark its numbers stale; both come
    back once the API answers again."""
    wait_until(stack.prometheus.targets_up, 60, "Prometheus to scrape its targets")
    sign_in(page, stack.admin_token)
    page.get_by_role("link", name="Runbooks").click()
    expect(page.get_by_role("status")).to_have_text("Live: updated as runs change.")
    overview = page.context.new_page()
    sign_in(overview, stack.admin_token)
    expect(tile(overview, "Coverage").locator(".value")).to_have_text("100.00 %")
    expect(tile(overview, "Coverage").get_by_text("Stale", exact=True)).to_be_hidden()
    with api_stopped(stack):
        expect(page.get_by_role("status")).to_have_text(
            re.compile(r"^Live updates paused: the API sent nothing for 3 s; reconnecting"), timeout=15_000
        )
        expect(overview.get_by_role("alert")).to_have_text(
            re.compile("^The API did not answer within 10 s"), timeout=30_000
        )
        for name in TILES:
            expect(tile(overview, name).get_by_text("Stale", exact=True)).to_be_visible()
    expect(page.get_by_role("status")).to_have_text("Live: updated as runs change.", timeout=30_000)
    expect(overview.get_by_role("alert")).to_be_hidden(timeout=30_000)
    expect(tile(overview, "Coverage").get_by_text("Stale", exact=True)).to_be_hidden()


def test_the_live_updates_say_stale_while_the_api_has_lost_its_view_of_the_cluster(
    page, stack, files, console_errors
):
    """The kube-apiserver stops answering (SIGSTOP): the API's streams stay open (their heartbeats go on),
    but what the API serves is as of its watch's last answer, and its /readyz says so. The list and a run's
    page say Stale, since when and why, not Live, and the header marks what it shows stale; once the
    kube-apiserver answers again they are Live, and the header is not stale."""
    api_ready(stack)
    rid = f"cluster-view-{secrets.token_hex(4)}"  # a drill that logs until released: followed throughout
    manifest = json.dumps(models.manifest(rid, {"command": "drill", "dryRun": True}))
    stack.cluster.kubectl("create", "-n", NAMESPACE, "-f", "-", input=manifest)
    try:
        sign_in(page, stack.admin_token)
        page.get_by_role("link", name="Runbooks").click()
        listed = page.get_by_role("status")
        expect(listed).to_have_text("Live: updated as runs change.")
        expect(page.get_by_role("link", name=rid)).to_be_visible()
        run_page = page.context.new_page()
        sign_in(run_page, stack.admin_token)
        run_page.goto(f"/console/#/runbooks/{rid}")
        run = run_page.get_by_role("region", name="Run")
        expect(run.get_by_text("Live: updated as the run goes on.")).to_be_visible()
        stale = re.compile(
            r"^Stale since \d\d:\d\d:\d\d: the API has lost its view of the cluster \(the Runbook watch has "
            r"been down for \d+s\)\. The (list|run) may be out of date"
        )
        # The header's mode, profile, window and session come from the same view: marked stale too.
        header = page.get_by_label("Environment").get_by_text(
            re.compile(r"^the API has lost its view of the cluster \(the Runbook watch has been down")
        )
        with kube_apiserver_stopped(stack):
            expect(listed).to_have_text(stale, timeout=45_000)
            expect(run.get_by_text(stale)).to_be_visible(timeout=45_000)
            expect(run.get_by_text("Live: updated as the run goes on.")).to_be_hidden()
            expect(header).to_be_visible(timeout=45_000)
        expect(listed).to_have_text("Live: updated as runs change.", timeout=45_000)
        expect(run.get_by_text("Live: updated as the run goes on.")).to_be_visible(timeout=45_000)
        expect(run.get_by_text(stale)).to_be_hidden()
        expect(header).to_be_hidden(timeout=45_000)
    finally:
        (files / f"{rid}.go").touch()
    without(console_errors, "of 503")  # /readyz's, read while the API's view was not current


# Counts the changes of the nodes of the page's alert (a live region) from now on.
COUNT_ALERTS = """() => {
  window.alerts = 0;
  new MutationObserver((changes) => { window.alerts += changes.length; })
    .observe(document.querySelector("[role=alert]"), {childList: true, characterData: true, subtree: true});
}"""


def test_the_overview_marks_its_numbers_stale_while_the_api_cannot_be_reached(page, stack, console_errors):
    """The API is killed (its supervisor starts it again after 8 s): each refresh that fails leaves "Last
    updated" as it was and marks the tiles and charts stale; the first that succeeds clears them."""
    wait_until(stack.prometheus.targets_up, 60, "Prometheus to scrape its targets")
    sign_in(page, stack.admin_token)
    expect(tile(page, "Coverage").locator(".value")).to_have_text("100.00 %")
    updated = page.get_by_text(re.compile("^Last updated at"))
    expect(page.get_by_role("figure", name=re.compile("^Throughput")).locator("canvas")).to_have_count(1)
    kill_api(stack)
    expect(page.get_by_role("alert")).to_have_text(re.compile(r"^The API cannot be reached"))
    page.evaluate(COUNT_ALERTS)
    before = updated.text_content()
    summary = lambda request: request.url.endswith(SUMMARY)  # noqa: E731
    page.wait_for_event("requestfailed", summary)  # the next refresh fails too
    page.wait_for_event("request", summary)  # and the one after it has begun
    assert updated.text_content() == before
    # The same words are not written again: a screen reader would say the alert again at every refresh.
    assert page.evaluate("window.alerts") == 0
    for name in TILES:
        expect(tile(page, name).get_by_text("Stale", exact=True)).to_be_visible()
    expect(
        page.get_by_role("figure", name=re.compile("^Throughput")).get_by_text("Stale", exact=True)
    ).to_be_visible()
    api_ready(stack)
    expect(page.get_by_role("alert")).to_be_hidden(timeout=30_000)
    expect(tile(page, "Coverage").get_by_text("Stale", exact=True)).to_be_hidden()
    expect(
        page.get_by_role("figure", name=re.compile("^Throughput")).get_by_text("Stale", exact=True)
    ).to_be_hidden()
    expect(updated).not_to_have_text(before)
    without(console_errors, KILLED)


def shown_to_its_end(page: Page, run: Locator, rid: str) -> None:
    """The run held through a fault is shown to its end, the alert gone, and the form has a new request id:
    the next press is a new run."""
    expect(run.get_by_role("status")).to_have_text("Status: success, exit code 0", timeout=60_000)
    expect(page.get_by_role("alert")).to_be_hidden()
    expect(page.get_by_label("Request id")).not_to_have_value(rid)


def test_the_run_forms_error_goes_once_its_run_is_shown_finished(page, stack, files, console_errors):
    """The API dies while execute waits for the run: the form says it cannot be reached; once the run's
    panel has reconnected and shows the run finished, that error goes and the next press is a new id."""
    api_ready(stack)
    sign_in(page, stack.admin_token)
    page.get_by_role("link", name="Run a command").click()
    page.get_by_label("Command", exact=True).select_option("health_check")
    sent = execute_requests(page)
    run = page.get_by_role("region", name="Run")
    with holding(files):
        page.get_by_role("button", name="Run", exact=True).click()
        expect(run.get_by_role("status")).to_have_text("Status: running")
        (rid,) = [json.loads(body)["request_id"] for body in sent]
        kill_api(stack)
        expect(page.get_by_role("alert")).to_have_text(re.compile(r"^The API cannot be reached"))
        (files / f"{rid}.go").touch()
    shown_to_its_end(page, run, rid)
    api_ready(stack)
    without(console_errors, KILLED)


def test_an_execute_answer_lost_past_its_time_limit_is_said_so_and_asked_again_under_its_id(
    page, stack, files, console_errors
):
    """The API makes the plan's run, but its answer never reaches the page (a proxy that holds it): past
    its time limit (here 30 s: whoami says the API answers 202 at once) the form says the answer was lost
    and the run may exist, links its request id to its page, and Plan sends the same request id again: the
    same run, answered once it ends, never a second one."""
    api_ready(stack)

    def no_wait(route):  # an API whose execute answers 202 at once: the form's limit is its slack alone
        answer = route.fetch()
        route.fulfill(response=answer, json={**answer.json(), "execute_wait_seconds": 0})

    def made_then_unanswered(route):
        """The request reaches the API, which makes its run; the answer is never given to the page."""
        body, headers = route.request.post_data, {**admin(stack), "Content-Type": "application/json"}
        post = lambda: httpx.post(f"{stack.api_url}{EXECUTE}", content=body, headers=headers, timeout=300)  # noqa: E731
        threading.Thread(target=post, daemon=True).start()

    page.route("**/api/ops/whoami", no_wait)
    sign_in(page, stack.admin_token)
    page.get_by_role("link", name="Run a command").click()
    page.get_by_label("Command", exact=True).select_option("drill")
    sent = execute_requests(page)
    page.route(f"**{EXECUTE}", made_then_unanswered, times=1)
    plan = page.get_by_role("button", name="Plan (dry run)")
    with page.expect_request(f"**{EXECUTE}") as first:  # the click returns before the request is sent
        plan.click()
    run = page.get_by_role("region", name="Run")
    alert = page.get_by_role("alert")
    rid = json.loads(first.value.post_data or "{}")["request_id"]
    try:
        expect(run.get_by_role("list", name="Logs")).to_contain_text("line 3")  # made, and followed
        expect(plan).to_be_disabled()  # waiting for the answer
        expect(alert).to_have_text(
            "The API did not answer within 30 s: the answer was lost, and the run may exist. Look it up by "
            f'its request id: {rid}. Pressing "Plan (dry run)" again sends the same request id, never a '
            "second run.",
            timeout=60_000,
        )
        expect(alert.get_by_role("link", name=rid)).to_have_attribute("href", f"#/runbooks/{rid}")
        plan.click()  # asked again: the API answers once the run has ended
        expect(alert).to_be_hidden()
    finally:
        (files / f"{rid}.go").touch()
    expect(run.get_by_role("status")).to_have_text("Status: success, exit code 0")
    expect(page.get_by_role("button", name="Run for real")).to_be_visible()  # the plan answered
    assert [json.loads(body)["request_id"] for body in sent] == [rid, rid]
    runbooks = json.loads(stack.cluster.kubectl("get", "rb", "-n", NAMESPACE, "-o", "json").stdout)["items"]
    assert [r["metadata"]["name"] for r in runbooks if r["spec"].get("requestId") == rid] == [rid]


def test_the_header_is_read_again_in_any_view_and_marked_stale_when_it_cannot_be(page, stack, console_errors):
    """Schedules reads no status of its own: the header is read again all the same (here, the venue goes
    to lunch); while it cannot be read it says since when it is stale, and once read again it is not."""
    api_ready(stack)
    sign_in(page, stack.admin_token)
    page.get_by_role("link", name="Schedules").click()
    environment = page.get_by_label("Environment")
    expect(environment).to_contain_text("XHKG")

    def lunch(route):
        answer = route.fetch()
        status = answer.json()
        status["session"]["state"] = "at lunch"
        route.fulfill(response=answer, json=status)

    page.route("**/api/ops/status", lunch)
    expect(environment).to_contain_text("XHKG at lunch", timeout=30_000)
    page.unroute("**/api/ops/status")
    page.route("**/api/ops/status", lambda route: route.abort("connectionrefused"))
    stale = environment.get_by_text(re.compile(r"^as of \d\d:\d\d:\d\d: The API cannot be reached"))
    expect(stale).to_be_visible(timeout=30_000)
    expect(environment).to_contain_text("XHKG at lunch")  # what was read last, marked stale
    page.unroute("**/api/ops/status")
    expect(stale).to_be_hidden(timeout=30_000)
    expect(environment).not_to_contain_text("at lunch")
    without(console_errors, "ERR_CONNECTION_REFUSED")


def test_a_500_outside_execute_is_the_apis_failure_and_what_was_read_before_says_when(
    page, stack, console_errors
):
    """The schedules cannot be read: the API's failure in words; once they were read, the table is what was
    read then, and says so, never taken for current."""
    api_ready(stack)
    sign_in(page, stack.admin_token)
    failed = {"detail": "internal error: KeyError"}
    schedules = re.compile(r"/api/ops/schedules\?")
    page.route(schedules, lambda route: route.fulfill(status=500, json=failed))
    page.get_by_role("link", name="Schedules").click()
    alert = page.get_by_role("alert")
    expect(alert).to_have_text(
        "The API failed: internal error: KeyError. No schedule read yet; asking again every 5 s."
    )
    page.unroute(schedules)
    expect(page.get_by_role("table")).to_have_accessible_name(re.compile(r"refreshed every 5 s$"))
    expect(alert).to_be_hidden()
    page.route(schedules, lambda route: route.fulfill(status=500, json=failed))
    expect(alert).to_have_text(
        re.compile(
            r"^The API failed: internal error: KeyError\. The schedules shown are as of \d\d:\d\d:\d\d; "
            r"asking again every 5 s\.$"
        )
    )
    page.unroute(schedules)
    # The runs list, live, cannot be read again after a change: it says as of when its runs are, and reads
    # them again without waiting for another change.
    runs = re.compile(r"/api/ops/runbooks\?")
    page.get_by_role("link", name="Runbooks").click()
    expect(page.get_by_role("status")).to_have_text("Live: updated as runs change.")
    page.route(runs, lambda route: route.fulfill(status=500, json=failed))
    name = f"unread-{secrets.token_hex(4)}"
    made = models.manifest(name, {"command": "health_check", "dryRun": True})
    stack.cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(made))
    expect(alert).to_have_text(
        re.compile(
            r"^The API failed: internal error: KeyError\. The runs shown are as of \d\d:\d\d:\d\d; "
            r"asking again every 5 s\.$"
        )
    )
    page.unroute(runs)
    expect(page.get_by_role("link", name=name)).to_be_visible()
    expect(alert).to_be_hidden()
    without(console_errors, "status of 500")


def runbook_status(stack, name: str) -> dict:
    got = stack.cluster.kubectl("get", "rb", name, "-n", NAMESPACE, "-o", "json")
    return json.loads(got.stdout).get("status") or {}


def started_check(stack, prefix: str) -> str:
    """A health_check made with kubectl, once it has started: its request id."""
    rid = f"{prefix}-{secrets.token_hex(4)}"
    manifest = json.dumps(models.manifest(rid, {"command": "health_check"}))
    stack.cluster.kubectl("create", "-n", NAMESPACE, "-f", "-", input=manifest)
    wait_until(lambda: runbook_status(stack, rid).get("startedAt"), 60, "the run to start")
    return rid


def test_a_run_that_may_have_changed_the_platform_unreported_is_said_in_the_header(page, stack):
    """A restart stopped at its timeout may have switched the feed, and reported nothing: the header,
    which shows the state the last run reported, says so in every view and links to the run, whose page
    says that what it changed is not known. A health_check since reports the state as it is: the header
    says it no more."""
    api_ready(stack)
    sign_in(page, stack.admin_token)
    rid = f"stopped-{secrets.token_hex(4)}"
    manifest = json.dumps(models.manifest(rid, {"command": "restart", "timeoutSeconds": 2}))
    stack.cluster.kubectl("create", "-n", NAMESPACE, "-f", "-", input=manifest)
    header = page.get_by_label("Environment")
    said = f"restart {rid} ended without reporting the state it left (exit code 124): what it changed is not"
    expect(header).to_contain_text(f"May have changed{said}", timeout=30_000)
    header.get_by_role("link", name=f"restart {rid}").click()
    run = page.get_by_role("region", name="Run")
    expect(run.get_by_role("status")).to_have_text("Status: failed, exit code 124")
    expect(run.get_by_text("None reported: what it changed is not known")).to_be_visible()
    assert axe_violations(page) == []

    answer = httpx.post(
        f"{stack.api_url}{EXECUTE}", json={"command": "health_check"}, headers=admin(stack), timeout=120
    )
    assert answer.json()["runbook"]["status"] == "success", answer.text
    expect(header.get_by_text("May have changed")).to_be_hidden(timeout=30_000)


# A line as a script that colours its output writes it (and sets its terminal's title, and isolates a part
# of it right to left).
COLOURED = "\x1b[1;31mFAILED\x1b[0m: failover \x1b]0;mdops\x07aborted \x1b[2K\u2067(see the log)\u2069"


def test_a_status_written_by_hand_is_shown_as_it_is_written(page, stack, files):
    """Whoever may write a Runbook's status may put anything under health.gate or in a condition's time
    (here over a held run's, written final: the run's own end cannot change it). The run's page shows it
    as written, never as the gate's verdict, and the rest of the run with it; its log lines without the
    escape sequences a terminal acts on."""
    api_ready(stack)
    with holding(files):
        rid = started_check(stack, "by-hand")
        condition = {"type": "Succeeded", "status": "True", "reason": "Succeeded"}
        by_hand = {
            "result": "success",
            "exitCode": 0,
            "finishedAt": runbook_status(stack, rid)["startedAt"],
            "conditions": [{**condition, "lastTransitionTime": "yesterday"}],
            "health": {"coverage_ratio": 1.0, "gate": {"passed": False}},
            "logs": [
                {"time": "2026-11-26T08:00:00.000Z", "level": "INFO", "message": "written by hand"},
                {"time": "2026-11-26T08:00:01.000Z", "level": "ERROR", "message": COLOURED},
            ],
        }
        patch = json.dumps({"status": by_hand})
        try:
            stack.cluster.kubectl(
                "patch", "rb", rid, "-n", NAMESPACE, "--subresource=status", "--type=merge", "-p", patch
            )
        finally:
            (files / f"{rid}.go").touch()
    sign_in(page, stack.admin_token)
    page.goto(f"/console/#/runbooks/{rid}")
    run = page.get_by_role("region", name="Run")
    expect(run.get_by_text('Gate: {"passed":false}')).to_be_visible()
    expect(run.get_by_role("table", name="Conditions")).to_contain_text("yesterday")
    expect(run.get_by_role("list", name="Logs")).to_contain_text("written by hand")
    # A terminal's escape sequences (a script's colours, its window's title) are not shown, nor its
    # bidirectional controls.
    expect(run.get_by_role("listitem").filter(has_text="failover aborted")).to_have_text(
        "16:00:01 ERROR FAILED: failover aborted (see the log)"
    )
    expect(run.get_by_text("This run has finished: it is not followed any more.")).to_be_visible()


def test_a_tables_box_keeps_the_focus_when_the_run_changes(page, stack, files):
    """The keyboard is on the conditions' box (to scroll it) when the run ends: the run's details are drawn
    anew, and the box has the focus again."""
    api_ready(stack)
    # Held until released: a run says Running before its script has looked for the hold.
    with holding(files):
        rid = started_check(stack, "focus")
        sign_in(page, stack.admin_token)
        page.goto(f"/console/#/runbooks/{rid}")
        run = page.get_by_role("region", name="Run")
        expect(run.get_by_role("status")).to_have_text("Status: running")
        conditions = run.get_by_role("region", name="Conditions")
        conditions.focus()
        (files / f"{rid}.go").touch()
    expect(run.get_by_role("status")).to_have_text("Status: success, exit code 0")
    expect(conditions).to_be_focused()


def run_made(stack, request_id: str) -> bool:
    answer = httpx.get(f"{stack.api_url}/api/ops/runbooks/{request_id}", headers=admin(stack))
    return answer.status_code == 200


def test_a_5xx_once_the_run_is_made_keeps_its_panel_until_it_ends(page, stack, files, console_errors):
    """The API fails after it made the run (an internal error, a proxy's 500): the run goes on, so its
    panel stays and the error says so; once the panel shows the run's end the error goes, and the next
    press is a new request id."""
    api_ready(stack)
    sign_in(page, stack.admin_token)
    page.get_by_role("link", name="Run a command").click()
    page.get_by_label("Command", exact=True).select_option("health_check")
    rid = page.get_by_label("Request id").input_value()

    def made_then_failed(route):
        """The request reaches the API, which makes its run (held); its answer is an internal error."""
        body, headers = route.request.post_data, {**admin(stack), "Content-Type": "application/json"}

        def send() -> None:  # answered once the run has ended
            httpx.post(f"{stack.api_url}{EXECUTE}", content=body, headers=headers, timeout=120)

        threading.Thread(target=send, daemon=True).start()
        wait_until(lambda: run_made(stack, rid), 30, "the run to be made")
        route.fulfill(status=500, json={"detail": "internal error: KeyError"})

    page.route(f"**{EXECUTE}", made_then_failed, times=1)
    run = page.get_by_role("region", name="Run")
    with holding(files):
        page.get_by_role("button", name="Run", exact=True).click()
        expect(page.get_by_role("alert")).to_have_text(
            "The API failed: internal error: KeyError. The run is still running: it is shown below."
        )
        expect(run.get_by_role("status")).to_have_text("Status: running")
        (files / f"{rid}.go").touch()
    shown_to_its_end(page, run, rid)
    without(console_errors, "status of 500")


def plan_a_chatty_drill(page: Page) -> str:
    """Plan the drill that logs until released, from the form; its request id."""
    page.get_by_role("link", name="Run a command").click()
    page.get_by_label("Command", exact=True).select_option("drill")
    sent = execute_requests(page)
    page.get_by_role("button", name="Plan (dry run)").click()
    expect(page.get_by_role("region", name="Run").get_by_role("list", name="Logs")).to_contain_text("line 3")
    (rid,) = [json.loads(body)["request_id"] for body in sent]
    return rid


def newest_line(page: Page) -> str:
    return page.evaluate(f"{LOGS}.lastElementChild.textContent")


def wait_for_a_newer_line(page: Page, than: str) -> None:
    page.wait_for_function(f"(line) => {LOGS}.lastElementChild.textContent !== line", arg=than)


def test_live_log_lines_keep_a_selection_and_the_end_in_view(page, stack, files):
    """Lines come every 0.2 s: once the box is full it stays scrolled to the newest line; a line selected
    stays selected as lines come; a box scrolled up stays where it is."""
    api_ready(stack)
    sign_in(page, stack.admin_token)
    rid = plan_a_chatty_drill(page)
    try:
        page.wait_for_function(FULL_AND_AT_THE_END)
        assert axe_violations(page) == []  # a full box scrolls: it takes the keyboard
        selected = page.evaluate(SELECT_THE_NEWEST_LINE)
        wait_for_a_newer_line(page, newest_line(page))
        assert page.evaluate("getSelection().toString()") == selected

        page.evaluate(f"() => {{ {LOGS}.scrollTop = 0; }}")
        wait_for_a_newer_line(page, newest_line(page))
        assert page.evaluate(f"{LOGS}.scrollTop") == 0
    finally:
        (files / f"{rid}.go").touch()
    expect(page.get_by_role("region", name="Run").get_by_role("status")).to_have_text(
        "Status: success, exit code 0"
    )


def test_the_lines_a_run_showed_stay_shown_when_it_finishes(page, stack, files):
    """A run's status keeps its last 50 lines only, and each transition's event brings those: the box, which
    shows up to 200, keeps the lines it showed before (the drill's first lines) through its end, each once."""
    api_ready(stack)
    sign_in(page, stack.admin_token)
    rid = plan_a_chatty_drill(page)
    try:
        page.wait_for_function(f"() => {LOGS}.children.length > 60")
    finally:
        (files / f"{rid}.go").touch()
    expect(page.get_by_role("region", name="Run").get_by_role("status")).to_have_text(
        "Status: success, exit code 0"
    )
    messages = page.evaluate(f"[...{LOGS}.children].map((line) => line.lastChild.textContent)")
    assert messages[0] == "line 1", messages[:3]
    assert len(messages) == len(set(messages)) > 60, messages


def test_a_stream_resumed_after_a_read_shows_each_log_line_once(page, stack, files, console_errors):
    """A run's page loses its stream (the API stops: the watchdog drops it) and cannot open it again for a
    while, so it reads the run meanwhile; the stream then resumes after its last event, with lines the read
    showed already: each line is shown once."""
    api_ready(stack)
    sign_in(page, stack.admin_token)
    rid = plan_a_chatty_drill(page)
    run = page.get_by_role("region", name="Run")
    streams = re.compile(r"/api/ops/events")  # the shared stream, and the one a run is read from
    try:
        page.get_by_role("link", name="Open this run's page").click()
        expect(run.get_by_text("Live: updated as the run goes on.")).to_be_visible()
        page.route(streams, lambda route: route.abort("connectionrefused"))
        with api_stopped(stack):  # the stream is silent: dropped after 3 s, and not opened again
            expect(run.get_by_text(re.compile("^Live updates paused"))).to_be_visible(timeout=15_000)
        with page.expect_response(
            lambda r: r.url.endswith(f"/api/ops/runbooks/{rid}") and r.ok, timeout=30_000
        ):
            pass  # the page reads the run meanwhile
        # A read that fails too: the page says that the run shown is not current, and as of when.
        reads = re.compile(f"/api/ops/runbooks/{rid}$")
        page.route(
            reads, lambda route: route.fulfill(status=500, json={"detail": "internal error: KeyError"})
        )
        unread = run.get_by_text(
            re.compile(
                r"It cannot be read either \(The API failed: internal error: KeyError\): what is shown is as "
                r"of \d\d:\d\d:\d\d\.$"
            )
        )
        expect(unread).to_be_visible(timeout=15_000)
        page.unroute(reads)
        expect(unread).to_be_hidden(timeout=15_000)
        page.unroute(streams)
        expect(run.get_by_text("Live: updated as the run goes on.")).to_be_visible(timeout=30_000)
        wait_for_a_newer_line(page, newest_line(page))
        messages = page.evaluate(f"[...{LOGS}.children].map((line) => line.lastChild.textContent)")
        assert len(messages) == len(set(messages)), messages
    finally:
        (files / f"{rid}.go").touch()
    without(console_errors, KILLED)
    without(console_errors, "status of 500")


def test_a_token_without_metrics_read_is_told_which_permission_and_not_asked_again(page, stack):
    api_ready(stack)
    summaries: list[str] = []
    page.on("request", lambda r: r.url.endswith(SUMMARY) and summaries.append(r.url))
    sign_in(page, READER)
    expect(page.get_by_role("alert")).to_contain_text(
        "The overview needs the permission metrics:read, which this token lacks: it is not read again."
    )
    assert len(summaries) == 1
    with pytest.raises(PlaywrightTimeout):  # longer than the overview's refresh (2 s, 5 s without an answer)
        page.wait_for_event("request", lambda r: r.url.endswith(SUMMARY), timeout=7_000)
    assert len(summaries) == 1


def test_lines_a_run_wrote_faster_than_its_status_keeps_them_are_said_missing(page, stack, files):
    """A run's status keeps its last 50 lines, written about once a second: of 300 lines written at once,
    the box shows the last ones only, and says where lines may be missing (and where the whole log is),
    never as if the lines around were one after another; its end comes after them, with no gap said."""
    api_ready(stack)
    rid = f"burst-{secrets.token_hex(4)}"
    manifest = json.dumps(models.manifest(rid, {"command": "failback", "dryRun": True}))
    stack.cluster.kubectl("create", "-n", NAMESPACE, "-f", "-", input=manifest)
    try:
        sign_in(page, stack.admin_token)
        page.goto(f"/console/#/runbooks/{rid}")
        logs = page.get_by_role("region", name="Run").get_by_role("list", name="Logs")
        expect(logs).to_contain_text("first 10")
        (files / f"{rid}.burst").touch()
        expect(logs).to_contain_text("burst 300")
        expect(
            logs.get_by_text(re.compile("^… lines may be missing here: the API keeps a run's last 50"))
        ).to_be_visible()
    finally:
        (files / f"{rid}.burst").touch()
        (files / f"{rid}.go").touch()
    expect(page.get_by_role("region", name="Run").get_by_role("status")).to_have_text(
        "Status: success, exit code 0"
    )
    shown = page.evaluate(
        f"[...{LOGS}.children].map((l) => l.className === 'gap' ? 'gap' : l.lastChild.textContent)"
    )
    ours = [line for line in shown if re.fullmatch(r"gap|(first|burst) \d+|done", line)]  # not the runner's
    assert ours[:11] == [f"first {i}" for i in range(1, 11)] + ["gap"], shown
    assert ours[-2:] == ["burst 300", "done"], shown
    for before, after in itertools.pairwise(ours[11:-1]):  # lines one after another, or a gap between
        if "gap" not in (before, after):
            assert int(after.split()[1]) == int(before.split()[1]) + 1, shown
    assert len(shown) == len(set(shown)) + shown.count("gap") - 1, shown  # each line once


def test_the_new_lines_of_a_status_are_found_wherever_the_box_began(page, stack):
    """``after`` (run.js), pure: the status keeps a run's last 50 lines; a box may have begun after them (its
    first lines came from the live updates) or within them, and only the status' lines past the box's last
    are new. A box that began at line 9 once got lines 1 to 40 again at the run's next change."""
    page.goto("/console/")
    found = page.evaluate(
        """async (cases) => {
            const { after } = await import("/console/js/run.js");
            const lines = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => ({
                time: `2026-12-05T08:00:${String(a + i).padStart(2, "0")}.000Z`, level: "INFO",
                message: `line ${a + i}` }));
            return cases.map(([a, b, c, d]) => after(lines(a, b), lines(c, d)).map((l) => l.message));
        }""",
        [[9, 37, 1, 40], [1, 60, 21, 70], [1, 5, 1, 5], [1, 5, 8, 9], [3, 3, 1, 4], [1, 0, 1, 2]],
    )
    assert found == [
        ["line 38", "line 39", "line 40"],  # the box began within the status' lines
        [f"line {n}" for n in range(61, 71)],  # the status began within the box's
        [],  # nothing new
        ["line 8", "line 9"],  # nothing shared: all of it (the caller marks a gap)
        ["line 4"],
        ["line 1", "line 2"],  # an empty box
    ]


def test_a_token_revoked_while_its_pages_are_open_signs_them_out(context, stack, files, console_errors):
    """The API restarts without two tokens (taken out of its tokens file): the runs list of one, which follows
    the live updates, and the run form of the other, which may not read the status and reads nothing by
    itself, both sign out without a press, saying that the API refused the token."""
    api_ready(stack)
    listing, form = context.new_page(), context.new_page()
    sign_in(listing, SHIFT)
    listing.get_by_role("link", name="Runbooks").click()
    expect(listing.get_by_role("status")).to_have_text("Live: updated as runs change.")
    sign_in(form, CHECKER)
    form.get_by_role("link", name="Run a command").click()
    expect(form.get_by_role("button", name="Run", exact=True)).to_be_visible()
    write_private(files / "tokens.yaml", yaml.safe_dump({"tokens": TOKENS}))
    try:
        kill_api(stack)
        api_ready(stack)
        for page in (listing, form):
            expect(page.get_by_role("status")).to_have_text(
                "The API refused the token: invalid bearer token. Paste a token the API knows to sign in.",
                timeout=30_000,
            )
            expect(page.get_by_label("API token")).to_be_focused()
    finally:
        write_private(files / "tokens.yaml", yaml.safe_dump({"tokens": TOKENS + REVOKED}))
    without(console_errors, KILLED)
