"""The API's OpenAPI document: committed as docs/openapi.json, generated from the app (make generate)."""

from __future__ import annotations

import json
from pathlib import Path

from api.openapi import document

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_the_committed_document_is_the_apps():
    committed = json.loads(DOCUMENT.read_text())
    assert committed == document(), "docs/openapi.json is stale: run `make generate`"


def test_every_route_documents_its_errors_with_json_bodies():
    paths = document()["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert {"405", "413", "500"} <= codes, (method, path)
            if path.startswith("/api/") or path == "/metrics":
                assert {"401", "403"} <= codes, (method, path)
                assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
            for code, response in operation["responses"].items():
                if code.startswith(("4", "5")):
                    assert "application/json" in response["content"], (method, path, code)
    assert "Retry-After" in paths["/api/ops/runbooks/execute"]["post"]["responses"]["429"]["headers"]
