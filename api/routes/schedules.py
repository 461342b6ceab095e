"""``GET /api/ops/schedules``: the RunbookSchedules of the namespace and their next slots (status:read).

Listed from the Kubernetes API at each request, one page of at most ``MAX_SCHEDULES``: schedules are few
(each costs the controller a look a second), so a bounded list costs the API server little, is always
fresh, and needs no second watch in the API (the watch-fed cache is for Runbooks, which are thousands).
The next slots are computed here with the controller's own slot logic and the venue's calendar.
"""

from __future__ import annotations

import asyncio
import datetime
from itertools import islice
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from api.deps import CacheDep, KubeDep, SettingsDep, StatusReader
from api.jsonbody import StrictJSONRoute
from api.kube import REQUEST_TIMEOUT
from api.openapi import PROTECTED, responses
from api.render import iso, zoned
from api.schemas import DECIMAL, SchedulesResponse
from runbooks import keys, schedule
from runbooks.calendar import CalendarError, SessionCalendar
from runbooks.contract import ConditionType
from runbooks.schedule import RunbookScheduleSpec, RunbookScheduleStatus

router = APIRouter(prefix="/api/ops", tags=["schedules"], route_class=StrictJSONRoute)
MAX_SCHEDULES = 200


@router.get(
    "/schedules",
    response_model=SchedulesResponse,
    summary="The schedules, their last slot and result, and their next slots (status:read)",
    responses=responses(*PROTECTED, 422, 503),
)
async def list_schedules(
    settings: SettingsDep,
    kube: KubeDep,
    cache: CacheDep,
    principal: StatusReader,
    slots: Annotated[
        int, Query(ge=0, le=20, description="How many next slots to show per schedule."), DECIMAL
    ] = 3,
) -> JSONResponse:
    page = await kube(
        kube.objects.list_namespaced_custom_object,
        keys.GROUP,
        keys.VERSION,
        settings.namespace,
        schedule.PLURAL,
        limit=MAX_SCHEDULES,
        _request_timeout=REQUEST_TIMEOUT,
    )
    now = datetime.datetime.now(datetime.UTC)
    calendar: SessionCalendar | str
    try:  # loaded at start (the lifespan's prefetch); the first request may wait for that load
        calendar = await asyncio.to_thread(
            settings.calendar.covering, now, now + schedule.NEXT_HORIZON + datetime.timedelta(days=1)
        )
    except CalendarError as error:
        calendar = str(error)
    views = [schedule_view(obj, now, calendar, slots, settings.zone) for obj in page.get("items", [])]
    for view in views:  # the last run's request id, by which the API reads it (its name may differ)
        last = cache.get(view["last_runbook"]) if view["last_runbook"] else None
        view["last_request_id"] = last.request_id if last is not None else None
    truncated = bool((page.get("metadata") or {}).get("continue"))
    return JSONResponse({"schedules": views, "truncated": truncated})


def schedule_view(
    obj: dict[str, Any],
    now: datetime.datetime,
    calendar: SessionCalendar | str,
    count: int,
    zone: datetime.tzinfo,
) -> dict[str, Any]:
    """One schedule as the API shows it; ``calendar`` is the venue's, or why there is none. A trigger that
    uses sessions when the calendar cannot answer for its slots says why in its ``problem``; the others
    need no calendar."""
    raw = obj.get("spec") or {}
    template = raw.get("template") or {}
    status = RunbookScheduleStatus.model_validate(obj.get("status") or {})
    ready = next((c for c in status.conditions if c.type == ConditionType.READY), None)
    problem = ready.message if ready is not None and ready.status == "False" else None
    next_slots: list[str] | None = None
    try:
        spec = RunbookScheduleSpec.model_validate(raw)
    except ValidationError as error:
        spec, problem = None, f"invalid spec: {error.errors()[0]['msg']}"
    if spec is not None and spec.trigger.uses_sessions and isinstance(calendar, str):
        problem = problem or calendar
    elif spec is not None:
        sessions = calendar if spec.trigger.uses_sessions else None
        try:
            runnable = schedule.upcoming(spec.trigger, now, zone, sessions)
            next_slots = [] if spec.suspend else [iso(at, zone) for at in islice(runnable, count)]
        except CalendarError as error:  # the calendar cannot answer for its slots
            problem = problem or str(error)
    return {
        "name": obj["metadata"]["name"],
        "schedule": spec.trigger.describe() if spec is not None else status.schedule,
        "command": template.get("command"),
        "profile": template.get("profile"),
        "mode": template.get("mode"),
        "suspended": bool(raw.get("suspend", False)),
        "concurrency_policy": raw.get("concurrencyPolicy"),
        "next_slots": next_slots,
        "last_slot": zoned(status.last_slot, zone),
        "last_runbook": status.last_runbook,
        "last_result": status.last_result,
        "missed_slots": status.missed_slots,
        "skipped_slots": status.skipped_slots,
        "problem": problem,
    }
