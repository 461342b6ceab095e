"""``python -m api`` as a real uvicorn process, configured by the environment only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from devcluster.controlplane import REPO
from devcluster.processes import wait_until
from tests.api.conftest import ADMIN_TOKEN, METRICS_TOKEN, READER_TOKEN, RECORD, auth, http


def test_the_api_serves_through_uvicorn(server, controller, scripts):
    url = server.url
    assert http("GET", url + "/healthz")[0] == 200
    code, headers, _ = http("GET", url + "/api/ops/status")
    assert code == 401 and headers["www-authenticate"].startswith("Bearer")
    code, _, body = http("GET", url + "/api/ops/status", headers=auth(READER_TOKEN))
    assert code == 200 and json.loads(body)["runbook_history"] == []

    scripts.write("stop", RECORD + "echo 'INFO: done'\n")
    code, _, body = http(
        "POST", url + "/api/ops/runbooks/execute", {"command": "stop", "request_id": "via-uvicorn"}, auth()
    )
    assert code == 200, body
    assert json.loads(body)["runbook"]["status"] == "success"
    assert json.loads(body)["runbook"]["logs"] == [{"level": "INFO", "message": "done"}]
    assert scripts.runs() == ["via-uvicorn dry=0"]

    def fresh_summary():
        code, _, body = http("GET", url + "/api/ops/metrics/summary", headers=auth(METRICS_TOKEN))
        return code == 200 and not json.loads(body)["throughput_mps"]["stale"]

    wait_until(fresh_summary, 30, "a fresh summary")

    code, headers, text = http("GET", url + "/metrics", headers=auth(METRICS_TOKEN))
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    assert 'mdops_api_requests_total{method="GET",route="/api/ops/status",status="401"} 1.0' in text
    assert (
        'mdops_api_requests_total{method="POST",route="/api/ops/runbooks/execute",status="200"} 1.0' in text
    )
    assert "mdops_api_cache_runbooks 1.0" in text
    assert http("GET", url + "/metrics", headers=auth(READER_TOKEN))[0] == 403

    server.stop()  # SIGTERM: a graceful stop (uvicorn then re-raises the signal: exit status -15)
    assert server.popen.returncode in (0, -signal.SIGTERM)
    log = server.log.read_text()
    assert "Application shutdown complete" in log
    assert "GET /api/ops/status HTTP/1.1" in log  # the access log is on
    for token in (ADMIN_TOKEN, READER_TOKEN, METRICS_TOKEN):
        assert token not in log


def test_invalid_settings_stop_the_process_with_a_message(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MDOPS_")}
    result = subprocess.run(
        [sys.executable, "-m", "api"], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "MDOPS_KUBECONFIG" in result.stderr


def test_sigint_stops_it_too(server):
    server.popen.send_signal(signal.SIGINT)
    server.popen.wait(15)
    assert "Application shutdown complete" in server.log.read_text()
