"""The approve endpoint's own logic, without a cluster: how long it waits before it makes an approval."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest

from api.auth import Principal
from api.records import record_of
from api.routes import approvals
from runbooks.calendar import VenueCalendar
from runbooks.contract import APPROVE, format_time

UTC = datetime.UTC
BOB = Principal("bob", frozenset({APPROVE}))


class Cache:
    namespace = "mdops"

    def __init__(self, body: dict[str, Any]):
        self.record = record_of(body)

    def find(self, request_id: str):
        return self.record if request_id == self.record.request_id else None


class Kube:
    """The API's requests to the Kubernetes API: an approval is made, now."""

    def __init__(self) -> None:
        self.objects = self
        self.made: list[dict] = []

    def create_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> dict:
        self.made.append(args[-1])
        return {"metadata": {"creationTimestamp": format_time(datetime.datetime.now(UTC))}}

    async def __call__(self, call, *args: Any, **kwargs: Any) -> Any:
        return call(*args, **kwargs)


def awaiting(created: datetime.datetime) -> dict:
    """A failover by alice that waits for approvals, created at ``created`` by the API server's clock."""
    condition = {
        "type": "Succeeded",
        "status": "Unknown",
        "reason": "AwaitingApproval",
        "message": "waiting for 0 of 1 approvals",
        "lastTransitionTime": format_time(created),
    }
    return {
        "metadata": {
            "name": "fo-1",
            "uid": "u-1",
            "resourceVersion": "1",
            "creationTimestamp": format_time(created.replace(microsecond=0)),
        },
        "spec": {"command": "failover", "requestId": "fo-1", "requestedBy": "alice"},
        "status": {"conditions": [condition]},
    }


@pytest.mark.parametrize("behind", [0.0, 30.0])
def test_an_approval_waits_at_most_a_second_for_the_runs_next_second(monkeypatch, behind):
    """The approval is made in a second after the run's own (one in the same second would not count), up to
    a second later, as the README says; also when this process's clock is ``behind`` the API server's (the
    run's creation time then lies ahead of it): never as long as the clocks differ."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(approvals.asyncio, "sleep", sleep)
    created = datetime.datetime.now(UTC) + datetime.timedelta(seconds=behind)
    kube = Kube()
    answer = asyncio.run(
        approvals._decide(
            "Approve", "fo-1", UTC, VenueCalendar("XHKG"), Cache(awaiting(created)), kube, BOB, None
        )
    )
    assert answer.status_code == 201 and len(kube.made) == 1
    assert sum(slept) <= 1.0, slept
