"""A validating admission webhook that holds chosen writes on the test's real API server: a caller stays in
the middle of an API call (a controller's step, a schedule's create) as long as the test wants."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

from kubernetes import client

from devcluster import pki


class HeldWrites:
    """A validating admission webhook that holds each write it is registered for (:meth:`configuration`)
    until released: a caller stays in the middle of an API call as long as the test wants. ``asked`` is set
    once one came, ``answered`` counts those answered. Released, they go through; or, given a ``refusal``,
    each is refused with that HTTP code (500: as an API server that fails them)."""

    def __init__(self, directory: Path, refusal: int = 0):
        self.asked, self.released = threading.Event(), threading.Event()
        self.answered = 0
        self.refusal = refusal
        directory.mkdir(parents=True, exist_ok=True)
        authority = pki.Authority(directory)
        pair = authority.issue("webhook", "127.0.0.1", server=True)
        self.ca_bundle = base64.b64encode(authority.cert_path.read_bytes()).decode()
        held = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                held.asked.set()
                held.released.wait(120)  # the API server gives up after the webhook's timeout; asked again
                response = {"uid": review["request"]["uid"], "allowed": not held.refusal}
                if held.refusal:
                    response["status"] = {"code": held.refusal, "message": "refused by the test's webhook"}
                answer = {"apiVersion": review["apiVersion"], "kind": review["kind"], "response": response}
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                held.answered += 1

            def log_message(self, *_) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pair.cert, pair.key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True, name="held writes").start()

    def configuration(
        self, name: str, namespace: str, rule: dict, objects: dict | None = None, condition: str = ""
    ) -> dict:
        """Registered as ``name``, for the writes of ``rule`` in ``namespace`` only: of the objects with the
        labels ``objects``, and, given a CEL ``condition``, only those it is true of."""
        webhook = {
            "name": "held.writes.test.mdops.io",
            "clientConfig": {
                "url": f"https://127.0.0.1:{self.server.server_port}/",
                "caBundle": self.ca_bundle,
            },
            "rules": [rule],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "objectSelector": {"matchLabels": objects or {}},
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 30,
        }
        if condition:
            webhook["matchConditions"] = [{"name": "held", "expression": condition}]
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [webhook],
        }

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def held_writes(
    api_client, directory: Path, name: str, namespace: str, rule: dict, refusal: int = 0, **kind
) -> Iterator[HeldWrites]:
    """The webhook, registered as ``name`` (:meth:`HeldWrites.configuration`), for the ``with`` block."""
    held = HeldWrites(directory, refusal)
    admission = client.AdmissionregistrationV1Api(api_client)
    admission.create_validating_webhook_configuration(held.configuration(name, namespace, rule, **kind))
    try:
        yield held
    finally:
        admission.delete_validating_webhook_configuration(name)
        held.close()
