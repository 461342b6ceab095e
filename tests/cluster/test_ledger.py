"""The ledger's writes against a Lease that another controller replica changed since it was read, on the
real API server (two replicas act at once while kopf's peering settles)."""

from __future__ import annotations

import asyncio

from kubernetes import client

from controller import ledger, login
from controller.kubeapi import KubeApi
from runbooks import keys


def claims_then_released(cluster, namespace: str, change) -> None:
    """A claim read by one replica; ``change`` done to it by another (with its own entry of the claim); then
    the first replica gives the claim up with the entry it read."""

    async def scenario() -> None:
        kube = KubeApi(lambda: login.from_kubeconfig(cluster.kubeconfig))
        try:
            book = ledger.Ledger(kube)
            claim = await book.claim(
                namespace, "req-1", "uid-1", "first", 1, "request", "default", {"command": "failover"}
            )
            assert claim.unstarted
            await change(book, await book.lookup(namespace, "req-1"))
            await book.release(claim, namespace)
        finally:
            await kube.close()

    asyncio.run(scenario())


def lease(api_client, namespace: str) -> client.V1Lease | None:
    try:
        return client.CoordinationV1Api(api_client).read_namespaced_lease(
            ledger.lease_name("req-1"), namespace
        )
    except client.ApiException as error:
        if error.status != 404:
            raise
        return None


def test_a_claim_whose_mark_came_off_since_it_was_read_is_kept(cluster, namespace, api_client):
    """The other replica took the mark off to start the run: freeing the request id then would let it run
    again. Before, the release read the Lease again after its conflict and deleted it all the same."""

    async def starts(book: ledger.Ledger, entry: ledger.Entry) -> None:
        await book.mark_unstarted(entry, namespace, unstarted=False)

    claims_then_released(cluster, namespace, starts)
    kept = lease(api_client, namespace)
    assert kept is not None and keys.UNSTARTED not in (kept.metadata.annotations or {})


def test_a_claim_that_only_noted_a_duplicate_since_it_was_read_is_released(cluster, namespace, api_client):
    async def notes(book: ledger.Ledger, entry: ledger.Entry) -> None:
        await book.note_duplicate(entry, namespace, "uid-2")

    claims_then_released(cluster, namespace, notes)
    assert lease(api_client, namespace) is None


def freed_then(cluster, namespace: str, step):
    """A claim that another replica freed (as it does for a Runbook deleted before its run started) after
    this replica read it; then ``step`` with the entry read, its outcome."""

    async def scenario():
        kube = KubeApi(lambda: login.from_kubeconfig(cluster.kubeconfig))
        try:
            book = ledger.Ledger(kube)
            claim = await book.claim(
                namespace, "req-1", "uid-1", "first", 1, "request", "default", {"command": "failover"}
            )
            await book.release(await book.lookup(namespace, "req-1"), namespace)
            return await step(book, claim)
        finally:
            await kube.close()

    return asyncio.run(scenario())


def test_the_mark_taken_off_a_freed_claim_says_it_is_gone(cluster, namespace, api_client):
    """The run must not start: its request id is free, and would run again. Before, the write went on as if
    done, and the run started."""

    async def takes_off(book: ledger.Ledger, claim: ledger.Entry) -> str:
        try:
            await book.mark_unstarted(claim, namespace, unstarted=False)
        except ledger.ClaimGone:
            return "gone"
        return "written"

    assert freed_then(cluster, namespace, takes_off) == "gone"
    assert lease(api_client, namespace) is None

    async def puts_on(book: ledger.Ledger, claim: ledger.Entry) -> ledger.Entry:
        return await book.mark_unstarted(claim, namespace, unstarted=True)

    assert freed_then(cluster, namespace, puts_on).unstarted
    assert lease(api_client, namespace) is None


def test_the_result_of_a_run_whose_claim_was_freed_meanwhile_takes_its_request_id_again(
    cluster, namespace, api_client
):
    """The run went on (its start came before the claim was freed): the request id ran, and a Runbook that
    comes with it is a duplicate of that run, not a second one."""

    async def finishes(book: ledger.Ledger, claim: ledger.Entry) -> ledger.Entry:
        return await book.finish(claim, namespace, {"result": "success", "exitCode": 0, "finishedAt": "now"})

    recorded = freed_then(cluster, namespace, finishes)
    assert recorded.result is not None and recorded.result["exitCode"] == 0
    kept = lease(api_client, namespace)
    assert kept is not None and kept.spec.holder_identity == "uid-1"
    assert keys.RESULT in (kept.metadata.annotations or {})


def test_the_look_for_unfinished_claims_passes_over_one_edited_unreadable(cluster, namespace, api_client):
    """A claim a person edited into something mdops cannot read (here its arrival) is passed over, with a
    warning; the others are still found. Before, it stopped the look at every try, and with it the ending
    of every run whose Runbook went unseen."""

    async def scenario() -> list[str]:
        kube = KubeApi(lambda: login.from_kubeconfig(cluster.kubeconfig))
        try:
            book = ledger.Ledger(kube)
            for request_id in ("req-1", "req-2", "req-3"):
                await book.claim(
                    namespace, request_id, request_id, request_id, 1, "r", "default", {"command": "drill"}
                )
            edited = {"metadata": {"annotations": {keys.ARRIVAL: "soon"}}}
            client.CoordinationV1Api(api_client).patch_namespaced_lease(
                ledger.lease_name("req-2"), namespace, edited
            )
            return sorted([entry.request_id async for entry in book.unfinished(namespace)])
        finally:
            await kube.close()

    assert asyncio.run(scenario()) == ["req-1", "req-3"]
