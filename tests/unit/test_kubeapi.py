"""The controller's HTTP client (controller/kubeapi.py) against a loopback server that answers as a dying API
server may: what it does with an answer it cannot read."""

from __future__ import annotations

import asyncio

import kopf
from aiohttp import web

from controller.kubeapi import KubeApi


def test_a_success_whose_body_is_cut_short_is_asked_again_as_a_lost_connection_would_be():
    answers = [web.Response(status=200, text='{"kind": "Lea'), web.json_response({"kind": "Lease"})]
    asked: list[str] = []

    async def answer(request: web.Request) -> web.Response:
        asked.append(request.method)
        return answers.pop(0)

    async def scenario() -> object:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", answer)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        kube = KubeApi(lambda: kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}"))
        try:
            return await kube.request("PUT", "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l", {})
        finally:
            await kube.close()
            await runner.cleanup()

    assert asyncio.run(scenario()) == {"kind": "Lease"}
    assert asked == ["PUT", "PUT"]
