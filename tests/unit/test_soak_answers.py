"""bench.soak_api: which answers a careful client stops on, and the final answers held against the witness."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.soak_api import Answer, answer_problems, final


@pytest.mark.parametrize(
    ("code", "body", "stops"),
    [
        ("200", {"runbook": {"status": "success"}}, True),
        ("202", {"runbook": {"status": "running"}}, False),
        ("lost", {}, False),
        ("timeout", {}, False),
        ("503", {"detail": "Kubernetes API unreachable: ..."}, False),
        ("500", {"detail": "Internal Server Error"}, False),
        ("500", {"detail": "script execution error (exit code 125) for request 'r'"}, True),
        ("409", {"detail": "request_id 'r' was already used with other parameters"}, True),
        ("422", {"detail": []}, True),
        ("404", {"detail": "no runbook"}, True),
    ],
)
def test_a_careful_client_stops_on_a_200_a_4xx_or_the_500_of_a_script_not_executed(code, body, stops):
    assert final(code, body) is stops


def answered(code: int | None, status: str | None = None, exit_code: int | None = None, detail: str = ""):
    return Answer("r", again=False, code=code, status=status, exit_code=exit_code, detail=detail,
                  attempts=Counter({"lost": 2, str(code): 1}))  # fmt: skip


@pytest.mark.parametrize(
    ("answer", "starts", "ends", "stopped", "deleted"),
    [
        (answered(200, "success", 0), 1, 0, False, False),
        (answered(200, "failed", 1), 1, 7, False, False),
        (answered(200, "failed", 130), 1, None, True, False),  # cancelled while it ran
        (answered(200, "failed", None), 0, None, True, False),  # cancelled before it started
        (answered(200, "failed", 125), 0, None, False, False),  # not run: Lost, never started
        (answered(500, detail="script execution error (exit code 125)"), 0, None, False, False),
        (answered(409, detail="its Runbook 'r' was deleted before the run finished"), 1, None, True, True),
        (answered(200, "failed", 130), 1, None, True, True),  # deleted, asked again: the ledger's result
        (answered(200, "success", 0), 1, 0, True, True),  # deleted after its end, asked again
    ],
)
def test_answers_that_agree_with_the_witness(answer, starts, ends, stopped, deleted):
    assert answer_problems(
        [answer], {"r": starts}, {} if ends is None else {"r": ends}, {"r"} if stopped else set(),
        {"r"} if deleted else set(),
    ) == []  # fmt: skip


@pytest.mark.parametrize(
    ("answer", "starts", "ends", "stopped", "deleted", "said"),
    [
        (answered(200, "success", 0), 0, None, False, False, "started 0 times"),  # a success never run
        (answered(200, "success", 0), 1, 7, False, False, "ended 7"),  # not the script's end
        (answered(200, "failed", 1), 1, 0, False, False, "ended 0"),
        (answered(200, "failed", 130), 1, None, False, False, "ended None"),  # stopped, never asked to
        (answered(200, "failed", 1), 1, None, True, False, "ended None"),  # stopped, not said cancelled
        (answered(200, "failed", 1), 0, None, False, False, "started 0 times"),  # a script's failure, unrun
        (answered(500, detail="script execution error"), 1, 0, False, False, "but its script started"),
        (answered(409, detail="its Runbook 'r' was deleted"), 1, 0, True, False, "refused"),  # cancelled
        (answered(409, detail="already used with other parameters"), 1, 0, True, True, "refused"),
        (answered(422, detail="kubernetes_refused"), 0, None, False, False, "refused"),
        (answered(None), 0, None, False, False, "no final answer"),
    ],
)
def test_answers_that_the_witness_contradicts(answer, starts, ends, stopped, deleted, said):
    (problem,) = answer_problems(
        [answer], {"r": starts}, {} if ends is None else {"r": ends}, {"r"} if stopped else set(),
        {"r"} if deleted else set(),
    )  # fmt: skip
    assert problem.startswith("r: ") and said in problem
