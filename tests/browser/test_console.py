"""The Ops Console as a person on shift uses it, in Debian's chromium against the local stack: sign-in,
the overview from Prometheus, runs from the form with live logs, plan then failover, permissions, a double
click, the keyboard and axe-core. The last test stops Prometheus (the stale badges)."""

from __future__ import annotations

import datetime
import json
import re
import uuid
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from devcluster.processes import wait_until
from devcluster.stack import NAMESPACE
from runbooks import crd, models
from tests.browser.conftest import (
    APART,
    PHONE,
    SIDEWAYS,
    axe_violations,
    execute_requests,
    held_requests,
    screenshot,
    sign_in,
)

NOTHING = "\u2013"  # an en dash: what a tile shows without a value


def sim_status(stack) -> dict:
    return httpx.get(f"{stack.sim_url}/admin/status").json()


def history(stack) -> list[dict]:
    headers = {"Authorization": f"Bearer {stack.admin_token}"}
    return httpx.get(f"{stack.api_url}/api/ops/status", headers=headers).json()["runbook_history"]


def tile(page: Page, name: str):
    return page.get_by_role("region", name=name, exact=True)


def test_sign_in_keeps_the_token_for_the_tab_only(page, stack):
    page.goto("/console/")
    page.get_by_label("API token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("status")).to_have_text(
        "The API refused the token: invalid bearer token. Paste a token the API knows to sign in."
    )
    expect(page.get_by_role("link", name="Overview")).to_be_hidden()

    # One check of the token at a time: a second press (or Enter) while it is checked sends nothing more,
    # and the keyboard stays on the button.
    page.get_by_label("API token").fill(stack.admin_token)
    button = page.get_by_role("button", name="Sign in")
    with held_requests(page, "**/api/ops/whoami") as checks:
        button.dblclick()
        expect(button).to_have_attribute("aria-disabled", "true")
        expect(button).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.get_by_role("status")).to_have_text("Checking the token…")
    expect(page.get_by_text("Signed in as admin")).to_be_visible()
    assert len(checks) == 1, [c.request.url for c in checks]
    assert page.evaluate("sessionStorage.getItem('mdops.token')") == stack.admin_token
    assert page.context.cookies() == []
    assert stack.admin_token not in page.url

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API token")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('mdops.token')") is None


def test_the_overview_shows_the_simulators_numbers(page, stack, tmp_path):
    wait_until(stack.prometheus.targets_up, 60, "Prometheus to scrape its targets")
    sign_in(page, stack.admin_token)
    sim = sim_status(stack)
    coverage = tile(page, "Coverage")
    expect(coverage.locator(".value")).to_have_text("100.00 %")  # once Prometheus has scraped the simulator
    expect(coverage).to_contain_text(f"Expected{sim['expected_total']:,}")
    expect(coverage.get_by_text("Stale")).to_be_hidden()
    expect(tile(page, "Throughput").locator(".value")).to_have_text(re.compile(r"^[\d,.]+ msg/s$"))
    expect(tile(page, "Consumer backlog").locator(".value")).to_have_text(
        f"{sim['consumer_backlog_messages']} messages"
    )
    expect(page.get_by_text(re.compile(r"Last updated at \d\d:\d\d:\d\d \(\+08:00\)"))).to_be_visible()
    for chart in ("Throughput", "Coverage", "Consumer backlog", "Failover latency"):
        expect(page.get_by_role("figure", name=chart).locator("canvas")).to_have_count(1)
    expect(page.get_by_role("heading", name="Charts (times in +08:00)")).to_be_visible()
    page.get_by_label("Range").select_option("15 min")
    expect(page.get_by_role("figure", name="Throughput, last 15 min").locator("canvas")).to_have_count(1)


# How many pixels of a chart's canvas are its line's blue (#1d4ed8, give or take the edges' blending).
LINE_PIXELS = """(figure) => {
  const canvas = figure.querySelector("canvas");
  const rgba = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let blue = 0;
  for (let i = 0; i < rgba.length; i += 4) if (rgba[i] < 80 && rgba[i + 2] > 170 && rgba[i + 3] > 200) blue++;
  return blue;
}"""


def test_a_range_chosen_while_another_is_read_is_the_one_drawn(page, stack):
    """The charts of a range chosen first (24 h, slow to answer) come after those of the range chosen next:
    the charts stay those of the range the page says, never the older answers under its name."""
    wait_until(stack.prometheus.targets_up, 60, "Prometheus to scrape its targets")
    sign_in(page, stack.admin_token)
    expect(page.get_by_role("figure", name="Throughput, last 1 h")).to_be_visible()
    held = []
    page.route(re.compile(r"/api/ops/metrics/timeseries\?.*minutes=1440"), lambda route: held.append(route))
    page.get_by_label("Range").select_option("24 h")
    page.get_by_label("Range").select_option("15 min")
    expect(page.get_by_role("figure", name="Throughput, last 15 min")).to_be_visible()
    assert len(held) == 4, held
    for route in held:
        with page.expect_response(route.request.url):
            route.continue_()
    drawn_24h = (
        "() => [...document.querySelectorAll('figcaption')].some((c) => c.textContent.endsWith('24 h'))"
    )
    with pytest.raises(PlaywrightTimeout):  # drawn at once, if at all: a margin of seconds
        page.wait_for_function(drawn_24h, timeout=2_000)
    expect(page.get_by_role("figure", name="Throughput, last 15 min")).to_be_visible()


def test_the_consoles_own_times_are_the_apis_whatever_the_browsers_clock(page, stack):
    """A browser whose clock is an hour fast: the overview says when it was last read by the API's clock
    (the runs' times are by it), and its charts end at the API's now, not an hour on where no sample is."""
    wait_until(stack.prometheus.targets_up, 60, "Prometheus to scrape its targets")
    headers = {"Authorization": f"Bearer {stack.admin_token}"}
    zone = httpx.get(f"{stack.api_url}/api/ops/whoami", headers=headers).json()["time_zone"]
    page.clock.install(time=datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1))
    sign_in(page, stack.admin_token)
    page.get_by_label("Range").select_option("15 min")
    throughput = page.get_by_role("figure", name="Throughput, last 15 min")
    expect(throughput).to_be_visible()
    page.wait_for_function(LINE_PIXELS, arg=throughput.element_handle())
    updated = page.get_by_text(re.compile(r"^Last updated at \d\d:\d\d:\d\d")).text_content()
    at = datetime.datetime.strptime(updated.split()[3], "%H:%M:%S")
    real = datetime.datetime.now(ZoneInfo(zone))
    apart = (real.hour * 3600 + real.minute * 60 + real.second) - (
        at.hour * 3600 + at.minute * 60 + at.second
    )
    assert apart % 86_400 <= 30 or apart % 86_400 >= 86_395, (updated, real)  # within -5 s .. 30 s


def test_a_health_check_from_the_form_succeeds_with_its_logs_arriving_live(page, stack, tmp_path):
    sign_in(page, stack.admin_token)
    page.get_by_role("link", name="Run a command").click()
    page.get_by_label("Command", exact=True).select_option("health_check")
    page.get_by_label("Reason").fill("browser test")
    page.get_by_role("button", name="Run", exact=True).click()
    run = page.get_by_role("region", name="Run")
    expect(run.get_by_role("status")).to_have_text("Status: success, exit code 0")
    # The log lines come from the event stream (their times are only there, not in execute's answer).
    logs = run.get_by_role("list", name="Logs")
    expect(logs).to_contain_text(re.compile(r"\d\d:\d\d:\d\d INFO state=running source=primary"))
    expect(run.get_by_text("Gate passed (not enforced).")).to_be_visible()

    page.get_by_role("link", name="Open this run's page").click()
    expect(page.get_by_role("heading", name=re.compile("^health_check · "))).to_be_visible()
    expect(page.get_by_role("table", name="Conditions")).to_contain_text("Succeeded")
    screenshot(page, "run", tmp_path)


def test_a_failover_is_planned_then_run_for_real_after_confirmation(page, stack):
    sign_in(page, stack.admin_token)
    assert sim_status(stack)["active_source"] == "primary"
    page.goto("/console/#/run")
    page.get_by_label("Command", exact=True).select_option("failover")
    page.get_by_label("Reason").fill("planned failover")
    expect(page.get_by_role("button", name="Run for real")).to_be_hidden()

    page.get_by_role("button", name="Plan (dry run)").click()
    run = page.get_by_role("region", name="Run")
    expect(run.get_by_role("heading", name=re.compile(r"^failover \(dry run\)"))).to_be_visible()
    expect(run.get_by_role("status")).to_have_text("Status: success, exit code 0")
    expect(run.get_by_text("None: a dry run changes nothing.")).to_be_visible()
    assert sim_status(stack)["active_source"] == "primary"

    page.get_by_role("button", name="Run for real").click()
    dialog = page.get_by_role("dialog", name="Run for real?")
    expect(dialog).to_contain_text("This runs failover for real on profile primary")
    dialog.get_by_role("button", name="Run failover for real").click()
    expect(run.get_by_role("heading", name=re.compile(r"^failover · "))).to_be_visible()
    expect(run.get_by_role("status")).to_have_text("Status: success, exit code 0")
    assert sim_status(stack)["active_source"] == "backup"
    expect(page.get_by_label("Environment")).to_contain_text("Active profilebackup")


def test_a_double_click_runs_once(page, stack):
    sign_in(page, stack.admin_token)
    page.goto("/console/#/run")
    sent = execute_requests(page)
    before = len(history(stack))
    page.get_by_label("Command", exact=True).select_option("health_check")
    page.get_by_role("button", name="Run", exact=True).dblclick()
    expect(page.get_by_role("region", name="Run").get_by_role("status")).to_have_text(
        re.compile("^Status: success")
    )
    assert len(sent) == 1, sent
    wait_until(lambda: len(history(stack)) == before + 1, 10, "the run in the history")
    assert len(history(stack)) == before + 1


def test_the_apis_refusal_is_shown_in_words(page, stack):
    """A request id used before with other parameters: the API's 409, as its message."""
    used = next(r["request_id"] for r in history(stack) if r["command"] == "health_check")
    sign_in(page, stack.admin_token)
    page.goto("/console/#/run")
    page.get_by_label("Command", exact=True).select_option("health_check")
    page.get_by_label("Request id").fill(used)
    page.get_by_label("Reason").fill("another reason")
    page.get_by_role("button", name="Run", exact=True).click()
    expect(page.get_by_role("alert")).to_have_text(
        re.compile(f"^Conflict: request_id '{used}' was already used with other parameters")
    )
    expect(page.get_by_role("region", name="Run")).to_have_count(0)


def test_a_token_pasted_with_quotes_is_refused_in_words(page):
    """A header cannot carry “quotes”: the browser would refuse the request as if the API were gone."""
    page.goto("/console/")
    page.get_by_label("API token").fill("\u201cabc\u201d")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("status")).to_have_text(re.compile("^A token has no spaces, quotes"))


def test_a_token_of_spaces_only_is_refused_in_words(page):
    """Spaces pass the field's "required"; without them nothing is left: said, never a silent new form."""
    page.goto("/console/")
    page.get_by_label("API token").fill("   ")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("status")).to_have_text("That is only spaces: paste your token.")


def test_a_link_to_a_run_that_does_not_exist_says_so(page, stack):
    """A run page for an id no Runbook has says so, and waits for it."""
    sign_in(page, stack.admin_token)
    page.goto("/console/#/runbooks/no-such-run")
    expected = "No run has the request id no-such-run: this page shows it if one is created."
    expect(page.get_by_role("region", name="Run").get_by_role("status")).to_have_text(expected)


@pytest.mark.parametrize("link", ["%E0%A4%A", "%ZZ", "a%2Fb"])
def test_a_link_with_an_id_the_api_refuses_shows_the_refusal(page, stack, link):
    """A broken %-escape (typed, or cut short) or an id that cannot be one: the run page, with the API's
    words, and the live updates stopped (asking again changes nothing)."""
    sign_in(page, stack.admin_token)
    page.goto(f"/console/#/runbooks/{link}")
    refusal = re.compile(
        r"^Live updates stopped: Invalid request: query\.request_id.*\. The run is not updated any more\.$"
    )
    expect(page.get_by_role("region", name="Run").get_by_text(refusal)).to_be_visible()


def test_a_viewer_token_sees_no_run_controls(page, stack):
    executed(stack, reason="a run for the viewer to read")
    sign_in(page, stack.viewer_token)
    expect(page.get_by_text("Signed in as viewer")).to_be_visible()
    expect(page.get_by_role("link", name="Run a command")).to_be_hidden()
    page.goto("/console/#/run")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    assert page.get_by_role("button", name=re.compile("Run|Plan")).count() == 0
    page.get_by_role("link", name="Runbooks").click()
    expect(page.get_by_role("table")).to_contain_text("health_check")  # the viewer reads the history
    assert page.get_by_role("button", name=re.compile("Run|Plan")).count() == 0


# Each view, and what shows it is ready.
VIEWS = {
    "#/overview": re.compile("Last updated at"),
    "#/runbooks": re.compile("Live: updated as runs change"),
    "#/run": re.compile("Plan runs the command with dry_run"),
    "#/schedules": re.compile("refreshed every 5 s"),
}


@pytest.mark.parametrize("view", VIEWS)
def test_every_control_is_labelled_and_reachable_with_the_keyboard(page, stack, view):
    sign_in(page, stack.admin_token)
    page.goto(f"/console/{view}")
    expect(page.get_by_text(VIEWS[view])).to_be_visible()
    controls = page.evaluate(
        """() => [...document.querySelectorAll('a[href], button, input, select, textarea')]
                 .filter(e => e.offsetParent !== null && !e.disabled).map(e => e.outerHTML.slice(0, 80))"""
    )
    reached = set()
    page.locator("body").focus()
    for _ in range(len(controls) * 2 + 5):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("document.activeElement.outerHTML.slice(0, 80)"))
    assert set(controls) <= reached, set(controls) - reached
    assert axe_violations(page) == []


def test_the_schedules_and_the_venues_session(page, stack):
    """A schedule of the stack's controller, with its trigger, next slots and its last run once it has
    one (its link keeps the keyboard's focus as the table is read again); the header names the venue and
    its session state, and its tooltip the next close and the next open, in the order they come."""
    body = {"template": {"command": "health_check"}, "trigger": {"every": "5s"}, "startingDeadlineSeconds": 4}
    manifest = json.dumps(crd.SCHEDULE.manifest("console-every5s", body))
    stack.cluster.kubectl("apply", "-n", "mdops", "-f", "-", input=manifest)
    try:
        sign_in(page, stack.admin_token)
        venue = page.get_by_role("definition").filter(has_text="XHKG")
        expect(venue).to_be_visible()
        at = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d\d:\d\d)"
        expect(venue).to_have_attribute(
            "title", re.compile(rf"^XHKG [a-z_]+: (closes|opens) {at}, (opens|closes) {at}$")
        )
        times = re.findall(at, venue.get_attribute("title"))
        moments = [datetime.datetime.strptime(t, "%Y-%m-%d %H:%M:%S %z") for t in times]
        assert moments == sorted(moments), times
        page.get_by_role("link", name="Schedules").click()
        table = page.get_by_role("table")
        expect(table).to_contain_text("console-every5s")
        expect(table).to_contain_text("every 5s")
        expect(page.get_by_role("link", name=re.compile("^console-every5s-"))).to_be_visible(timeout=30_000)
        # Suspended, its last run stays the last: a new slot every 5 s would hide each result as it comes.
        suspend = json.dumps({"spec": {"suspend": True}})
        stack.cluster.kubectl(
            "patch", "rbs", "console-every5s", "-n", "mdops", "--type", "merge", "-p", suspend
        )
        expect(table).to_contain_text("suspended", timeout=30_000)
        expect(table).to_contain_text("success", timeout=30_000)
        # The table is read every 5 s: the last run's link keeps the keyboard's focus through the reads.
        last_run = page.get_by_role("link", name=re.compile("^console-every5s-"))
        last_run.focus()
        for _ in range(2):  # the next read, and the one after it: the next read has been drawn
            page.wait_for_event("request", lambda r: "/api/ops/schedules?" in r.url, timeout=15_000)
        expect(last_run).to_be_focused()
        # The last run's link reads it by its request id, which a slot's name is not.
        last_run.click()
        expect(page.get_by_role("heading", name=re.compile("schedule.console-every5s."))).to_be_visible()
    finally:
        stack.cluster.kubectl("delete", "rbs", "console-every5s", "-n", "mdops")


def executed(stack, **body) -> str:
    """The request id of a run through the API, a health_check unless ``body`` names another command (its
    answer comes once the run has ended)."""
    headers = {"Authorization": f"Bearer {stack.admin_token}"}
    answer = httpx.post(
        f"{stack.api_url}/api/ops/runbooks/execute",
        json={"command": "health_check", **body},
        headers=headers,
        timeout=120,
    )
    answer.raise_for_status()
    return answer.json()["runbook"]["request_id"]


def scroll_width(page: Page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


def runbook_name(stack, request_id: str) -> str:
    return next(r["name"] for r in history(stack) if r["request_id"] == request_id)


def test_signing_out_while_the_schedules_are_read_ends_their_reads(page, stack):
    """Signed out while a read of the schedules is on its way: no read follows it (a loop left running
    would read on with no token, and its 401 would reset the sign-in form every 5 s)."""
    sign_in(page, stack.admin_token)
    page.get_by_role("link", name="Schedules").click()
    expect(page.get_by_text(VIEWS["#/schedules"])).to_be_visible()
    schedules = re.compile(r"/api/ops/schedules\?")
    held = []
    page.route(schedules, lambda route: held.append(route))
    page.wait_for_event("request", lambda r: schedules.search(r.url))  # the next read, held unanswered
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("Signed out.")
    held[0].continue_()
    page.unroute(schedules)
    with pytest.raises(PlaywrightTimeout):  # longer than the view's 5 s between reads
        page.wait_for_event("request", lambda r: schedules.search(r.url), timeout=8_000)
    expect(page.get_by_role("status")).to_have_text("Signed out.")


def test_enter_in_the_who_filter_filters_at_once_on_the_same_page(page, stack):
    """Enter in the only text field of the filters would submit their form, which reloads the page: it
    reads the list with the filter instead."""
    sign_in(page, stack.admin_token)
    page.get_by_role("link", name="Runbooks").click()
    expect(page.get_by_role("status")).to_have_text("Live: updated as runs change.")
    page.evaluate("window.kept = true")  # gone if the page is loaded again
    who = page.get_by_label("Who")
    who.evaluate("(input) => { input.value = 'admin'; }")  # no input event: the read can only come from Enter
    with page.expect_request(lambda r: "requested_by=admin" in r.url, timeout=10_000):
        who.press("Enter")
    expect(page.get_by_role("table")).to_contain_text("that match the filters")
    expect(who).to_have_value("admin")
    assert page.evaluate("window.kept") is True


# Follows a run's live updates as a view does, with a view that fails to draw its first event.
FOLLOW_WITH_A_FAILING_VIEW = """async () => {
  const { follow } = await import("/console/js/live.js");
  window.followed = { events: [], states: [] };
  follow(
    (name) => {
      window.followed.events.push(name);
      if (name === "runbook") throw new Error("the view could not draw it");
    },
    (state, message) => window.followed.states.push(`${state}: ${message}`),
  );
}"""


def test_a_views_failure_on_a_live_update_is_not_taken_for_the_apis(page, stack, console_errors):
    """The view's own exception on an event is the page's error: the stream goes on (its next event comes
    on the same connection), and the API is not said to be unreachable."""
    sign_in(page, stack.admin_token)
    page.evaluate(FOLLOW_WITH_A_FAILING_VIEW)
    page.wait_for_function("() => window.followed.states.length > 0")
    rid = executed(stack, reason="a view that fails")
    page.wait_for_function("() => window.followed.events.includes('runbook')")
    stack.cluster.kubectl("delete", "rb", runbook_name(stack, rid), "-n", NAMESPACE)
    page.wait_for_function("() => window.followed.events.includes('deleted')")
    assert page.evaluate("window.followed.states") == ["live: "]
    assert any("the view could not draw it" in e for e in console_errors), console_errors
    console_errors[:] = [e for e in console_errors if "the view could not draw it" not in e]


def test_the_run_form_asks_again_for_its_fields_after_a_failure(page, stack, console_errors):
    sign_in(page, stack.admin_token)
    page.route("**/openapi.json", lambda route: route.abort("connectionrefused"), times=1)
    page.get_by_role("link", name="Run a command").click()
    failed = re.compile(r"^The API cannot be reached .*Asking again in 5 s\.$")
    expect(page.get_by_text(failed)).to_be_visible()
    expect(page.get_by_label("Command", exact=True)).to_be_visible()
    console_errors[:] = [e for e in console_errors if "ERR_CONNECTION_REFUSED" not in e]


def test_a_runs_page_says_the_offset_of_its_times_and_whole_seconds(page, stack):
    rid = executed(stack, reason="times")
    sign_in(page, stack.admin_token)
    page.goto(f"/console/#/runbooks/{rid}")
    run = page.get_by_role("region", name="Run")
    details = run.locator("dl.pairs").first
    expect(details).to_contain_text(re.compile(r"Created\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+08:00Started"))
    expect(details).to_contain_text(re.compile(r"Duration\d+ sMessage"))
    expect(run.get_by_role("table", name="Conditions")).to_contain_text("+08:00")
    expect(run.get_by_role("heading", name="Logs (times in +08:00)")).to_be_visible()


def test_the_lists_say_the_offset_of_their_times(page, stack):
    """As a run's page and the overview do: someone on shift elsewhere reads +08:00, not a zone to look up."""
    sign_in(page, stack.admin_token)
    page.goto("/console/#/runbooks")
    expect(page.get_by_role("table")).to_have_accessible_name(re.compile(r"\(times in \+08:00\)$"))
    page.goto("/console/#/schedules")
    expect(page.get_by_role("table")).to_have_accessible_name(
        re.compile(r"^\d+ schedules; times in \+08:00,")
    )


def test_an_api_hiccup_at_a_reload_keeps_the_token(page, stack, console_errors):
    """whoami answers 503, then the connection is refused (the API restarting): the page says so and asks
    again, the token kept; only a 401 signs out."""
    sign_in(page, stack.admin_token)
    answers = iter(["503", "refused"])

    def whoami(route):
        answer = next(answers, None)
        if answer == "503":
            route.fulfill(status=503, json={"detail": "the Runbook cache is not synced yet"})
        elif answer == "refused":
            route.abort("connectionrefused")
        else:
            route.continue_()

    page.route("**/api/ops/whoami", whoami)
    page.reload()
    expect(page.get_by_role("alert")).to_contain_text("Unavailable: the Runbook cache is not synced yet")
    expect(page.get_by_text("Signed in as admin")).to_be_visible(timeout=30_000)
    assert page.evaluate("sessionStorage.getItem('mdops.token')") == stack.admin_token
    console_errors[:] = [
        e for e in console_errors if not re.search("status of 503|ERR_CONNECTION_REFUSED", e)
    ]


def test_asking_again_for_whoami_keeps_the_focus_and_the_alert(page, stack, console_errors):
    """whoami cannot be reached for a while (the API restarting): the page asks again every 5 s, and at each
    try its Sign out keeps the keyboard's focus and its alert stays the same element (one made again is
    said again by a screen reader, every 5 s)."""
    sign_in(page, stack.admin_token)
    whoami = "**/api/ops/whoami"
    page.route(whoami, lambda route: route.abort("connectionrefused"))
    page.reload()
    expect(page.get_by_role("alert")).to_have_text(
        re.compile(r"^The API cannot be reached .*Asking again in 5 s")
    )
    page.get_by_role("button", name="Sign out").focus()
    page.get_by_role("alert").evaluate("(alert) => { window.kept = alert; }")
    for _ in range(2):  # the next try, and the one after it: the next try's failure has been shown
        page.wait_for_event("request", lambda r: r.url.endswith("/api/ops/whoami"), timeout=15_000)
    expect(page.get_by_role("button", name="Sign out")).to_be_focused()
    assert page.evaluate("window.kept.isConnected") is True
    page.unroute(whoami)
    expect(page.get_by_text("Signed in as admin")).to_be_visible(timeout=30_000)
    console_errors[:] = [e for e in console_errors if "ERR_CONNECTION_REFUSED" not in e]


@pytest.mark.parametrize("address", ["#/bogus", "#/runbooks?x=1", "#/overview/more", "#/runbooks/"])
def test_an_address_of_no_view_says_so(page, stack, address):
    sign_in(page, stack.admin_token)
    page.goto(f"/console/{address}")
    expect(page.get_by_role("heading", name="No such page")).to_be_visible()
    expect(page.get_by_role("heading", name="Overview")).to_be_hidden()
    page.get_by_role("link", name="Go to the overview").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()


# A header's words and buttons, each inside the header's dark band (white text outside it is invisible).
OUTSIDE_THE_HEADER = """() => {
  const band = document.querySelector("header").getBoundingClientRect();
  return [...document.querySelectorAll("header dt, header dd, header p, header span, header button")]
    .filter((e) => e.offsetParent !== null)
    .filter((e) => {
      const r = e.getBoundingClientRect();
      return r.left < band.left || r.right > band.right || r.top < band.top || r.bottom > band.bottom;
    })
    .map((e) => e.textContent);
}"""


def test_every_view_fits_a_phones_width(page, stack):
    """At 360 px: no view is wider than the screen, nor is any of its tables wider than its box (a narrow
    screen stacks each row's cells, each under its column's name, as a person reads them, where a box
    scrolled sideways squeezed the rows tall), a label is beside or above its control, the header wraps
    with its words inside its band, and every link of the navigation is on the screen. The tables are
    still tables for a screen reader."""
    rid = executed(stack, reason="narrow screen")
    page.set_viewport_size({"width": PHONE, "height": 740})
    sign_in(page, stack.admin_token)
    # A run's page as its event shows it (its conditions), which a finished run's says it does.
    views = {**VIEWS, f"#/runbooks/{rid}": re.compile("^This run has finished")}
    for view, ready in views.items():
        page.goto(f"/console/{view}")
        expect(page.get_by_text(ready)).to_be_visible()
        expect(page.get_by_label("Environment")).to_contain_text("XHKG")
        assert scroll_width(page) <= PHONE, (view, scroll_width(page))
        assert page.evaluate(SIDEWAYS) == [], view
        assert page.evaluate(APART) == [], view
        assert page.evaluate(OUTSIDE_THE_HEADER) == [], view
        # Of any impact: a table's box that scrolls sideways takes the keyboard; headings go down a level at
        # a time (a screen reader's list of them is the page's outline).
        assert axe_violations(page, ("minor", "moderate", "serious", "critical")) == [], view
        # On the screen, and a finger's target: at least 24 px high (WCAG's minimum), not a line of text.
        for link in page.get_by_role("navigation", name="Views").get_by_role("link").all():
            box = link.bounding_box()
            where = (view, link.text_content(), box)
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE, where
            assert box["height"] >= 24, where
    # The run's conditions: each a block of lines, its message at least half the screen wide.
    conditions = page.get_by_role("table", name="Conditions")
    expect(conditions.get_by_role("columnheader", name="Message")).to_have_count(1)
    message = conditions.get_by_role("row").filter(has_text="Succeeded").first.get_by_role("cell").nth(3)
    expect(message).to_contain_text("succeeded")
    assert message.bounding_box()["width"] >= PHONE / 2, message.bounding_box()
    # The column's name beside a cell is for the eye: a screen reader has it from the header row.
    expect(conditions.get_by_role("cell", name="Succeeded", exact=True).first).to_be_visible()


@pytest.mark.parametrize("reason", ["A" * 1024, "see https://example.com/" + "path/" * 150 + "?q=1"])
def test_a_long_reason_keeps_the_runs_table_and_page_in_the_window(page, stack, reason):
    rid = executed(stack, reason=reason)
    sign_in(page, stack.admin_token)
    page.get_by_role("link", name="Runbooks").click()
    expect(page.get_by_role("link", name=rid)).to_be_visible()
    assert scroll_width(page) <= 1200
    assert page.get_by_role("table").bounding_box()["width"] <= 1200
    page.get_by_role("link", name=rid).click()
    expect(page.get_by_role("region", name="Run").get_by_role("status")).to_have_text(
        "Status: success, exit code 0"
    )
    expect(page.get_by_role("region", name="Run")).to_contain_text(reason[:40])
    assert scroll_width(page) <= 1200


def applied(stack, *names: str) -> None:
    """Runbooks made with kubectl, as an operator or GitOps makes them: dry-run health_checks."""
    items = [models.manifest(n, {"command": "health_check", "dryRun": True}) for n in names]
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    stack.cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=body)


def test_the_runs_list_reaches_older_runs_and_keeps_the_focus_through_live_updates(page, stack):
    """50 runs at first, 50 more at a press, which keeps the keyboard's focus; the API filters; a focused
    row keeps the focus when a run changes the list."""
    tag = f"older-{uuid.uuid4().hex[:6]}"
    applied(stack, *(f"{tag}-{i:02d}" for i in range(52)))  # created in this order: -51 is the newest
    sign_in(page, stack.admin_token)
    page.get_by_role("link", name="Runbooks").click()
    expect(page.get_by_role("link", name=f"{tag}-51")).to_be_visible()
    expect(page.get_by_role("table")).to_contain_text("The newest 50 of ")
    expect(page.get_by_role("link", name=f"{tag}-00")).to_have_count(0)
    page.get_by_role("button", name="Show older runs").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("link", name=f"{tag}-00")).to_be_visible()
    # The keyboard's focus stays on the button, or, when it goes (the oldest run is shown), is on the first
    # run it added: never lost to the top of the page.
    expect(page.locator("main :focus")).to_have_count(1)

    page.get_by_label("Result").select_option("pending")  # the API answers: none waits by now
    page.get_by_label("Command").select_option("health_check")
    wait_until(lambda: page.locator("tbody tr").count() == 0 or None, 30, "no pending health_check")
    expect(page.get_by_role("table")).to_have_accessible_name("No runs that match the filters")
    page.get_by_label("Result").select_option("")
    expect(page.get_by_role("table")).to_contain_text("The newest 50 of ")
    page.get_by_role("button", name="Show older runs").click()
    expect(page.get_by_role("link", name=f"{tag}-00")).to_be_visible()

    page.get_by_role("link", name=f"{tag}-40").focus()
    reads: list[str] = []
    page.on("request", lambda r: "/api/ops/runbooks?" in r.url and reads.append(r.url.split("?")[1]))
    applied(stack, f"{tag}-new")
    expect(page.get_by_role("link", name=f"{tag}-new")).to_be_visible()
    assert page.evaluate("document.activeElement.textContent") == f"{tag}-40"
    # Live updates of the 100 runs shown: the new run made the newest 50 read again, once; its changes
    # since (queued, running, success) were drawn as their events show them, without a read.
    expect(page.locator("tbody tr", has=page.get_by_role("link", name=f"{tag}-new"))).to_contain_text(
        "success"
    )
    expect(page.get_by_role("link", name=f"{tag}-00")).to_be_visible()
    assert reads == ["limit=50&command=health_check"], reads


LIVE_LIST = """async () => {
  const { applied, merged } = await import("/console/js/runbooks.js");
  // Created a second apart, "a" first; by "admin".
  const run = (name, status = "success", command = "drill", requested_by = "admin") => {
    const created_at = `2026-12-01T08:00:0${name.charCodeAt(0) - 96}+08:00`;
    return { name, status, command, requested_by, created_at };
  };
  const shown = (runs) => runs.map((r) => `${r.name}:${r.status}`).join(" ");
  const names = (list) => list && [shown(list.runs), list.matched, list.more];
  const list = { runs: [run("c", "running"), run("b"), run("a")], matched: 9, more: true };
  const event = (r) => ["runbook", { runbook: r }];
  const older = { ...run("a", "failed"), name: "0", created_at: "2026-12-01T08:00:00+08:00" };
  const deleted = (name) => ["deleted", { name, request_id: name }];
  const apply = (events, status = "", command = "", who = "") => {
    const { list: after, read } = applied(list, events, { status, command, who });
    return [...names(after), read];
  };
  const page = (runs, matched, next_cursor) => ({ runbooks: runs.map((n) => run(n)), matched, next_cursor });
  return {
    shown: apply([event(run("c", "success")), event(run("b", "failed"))]),
    leaves: apply([event(run("c", "success"))], "running"),
    stays: apply([event(run("c", "running"))], "running"),
    unshown: apply([event(run("d", "queued")), event(run("c", "success"))]),
    filtered: apply([event(run("z", "running"))], "running"),
    otherCommand: apply([event(run("z", "running", "failover"))], "running", "drill"),
    // Runs not shown created before the oldest shown ("a", at 08:00:01): past the runs shown, whatever they
    // show, unless the result is filtered on (the count changes); one created within its second may be
    // before it.
    older: apply([event({ ...older, status: "running" }), event(older)]),
    olderFiltered: apply([event(older)], "failed"),
    sameSecond: apply([event({ ...older, created_at: "2026-12-01T00:00:01Z" })]),
    // A requester filtered on (a part of the name, in any case): a run not shown of another is none of it.
    otherRequester: apply([event(run("z", "queued", "drill", "alice"))], "", "", "Bob"),
    sameRequester: apply([event(run("z", "queued", "drill", "bobby"))], "", "", "Bob"),
    // Lowercase is the API's casefold for ASCII only: otherwise the list is read.
    notAscii: apply([event(run("z", "queued", "drill", "stra\u00dfe"))], "", "", "SS"),
    gone: apply([deleted("b")]),
    goneElsewhere: apply([deleted("z")]),
    newer: names(merged(list, page(["e", "d", "c"], 11, "cursor"), 4)),
    whole: names(merged(list, page(["d", "c", "a"], 3, null), 4)),
    beyond: names(merged(list, page(["g", "f", "e"], 12, "cursor"), 4)),
  };
}"""


def test_the_runs_lists_live_updates_are_drawn_without_a_read_where_they_say_all(page):
    """What the runs list does with the live updates: a run shown is drawn as its event says; a new run,
    a deletion of a run not shown, make the newest runs read again; with the result filtered on, a run not
    shown may now be anywhere in the list: it is read whole; a run of another command or requester than the
    one filtered on is none of the list's, nor, without a result filtered on, a run created before those
    shown (a backlog run through while the newest are shown read the list again at every change, every
    200 ms). The newest runs read are put above the rest."""
    page.goto("/console/")
    found = page.evaluate(LIVE_LIST)
    assert found == {
        "shown": ["c:success b:failed a:success", 9, True, "none"],
        "leaves": ["b:success a:success", 8, True, "none"],
        "stays": ["c:running b:success a:success", 9, True, "none"],
        "unshown": ["c:success b:success a:success", 9, True, "head"],
        "filtered": ["c:running b:success a:success", 9, True, "all"],
        "otherCommand": ["c:running b:success a:success", 9, True, "none"],
        "older": ["c:running b:success a:success", 9, True, "none"],
        "olderFiltered": ["c:running b:success a:success", 9, True, "all"],
        "sameSecond": ["c:running b:success a:success", 9, True, "head"],
        "otherRequester": ["c:running b:success a:success", 9, True, "none"],
        "sameRequester": ["c:running b:success a:success", 9, True, "head"],
        "notAscii": ["c:running b:success a:success", 9, True, "head"],
        "gone": ["c:running a:success", 8, True, "none"],
        "goneElsewhere": ["c:running b:success a:success", 9, True, "head"],
        "newer": ["e:success d:success c:success b:success", 11, True],
        "whole": ["d:success c:success a:success", 3, False],
        "beyond": None,
    }


def runs_list_on_a_stopped_clock(page: Page, stack) -> list[str]:
    """The runs list, live, in a page whose clock is stopped (its timers fire only as the test moves it:
    the header's own clock, every 10 s, is not what the test counts); the API requests it makes from now
    on (their paths under /api/ops/, filled in as they go)."""
    # The installed clock runs until it is paused, and cannot be paused at a time it has passed: it is
    # paused a minute on from where it was put, whatever this machine's load makes of the time between.
    installed = datetime.datetime.now(datetime.UTC)
    page.clock.install(time=installed)
    page.clock.pause_at(installed + datetime.timedelta(minutes=1))
    sign_in(page, stack.admin_token)
    page.get_by_role("link", name="Runbooks").click()
    expect(page.get_by_text("Live: updated as runs change.")).to_be_visible()
    reads: list[str] = []
    page.on("request", lambda r: "/api/ops/" in r.url and reads.append(r.url.split("/api/ops/")[1]))
    return reads


def test_a_change_of_a_run_reads_the_runs_list_not_the_status(page, stack):
    """Status is a pass over every Runbook the API holds (tens of thousands), recomputed at each change of
    any of them: the runs list, read again at every change, does not read it too; the header reads it on
    its own clock."""
    reads = runs_list_on_a_stopped_clock(page, stack)
    tag = f"changes-{uuid.uuid4().hex[:6]}"
    applied(stack, tag)  # a dry run, which reports no state of the environment
    link = page.get_by_role("link", name=tag)
    # The list is read 200 ms after a change (one read for a burst of them): 45 such steps stay short of
    # the header's 10 s.
    for _ in range(45):
        page.clock.run_for(200)
        if link.is_visible():
            break
    expect(link).to_be_visible(timeout=1)
    assert [r for r in reads if r.startswith("runbooks?")] and not [r for r in reads if r == "status"], reads


def test_runs_that_report_the_environments_state_have_the_header_read_once_for_them(page, stack):
    """Runs that report a state change the header: it reads the status again 2 s after the first, once for
    all of them (in a burst, the list's read at each change read the status too)."""
    reads = runs_list_on_a_stopped_clock(page, stack)
    runs = [executed(stack, reason=f"reports a state {n}") for n in range(2)]
    headers = {"Authorization": f"Bearer {stack.admin_token}"}
    for rid in runs:
        answer = httpx.get(f"{stack.api_url}/api/ops/runbooks/{rid}", headers=headers).json()
        assert answer["state"]["environment_mode"], answer  # the stack's scripts report the environment
    status = lambda: [r for r in reads if r == "status"]  # noqa: E731
    for _ in range(9):  # 1.8 s: the list is read at each step that follows a change
        page.clock.run_for(200)
    expect(page.get_by_role("link", name=runs[-1])).to_be_visible()
    assert [r for r in reads if r.startswith("runbooks?")] and not status(), reads
    for _ in range(20):
        page.clock.run_for(200)
        if status():
            break
    assert len(status()) == 1, reads


def test_a_read_of_the_runs_list_keeps_the_rows_that_did_not_change(page, stack):
    """Each change of any run reads the list again: a run's row that shows the same stays the same element
    (a click on its link is not lost to a row drawn anew under the pointer, nor a selection in it), and a new
    run's row is put above it."""
    rid = executed(stack, reason="a row that stays")
    sign_in(page, stack.admin_token)
    page.get_by_role("link", name="Runbooks").click()
    link = page.get_by_role("link", name=rid)
    expect(link).to_be_visible()
    link.evaluate("(a) => { window.kept = a.closest('tr'); }")
    newer = executed(stack, reason="a newer run")
    newer_row = page.locator("tbody tr", has=page.get_by_role("link", name=newer))
    expect(newer_row).to_contain_text("success")  # the list read again after the newer run's end
    expect(page.locator("tbody tr").first).to_contain_text(newer)
    assert page.evaluate("window.kept.isConnected") is True
    link.click()
    expect(page.get_by_role("region", name="Run").get_by_role("status")).to_have_text(
        "Status: success, exit code 0"
    )


def test_a_finished_runs_page_says_so_and_stops_following(page, stack):
    rid = executed(stack, reason="finished")
    sign_in(page, stack.admin_token)
    stream = lambda request: "/api/ops/events" in request.url  # noqa: E731
    with page.expect_event("requestfailed", stream):  # the page's fetch of the stream, aborted
        page.goto(f"/console/#/runbooks/{rid}")
        run = page.get_by_role("region", name="Run")
        expect(run.get_by_role("status")).to_have_text("Status: success, exit code 0")
        expect(run.get_by_text("This run has finished: it is not followed any more.")).to_be_visible()
    expect(run.get_by_text("Live: updated as the run goes on.")).to_be_hidden()


def test_a_runs_page_passes_axe_too(page, stack):
    sign_in(page, stack.admin_token)
    page.goto(f"/console/#/runbooks/{history(stack)[0]['request_id']}")
    expect(page.get_by_role("table", name="Conditions")).to_be_visible()
    assert axe_violations(page) == []


def test_the_overview_shows_stale_badges_once_prometheus_is_stopped(page, stack, console_errors, tmp_path):
    """Last in this module: it stops the stack's Prometheus (its picture first: the runs above are in it,
    and a failover of its own, for the failover latency)."""
    executed(stack, command="failover", reason="the overview's failover latency")
    sign_in(page, stack.admin_token)
    page.get_by_label("Range").select_option("15 min")
    expect(page.get_by_role("figure", name="Failover latency, last 15 min")).to_be_visible()
    expect(tile(page, "Coverage").locator(".value")).to_have_text("100.00 %")
    expect(tile(page, "Failover latency").get_by_text("Stale", exact=True)).to_be_hidden()
    screenshot(page, "overview", tmp_path)
    stack.supervisor.hold("prometheus")
    for name in ("Coverage", "Throughput", "Failover latency", "Consumer backlog", "Last runbook exit code"):
        expect(tile(page, name).get_by_text("Stale", exact=True)).to_be_visible()
        expect(tile(page, name)).to_contain_text("prometheus unreachable")
    expect(tile(page, "Coverage").locator(".value")).to_have_text(NOTHING)
    expect(page.get_by_role("figure", name="Throughput")).to_contain_text("prometheus unreachable")
    # the charts' 503 (Prometheus unreachable), shown in words above
    console_errors[:] = [e for e in console_errors if "status of 503" not in e]
