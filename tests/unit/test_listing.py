"""The runs list's pure parts: filters, order, pages and their cursor."""

from __future__ import annotations

import datetime
import re

import pytest

from api import listing
from api.listing import CURSOR_PATTERN, Filters, decode_cursor, encode_cursor, key
from api.records import record_of
from runbooks import keys
from runbooks.contract import Command, RunState

T0 = datetime.datetime(2026, 12, 4, 1, 0, tzinfo=datetime.UTC)


def record(name, command="start", second=0, micro=None, requested_by="", finished=False):
    created = (T0 + datetime.timedelta(seconds=second)).isoformat().replace("+00:00", "Z")
    annotations = {}
    if micro is not None:  # the API's own request time, finer than creationTimestamp
        requested = T0 + datetime.timedelta(seconds=second, microseconds=micro)
        annotations[keys.REQUESTED_AT] = requested.isoformat()
    condition = {"type": "Succeeded", "status": "True", "reason": "Succeeded", "lastTransitionTime": created}
    return record_of(
        {
            "metadata": {"name": name, "uid": name, "creationTimestamp": created, "annotations": annotations},
            "spec": {"command": command, "requestedBy": requested_by},
            "status": {"conditions": [condition]} if finished else {},
        }
    )


def names(found):
    return [r.name for r in found.records]


def page(records, filters, limit, after=None):
    """A page of ``records`` (in any order), ordered as the cache keeps them."""
    return listing.page(sorted(records, key=key), filters, limit, after)


def test_newest_first_by_creation_then_request_time_then_name():
    records = [
        record("a", second=1),
        record("b", second=2, micro=5),
        record("c", second=2, micro=900),
        record("d", second=3),
        record("e", second=3),
    ]
    assert names(page(records, Filters(), 10)) == ["e", "d", "c", "b", "a"]


def test_pages_list_every_run_once_and_stop_with_no_cursor():
    records = [record(f"r{i:03d}", second=i // 7) for i in range(101)]  # many share a second
    seen, cursor, pages = [], None, 0
    while True:
        found = page(records, Filters(), 10, cursor)
        assert found.matched == 101
        seen += names(found)
        pages += 1
        if found.next_cursor is None:
            break
        cursor = decode_cursor(encode_cursor(found.next_cursor))
    assert pages == 11
    assert seen == sorted((r.name for r in records), key=lambda n: (int(n[1:]) // 7, n), reverse=True)


def test_a_full_last_page_has_no_next_cursor():
    records = [record(f"r{i}", second=i) for i in range(4)]
    first = page(records, Filters(), 2)
    last = page(records, Filters(), 2, first.next_cursor)
    assert (names(first), names(last), last.next_cursor) == (["r3", "r2"], ["r1", "r0"], None)


def test_a_cursor_survives_its_run_being_deleted_and_new_runs_come_first():
    records = [record(f"r{i}", second=i) for i in range(6)]
    first = page(records, Filters(), 3)
    later = [r for r in records if r.name != "r3"] + [record("new", second=99)]
    assert names(page(later, Filters(), 3, first.next_cursor)) == ["r2", "r1", "r0"]
    assert names(page(later, Filters(), 1)) == ["new"]


def test_filters_combine_and_count_every_match():
    records = [
        record("s1", "start", 1, requested_by="Alice"),
        record("s2", "start", 2, requested_by="bob", finished=True),
        record("f1", "failover", 3, requested_by="alice.w"),
        record("s3", "start", 4, requested_by="ALICE", finished=True),
    ]
    found = page(records, Filters(command=Command.START, requested_by="alice"), 1)
    assert (names(found), found.matched) == (["s3"], 2)
    assert names(page(records, Filters(status=RunState.SUCCESS), 10)) == ["s3", "s2"]
    assert names(page(records, Filters(since=T0 + datetime.timedelta(seconds=3)), 10)) == ["s3", "f1"]
    assert page(records, Filters(command=Command.DRILL), 10) == page([], Filters(), 10)


class Watched(list):
    """A list that counts the runs read from it, and refuses to be walked whole."""

    reads = 0

    def __getitem__(self, index):
        Watched.reads += 1
        return super().__getitem__(index)

    def __iter__(self):
        raise AssertionError("the page walked every run")


def test_a_page_without_filters_reads_the_runs_it_shows_not_every_run():
    """The console's list, at every change of any run: its cost must not grow with the namespace."""
    records = Watched(sorted((record(f"r{i:05d}", second=i) for i in range(5000)), key=key))
    first = listing.page(records, Filters(), 50)
    second = listing.page(records, Filters(), 50, first.next_cursor)
    assert names(second) == [f"r{i:05d}" for i in range(4949, 4899, -1)]
    assert (first.matched, second.matched) == (5000, 5000)
    assert Watched.reads <= 2 * 51 + 13  # the runs shown and the next cursor's, and a bisection (log2 5000)


def test_a_cursor_keeps_microseconds_and_names_its_place():
    run = record("x.y-z", second=5, micro=123456)
    cursor = encode_cursor(key(run))
    assert re.fullmatch(CURSOR_PATTERN, cursor)
    assert decode_cursor(cursor) == key(run)
    assert (
        cursor == f"{int(T0.timestamp()) * 10**6 + 5_000_000}-{int(T0.timestamp()) * 10**6 + 5_123_456}-x.y-z"
    )


def test_any_place_of_the_pattern_is_a_cursor():
    records = [record(f"r{i}", second=i) for i in range(4)]
    middle = int(T0.timestamp()) * 10**6 + 2_000_000
    assert names(page(records, Filters(), 10, decode_cursor(f"{middle}-{middle}-r2"))) == ["r1", "r0"]
    assert names(page(records, Filters(), 10, decode_cursor("0-0-a"))) == []
    assert names(page(records, Filters(), 10, decode_cursor("99999999999999999-0-a"))) == [
        "r3",
        "r2",
        "r1",
        "r0",
    ]


@pytest.mark.parametrize(
    "text", ["", "1-2", "1-2-", "a-2-x", "1-2-X", "1-2--x", "123456789012345678-2-x", "1-2-x-"]
)
def test_the_pattern_refuses_what_is_no_place(text):
    assert not re.fullmatch(CURSOR_PATTERN, text)
