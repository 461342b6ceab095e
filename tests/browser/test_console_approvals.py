"""Four eyes in the Ops Console, in Debian's chromium against a stack of its own whose namespace has a
RunbookPolicy that holds every drill for one approval (a failback for two): the admin asks for runs
(through the REST API, as the run form or mdops would), and bob (runbooks:approve) approves or rejects
them on the run's page, or the admin cancels one. What counts is what the drill's script itself wrote (its
witness file), and the RunbookApprovals (and the Runbooks' spec.cancel) the API server holds."""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import secrets
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from playwright.sync_api import Locator, Page, expect

from devcluster.private import write_private
from devcluster.processes import wait_until
from devcluster.stack import NAMESPACE
from runbooks import approval, crd
from runbooks.contract import PERMISSIONS, parse_time
from tests.browser.conftest import PHONE, SIDEWAYS, api_stopped, axe_violations, held_requests, sign_in
from tests.conftest import scripted
from tests.runbook_client import reference_scripts

BOB = "bob-" + secrets.token_urlsafe(16)  # runbooks:approve
READER = "reader-" + secrets.token_urlsafe(16)  # status:read only
# A token with the longest name a token may have, and every permission.
LONG = "long-" + secrets.token_urlsafe(16)
LONG_NAME = "shift-lead-" + "n" * 242  # 253 characters, none a place to break a line
FOUR_EYES = crd.POLICY.manifest(
    "drills-four-eyes",
    {
        "rules": [
            {"name": "drill", "match": {"commands": ["drill"]}, "approvals": {"required": 1}},
            {"name": "failback", "match": {"commands": ["failback"]}, "approvals": {"required": 2}},
        ]
    },
)
HONG_KONG = datetime.timezone(datetime.timedelta(hours=8))  # the stack's zone, as the page shows its times
WAITING = re.compile(r"This run waits for approvals: waiting for 0 of 1 approvals until ")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """The stack's scripts (a drill that writes its request id to the witness file) and its tokens."""
    folder = tmp_path_factory.mktemp("approvals")
    reference_scripts(folder / "scripts", drill='echo "$MDOPS_REQUEST_ID" >> "$FILES/witness"\n')
    tokens = [
        {"name": "bob", "token": BOB, "permissions": ["runbooks:approve", "status:read"]},
        {"name": "reader", "token": READER, "permissions": ["status:read"]},
        {"name": LONG_NAME, "token": LONG, "permissions": sorted(PERMISSIONS)},
    ]
    write_private(folder / "tokens.yaml", yaml.safe_dump({"tokens": tokens}))
    return folder


@pytest.fixture(scope="module")
def stack_options(files) -> dict:
    # MDOPS_API_EXECUTE_WAIT_SECONDS=0: execute answers 202 at once, while the gate holds the drill; a
    # heartbeat every second: the console's watchdog drops a silent stream after 3 s
    return scripted(
        files,
        MDOPS_API_TOKENS_FILE=str(files / "tokens.yaml"),
        MDOPS_API_EXECUTE_WAIT_SECONDS="0",
        MDOPS_API_EVENTS_HEARTBEAT_SECONDS="1",
    )


@pytest.fixture(scope="module")
def four_eyes(stack) -> None:
    stack.cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(FOUR_EYES))


def held_run(
    stack,
    command: str = "drill",
    rid: str | None = None,
    reason: str = "four eyes in the console",
    token: str | None = None,
) -> str:
    """A run the admin (or the holder of `token`) asks for, which the gate holds for approvals: its id."""
    rid = rid or f"{command}-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {token or stack.admin_token}"}
    body = {"command": command, "request_id": rid, "reason": reason}
    answer = httpx.post(f"{stack.api_url}/api/ops/runbooks/execute", json=body, headers=headers, timeout=30)
    assert answer.status_code == 202, answer.text
    return rid


def read(stack, rid: str) -> bool:
    """Whether the API has a run with this request id."""
    headers = {"Authorization": f"Bearer {stack.admin_token}"}
    answer = httpx.get(f"{stack.api_url}/api/ops/runbooks/{rid}", headers=headers, timeout=30)
    assert answer.status_code in (200, 404), answer.text
    return answer.status_code == 200


def witnessed(files: Path) -> list[str]:
    witness = files / "witness"
    return witness.read_text().split() if witness.exists() else []


def decisions(stack, rid: str) -> list[dict]:
    listed = stack.cluster.kubectl(
        "get", approval.PLURAL, "-n", NAMESPACE, "--field-selector", f"spec.requestId={rid}", "-o", "json"
    )
    return [item["spec"] for item in json.loads(listed.stdout)["items"]]


def run_page(page: Page, token: str, rid: str):
    sign_in(page, token)
    page.goto(f"/console/#/runbooks/{rid}")
    return page.get_by_role("region", name="Run")


def held_page(page: Page, token: str, rid: str, waiting: re.Pattern = WAITING) -> tuple[Locator, Locator]:
    """The page of a run held for approvals, once it says so: its Run region and its Approval box."""
    run = run_page(page, token, rid)
    box = run.get_by_role("region", name="Approval")
    expect(box.get_by_text(waiting)).to_be_visible()
    return run, box


@contextlib.contextmanager
def streams_lost(page: Page, stack, run: Locator):
    """The page's live updates stopped for good while the run is shown, as behind a proxy that does not pass
    them: the API hangs a moment (its watchdog drops the stream), and the stream is answered 404 since."""
    streams = re.compile(r"/api/ops/events")
    page.route(
        streams, lambda route: route.fulfill(status=404, json={"detail": "no stream behind this proxy"})
    )
    try:
        with api_stopped(stack):
            expect(
                run.get_by_text(
                    "Live updates stopped: Not found: no stream behind this proxy. "
                    "The run is not updated any more."
                )
            ).to_be_visible()
        yield
    finally:
        page.unroute(streams)


def runbook(stack, rid: str) -> dict:
    """The Runbook as the API server holds it (named after its request id)."""
    return json.loads(stack.cluster.kubectl("get", "rb", rid, "-n", NAMESPACE, "-o", "json").stdout)


def decided(stack, token: str, rid: str, verb: str) -> None:
    """A decision made elsewhere (mdops, another tab): through the REST API."""
    headers = {"Authorization": f"Bearer {token}"}
    made = httpx.post(f"{stack.api_url}/api/ops/runbooks/{rid}/{verb}", headers=headers, timeout=30)
    assert made.status_code == 201, made.text


def test_another_person_approves_a_held_run_and_it_runs_once(page, stack, files, four_eyes):
    rid = held_run(stack)
    run, section = held_page(page, BOB, rid)
    expect(run.get_by_role("status").first).to_have_text("Status: queued")
    # Its deadline as the page's other times: in the exchange's zone with its offset, whole seconds.
    deadline = re.compile(r"until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+08:00\.$")
    expect(section.get_by_text(WAITING)).to_have_text(deadline)
    assert rid not in witnessed(files)

    section.get_by_label("Comment (optional)").fill("drill checked with the desk")
    approve = section.get_by_role("button", name="Approve")
    with held_requests(page, f"**/{rid}/approve") as approving:
        with page.expect_request(f"**/{rid}/approve") as first:
            approve.dblclick()
        # On its way: the buttons say so, and the keyboard stays on the one pressed; a press does nothing.
        expect(approve).to_have_attribute("aria-disabled", "true")
        expect(section.get_by_role("button", name="Reject")).to_have_attribute("aria-disabled", "true")
        expect(approve).to_be_focused()
        page.keyboard.press("Enter")
        expect(approve).to_be_focused()
    expect(section.get_by_role("status")).to_have_text("Approved by you (bob).")
    expect(section.get_by_role("status")).to_be_focused()
    expect(run.get_by_role("status").first).to_have_text("Status: success, exit code 0")
    expect(section.get_by_role("button")).to_have_count(0)  # the run passed the gate: nothing to decide
    assert witnessed(files).count(rid) == 1
    assert len(approving) == 1, approving  # a double click and a press more make one decision
    # It names the run shown, by its creation time and uid as the page had them; the API names its Runbook
    # by uid.
    sent = json.loads(first.value.post_data)
    assert parse_time(sent.pop("created_at")) == parse_time(
        runbook(stack, rid)["metadata"]["creationTimestamp"]
    )
    assert sent.pop("uid") == runbook(stack, rid)["metadata"]["uid"]
    assert sent == {"comment": "drill checked with the desk"}
    assert decisions(stack, rid) == [
        {
            "requestId": rid,
            "decision": "Approve",
            "approver": "bob",
            "requester": "admin",
            "comment": "drill checked with the desk",
            "runbookUid": runbook(stack, rid)["metadata"]["uid"],
        }
    ]


def test_a_rejection_asks_first_and_ends_the_run_failed(page, stack, files, four_eyes):
    rid = held_run(stack)
    run, section = held_page(page, BOB, rid)

    section.get_by_role("button", name="Reject").click()
    dialog = page.get_by_role("dialog", name="Reject this run?")
    expect(dialog).to_contain_text(f"Run {rid} ends failed, Rejected")
    expect(dialog.get_by_role("button", name="Do not reject")).to_be_focused()
    page.keyboard.press("Enter")  # Do not reject: nothing is decided
    expect(dialog).to_be_hidden()
    assert decisions(stack, rid) == []

    # With the keyboard only: the focus is back on Reject; the comment, Approve, Reject, then the question.
    expect(section.get_by_role("button", name="Reject")).to_be_focused()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    expect(section.get_by_label("Comment (optional)")).to_be_focused()
    page.keyboard.type("not during the auction")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(dialog.get_by_role("button", name="Do not reject")).to_be_focused()
    page.keyboard.press("Escape")  # as Do not reject: the focus back on Reject, the comment kept
    expect(dialog).to_be_hidden()
    expect(section.get_by_role("button", name="Reject")).to_be_focused()
    assert decisions(stack, rid) == []
    page.keyboard.press("Enter")
    expect(dialog.get_by_role("button", name="Do not reject")).to_be_focused()
    page.keyboard.press("Shift+Tab")
    expect(dialog.get_by_role("button", name="Reject the run")).to_be_focused()
    page.keyboard.press("Enter")
    expect(section.get_by_role("status")).to_have_text("Rejected by you (bob).")
    expect(section.get_by_role("status")).to_be_focused()
    expect(run.get_by_role("status").first).to_have_text("Status: failed")
    expect(run.get_by_role("table", name="Conditions")).to_contain_text("Rejected")
    expect(run.get_by_text("rejected by bob: not during the auction").first).to_be_visible()
    assert rid not in witnessed(files)


def test_the_requester_is_told_why_approve_is_not_offered(page, stack, files, four_eyes):
    rid = held_run(stack)
    _, section = held_page(page, stack.admin_token, rid)
    expect(section.get_by_text("You asked for this run: another person approves it.")).to_be_visible()
    expect(section.get_by_role("button", name="Approve")).to_have_count(0)
    expect(section.get_by_role("button", name="Reject")).to_be_visible()  # withdrawing one's own request
    assert axe_violations(page) == []


def test_the_runs_list_says_which_runs_wait_for_approvals(page, stack, four_eyes):
    """The person on shift finds in the list what waits for them: a held run's row says why it waits."""
    rid = held_run(stack)
    sign_in(page, BOB)
    page.goto("/console/#/runbooks")
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=rid))
    expect(row.get_by_role("cell").nth(1)).to_have_text(
        re.compile(r"^queuedwaiting for 0 of 1 approvals until ")
    )


def test_a_token_without_runbooks_approve_sees_no_decision(page, stack, files, four_eyes):
    rid = held_run(stack)
    run = run_page(page, READER, rid)
    expect(run.get_by_role("table", name="Conditions")).to_contain_text("AwaitingApproval")
    expect(run.get_by_role("region", name="Approval")).to_have_count(0)
    assert page.get_by_role("button", name=re.compile("Approve|Reject")).count() == 0


def test_the_apis_refusal_is_shown_in_its_words(page, stack, four_eyes):
    """Bob approved the failback elsewhere (another tab, mdops), which waits for a second person: the page,
    loaded before, shows the API's 409 when he presses Approve again, and the run waits on."""
    rid = held_run(stack, "failback")
    run, section = held_page(page, BOB, rid, re.compile("waiting for 0 of 2 approvals until"))
    decided(stack, BOB, rid, "approve")
    expect(section.get_by_text(re.compile(r"waiting for 1 of 2 approvals \(bob\) until"))).to_be_visible()

    section.get_by_role("button", name="Approve").click()
    expect(section.get_by_role("status")).to_have_text(
        re.compile(f"^Conflict: 'bob' has already decided on run '{rid}' .*a decision is not changed$")
    )
    expect(run.get_by_role("status").first).to_have_text("Status: queued")
    assert [d["decision"] for d in decisions(stack, rid)] == ["Approve"]


def test_a_run_that_goes_on_while_the_rejection_is_asked_closes_the_question(page, stack, four_eyes):
    """Bob is asked to confirm his rejection when the requester withdraws the run (mdops, another tab):
    the question goes, the page says that nothing was decided here, and the page answers the keyboard."""
    rid = held_run(stack)
    run, section = held_page(page, BOB, rid)
    section.get_by_role("button", name="Reject").click()
    dialog = page.get_by_role("dialog", name="Reject this run?")
    expect(dialog).to_be_visible()
    decided(stack, stack.admin_token, rid, "reject")

    expect(run.get_by_role("status").first).to_have_text("Status: failed")
    expect(dialog).to_be_hidden()
    expect(section.get_by_role("status")).to_have_text(
        "The run no longer waits for approvals: nothing was decided here."
    )
    expect(section.get_by_role("status")).to_be_focused()
    page.get_by_role("link", name="← All runs").click()  # the page is not left inert under a lost dialog
    expect(page).to_have_url(re.compile("#/runbooks$"))
    assert [d["approver"] for d in decisions(stack, rid)] == ["admin"]


def test_a_run_made_again_while_the_rejection_is_asked_closes_the_question(page, stack, four_eyes):
    """Bob is asked to confirm his rejection when the admin deletes the drill and asks for it again with its
    request id, for another reason: the question, asked about the run he saw, goes; the page shows the new
    run and says that nothing was decided, so that a press of Enter does not reject a run he never read."""
    rid = held_run(stack)
    run, section = held_page(page, BOB, rid)
    section.get_by_role("button", name="Reject").click()
    dialog = page.get_by_role("dialog", name="Reject this run?")
    expect(dialog).to_be_visible()
    stack.cluster.kubectl("delete", "rb", rid, "-n", NAMESPACE)
    expect(run.get_by_text("This Runbook was deleted.")).to_be_visible()
    held_run(stack, rid=rid, reason="second thoughts")

    expect(run.get_by_text("second thoughts")).to_be_visible()
    expect(dialog).to_be_hidden()
    expect(section.get_by_role("status")).to_have_text(
        re.compile(r"^Nothing was decided\. This is a new run: ")
    )
    expect(section.get_by_role("status")).to_be_focused()
    assert decisions(stack, rid) == []


def test_a_runbook_made_again_with_the_request_id_is_decided_on_anew(page, stack, four_eyes):
    """Bob approved a failback (it waits for a second person); the admin deletes it and asks again with the
    same request id: a new Runbook, on which Bob's approval does not count. His page, open all along,
    offers Approve again and says that the run is a new one, not his answer on the old one."""
    rid = held_run(stack, "failback")
    run, section = held_page(page, BOB, rid, re.compile("waiting for 0 of 2 approvals until"))
    section.get_by_role("button", name="Approve").click()
    expect(section.get_by_role("status")).to_have_text("Approved by you (bob).")
    expect(section.get_by_text(re.compile(r"waiting for 1 of 2 approvals \(bob\)"))).to_be_visible()

    stack.cluster.kubectl("delete", "rb", rid, "-n", NAMESPACE)
    expect(run.get_by_text("This Runbook was deleted.")).to_be_visible()
    held_run(stack, "failback", rid)
    expect(section.get_by_text(re.compile("waiting for 0 of 2 approvals until"))).to_be_visible()
    expect(section.get_by_role("button", name="Approve")).to_be_visible()
    expect(section.get_by_role("status")).to_have_text(
        re.compile(f"^This is a new run: {rid} was asked for again \\(created .*\\) after the run this page ")
    )


def test_a_page_that_missed_the_run_made_again_is_refused_then_shows_it_and_decides_on_it(
    page, stack, files, four_eyes
):
    """Bob's page shows a held drill when its live updates stop (the API hangs a moment: the watchdog drops
    the stream; then it cannot be opened again, as behind a proxy that does not pass it). Meanwhile the admin
    deletes the drill and asks for it again with its request id, for another reason. Approve on the page he
    still sees is refused and nothing is recorded; the page then shows the run as it is now (its reason, its
    creation time) and says that it is a new one, so that his second press decides on what he sees: that
    drill runs, once."""
    rid = held_run(stack)
    first = runbook(stack, rid)["metadata"]
    run, section = held_page(page, BOB, rid)
    expect(run.get_by_text("four eyes in the console")).to_be_visible()
    with streams_lost(page, stack, run):
        stack.cluster.kubectl("delete", "rb", rid, "-n", NAMESPACE)
        later = parse_time(first["creationTimestamp"]) + datetime.timedelta(seconds=1)  # in whole seconds
        wait_until(lambda: datetime.datetime.now(datetime.UTC) >= later, 5, "a second after the first run's")
        wait_until(lambda: not read(stack, rid), 30, "the API to see the first run deleted")
        held_run(stack, rid=rid, reason="second thoughts")
        again = runbook(stack, rid)["metadata"]
        section.get_by_role("button", name="Approve").click()
        made = f"{parse_time(again['creationTimestamp']).astimezone(HONG_KONG):%Y-%m-%d %H:%M:%S} +08:00"
        expect(section.get_by_role("status")).to_have_text(
            f"Nothing was decided. This is a new run: {rid} was asked for again (created {made}) after the "
            "run this page showed was deleted. Look at it before you decide: decisions on that one do not "
            "count for it."
        )
        assert decisions(stack, rid) == []
        expect(run.get_by_text("second thoughts")).to_be_visible()
        expect(run.get_by_text("four eyes in the console")).to_have_count(0)
        expect(section.get_by_text(WAITING)).to_be_visible()

        section.get_by_role("button", name="Approve").click()
        expect(section.get_by_role("status")).to_have_text("Approved by you (bob).")
    assert [(d["decision"], d["runbookUid"]) for d in decisions(stack, rid)] == [("Approve", again["uid"])]
    wait_until(lambda: rid in witnessed(files), 60, "the drill to run")
    assert witnessed(files).count(rid) == 1


def test_a_page_that_missed_the_run_deleted_says_so_when_its_decision_is_refused(page, stack, four_eyes):
    """Bob's page shows a held drill whose live updates cannot be had any more (as above) when the admin
    deletes it: Approve is answered 404 in the API's words, and the page says that the run was deleted
    instead of showing it still waiting."""
    rid = held_run(stack)
    run, section = held_page(page, BOB, rid)
    with streams_lost(page, stack, run):
        stack.cluster.kubectl("delete", "rb", rid, "-n", NAMESPACE)
        wait_until(lambda: not read(stack, rid), 30, "the API to see the run deleted")
        section.get_by_role("button", name="Approve").click()
        expect(section.get_by_role("status")).to_have_text(f"Not found: no runbook with request_id '{rid}'")
        expect(run.get_by_role("status").first).to_have_text("This Runbook was deleted.")
    assert decisions(stack, rid) == []


def test_a_held_run_is_cancelled_after_a_question_with_the_keyboard_and_never_runs(
    page, stack, files, four_eyes
):
    """The admin (who may run drills) cancels a drill the gate holds: the question's "Keep the run" has the
    focus, and keeps it; then, with the keyboard only, a reason and "Cancel the run". The Runbook has
    spec.cancel in the admin's name; the run ends failed, Cancelled, its script never run."""
    rid = held_run(stack)
    run, _ = held_page(page, stack.admin_token, rid)
    section = run.get_by_role("region", name="Cancel")
    section.get_by_role("button", name="Cancel run").click()
    dialog = page.get_by_role("dialog", name="Cancel this run?")
    expect(dialog).to_contain_text(
        f"Run {rid} ends failed, Cancelled: if it has not started, it never starts"
    )
    expect(dialog.get_by_role("button", name="Keep the run")).to_be_focused()
    assert axe_violations(page) == []
    page.keyboard.press("Enter")  # kept: nothing is cancelled
    expect(dialog).to_be_hidden()
    assert "cancel" not in runbook(stack, rid)["spec"]

    expect(section.get_by_role("button", name="Cancel run")).to_be_focused()
    page.keyboard.press("Enter")
    expect(dialog.get_by_role("button", name="Keep the run")).to_be_focused()
    page.keyboard.press("Shift+Tab")
    expect(dialog.get_by_role("button", name="Cancel the run")).to_be_focused()
    page.keyboard.press("Shift+Tab")
    expect(dialog.get_by_label("Reason (optional)")).to_be_focused()
    page.keyboard.type("the desk says no drill today")
    page.keyboard.press("Tab")
    expect(dialog.get_by_role("button", name="Cancel the run")).to_be_focused()
    ask = section.get_by_role("button", name="Cancel run")
    with held_requests(page, f"**/{rid}/cancel") as cancelling:
        with page.expect_request(f"**/{rid}/cancel") as first:
            page.keyboard.press("Enter")
        # On its way: the keyboard is back on Cancel run, which says it is unavailable; a press asks nothing.
        expect(ask).to_have_attribute("aria-disabled", "true")
        expect(ask).to_be_focused()
        page.keyboard.press("Enter")
        expect(dialog).to_be_hidden()
    answer = section.get_by_role("status")
    expect(answer).to_have_text(
        "Cancelled by you (admin): the run stops, or never starts; this page shows its end."
    )
    expect(answer).to_be_focused()
    expect(section.get_by_role("button")).to_have_count(0)  # cancelled: nothing more to press
    assert runbook(stack, rid)["spec"]["cancel"] == {
        "requestedBy": "admin",
        "reason": "the desk says no drill today",
    }
    assert json.loads(first.value.post_data) == {  # it names the run shown, by its uid
        "uid": runbook(stack, rid)["metadata"]["uid"],
        "reason": "the desk says no drill today",
    }
    assert len(cancelling) == 1, cancelling
    expect(run.get_by_text("by admin: the desk says no drill today")).to_be_visible()
    assert axe_violations(page) == []
    expect(run.get_by_role("status").first).to_have_text("Status: failed")
    expect(run.get_by_role("table", name="Conditions")).to_contain_text("Cancelled")
    assert rid not in witnessed(files)


def test_cancel_is_offered_only_to_a_token_that_may_run_the_command(page, stack, files, four_eyes):
    rid = held_run(stack)
    for token in (READER, BOB):  # status:read only; runbooks:approve, no execute permission
        run = run_page(page, token, rid)
        expect(run.get_by_role("table", name="Conditions")).to_contain_text("AwaitingApproval")
        expect(run.get_by_role("region", name="Cancel")).to_have_count(0)
        expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
        page.get_by_role("button", name="Sign out").click()


# Whether the page scrolls sideways as a whole (its tables may, each in its own box).
PAGE_SCROLLS = "document.scrollingElement.scrollWidth > document.scrollingElement.clientWidth"


def test_the_longest_names_fit_a_phones_width(page, stack, four_eyes):
    """At 360 px, the longest names the API takes (a token's, 253 characters without a space; a request id,
    128; an environment's mode and profile, 63) widen neither the header nor a view: neither the page nor a
    table scrolls sideways. What is cut short in the header is whole for a screen reader, in a tooltip, and
    once tapped (a phone has no pointer to hover with)."""
    rid = "held-" + "r" * 115 + uuid.uuid4().hex[:8]
    held_run(stack, rid=rid, token=LONG)
    names = {"environment_mode": "m" * 63, "active_profile": "p" * 63}

    def long_names(route):  # the stack's scripts report short ones: the status as if they were long
        answer = route.fetch()
        route.fulfill(response=answer, json={**answer.json(), **names})

    page.route("**/api/ops/status", long_names)
    page.set_viewport_size({"width": PHONE, "height": 740})
    sign_in(page, LONG)
    environment = page.get_by_label("Environment")
    views = {
        "#/overview": page.get_by_text(re.compile("^Last updated at")),
        "#/runbooks": page.get_by_role("link", name=rid),
        f"#/runbooks/{rid}": page.get_by_role("region", name="Approval").get_by_text(WAITING),
        "#/schedules": page.get_by_text(re.compile("refreshed every 5 s")),
        "#/run": page.get_by_text("Plan runs the command with dry_run"),
    }
    for view, ready in views.items():
        page.goto(f"/console/{view}")
        expect(ready).to_be_visible()
        expect(environment).to_contain_text(names["environment_mode"])
        assert not page.evaluate(PAGE_SCROLLS), view
        assert page.evaluate(SIDEWAYS) == [], view
        assert axe_violations(page) == [], view
    # A phone has no pointer to hover with for the tooltip: a name cut short is tapped (or reached with the
    # keyboard), and shown whole, in the window, while it has the focus; one that fits takes no focus.
    whole = f"(e) => e.scrollWidth <= e.clientWidth && e.getBoundingClientRect().right <= {PHONE}"
    for name in (f"Signed in as {LONG_NAME}", names["environment_mode"], names["active_profile"]):
        shown = page.locator("header").get_by_text(name, exact=True)
        expect(shown).to_have_attribute("title", name)
        assert not shown.evaluate(whole), name  # cut short
        shown.click()
        expect(shown).to_be_focused()
        assert shown.evaluate(whole), name
        assert not page.evaluate(PAGE_SCROLLS)
    page.locator("main").click()
    venue = page.get_by_label("Environment").get_by_role("definition").filter(has_text="XHKG")
    expect(venue).not_to_have_attribute("tabindex", "0")
    # The run's page: its requester, and the question that names the run, in the window too.
    page.goto(f"/console/#/runbooks/{rid}")
    expect(page.get_by_role("region", name="Run").get_by_text(LONG_NAME).first).to_be_visible()
    page.get_by_role("button", name="Reject").click()
    dialog = page.get_by_role("dialog", name="Reject this run?")
    expect(dialog).to_contain_text(rid)
    assert dialog.evaluate(
        f"(d) => d.scrollWidth <= d.clientWidth && d.getBoundingClientRect().right <= {PHONE}"
    )
    dialog.get_by_role("button", name="Do not reject").click()
    assert not page.evaluate(PAGE_SCROLLS)
