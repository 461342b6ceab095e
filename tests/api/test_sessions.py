"""The venue's session in ``GET /api/ops/status`` and ``/readyz``, and ``GET /api/ops/schedules``, on the real
API process; the schedules' last runs come from the real controller."""

from __future__ import annotations

import datetime
import json

from devcluster.processes import wait_until
from runbooks import crd
from runbooks.calendar import VenueCalendar
from runbooks.contract import parse_time
from tests.api.conftest import READER_TOKEN, RECORD, auth, http
from tests.conftest import keep_an_ended_calendar

SPEC_KEYS = {
    "environment_mode",
    "active_profile",
    "active_window",
    "last_runbook",
    "runbook_history",
    "health_by_request",
    "last_health",
    "last_exit_codes",
    "last_updated_at",
    "audit",
}


def get(server, path: str, token: str = READER_TOKEN) -> tuple[int, dict]:
    code, _, text = http("GET", server.url + path, headers=auth(token))
    return code, json.loads(text) if text else {}


def states_around(moment: datetime.datetime) -> set[str]:
    """The XHKG state a second before and after ``moment``, from a calendar of the test's own."""
    calendar = VenueCalendar("XHKG")
    return {calendar.at(moment).state(moment + datetime.timedelta(seconds=s)).value for s in (-1, 1)}


def test_status_shows_the_session_beside_the_specs_keys(server):
    def loaded():
        code, body = get(server, "/api/ops/status")
        return code == 200 and body["session"]["state"] is not None and body

    body = wait_until(loaded, 30, "the session in the status")
    # the keys it had, the session, and the runs that reported the environment's state or may have changed it
    assert body.keys() == SPEC_KEYS | {"session", "state_reported_by", "state_stale_by"}
    session = body["session"]
    assert (session["venue"], session["calendar"], session["note"]) == (
        "XHKG",
        "exchange_calendars 4.13.2",
        None,
    )
    now = datetime.datetime.now(datetime.UTC)
    assert session["state"] in states_around(now)
    opens, closes = parse_time(session["next_open"]), parse_time(session["next_close"])
    assert session["next_open"].endswith("+08:00") and now < opens < now + datetime.timedelta(days=8)
    assert now < closes < now + datetime.timedelta(days=8)

    code, ready = get(server, "/readyz")
    assert code == 200 and ready["status"] == "ready"
    assert (ready["venue"], ready["calendar"]) == ("XHKG", "exchange_calendars 4.13.2")
    assert ready["session"] in states_around(datetime.datetime.now(datetime.UTC))


def test_past_what_the_library_knows_of_the_venue_the_status_says_so(start_api, tmp_path):
    cache = tmp_path / "sessions.json"
    last = keep_an_ended_calendar(cache)
    api = start_api(venue="XSHG", calendar_cache=cache)

    def noted() -> dict | None:  # the table is read in the background, as the API starts
        session = api.get("/api/ops/status", headers=auth()).json()["session"]
        return session if "records its holidays" in (session["note"] or "") else None

    session = wait_until(noted, 30, "the note in the status")
    assert (session["venue"], session["state"], session["next_open"]) == ("XSHG", None, None)
    assert session["note"].endswith(f"exchange_calendars 4.13.2 records its holidays only up to {last}")


def _schedule(cluster, namespace: str, name: str, **spec) -> None:
    body = {"template": {"command": "health_check", "profile": "backup"}, "trigger": {"every": "5m"}, **spec}
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(crd.SCHEDULE.manifest(name, body)))


def test_schedules_their_next_slots_and_last_run(server, mdops_crds, namespace, controller, scripts):
    scripts.write("health_check", RECORD)
    _schedule(mdops_crds, namespace, "every5s", trigger={"every": "5s"})
    _schedule(mdops_crds, namespace, "paused", suspend=True)
    _schedule(mdops_crds, namespace, "broken", trigger={"cron": "61 * * * *"})  # only the models refuse it

    def ran():
        code, body = get(server, "/api/ops/schedules?slots=2")
        views = {view["name"]: view for view in body.get("schedules", [])}
        return code == 200 and views.get("every5s", {}).get("last_result") == "success" and views

    views = wait_until(ran, 60, "a run of every5s in the schedules' list")
    assert sorted(views) == ["broken", "every5s", "paused"]
    every = views["every5s"]
    assert (every["schedule"], every["command"], every["profile"], every["problem"]) == (
        "every 5s",
        "health_check",
        "backup",
        None,
    )
    slots = [parse_time(at) for at in every["next_slots"]]
    assert len(slots) == 2 and slots[1] - slots[0] == datetime.timedelta(seconds=5)
    assert all(at.endswith("+08:00") for at in every["next_slots"])
    assert every["last_request_id"] in {line.split()[0] for line in scripts.runs()}  # the witness
    slot = every["last_request_id"].removeprefix("schedule.every5s.")  # the same slot, named and keyed
    assert len(slot) == 14 and every["last_runbook"] == f"every5s-{slot}"
    assert every["last_slot"].endswith("+08:00")
    assert (views["paused"]["suspended"], views["paused"]["next_slots"]) == (True, [])
    assert views["broken"]["next_slots"] is None and views["broken"]["problem"].startswith("invalid spec")

    assert get(server, "/api/ops/schedules", "token-with-no-permission")[0] == 403
    assert http("GET", server.url + "/api/ops/schedules")[0] == 401
    assert get(server, "/api/ops/schedules?slots=21")[0] == 422


def test_past_what_the_library_knows_of_the_venue_each_schedule_that_uses_sessions_says_so(
    start_api, mdops_crds, namespace, tmp_path
):
    """As XSHG will be from 2027 with 4.13.2: the list answers, each schedule whose slots use sessions says
    why it has none in its own entry, and the others show theirs."""
    cache = tmp_path / "sessions.json"
    last = keep_an_ended_calendar(cache)
    api = start_api(venue="XSHG", calendar_cache=cache)
    _schedule(mdops_crds, namespace, "plain")
    _schedule(mdops_crds, namespace, "opens", trigger={"session": "open"})
    response = api.get("/api/ops/schedules", headers=auth(READER_TOKEN))
    assert response.status_code == 200
    views = {view["name"]: view for view in response.json()["schedules"]}
    assert (len(views["plain"]["next_slots"]), views["plain"]["problem"]) == (3, None)
    assert views["opens"]["next_slots"] is None
    assert views["opens"]["problem"].endswith(
        f"exchange_calendars 4.13.2 records its holidays only up to {last}"
    )
