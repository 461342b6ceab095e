"""RunbookSchedules: one Runbook per slot, at most once, at the venue's rhythm.

Each schedule has a kopf timer (there are few schedules: a look each second costs little). A look lists
the schedule's own Runbooks from the API server's watch cache only when they may change its step (a slot
has come since the last one handled, or its last run's result is not known yet: :func:`idle`). It
computes what is due with the pure slot logic of :mod:`runbooks.schedule` (:func:`plan`), creates the
slot's Runbook, then records the step in the schedule's status, and only then posts Events, counts
metrics and trims the history.

Exactly once: the slot's Runbook is named and keyed by the schedule and the slot's instant, so a second
create of it is AlreadyExists (another replica, a restart, a stale view of the status), and the ledger
refuses a second run of its request id even after it was deleted. The status is written with the
resourceVersion it was computed from, so a step computed from a stale view is refused (409) instead of
counting its missed or skipped slots twice; the next look starts again from the status as it is. A
Runbook whose step was never recorded (created just before a crash, or its status write refused as
stale) is found among the schedule's Runbooks: the next look records it as created and starts after its
slot instead of counting it missed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import kopf
from pydantic import ValidationError

from controller import metrics, transitions
from controller.events import Events, Ref
from controller.kubeapi import ApiError, KubeApi
from controller.settings import get_settings
from runbooks import keys, schedule
from runbooks.calendar import CalendarError, SessionCalendar
from runbooks.contract import ConditionType, format_time, parse_time
from runbooks.models import RunbookStatus, named_after
from runbooks.schedule import RunbookScheduleSpec, RunbookScheduleStatus

log = logging.getLogger(__name__)

SCHEDULES = (keys.GROUP, keys.VERSION, schedule.PLURAL)
LOOK_SECONDS = 1.0  # how often each schedule is looked at: the latest a slot's Runbook is created
CATCH_UP = datetime.timedelta(days=3653)  # ten years: slots are counted within them of now


@dataclass(frozen=True)
class SlotRun:
    """A Runbook of a schedule, as its slot logic sees it."""

    name: str
    slot: datetime.datetime
    finished: bool = False
    result: str | None = None  # success | failed, once finished


@dataclass
class Step:
    """One look at a schedule: the Runbook to create, the status to record, and what follows it."""

    status: RunbookScheduleStatus
    create: dict[str, Any] | None = None  # the due slot's Runbook
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    counts: dict[str, int] = field(default_factory=dict)  # slots created, missed, skipped
    skipped_why: str = ""  # why its skipped slots were: told by the Event of their run (Skips), not in events
    delete: list[str] = field(default_factory=list)  # finished Runbooks beyond the history limits


def plan(
    name: str,
    spec: RunbookScheduleSpec,
    status: RunbookScheduleStatus,
    *,
    created: datetime.datetime,
    generation: int,
    now: datetime.datetime,
    zone: datetime.tzinfo,
    calendar: SessionCalendar | None,
    runs: Iterable[SlotRun],
    edited: datetime.datetime | None = None,
) -> Step:
    """What to do about the schedule ``name`` at ``now``, given its status and its Runbooks ``runs``; the
    venue's ``calendar`` only if its trigger uses sessions (see :func:`runbooks.schedule.due`).

    A trigger changed since the last step (its words differ from the status', or no step recorded them:
    a spec that was invalid until then) has its slots from the change on, ``edited`` (the spec's latest
    write; if unknown, ``now``, or for a schedule never stepped its last slot): the new trigger's slots
    before it were never due, and counted from the old trigger's last slot they would all be missed."""
    runs = sorted(runs, key=lambda run: run.slot)
    last_slot = handled(spec, status, created, now, edited)
    last_runbook, last_result = status.last_runbook, status.last_result
    step = Step(status=status)
    # Runbooks created by looks whose step was never recorded (a crash, or its status write refused as
    # stale): their slots are handled, and recorded now, once, as created. The other slots up to the latest
    # of them were handled by those looks too, and are counted now: skipped on a day the venue does not
    # trade, else missed (superseded, or past the deadline; with Forbid, a slot skipped between two such
    # Runbooks, the first unfinished, is counted missed: which it was is not known any more).
    unrecorded = [run for run in runs if run.slot > last_slot]
    missed = skipped = 0
    if unrecorded:
        handled_then = schedule.tally(spec.trigger, last_slot, unrecorded[-1].slot, zone, calendar)
        missed, skipped = max(handled_then.runs - len(unrecorded), 0), handled_then.skipped
        last_slot, last_runbook = unrecorded[-1].slot, unrecorded[-1].name
        step.events.extend(created_event(run.name, run.slot) for run in unrecorded)
        step.counts["created"] = len(unrecorded)
    if missed:
        step.events.append(
            (
                "Warning",
                schedule.MISSED,
                f"{missed} slot(s) missed before the slot {last_slot.isoformat()}, never run late (counted "
                "late: the look that handled them could not record its step)",
            )
        )
    unfinished = [run.name for run in runs if not run.finished]
    due = schedule.due(spec, last_slot, now, zone, calendar, active=bool(unfinished))
    missed, skipped = missed + due.missed, skipped + due.skipped

    if due.run is not None:
        step.create = schedule.slot_runbook(name, spec, due.run)
        last_runbook = step.create["metadata"]["name"]
        step.events.append(created_event(last_runbook, due.run))
        step.counts["created"] = step.counts.get("created", 0) + 1
    if due.missed:
        why = due.why_missed(spec)
        step.events.append(
            ("Warning", schedule.MISSED, f"{due.missed} slot(s) missed, never run late: {why}")
        )
    if missed:
        step.counts["missed"] = missed
    if skipped:
        why = "days the venue does not trade"
        if unfinished and spec.concurrency_policy == "Forbid":
            why += f", or the previous run ({unfinished[-1]}) unfinished with concurrencyPolicy Forbid"
        step.skipped_why = why
        step.counts["skipped"] = skipped

    by_name = {run.name: run for run in runs}
    if last_runbook != status.last_runbook:
        last_result = None  # a new run: no result until it has one
    if last_runbook in by_name:
        last = by_name[last_runbook]
        last_result = last.result if last.finished else None
    ready = ("True", schedule.SCHEDULED, spec.trigger.describe())
    if not step.counts.get("created") and (refused := _refused(status)) is not None:
        ready = ("False", schedule.REFUSED, refused)  # no slot made since the API server refused one
    step.status = RunbookScheduleStatus(
        observed_generation=generation,
        conditions=_ready(status, generation, *ready),
        schedule=spec.trigger.describe(),
        last_slot=format_time(due.last_slot),
        next_slot=None if spec.suspend or due.next_slot is None else format_time(due.next_slot),
        last_runbook=last_runbook,
        last_result=last_result,
        missed_slots=status.missed_slots + missed,
        skipped_slots=status.skipped_slots + skipped,
    )
    step.delete = beyond_history(spec, runs)
    return step


def handled(
    spec: RunbookScheduleSpec,
    status: RunbookScheduleStatus,
    created: datetime.datetime,
    now: datetime.datetime,
    edited: datetime.datetime | None,
) -> datetime.datetime:
    """The instant up to which the schedule's slots are handled, as :func:`plan` takes it: its last slot
    (:func:`counted_from`), or the change of a trigger changed since the last step."""
    last_slot = counted_from(status, created, now)
    if status.schedule != spec.trigger.describe():  # changed since the last step, or none recorded yet
        unknown = last_slot if status.schedule is None else now  # when it changed, without ``edited``
        last_slot = max(last_slot, min(edited or unknown, now))  # an API server clock ahead: not after now
    return last_slot


def idle(
    spec: RunbookScheduleSpec,
    status: RunbookScheduleStatus,
    *,
    created: datetime.datetime,
    now: datetime.datetime,
    zone: datetime.tzinfo,
    calendar: SessionCalendar | None,
    edited: datetime.datetime | None = None,
) -> bool:
    """Whether a look at ``now`` has nothing to learn from the schedule's Runbooks: no slot has come since
    the last one handled (none to create, miss or skip, and so no Runbook of one made by a look whose step
    was never recorded), and the result of its last run is known, or it has none. Such a look plans
    without them (its status' trigger, next slot, Ready condition); the others list them. A look a second
    that listed every time cost the API server as many lists a second as there are schedules, daily or
    not."""
    if status.last_runbook is not None and status.last_result is None:
        return False
    since = handled(spec, status, created, now, edited)
    return schedule.tally(spec.trigger, since, now, zone, calendar).last is None


@dataclass(frozen=True)
class Skips:
    """A run of skipped slots, told by one Event as Kubernetes' own Event series are: posted at the run's
    first skip, then its count, message and last time updated at each look that skips more, until a slot
    is created or missed. Not an Event per look: every 5s on trading days skips 34,560 slots a weekend.
    Kept in the schedule's memo: a restarted controller begins another Event."""

    since: datetime.datetime  # the look that skipped the first
    count: int = 0
    why: str = ""
    event: str | None = None  # the Event's name, once posted

    @property
    def message(self) -> str:
        return f"{self.count} slot(s) skipped since {format_time(self.since)}: {self.why}"


def skips(run: Skips | None, step: Step, now: datetime.datetime) -> Skips | None:
    """The run of skipped slots that ``step`` (at ``now``) lengthens or begins: None if it skips none."""
    skipped = step.counts.get("skipped", 0)
    if not skipped:
        return None
    run = run or Skips(now)
    return dataclasses.replace(run, count=run.count + skipped, why=step.skipped_why)


def ends_skips(step: Step) -> bool:
    """Whether a slot was created or missed in ``step``: the run of skipped slots before it ends."""
    return bool(step.counts.get("created") or step.counts.get("missed"))


def created_event(runbook: str, slot: datetime.datetime) -> tuple[str, str, str]:
    return ("Normal", schedule.CREATED, f"created {runbook} for the slot {slot.isoformat()}")


def renamed(step: Step, made: str, taken_by: str) -> Step:
    """The step of a slot whose Runbook was made under another name than planned (``made``), its name
    taken by a Runbook that is not the slot's (requested by ``taken_by``)."""
    planned = step.status.last_runbook
    slot = parse_time(step.create["metadata"]["annotations"][schedule.SLOT_ANNOTATION])
    events = [event for event in step.events if event != created_event(planned, slot)]
    taken = (
        f"the name {planned} is taken by a Runbook requested by {taken_by}, not this slot's: created {made}"
    )
    return dataclasses.replace(
        step,
        status=step.status.model_copy(update={"last_runbook": made}),
        events=[*events, created_event(made, slot), ("Warning", schedule.NAME_TAKEN, taken)],
    )


def beyond_history(spec: RunbookScheduleSpec, runs: Iterable[SlotRun]) -> list[str]:
    """The finished Runbooks to delete so that at most the history limits of succeeded and of failed ones
    remain: the oldest slots first. Unfinished ones are never deleted."""
    ordered = sorted((run for run in runs if run.finished), key=lambda run: run.slot)
    doomed = []
    for result, limit in (("success", spec.successful_history_limit), ("failed", spec.failed_history_limit)):
        kept = [run.name for run in ordered if (run.result == "success") == (result == "success")]
        doomed += kept[: max(0, len(kept) - limit)]
    return doomed


def problem(
    status: RunbookScheduleStatus, generation: int, reason: str, message: str
) -> RunbookScheduleStatus:
    """The status of a schedule that cannot be looked at: its Ready condition says why; nothing else moves."""
    return status.model_copy(
        update={
            "observed_generation": generation,
            "conditions": _ready(status, generation, "False", reason, message),
            "next_slot": None,
        }
    )


def refused(status: RunbookScheduleStatus, generation: int, slot: str, why: str) -> RunbookScheduleStatus:
    """The status of a schedule whose due slot's Runbook the API server refused (a quota, an admission
    policy): its Ready condition says so until a slot's Runbook is made; the slot is tried again at the
    next look, and missed once past its starting deadline."""
    return problem(
        status, generation, schedule.REFUSED, f"the API server refuses the Runbook of the slot {slot}: {why}"
    )


def _refused(status: RunbookScheduleStatus) -> str | None:
    """The message of a Ready condition that says a slot's Runbook was refused, if it does."""
    ready = next((c for c in status.conditions if c.type == ConditionType.READY), None)
    return ready.message if ready is not None and ready.reason == schedule.REFUSED else None


def _ready(status: RunbookScheduleStatus, generation: int, value: str, reason: str, message: str) -> list:
    return transitions.conditions(
        status.conditions, generation, {ConditionType.READY: (value, reason, message)}
    )


# -- the kopf side --------------------------------------------------------------------------------------


def slot_run(body: dict[str, Any]) -> SlotRun | None:
    """A schedule's Runbook as the slot logic sees it; None if it was not made by a schedule. Labels and
    annotations are anyone's to set: only its request id, the slot's of the schedule its label names
    (which only mdops may use), makes it the slot's."""
    meta = body["metadata"]
    slot = parse_time((meta.get("annotations") or {}).get(schedule.SLOT_ANNOTATION))
    owner = (meta.get("labels") or {}).get(schedule.SCHEDULE_LABEL)
    if slot is None or owner is None:
        return None
    if (body.get("spec") or {}).get("requestId") != schedule.slot_request_id(owner, slot):
        return None
    status = RunbookStatus.read(body.get("status") or {})
    return SlotRun(meta["name"], slot, status.finished, status.result)


@kopf.timer(*SCHEDULES, interval=LOOK_SECONDS, errors=kopf.ErrorsMode.TEMPORARY, backoff=2)
async def look(body: kopf.Body, name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    """Create the Runbook of a due slot, record the step, then announce it and trim the history."""
    api: KubeApi = memo.api
    status = RunbookScheduleStatus.model_validate(body.get("status") or {})
    generation = body.metadata.get("generation", 1)
    version = body.metadata["resourceVersion"]
    try:
        spec = RunbookScheduleSpec.model_validate(dict(body.spec))
    except ValidationError as error:  # what only the models check: a cron expression, a time zone
        await _record(
            api, namespace, name, version, status, problem(status, generation, schedule.INVALID, str(error))
        )
        return
    created = parse_time(body.metadata["creationTimestamp"])
    settings = get_settings()
    bodies: dict[str, dict[str, Any]] = {}
    try:
        calendar = None
        if spec.trigger.uses_sessions:  # a controller's first look may wait for its load (a child process)
            clock = datetime.datetime.now(datetime.UTC)
            start = min(counted_from(status, created, clock), clock)
            end = clock + schedule.NEXT_HORIZON + datetime.timedelta(days=1)
            calendar = await asyncio.to_thread(settings.calendar.covering, start, end)
        # The clock is read after the waits: a slow calendar load never lets a slot past its deadline run.
        now = datetime.datetime.now(datetime.UTC)
        change = edited(body.metadata)
        if not idle(
            spec, status, created=created, now=now, zone=settings.zone, calendar=calendar, edited=change
        ):
            # The schedule's Runbooks, finished ones too: the controller's Runbook watch has unfinished ones
            # only. The clock is read again after the list: a slow list never lets a slot past its
            # deadline run, nor judges a Forbid slot on a view of the previous run newer than the clock.
            listed = await api.labelled_runbooks(namespace, f"{schedule.SCHEDULE_LABEL}={name}")
            bodies = {item["metadata"]["name"]: item for item in listed}
            now = datetime.datetime.now(datetime.UTC)
        runs = [run for run in map(slot_run, bodies.values()) if run is not None]
        step = plan(
            name,
            spec,
            status,
            created=created,
            generation=generation,
            now=now,
            zone=settings.zone,
            calendar=calendar,
            runs=runs,
            edited=change,
        )
    except CalendarError as error:
        await _record(
            api,
            namespace,
            name,
            version,
            status,
            problem(status, generation, schedule.NO_CALENDAR, str(error)),
        )
        return
    if step.create is not None:
        slot = step.create["metadata"]["annotations"][schedule.SLOT_ANNOTATION]
        # Made within the slot's starting deadline or not at all: the API server may hold the create (an
        # admission webhook; its queue when overloaded) and the client tries a failed call again for
        # minutes; this process may have been frozen since it read its clock. Past the deadline, the call
        # is given up (the API server drops a call whose client went), and the next look misses the slot.
        start_by = parse_time(slot) + datetime.timedelta(seconds=spec.starting_deadline_seconds)
        try:
            step = await _create_by(api, namespace, name, step, start_by)
        except TimeoutError:
            log.warning(
                "%s/%s: the Runbook of the slot %s is not made by its deadline", namespace, name, slot
            )
            return
        except ApiError as error:
            if not error.refused_by_admission:
                raise
            log.warning("%s/%s: the Runbook of the slot %s is refused: %s", namespace, name, slot, error)
            await _record(
                api, namespace, name, version, status, refused(status, generation, slot, error.detail)
            )
            return
    if not await _record(api, namespace, name, version, status, step.status):
        return  # not recorded (a newer view exists): the next look decides again, and counts nothing twice
    for kind, reason, message in step.events:
        kopf.event(body, type=kind, reason=reason, message=message)
    run = skips(memo.get("skips"), step, now)
    if run is not None:
        run = await _tell_skips(
            api, memo.events, Ref(namespace, name, body.metadata["uid"], schedule.KIND), run
        )
    memo.skips = None if ends_skips(step) else run or memo.get("skips")
    metrics.record_schedule(namespace, name, step.status, step.counts)
    for doomed in step.delete:
        meta = bodies[doomed]["metadata"]
        await api.delete_runbook(namespace, doomed, meta["uid"], meta["resourceVersion"])


async def _tell_skips(api: KubeApi, events: Events, ref: Ref, run: Skips) -> Skips:
    """Update the Event of the run of skipped slots, or post it (at the run's first skip, or when it
    expired: an hour after it was last updated); the run, with its Event's name. Events are auxiliary:
    one the API server refuses is logged, and the next skip tries again."""
    try:
        if run.event is not None:
            change = {
                "count": run.count,
                "message": run.message,
                "lastTimestamp": format_time(datetime.datetime.now(datetime.UTC)),
            }
            if await api.patch_event(ref.namespace, run.event, change) is not None:
                return run
        event = events.event(ref, "Normal", schedule.SKIPPED, run.message)
        made = await api.post_event(
            ref.namespace, {**event, "count": run.count, "firstTimestamp": format_time(run.since)}
        )
    except ApiError as error:
        log.warning(
            "%s/%s: the Event of %d skipped slots is not posted: %s",
            ref.namespace,
            ref.name,
            run.count,
            error,
        )
        return run
    return dataclasses.replace(run, event=made["metadata"]["name"])


def counted_from(
    status: RunbookScheduleStatus, created: datetime.datetime, now: datetime.datetime
) -> datetime.datetime:
    """Where a schedule's slots are counted from: its last slot (its creation until it has one), within
    ``CATCH_UP`` of ``now``. Only a status written by hand, or a clock gone astray, is further: counted
    from the year 1, a cron trigger's slots held the controller's loop 19 s, and the year 9999 (or a day
    too early for the calendar) failed every look of the schedule."""
    return min(max(parse_time(status.last_slot) or created, now - CATCH_UP), now + CATCH_UP)


def edited(meta: dict[str, Any]) -> datetime.datetime | None:
    """When the schedule was last written, but for its status: the latest time of its managedFields
    (whole seconds) other than the status subresource's; None without them."""
    times = [
        parse_time(entry.get("time"))
        for entry in meta.get("managedFields") or []
        if entry.get("subresource") != "status"
    ]
    return max((t for t in times if t is not None), default=None)


async def _create_by(
    api: KubeApi, namespace: str, name: str, step: Step, start_by: datetime.datetime
) -> Step:
    """:func:`_create`, given up at ``start_by`` (TimeoutError), and never begun after it: the clock is read
    again here, since the slot's plan read it (a process frozen in between wakes up late), and an expired
    timeout would still let the create be sent before the event loop notices."""
    left = (start_by - datetime.datetime.now(datetime.UTC)).total_seconds()
    if left <= 0:
        raise TimeoutError
    async with asyncio.timeout(left):
        return await _create(api, namespace, name, step)


async def _create(api: KubeApi, namespace: str, name: str, step: Step) -> Step:
    """Create the due slot's Runbook. Made already (by another replica, or before a restart): nothing to
    do. Its name taken by a Runbook that is not the slot's (anyone who may create Runbooks may choose any
    name; a REST API token does, by its request id): the slot's is made under a name the API server
    derives from it, and the step says so. Its request id is the schedules' own, so that the ledger still
    lets it run once at most."""
    body = step.create
    assert body is not None
    if await api.create_runbook(namespace, body) is not None:
        return step
    planned = body["metadata"]["name"]
    existing = await api.get_runbook(namespace, planned)
    if existing is None:  # deleted since: the next look creates it
        raise kopf.TemporaryError(f"{planned} was there and is gone", delay=LOOK_SECONDS)
    if existing["metadata"].get("labels", {}).get(schedule.SCHEDULE_LABEL) == name and slot_run(existing):
        log.info("%s/%s: %s exists already", namespace, name, planned)
        return step
    made = await api.create_runbook(namespace, named_after(body))
    assert made is not None  # a generated name is never taken
    taken_by = existing.get("spec", {}).get("requestedBy") or "nobody"
    log.warning(
        "%s/%s: %s is taken by another Runbook; made %s", namespace, name, planned, made["metadata"]["name"]
    )
    return renamed(step, made["metadata"]["name"], taken_by)


async def _record(
    api: KubeApi,
    namespace: str,
    name: str,
    version: str,
    old: RunbookScheduleStatus,
    new: RunbookScheduleStatus,
) -> bool:
    """Write ``new`` if it differs from ``old``, at the resourceVersion it was computed from; whether the
    step stands (written, or nothing to write)."""
    change = _diff(old, new)
    if not change:
        return True
    return await api.patch_schedule_status(namespace, name, version, change) is not None


def _diff(old: RunbookScheduleStatus, new: RunbookScheduleStatus) -> dict[str, Any]:
    """The merge patch from ``old`` to ``new`` (a field that became empty is deleted)."""
    before, after = old.model_dump(by_alias=True, mode="json"), new.model_dump(by_alias=True, mode="json")
    return {key: value for key, value in after.items() if before.get(key) != value}


@kopf.on.delete(*SCHEDULES, optional=True)
def forget(name: str, namespace: str, **_: Any) -> None:
    """A deleted schedule's metrics go with it: their series stay as many as the schedules."""
    metrics.forget_schedule(namespace, name)
