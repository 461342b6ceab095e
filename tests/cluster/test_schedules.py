"""RunbookSchedules on the real control plane: a schedule firing every 5 seconds makes one Runbook per slot,
and each slot runs at most once, while the controller is killed and restarted and while two replicas run;
Forbid skips while a run is unfinished; suspend stops and resumes without a burst of late runs.

What counts is what exists and what the scripts wrote: the slot Runbooks in the API server and the witness
file each run appends its request id to, never the controller's own counts.
"""

from __future__ import annotations

import collections
import datetime
import json
import os
import signal
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from devcluster.processes import answers_200, free_port, wait_until
from runbooks import crd, keys, schedule
from runbooks.contract import format_time, parse_time
from tests.cluster.webhooks import HeldWrites, held_writes
from tests.runbook_client import HOLD, Runbooks, lines, wait_events, wait_for_one_acting, write_script

EVERY = 5  # seconds between slots
DEADLINE = 4  # startingDeadlineSeconds
# What a slot's creationTimestamp may exceed the deadline by: it is in whole seconds, and on a loaded machine
# the create itself takes a moment after the controller looked at its clock.
LANDING = 2
LIVENESS_TIMEOUT = 5  # the chart's livenessProbe timeoutSeconds
WITNESSED = 'echo "$MDOPS_REQUEST_ID" >> "$WITNESS"\n'


class Schedules:
    def __init__(self, api: client.ApiClient, namespace: str):
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace

    def _args(self):
        return keys.GROUP, keys.VERSION, self.namespace, schedule.PLURAL

    def create(self, name: str, **spec) -> None:
        body = {
            "template": {"command": "health_check", "timeoutSeconds": 120},
            "trigger": {"every": f"{EVERY}s"},
            "startingDeadlineSeconds": DEADLINE,
            "successfulHistoryLimit": 100,
            "failedHistoryLimit": 100,
            **spec,
        }
        self.custom.create_namespaced_custom_object(*self._args(), crd.SCHEDULE.manifest(name, body))

    def status(self, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(*self._args(), name).get("status") or {}

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(*self._args(), name)

    def gone(self, name: str) -> bool:
        return not [
            s
            for s in self.custom.list_namespaced_custom_object(*self._args())["items"]
            if s["metadata"]["name"] == name
        ]

    def suspend(self, name: str, suspended: bool = True) -> float:
        """Suspend or resume; the time it was done."""
        self.custom.patch_namespaced_custom_object(*self._args(), name, {"spec": {"suspend": suspended}})
        return time.time()


def held_creates(
    api_client, namespace: str, schedule_name: str, directory: Path, refusal: int = 0
) -> Iterator[HeldWrites]:
    """Each Runbook create of the schedule ``schedule_name`` held (registered under the namespace's name);
    given a ``refusal``, refused with that HTTP code once released."""
    rule = {
        "apiGroups": [keys.GROUP],
        "apiVersions": ["*"],
        "operations": ["CREATE"],
        "resources": [keys.PLURAL],
    }
    objects = {schedule.SCHEDULE_LABEL: schedule_name}
    return held_writes(api_client, directory, namespace, namespace, rule, refusal, objects=objects)


def schedule_series(controller, name: str) -> dict[str, float]:
    """The controller's md_schedule_* samples of the schedule ``name``, by metric and outcome."""
    found = {}
    for family in text_string_to_metric_families(controller.metrics()):
        for sample in family.samples:
            if sample.name.startswith("md_schedule_") and sample.labels.get("schedule") == name:
                found[sample.name + ":" + sample.labels.get("outcome", "")] = sample.value
    return found


@pytest.fixture
def rbs(api_client, namespace):
    return Runbooks(api_client, namespace)


@pytest.fixture
def schedules(api_client, namespace):
    return Schedules(api_client, namespace)


@pytest.fixture
def witness(tmp_path):
    return tmp_path / "witness.log"


@pytest.fixture
def release(tmp_path):
    return tmp_path / "release"


@pytest.fixture
def controller_env(tmp_path, witness) -> dict[str, str]:
    """A health_check script that appends its request id to the witness."""
    scripts = tmp_path / "scripts"
    write_script(scripts, "health_check", WITNESSED)
    return {"MDOPS_SCRIPTS_DIR": str(scripts), "MDOPS_SCRIPT_ENV": json.dumps({"WITNESS": str(witness)})}


@pytest.fixture
def holding_env(controller_env, tmp_path, witness, release) -> dict[str, str]:
    """The same script, held until the test creates ``release``."""
    write_script(tmp_path / "scripts", "health_check", WITNESSED + HOLD)
    env = {"WITNESS": str(witness), "RELEASE": str(release)}
    return {**controller_env, "MDOPS_SCRIPT_ENV": json.dumps(env)}


def skipped_events(api_client, namespace: str, name: str) -> list:
    """The SlotsSkipped Events of the schedule ``name``."""
    return [
        event
        for event in client.CoreV1Api(api_client).list_namespaced_event(namespace).items
        if (event.involved_object.kind, event.involved_object.name) == (schedule.KIND, name)
        and event.reason == schedule.SKIPPED
    ]


def slot_runbooks(rbs: Runbooks, name: str) -> list[dict]:
    return rbs.list(f"{schedule.SCHEDULE_LABEL}={name}")


def slot_of(runbook: dict) -> datetime.datetime:
    return parse_time(runbook["metadata"]["annotations"][schedule.SLOT_ANNOTATION])


def finished(runbook: dict) -> bool:
    return bool((runbook.get("status") or {}).get("finishedAt"))


def runs_after(rbs: Runbooks, name: str, count: int, moment: float, timeout: float = 90) -> list[dict]:
    """Wait until ``count`` Runbooks of the schedule whose slots are after ``moment`` have finished."""

    def enough():
        later = [rb for rb in slot_runbooks(rbs, name) if slot_of(rb).timestamp() > moment and finished(rb)]
        return len(later) >= count and later

    return wait_until(enough, timeout, f"{count} finished runs of {name} after {moment}")


def clock_past(moment: float) -> bool:
    return time.time() > moment


def next_runbook(rbs: Runbooks, name: str) -> None:
    """Wait until the schedule's next slot has its Runbook: the slot after it is a whole interval away."""
    seen = len(slot_runbooks(rbs, name))
    wait_until(lambda: len(slot_runbooks(rbs, name)) > seen, 3 * EVERY, f"the next Runbook of {name}")


def stop_and_check(
    rbs: Runbooks,
    schedules: Schedules,
    name: str,
    witness,
    taken: Iterable[datetime.datetime] = (),
    deadline: int = DEADLINE,
) -> list[dict]:
    """Suspend the schedule, wait for every run of it to finish, then check: one Runbook per slot, on
    slots of the trigger, named after it (made from its name, for the ``taken`` slots whose name another
    Runbook took), none created later than its ``deadline`` (its startingDeadlineSeconds), each run once
    (the witness), none a duplicate."""
    schedules.suspend(name)
    wait_until(lambda: all(finished(rb) for rb in slot_runbooks(rbs, name)), 60, "every run to finish")
    runbooks = slot_runbooks(rbs, name)
    slots = [slot_of(rb) for rb in runbooks]
    assert len(set(slots)) == len(runbooks)
    for runbook, slot in zip(runbooks, slots, strict=True):
        assert slot.timestamp() % EVERY == 0
        if slot in taken:
            assert runbook["metadata"]["name"].startswith(schedule.slot_name(name, slot) + "-")
        else:
            assert runbook["metadata"]["name"] == schedule.slot_name(name, slot)
        assert runbook["spec"]["requestId"] == schedule.slot_request_id(name, slot)
        assert runbook["spec"]["requestedBy"] == f"schedule:{name}"
        created = parse_time(runbook["metadata"]["creationTimestamp"])
        assert created - slot <= datetime.timedelta(seconds=deadline + LANDING), "a slot ran late"
        assert runbook["status"]["result"] == "success" and not runbook["status"].get("duplicateOf")
    ran = collections.Counter(
        line for line in lines(witness) if line.startswith(schedule.SLOT_REQUEST_PREFIX)
    )
    assert set(ran.values()) == {1}, f"a slot ran more than once: {ran}"
    assert set(ran) == {rb["spec"]["requestId"] for rb in runbooks}
    return runbooks


def test_one_runbook_per_slot_while_the_controller_is_killed_and_restarted(
    start_controller, controller_env, rbs, schedules, witness, tmp_path
):
    # The restarted controller has the killed one's runs' folder, as on the same machine: a run in
    # progress is adopted, never started again (the Runbooks' guarantee, which the slots' rests on).
    controller_env = {**controller_env, "MDOPS_STATE_DIR": str(tmp_path / "state")}
    first = start_controller("first", **controller_env)
    schedules.create("every5")
    before = runs_after(rbs, "every5", 2, 0)
    next_runbook(rbs, "every5")  # killed right after: it may not have recorded that slot yet
    os.kill(first.process.popen.pid, signal.SIGKILL)
    killed = time.time()
    wait_until(lambda: clock_past(killed + 2 * EVERY), 3 * EVERY, "two slots to pass with no controller")
    start_controller("second", **controller_env)
    runs_after(rbs, "every5", 2, time.time())
    runbooks = stop_and_check(rbs, schedules, "every5", witness)
    assert len(runbooks) >= len(before) + 3
    # The slots that passed while no controller ran were not run late (checked above) but missed.
    status = schedules.status("every5")
    assert status["missedSlots"] >= 1 and status["lastSlot"]


def test_one_runbook_per_slot_while_two_replicas_run_and_one_takes_over(
    start_controller, peering, controller_env, rbs, schedules, witness
):
    high = start_controller("high", MDOPS_PRIORITY="20", **peering, **controller_env)
    low = start_controller("low", MDOPS_PRIORITY="10", **peering, **controller_env)
    wait_for_one_acting(rbs, high, low)
    witness.unlink()  # the probes' own runs
    schedules.create("every5")
    runs_after(rbs, "every5", 2, 0)
    # Killed between runs: the replicas have runs' folders of their own, so a run in progress would
    # not be adopted by the other (a limit of the local executor with replicas, not of the schedules).
    next_runbook(rbs, "every5")
    wait_until(lambda: all(finished(rb) for rb in slot_runbooks(rbs, "every5")), 30, "the run to finish")
    os.kill(high.process.popen.pid, signal.SIGKILL)
    runs_after(rbs, "every5", 2, time.time(), timeout=120)  # the standby takes over (lifetime 4 s)
    stop_and_check(rbs, schedules, "every5", witness)


def test_forbid_skips_slots_while_the_previous_run_is_unfinished(
    start_controller, holding_env, rbs, schedules, witness, release, api_client, namespace
):
    start_controller(**holding_env)
    schedules.create("held")
    wait_until(lambda: lines(witness), 60, "the first run to start")
    [first] = slot_runbooks(rbs, "held")
    middle = slot_of(first).timestamp() + 3.5 * EVERY
    wait_until(lambda: clock_past(middle), 4 * EVERY, "three more slots")
    assert [rb["metadata"]["name"] for rb in slot_runbooks(rbs, "held")] == [first["metadata"]["name"]]
    held = schedules.status("held")
    assert held["skippedSlots"] >= 2
    wait_events(api_client, namespace, schedule.KIND, "held", "SlotCreated", "SlotsSkipped")
    # The run of skipped slots is one Event whose count grows (as Kubernetes' own Event series), not an
    # Event per slot: a schedule every 5 s on trading days would post thousands over a weekend.
    wait_until(lambda: schedules.status("held")["skippedSlots"] >= 3, 3 * EVERY, "a third skipped slot")
    counted = lambda: sum(e.count or 1 for e in skipped_events(api_client, namespace, "held"))  # noqa: E731
    wait_until(lambda: counted() >= 3, 30, "three skipped slots told by Events")
    [series] = skipped_events(api_client, namespace, "held")
    assert series.message.startswith(f"{series.count} slot(s) skipped since ")
    released = time.time()
    release.touch()
    runs_after(rbs, "held", 1, released)
    runbooks = stop_and_check(rbs, schedules, "held", witness)
    # The slots skipped while the first run held never ran: skipped, not queued for later. (A slot after
    # the last one handled before the release may rightly run, on time, if its look saw the first finished.)
    skipped = parse_time(held["lastSlot"])
    assert skipped.timestamp() >= slot_of(first).timestamp() + 2 * EVERY
    assert not [rb for rb in runbooks if slot_of(first) < slot_of(rb) <= skipped]


def test_suspend_stops_the_slots_and_resume_brings_no_burst_of_late_runs(
    start_controller, controller_env, rbs, schedules, witness, api_client, namespace
):
    controller = start_controller(**controller_env)
    schedules.create("paused")
    runs_after(rbs, "paused", 1, 0)
    next_runbook(rbs, "paused")  # suspended right after a slot: the next one is a whole interval away
    suspended = schedules.suspend("paused")

    def quiet_moment_after_three_slots() -> bool:
        """Three slots have passed while suspended, the controller has handled the latest, and the next
        is more than a second away: resuming now, no slot passes unhandled in between."""
        now = time.time()
        latest = datetime.datetime.fromtimestamp(now // EVERY * EVERY, datetime.UTC)
        handled = parse_time(schedules.status("paused").get("lastSlot"))
        return now > suspended + 3 * EVERY and handled == latest and now % EVERY < EVERY - 1.5

    wait_until(quiet_moment_after_three_slots, 8 * EVERY, "three slots handled while suspended")
    assert [rb for rb in slot_runbooks(rbs, "paused") if slot_of(rb).timestamp() > suspended] == []
    resumed = schedules.suspend("paused", False)
    runs_after(rbs, "paused", 2, resumed)
    runbooks = stop_and_check(rbs, schedules, "paused", witness)
    # None of the slots that passed while suspended ran after the resume: no burst of late runs.
    assert not [rb for rb in runbooks if suspended < slot_of(rb).timestamp() < resumed]
    assert schedules.status("paused")["missedSlots"] >= 3
    # Events and metrics say the same, per schedule; the metrics go with the schedule.
    wait_events(api_client, namespace, schedule.KIND, "paused", "SlotCreated", "SlotsMissed")
    # A look counts its slot after it recorded its step and posted its Events, which may come after its
    # Runbook ran, on a loaded machine.
    created = lambda: schedule_series(controller, "paused").get("md_schedule_slots_total:created", 0)  # noqa: E731
    wait_until(lambda: created() >= len(runbooks), 30, "the metrics to count each slot's Runbook")
    series = schedule_series(controller, "paused")
    assert series["md_schedule_slots_total:created"] == len(runbooks)
    assert series["md_schedule_slots_total:missed"] >= 3 and series["md_schedule_last_result:"] == 1
    schedules.delete("paused")
    wait_until(lambda: schedules.gone("paused"), 30, "the schedule to be deleted")
    assert schedule_series(controller, "paused") == {}


def test_a_slot_whose_name_another_runbook_took_still_runs_once(
    start_controller, controller_env, rbs, schedules, witness, api_client, namespace
):
    """Anyone who may create Runbooks may take the name a slot's Runbook will have (a REST API token does,
    by its request id). The slot runs all the same, once, under a name the API server makes from it;
    the squatter is left as it is."""
    start_controller(**controller_env)
    # Each taken slot costs a create more: on a loaded machine, past the usual deadline, it is missed.
    deadline = 6 * EVERY
    schedules.create("taken", startingDeadlineSeconds=deadline)
    start = (int(time.time()) // EVERY + 3) * EVERY  # three intervals ahead: not yet looked at
    slots = [datetime.datetime.fromtimestamp(start + i * EVERY, datetime.UTC) for i in range(2)]
    for slot in slots:
        rbs.create(schedule.slot_name("taken", slot), command="health_check")
    wait_until(lambda: clock_past(start + 2 * EVERY), 10 * EVERY, "the taken slots to pass")
    runs_after(rbs, "taken", 1, start + 2 * EVERY)
    by_slot = {slot_of(rb): rb for rb in stop_and_check(rbs, schedules, "taken", witness, slots, deadline)}
    for slot in slots:
        assert slot in by_slot
        squatter = rbs.get(schedule.slot_name("taken", slot))  # left as it is: not a slot's, run as itself
        assert schedule.SLOT_ANNOTATION not in (squatter["metadata"].get("annotations") or {})
        assert squatter["status"]["requestId"] in lines(witness)
    wait_events(api_client, namespace, schedule.KIND, "taken", "SlotNameTaken")


def test_a_schedule_deleted_in_the_middle_of_its_look_goes_as_soon_as_the_look_ends(
    start_controller, controller_env, rbs, schedules, api_client, namespace, tmp_path
):
    """kopf waits for a timer that is busy when its object is deleted, and by default looks again only a
    minute later: a schedule deleted while its look waited for the API server stayed a minute. Here the
    look is held in its slot's create (a webhook) when the schedule is deleted, then released."""
    with held_creates(api_client, namespace, "deleted", tmp_path) as held:
        start_controller(**controller_env)
        # Held for as long as the test takes to delete it: within the slot's deadline, or the create is
        # given up.
        schedules.create("deleted", startingDeadlineSeconds=6 * EVERY)
        wait_until(held.asked.is_set, 60, "the look to create the slot's Runbook")
        schedules.delete("deleted")
        held.released.set()
        # Not a minute later, at kopf's next poll of the timer.
        wait_until(lambda: schedules.gone("deleted"), 30, "the schedule to go once its look ended")
    # The held create went through: the look ended as it would have without the deletion.
    assert len(slot_runbooks(rbs, "deleted")) == 1


def test_a_slot_whose_create_the_api_server_holds_past_its_deadline_is_missed_not_run_late(
    start_controller, controller_env, rbs, schedules, witness, api_client, namespace, tmp_path
):
    """The API server holds the creates of the slots' Runbooks (a slow admission webhook; an overloaded API
    server queues calls as well) for longer than the slots' starting deadline. The slots held past it are
    missed, as they would be without the wait: their Runbooks are never made, their scripts never run (the
    witness). The client gave the create up at the deadline no sooner than it went through at the release,
    and a Runbook whose creationTimestamp was on time ran 12 s after its slot."""
    start_controller(**controller_env)
    with held_creates(api_client, namespace, "slow", tmp_path / "webhook") as held:
        schedules.create("slow")
        created = parse_time(
            schedules.custom.get_namespaced_custom_object(*schedules._args(), "slow")["metadata"][
                "creationTimestamp"
            ]
        ).timestamp()
        first = (int(created) // EVERY + 1) * EVERY  # the schedule's first slot
        wait_until(held.asked.is_set, 60, "the look to create the first slot's Runbook")
        released = first + 2 * EVERY + 2  # the first two slots held past their deadline, the third not
        wait_until(lambda: clock_past(released), 4 * EVERY, "the held slots to pass their deadline")
        held.released.set()
        runs_after(rbs, "slow", 1, released)
    late = [
        schedule.slot_request_id("slow", datetime.datetime.fromtimestamp(first + i * EVERY, datetime.UTC))
        for i in range(2)
    ]
    runbooks = stop_and_check(rbs, schedules, "slow", witness)
    assert not [rb for rb in runbooks if rb["spec"]["requestId"] in late]
    assert not set(late) & set(lines(witness)), "a slot ran past its starting deadline"
    # Missed, and counted also when the look that made the next slot's Runbook could not record its step
    # (its status write refused as stale, under load): the next look counts them.
    assert schedules.status("slow")["missedSlots"] >= 2
    wait_events(api_client, namespace, schedule.KIND, "slow", "SlotsMissed")


def test_looks_with_no_slot_to_handle_list_no_runbooks(cluster, start_controller, controller_env, schedules):
    """Each schedule is looked at once a second. A look with no slot come since the last one handled, and
    the last run's result known, has nothing to learn from the schedule's Runbooks, and lists none: the API
    server's own count of its lists says so. Before, every look listed them: a list a second per schedule,
    daily or not; here 5 yearly schedules, 25 lists in 5 s."""

    def lists_in_five_seconds() -> int:
        before = cluster.request_counts()["LIST runbooks"]
        later = time.time() + 5
        wait_until(lambda: clock_past(later), 10, "five seconds")
        return cluster.request_counts()["LIST runbooks"] - before

    # Others list Runbooks too: the namespace controller, over the earlier tests' namespaces being deleted.
    others = lists_in_five_seconds()
    start_controller(**controller_env)
    names = [f"yearly-{i}" for i in range(5)]
    for name in names:
        schedules.create(name, trigger={"cron": "0 0 1 1 *"})
    for name in names:
        wait_until(lambda name=name: schedules.status(name).get("schedule"), 30, f"the first look at {name}")
    # And the controller's ledger trimmer and retention, a minute apart or more.
    assert lists_in_five_seconds() <= others + 5


def test_the_controller_says_why_a_schedule_does_not_run(start_controller, controller_env, schedules):
    """A cron expression that only the models refuse (the API server cannot parse cron): the schedule's
    Ready condition says so, and no slot is computed."""
    start_controller(**controller_env)
    schedules.create("broken", trigger={"cron": "61 * * * *"})

    def ready():
        status = schedules.status("broken")
        return next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)

    condition = wait_until(ready, 30, "the Ready condition of the broken schedule")
    assert (condition["status"], condition["reason"]) == ("False", "InvalidSpec")
    assert "Bad minute" in condition["message"]
    assert "nextSlot" not in schedules.status("broken")


def test_a_schedule_that_uses_no_sessions_runs_without_the_calendar(
    start_controller, controller_env, rbs, schedules, witness, unloadable_calendar
):
    """A venue whose calendar cannot be loaded: a plain every runs its slots (their runs give their window,
    as a run must without the calendar), and a schedule of session events says why it does not run."""
    start_controller(**controller_env, **unloadable_calendar)
    schedules.create("plain", template={"command": "health_check", "timeoutSeconds": 120, "window": "night"})
    schedules.create("opens", trigger={"session": "open"})
    runs_after(rbs, "plain", 2, 0)
    stop_and_check(rbs, schedules, "plain", witness)

    def ready():
        conditions = schedules.status("opens").get("conditions", [])
        return next((c for c in conditions if c["type"] == "Ready"), None)

    condition = wait_until(ready, 30, "the Ready condition of the session schedule")
    assert (condition["status"], condition["reason"]) == ("False", "CalendarUnavailable")
    assert "the XSHG calendar could not be built: ImportError" in condition["message"], condition
    assert slot_runbooks(rbs, "opens") == []


def test_a_trigger_changed_has_its_slots_from_the_change_none_missed_before_it(
    start_controller, controller_env, rbs, schedules, witness
):
    """A yearly schedule, changed after a while to every 5 s: the new trigger's slots before the change
    were never due, so none is missed (counted from the old trigger's last slot, here its creation, every
    5 s slot since was reported missed, with a Warning)."""
    start_controller(**controller_env)
    schedules.create("changed", trigger={"cron": "0 0 1 1 *"})
    wait_until(lambda: schedules.status("changed").get("schedule"), 30, "the first look")
    waited = time.time() + 3 * EVERY
    wait_until(lambda: clock_past(waited), 4 * EVERY, "three slots of the next trigger")
    patch = {"spec": {"trigger": {"cron": None, "every": f"{EVERY}s"}}}
    schedules.custom.patch_namespaced_custom_object(*schedules._args(), "changed", patch)
    changed = time.time()
    runs_after(rbs, "changed", 1, changed)
    stop_and_check(rbs, schedules, "changed", witness)
    status = schedules.status("changed")
    assert (status["missedSlots"], status["schedule"]) == (0, f"every {EVERY}s")


@pytest.mark.parametrize(
    ("trigger", "years"),
    [({"every": f"{EVERY}s"}, 5), ({"every": f"{EVERY}s", "tradingDaysOnly": True}, 1)],
    ids=["five-years", "trading-days-a-year"],
)
def test_a_schedule_years_behind_is_caught_up_while_the_controller_answers_its_liveness_probe(
    start_controller, controller_env, schedules, trigger, years
):
    """A schedule whose lastSlot is years back (a status restored from an old backup, a controller long
    down): every 5 s, 6.3 million slots a year, all missed or skipped while it is suspended (with
    tradingDaysOnly, its look loads the venue's calendar from then). The look counts them, and kopf's
    /healthz answers within the chart's probe timeout all along. Walked slot by slot on kopf's event loop,
    that look held the loop for minutes: no Runbook admitted, no status written, no probe answered, and a
    kubelet would restart the controller to walk them again."""
    port = free_port()
    start_controller(**controller_env, MDOPS_LIVENESS_PORT=str(port))
    healthz = f"http://127.0.0.1:{port}/healthz"
    wait_until(lambda: answers_200(healthz), 30, "the liveness endpoint")
    schedules.create("behind", trigger=trigger, suspend=True)
    wait_until(lambda: schedules.status("behind").get("lastSlot"), 30, "the first look")
    behind = (int(time.time()) - years * 365 * 86400) // EVERY * EVERY
    last_slot = format_time(datetime.datetime.fromtimestamp(behind, datetime.UTC))
    before = schedules.custom.patch_namespaced_custom_object_status(
        *schedules._args(), "behind", {"status": {"lastSlot": last_slot}}
    )["status"]

    def caught_up():
        with urllib.request.urlopen(healthz, timeout=LIVENESS_TIMEOUT) as response:  # raises if held
            assert response.status == 200
        status = schedules.status("behind")
        return parse_time(status["lastSlot"]).timestamp() > behind + 86400 and status

    status = wait_until(caught_up, 60, "the look that catches up")
    slots = (parse_time(status["lastSlot"]).timestamp() - behind) // EVERY
    counted = status["missedSlots"] + status["skippedSlots"]
    assert counted == before.get("missedSlots", 0) + before.get("skippedSlots", 0) + slots


def test_a_slot_whose_runbook_the_api_server_refuses_is_said_in_the_ready_condition(
    api_client, namespace, start_controller, controller_env, rbs, schedules, tmp_path
):
    """An admission webhook (or a policy, a quota) that refuses the slots' Runbooks: the schedule's Ready
    condition says so, in the API server's words, not Scheduled while each slot is missed; lifted, the slots
    run."""
    start_controller(**controller_env)
    with held_creates(api_client, namespace, "refused", tmp_path / "webhook", refusal=403) as refusal:
        refusal.released.set()  # each answered at once: refused
        probe = crd.RUNBOOK.manifest(
            "probe", {"command": "health_check"}, labels={schedule.SCHEDULE_LABEL: "refused"}
        )

        def in_force() -> bool:
            try:
                rbs.custom.create_namespaced_custom_object(*rbs._args(), probe, dry_run="All")
            except client.ApiException as error:
                return error.status == 403
            return False

        wait_until(in_force, 30, "the webhook in force")
        schedules.create("refused")

        def ready() -> dict | None:
            conditions = schedules.status("refused").get("conditions", [])
            return next((c for c in conditions if c["type"] == "Ready" and c["status"] == "False"), None)

        condition = wait_until(ready, 3 * EVERY, "a Ready condition that says why the slots do not run")
        assert condition["reason"] == schedule.REFUSED
        assert "the API server refuses the Runbook of the slot" in condition["message"], condition
        assert "refused by the test's webhook" in condition["message"], condition
        assert slot_runbooks(rbs, "refused") == []
    runs_after(rbs, "refused", 1, 0, timeout=3 * EVERY)
    wait_until(
        lambda: (
            next(c for c in schedules.status("refused")["conditions"] if c["type"] == "Ready")["status"]
            == "True"
        ),
        3 * EVERY,
        "the schedule Ready again",
    )
