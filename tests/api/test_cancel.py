"""``POST /api/ops/runbooks/{request_id}/cancel``.

Most tests run the real API process as mdops's ServiceAccount with its packaged Role, under the identity
policies (as tests/api/test_approvals.py does): a cancel is spec.cancel set as the token's name, which the
API server accepts from that account only because its Role allows it. No controller runs there: runs stay
pending, and the states a run reaches later are written as only the controller does. The last tests run the
real controller: what a cancel does to a run.
"""

from __future__ import annotations

import json

import pytest

from api.routes import cancel as cancel_route
from devcluster.processes import wait_until
from runbooks import models
from tests.api.conftest import EXECUTOR_TOKEN, RECORD, as_service_account, auth, http, wait_cached
from tests.api.proxy import Proxy
from tests.runbook_client import HOLD

TOKENS = {
    "alice": ("alice-token-for-tests", ["runbooks:execute", "status:read"]),
    "bob": ("bob-token-for-the-tests", ["runbooks:execute:failover", "status:read"]),
    "carol": ("carol-token-for-tests", ["status:read"]),
    "dave": ("dave-token-for-the-tests", ["runbooks:execute:health_check", "status:read"]),
    "erin": ("erin-token-for-the-tests", ["runbooks:execute"]),
}


def token(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name][0]}"}


@pytest.fixture
def api(start_server, identities, namespace, tmp_path):
    return as_service_account(start_server, identities, namespace, tmp_path, TOKENS)


def execute(api, who: str, request_id: str, command: str = "failover") -> None:
    body = {"command": command, "request_id": request_id}
    code, _, text = http("POST", f"{api.url}/api/ops/runbooks/execute", body, token(who))
    assert code == 202, text  # pending: no controller


def cancel(api, who: str, request_id: str, body: dict | None = None) -> tuple[int, dict]:
    code, _, text = http("POST", f"{api.url}/api/ops/runbooks/{request_id}/cancel", body, token(who))
    return code, json.loads(text) if text else {}


def spec_cancel(cluster, namespace: str, name: str) -> dict | None:
    got = cluster.kubectl("get", "rb", name, "-n", namespace, "-o", "json")
    return json.loads(got.stdout)["spec"].get("cancel")


def test_a_cancel_is_spec_cancel_set_as_the_token_s_name_once(api, identities, namespace):
    execute(api, "alice", "fo-1")
    code, body = cancel(api, "bob", "fo-1", {"reason": "wrong venue"})
    assert code == 202, body
    assert body["cancel"] == {"requested_by": "bob", "reason": "wrong venue"}
    assert body["runbook"]["request_id"] == "fo-1" and body["runbook"]["status"] == "pending"
    assert spec_cancel(identities, namespace, "fo-1") == {"requestedBy": "bob", "reason": "wrong venue"}
    # The run's page shows it, as soon as the cache has it.
    wait_until(
        lambda: (
            json.loads(http("GET", f"{api.url}/api/ops/runbooks/fo-1", headers=token("carol"))[2])["cancel"]
            == {"requested_by": "bob", "reason": "wrong venue"}
        ),
        30,
        "the run's page to show the cancel",
    )
    # Again, by another: nothing changes, and the answer says so (200, not 202), with who cancelled.
    code, body = cancel(api, "alice", "fo-1", {"reason": "changed my mind"})
    assert code == 200, body
    assert body["cancel"] == {"requested_by": "bob", "reason": "wrong venue"}
    assert spec_cancel(identities, namespace, "fo-1") == {"requestedBy": "bob", "reason": "wrong venue"}


def test_a_cancel_without_a_body_names_the_token_and_no_reason(api, identities, namespace):
    execute(api, "erin", "fo-nobody")
    code, body = cancel(api, "erin", "fo-nobody")
    assert code == 202, body
    assert spec_cancel(identities, namespace, "fo-nobody") == {"requestedBy": "erin", "reason": ""}
    assert body["cancel"] == {"requested_by": "erin", "reason": ""}


def test_who_may_cancel_and_what_is_refused(api, identities, namespace):
    execute(api, "alice", "fo-2")
    assert http("POST", f"{api.url}/api/ops/runbooks/fo-2/cancel")[0] == 401
    code, body = cancel(api, "carol", "fo-2")  # no execute permission at all: refused before the body
    assert (code, body["detail"]) == (
        403,
        "token 'carol' lacks the permission 'runbooks:execute' (or runbooks:execute:<command>)",
    )
    code, body = cancel(api, "dave", "fo-2")  # may run health checks, not failovers
    assert (code, body["detail"]) == (403, "token 'dave' lacks the permission 'runbooks:execute:failover'")
    # erin may run anything but reads only her own runs: of alice's she is told nothing, as GET tells her.
    assert cancel(api, "erin", "fo-2") == (404, {"detail": "no runbook with request_id 'fo-2'"})
    assert cancel(api, "bob", "no-such-run") == (404, {"detail": "no runbook with request_id 'no-such-run'"})
    code, body = cancel(api, "bob", "fo-2", {"reason": "x" * 2000})
    assert code == 422 and body["detail"][0]["loc"] == ["body", "reason"]
    code, body = cancel(api, "bob", "fo-2", {"reason": "\u001b[2J"})
    assert (code, body["detail"][0]["type"]) == (422, "control_character")
    code, body = cancel(api, "bob", "fo-2", {"reason": "ok", "force": True})
    assert (code, body["detail"][0]["type"]) == (422, "extra_forbidden")
    code, body = cancel(api, "bob", "fo-2", {"reason": 7})
    assert code == 422, body
    code, body = cancel(api, "bob", "fo-2", {"uid": "not-a-uid"})
    assert (code, body["detail"][0]["loc"]) == (422, ["body", "uid"])
    assert spec_cancel(identities, namespace, "fo-2") is None


def test_a_cancel_of_the_run_shown_is_refused_once_its_request_id_names_another(api, identities, namespace):
    """The page (or script) shows a run, which is deleted and asked for again with its request id: a cancel
    that names the run shown by its uid cancels nothing, rather than the new run nobody looked at."""
    execute(api, "alice", "fo-shown")
    got = identities.kubectl("get", "rb", "fo-shown", "-n", namespace, "-o", "json")
    shown = json.loads(got.stdout)["metadata"]["uid"]
    identities.kubectl("delete", "rb", "fo-shown", "-n", namespace)
    execute(api, "alice", "fo-shown")

    def made_again() -> bool:
        code, _, text = http("GET", f"{api.url}/api/ops/runbooks/fo-shown", headers=token("alice"))
        return code == 200 and json.loads(text)["runbook"]["uid"] != shown

    wait_until(made_again, 30, "the API to see the run made again")
    code, body = cancel(api, "bob", "fo-shown", {"reason": "not that one", "uid": shown})
    assert (code, body) == (
        409,
        {
            "detail": f"run 'fo-shown' is not the one you named (Runbook {shown}): either the run you named "
            "was deleted and its request id asked for again since you looked, or the uid is mistyped: "
            "nothing was cancelled"
        },
    )
    assert spec_cancel(identities, namespace, "fo-shown") is None
    now = json.loads(identities.kubectl("get", "rb", "fo-shown", "-n", namespace, "-o", "json").stdout)
    code, body = cancel(api, "bob", "fo-shown", {"uid": now["metadata"]["uid"]})
    assert code == 202, body


CONDITION = {"type": "Succeeded", "lastTransitionTime": "2026-01-05T02:00:00Z"}
SUCCEEDED = {"status": "True", "reason": "Succeeded", "message": "succeeded"}
FINISHED = {"result": "success", "exitCode": 0}


def test_a_finished_run_is_not_cancelled_and_the_answer_shows_how_it_ended(api, identities, namespace):
    manifest = models.manifest("done-1", {"command": "restart", "requestedBy": "alice"})
    identities.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    ended = {**FINISHED, "conditions": [{**CONDITION, **SUCCEEDED}]}
    identities.kubectl(
        "patch", "rb", "done-1", "-n", namespace, "--subresource=status", "--type=merge", "-p",
        json.dumps({"status": ended}),
    )  # fmt: skip

    def seen() -> bool:
        code, _, text = http("GET", f"{api.url}/api/ops/runbooks/done-1", headers=token("alice"))
        return code == 200 and json.loads(text)["runbook"]["status"] == "success"

    wait_until(seen, 30, "the API to see the run finished")
    code, body = cancel(api, "alice", "done-1", {"reason": "too late"})
    assert code == 409, body
    assert body["detail"] == "run 'done-1' has finished (success, exit code 0): nothing to cancel"
    assert (body["runbook"]["status"], body["runbook"]["exit_code"], body["cancel"]) == ("success", 0, None)
    assert spec_cancel(identities, namespace, "done-1") is None


def test_what_the_cache_has_not_seen_yet_the_api_server_tells(start_server, cluster, runbooks, tmp_path):
    """The API's watch falls behind (stalled): a run that has finished, or been cancelled by another,
    meanwhile is refused by the API server's own rules, and the answer is as if the cache had seen it,
    from the Runbook read again; a Runbook deleted and made again meanwhile is not cancelled in the place
    of the one looked up (the patch's uid)."""
    with Proxy(cluster.server) as proxy:
        server = start_server(
            MDOPS_KUBECONFIG=str(proxy.kubeconfig(cluster.kubeconfig, tmp_path / "proxied"))
        )
        names = ("ends-unseen", "cancelled-unseen", "made-again-unseen")
        for name in names:
            runbooks.create(name, command="restart")

        # Seen by the cache (not asked of the API server: a connection its requests opened before the
        # stall would stall too).
        wait_until(lambda: set(names) <= listed(server.url), 30, "the API's cache to hold the runs")
        proxy.stall()  # the API's watch (open now) stops; its requests (new connections) still go through
        runbooks.set_status("ends-unseen", {**FINISHED, "conditions": [{**CONDITION, **SUCCEEDED}]})
        runbooks.custom.patch_namespaced_custom_object(
            *runbooks._args(), "cancelled-unseen", {"spec": {"cancel": {"reason": "by kubectl"}}}
        )
        runbooks.delete("made-again-unseen")
        again = runbooks.create("made-again-unseen", command="restart")
        url = f"{server.url}/api/ops/runbooks/{{}}/cancel"
        code, _, text = http("POST", url.format("ends-unseen"), {"reason": "late"}, auth())
        assert code == 409, text
        body = json.loads(text)
        assert body["detail"] == "run 'ends-unseen' has finished (success, exit code 0): nothing to cancel"
        assert (body["runbook"]["status"], body["cancel"]) == ("success", None)
        code, _, text = http("POST", url.format("cancelled-unseen"), {"reason": "me too"}, auth())
        assert code == 200, text
        assert json.loads(text)["cancel"] == {"requested_by": None, "reason": "by kubectl"}
        code, _, text = http("POST", url.format("made-again-unseen"), None, auth())
        assert code == 409, text
        assert json.loads(text) == {
            "detail": "run 'made-again-unseen' was deleted and its Runbook made again as it was cancelled: "
            "nothing was cancelled; look at the run again"
        }
        proxy.resume()
    now = runbooks.get("made-again-unseen")
    assert now["metadata"]["uid"] == again["metadata"]["uid"] and "cancel" not in now["spec"]
    assert "cancel" not in runbooks.get("ends-unseen")["spec"]
    assert runbooks.get("cancelled-unseen")["spec"]["cancel"] == {"requestedBy": "", "reason": "by kubectl"}


def test_a_run_the_cache_has_not_seen_yet_is_read_and_cancelled_not_a_404(
    start_server, cluster, runbooks, tmp_path
):
    """The API's watch behind a create (stalled here; in the soak, a kube-apiserver killed or frozen; or
    another API replica made the run): the read and the cancel of a run that the API server has, and the
    cache not yet, ask the API server before a 404 that says there is no such run (before, that 404: a final
    answer, and the run went on uncancelled; a console that had the 202 of its execute was told that its run
    did not exist)."""
    with Proxy(cluster.server) as proxy:
        server = start_server(
            MDOPS_KUBECONFIG=str(proxy.kubeconfig(cluster.kubeconfig, tmp_path / "proxied"))
        )
        runbooks.create("seen-first", command="restart")
        wait_until(lambda: "seen-first" in listed(server.url), 30, "the API's cache to hold a run")
        proxy.stall()  # the API's watch (open now) stops; its requests (new connections) still go through
        runbooks.create("made-unseen", command="restart", requestedBy="ops")
        code, _, text = http("GET", f"{server.url}/api/ops/runbooks/made-unseen", headers=auth())
        assert code == 200, text
        run = json.loads(text)["runbook"]
        assert (run["request_id"], run["requested_by"], run["status"]) == ("made-unseen", "ops", "pending")
        assert "made-unseen" not in listed(server.url)  # the cache has still not seen it
        code, _, text = http(
            "GET", f"{server.url}/api/ops/runbooks/made-unseen", headers=auth(EXECUTOR_TOKEN)
        )
        assert code == 404, text  # a token without status:read reads its own runs only, as from the cache
        url = f"{server.url}/api/ops/runbooks/{{}}/cancel"
        code, _, text = http("POST", url.format("made-unseen"), {"reason": "not now"}, auth())
        assert code == 202, text
        assert json.loads(text)["cancel"] == {"requested_by": "admin", "reason": "not now"}
        for asked in ("GET", "POST"):
            where = "/api/ops/runbooks/never-made" + ("/cancel" if asked == "POST" else "")
            code, _, text = http(asked, server.url + where, None, auth())
            assert (code, json.loads(text)) == (404, {"detail": "no runbook with request_id 'never-made'"})
        proxy.resume()
    assert runbooks.get("made-unseen")["spec"]["cancel"] == {"requestedBy": "admin", "reason": "not now"}


def listed(url: str) -> set[str]:
    """The request ids of the runs list's first page: the API's cache alone (a run's GET may ask the API
    server)."""
    code, _, text = http("GET", f"{url}/api/ops/runbooks?limit=200", headers=auth())
    assert code == 200, text
    return {run["request_id"] for run in json.loads(text)["runbooks"]}


class Meanwhile:
    """The API's requests to the Kubernetes API (:class:`api.kube.KubeRequests`), each as it is, but with what
    another client does (for real, on the same API server) just before the API's request of a given kind:
    the moment between two requests of one API call that no test can hit from outside."""

    def __init__(self, kube, before: dict):
        self.kube = kube
        self.before = before  # the function the API's request calls (e.g. read_runbook): what happens first

    async def __call__(self, call, *args, **kwargs):
        if (happens := self.before.pop(call, None)) is not None:
            happens()
        return await self.kube(call, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.kube, name)


def seen_then_ended(api, runbooks, name: str) -> dict:
    """A restart ``name`` made and seen by the API; the finished status the test then ends it with."""
    runbooks.create(name, command="restart")
    wait_cached(api, name)
    return {**FINISHED, "conditions": [{**CONDITION, **SUCCEEDED}]}


def test_a_run_deleted_after_the_api_server_refused_its_cancel_is_not_found(start_api, runbooks):
    """The run finishes as the cancel is asked for (the API server refuses the patch: the cache had not seen
    the end), then its Runbook is deleted before the API reads it again: a 404, as for a run that does not
    exist, never a 503 that tells the client to try again."""
    api = start_api()
    ended = seen_then_ended(api, runbooks, "ends-then-goes")
    api.app.state.kube = Meanwhile(
        api.app.state.kube,
        {
            cancel_route._patch: lambda: runbooks.set_status("ends-then-goes", ended),
            cancel_route.read_runbook: lambda: runbooks.delete("ends-then-goes"),
        },
    )
    answer = api.post("/api/ops/runbooks/ends-then-goes/cancel", json={"reason": "late"}, headers=auth())
    assert (answer.status_code, answer.json()) == (
        404,
        {"detail": "no runbook with request_id 'ends-then-goes': deleted as it was cancelled"},
    )
    assert runbooks.gone("ends-then-goes")


def test_a_run_made_again_after_the_api_server_refused_its_cancel_is_not_shown_in_its_place(
    start_api, runbooks
):
    """As above, but the request id is asked for again before the API reads the Runbook: the Runbook read is
    another run, which nobody asked to cancel; the answer says so (409, nothing cancelled), never that run
    as the one that had finished."""
    api = start_api()
    ended = seen_then_ended(api, runbooks, "ends-then-again")

    def made_again() -> None:
        runbooks.delete("ends-then-again")
        runbooks.create("ends-then-again", command="restart")

    api.app.state.kube = Meanwhile(
        api.app.state.kube,
        {
            cancel_route._patch: lambda: runbooks.set_status("ends-then-again", ended),
            cancel_route.read_runbook: made_again,
        },
    )
    answer = api.post("/api/ops/runbooks/ends-then-again/cancel", json={"reason": "late"}, headers=auth())
    assert (answer.status_code, answer.json()) == (
        409,
        {
            "detail": "run 'ends-then-again' was deleted and its Runbook made again as it was cancelled: "
            "nothing was cancelled; look at the run again"
        },
    )
    assert "cancel" not in runbooks.get("ends-then-again")["spec"]


@pytest.fixture
def admin_api(start_api):
    return start_api(api_execute_wait_seconds=0)


def _ended(admin_api, request_id: str) -> dict | None:
    got = admin_api.get(f"/api/ops/runbooks/{request_id}", headers=auth()).json()
    return got if got["runbook"]["status"] in ("success", "failed") else None


def test_a_run_cancelled_before_it_started_never_starts(admin_api, runbooks, start_controller, scripts):
    scripts.write("restart", RECORD)
    answer = admin_api.post(
        "/api/ops/runbooks/execute", json={"command": "restart", "request_id": "never-1"}, headers=auth()
    )
    assert answer.status_code == 202, answer.text  # no controller yet: pending
    cancelled = admin_api.post("/api/ops/runbooks/never-1/cancel", json={"reason": "not now"}, headers=auth())
    assert cancelled.status_code == 202, cancelled.text
    start_controller(**scripts.controller_env())
    got = wait_until(lambda: _ended(admin_api, "never-1"), 60, "the cancelled run to end")
    assert got["runbook"]["status"] == "failed" and got["runbook"]["exit_code"] is None
    assert got["runbook"]["message"] == "cancelled by admin before it started: not now"
    assert got["conditions"][0]["reason"] == "Cancelled"
    assert scripts.runs() == []


def test_a_running_run_is_stopped_and_keeps_its_record(admin_api, runbooks, controller, scripts):
    scripts.write("drill", RECORD + "echo 'INFO: drilling'\n" + HOLD)
    answer = admin_api.post(
        "/api/ops/runbooks/execute", json={"command": "drill", "request_id": "stop-1"}, headers=auth()
    )
    assert answer.status_code == 202, answer.text
    runbooks.wait_for("stop-1", "Running", "True")
    # Running is said as the runner starts: the script itself has begun once it has written its record.
    wait_until(lambda: scripts.runs() == ["stop-1 dry=0"], 30, "the script to have begun")
    cancelled = admin_api.post(
        "/api/ops/runbooks/stop-1/cancel", json={"reason": "drill over"}, headers=auth()
    )
    assert cancelled.status_code == 202, cancelled.text
    got = wait_until(lambda: _ended(admin_api, "stop-1"), 60, "the cancelled run to end")
    assert (got["runbook"]["status"], got["runbook"]["exit_code"]) == ("failed", 130)
    assert got["conditions"][0]["reason"] == "Cancelled"
    assert got["cancel"] == {"requested_by": "admin", "reason": "drill over"}
    assert scripts.runs() == ["stop-1 dry=0"]
    assert runbooks.get("stop-1") is not None  # the record stays
