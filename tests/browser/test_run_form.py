"""The run form after the API's 5xx, in Debian's chromium against a local stack whose only script is this
module's `restart` (made not executable, or failing, by a test, and put back after it). A run whose script
could not execute has ended (exit code 125, the API's 500, kept under its request id): its panel stays, and
the next press is a new request. A 5xx that says nothing of the run (a gateway's 502) is retried with the same
request id, so that it never runs twice. "Run for real" is offered once a plan has finished, and its
confirmation says when the plan did not succeed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import EXECUTE, execute_requests, sign_in
from tests.runbook_client import write_script

RESTART = "echo 'INFO: restarted'\n"


@pytest.fixture(scope="module")
def scripts(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("run-form")
    write_script(folder, "restart", RESTART)
    return folder


@pytest.fixture(scope="module")
def stack_options(scripts) -> dict:
    return {"scripts": scripts}


@pytest.fixture
def restart(scripts) -> Path:
    """This module's `restart` script, as it was again after the test (whatever the test made it)."""
    yield scripts / "restart"
    write_script(scripts, "restart", RESTART)


def request_ids(sent: list[str]) -> list[str]:
    return [json.loads(body)["request_id"] for body in sent]


def restart_form(page: Page) -> None:
    page.goto("/console/#/run")
    page.get_by_label("Command", exact=True).select_option("restart")
    page.get_by_label("Reason").fill("browser test")


def plan_restart(page: Page, outcome: str = "success, exit code 0") -> None:
    restart_form(page)
    page.get_by_role("button", name="Plan (dry run)").click()
    expect(page.get_by_role("region", name="Run").get_by_role("status")).to_have_text(f"Status: {outcome}")


def run_for_real(page: Page) -> None:
    page.get_by_role("button", name="Run for real").click()
    dialog = page.get_by_role("dialog", name="Run for real?")
    dialog.get_by_role("button", name="Run restart for real").click()


def test_a_run_that_could_not_execute_stays_shown_and_the_next_press_is_a_new_request(
    page, stack, restart, console_errors
):
    sign_in(page, stack.admin_token)
    plan_restart(page)
    sent = execute_requests(page)
    restart.chmod(0o644)  # the runner cannot execute it: exit code 125, the API's 500
    run_for_real(page)
    expect(page.get_by_role("alert")).to_have_text(
        re.compile(r"^The run could not be executed: script execution error \(exit code 125\)")
    )
    run = page.get_by_role("region", name="Run")
    (first,) = request_ids(sent)
    expect(run.get_by_role("heading", name=f"restart · {first}")).to_be_visible()
    expect(run.get_by_role("status")).to_have_text("Status: failed, exit code 125")
    expect(run.get_by_role("list", name="Logs")).to_contain_text("script is not executable")
    expect(page.get_by_label("Request id")).not_to_have_value(first)

    restart.chmod(0o755)
    run_for_real(page)
    expect(run.get_by_role("status")).to_have_text("Status: success, exit code 0")
    first, second = request_ids(sent)
    assert second != first
    expect(run.get_by_role("heading", name=f"restart · {second}")).to_be_visible()
    console_errors[:] = [e for e in console_errors if "status of 500" not in e]  # the 500 asked for


def test_a_5xx_that_says_nothing_of_the_run_is_retried_with_the_same_request_id(page, stack, console_errors):
    """A gateway answers 502 before the API has the request: no run has its id, so the next press sends the
    same id (had the API got it, the retry would be the same run, never a second one)."""
    sign_in(page, stack.admin_token)
    plan_restart(page)
    sent = execute_requests(page)
    page.route(f"**{EXECUTE}", lambda route: route.fulfill(status=502, body="Bad Gateway"), times=1)
    run_for_real(page)
    expect(page.get_by_role("alert")).to_have_text("HTTP 502")
    (first,) = request_ids(sent)
    expect(page.get_by_label("Request id")).to_have_value(first)

    run_for_real(page)
    run = page.get_by_role("region", name="Run")
    expect(run.get_by_role("status")).to_have_text("Status: success, exit code 0")
    assert request_ids(sent) == [first, first]
    expect(run.get_by_role("heading", name=f"restart · {first}")).to_be_visible()
    console_errors[:] = [e for e in console_errors if "status of 502" not in e]  # the 502 asked for


def test_run_for_real_is_offered_once_the_plan_has_finished(page, stack):
    """The API's wait ends before the plan (its 202, the run still going): "Run for real" waits for the
    plan's end."""
    sign_in(page, stack.admin_token)
    restart_form(page)

    def still_running(route):  # the API's 202; the run is not made here
        request_id = json.loads(route.request.post_data)["request_id"]
        runbook = {"request_id": request_id, "command": "restart", "exit_code": None, "status": "running"}
        route.fulfill(
            status=202, json={"runbook": {**runbook, "finished_at": None, "logs": []}, "health": None}
        )

    page.route(f"**{EXECUTE}", still_running, times=1)
    plan = page.get_by_role("button", name="Plan (dry run)")
    plan.click()
    run = page.get_by_role("region", name="Run")
    expect(run.get_by_role("status")).to_have_text("Status: running")
    expect(plan).to_be_enabled()  # answered
    expect(page.get_by_role("button", name="Run for real")).to_be_hidden()

    plan.click()  # the same plan, made this time
    expect(run.get_by_role("status")).to_have_text("Status: success, exit code 0")
    expect(page.get_by_role("button", name="Run for real")).to_be_visible()


def test_a_plan_that_did_not_succeed_is_said_in_the_confirmation(page, stack, restart):
    write_script(restart.parent, "restart", "echo 'ERROR: the service would not stop'\nexit 1\n")
    sign_in(page, stack.admin_token)
    plan_restart(page, "failed, exit code 1")
    page.get_by_role("button", name="Run for real").click()
    dialog = page.get_by_role("dialog", name="Run for real?")
    expect(dialog).to_contain_text(
        "The plan did not succeed: failed, exit code 1. This runs restart for real"
    )
    dialog.get_by_role("button", name="Cancel").click()


def test_the_keyboard_stays_on_the_button_pressed_then_goes_to_the_run(page, stack):
    """Plan, then Run for real, with the keyboard: the button pressed keeps the focus through its request
    (unavailable meanwhile, not disabled: a disabled button drops the focus to the top of the page), Run
    for real is the next Tab once the plan has finished, and once the run for real is done (its button
    gone: the plan no longer holds) the focus is on the run's panel."""
    sign_in(page, stack.admin_token)
    restart_form(page)
    plan = page.get_by_role("button", name="Plan (dry run)")
    plan.focus()
    page.keyboard.press("Enter")
    run = page.get_by_role("region", name="Run")
    expect(run.get_by_role("status")).to_have_text("Status: success, exit code 0")
    real = page.get_by_role("button", name="Run for real")
    expect(real).to_be_enabled()
    expect(plan).to_be_focused()
    page.keyboard.press("Tab")
    expect(real).to_be_focused()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Run for real?")
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Shift+Tab")
    expect(dialog.get_by_role("button", name="Run restart for real")).to_be_focused()
    page.keyboard.press("Enter")
    expect(run.get_by_role("heading", name=re.compile(r"^restart · "))).to_be_visible()
    expect(run.get_by_role("status")).to_have_text("Status: success, exit code 0")
    expect(real).to_be_hidden()
    expect(run).to_be_focused()
