"""mdops's alerts (``manifests/components/alerts/``), tested as Prometheus tests its rules: promtool's unit
tests (``alert-cases.yaml``) give each alert series over time and say when it fires, with which labels and
words. Every alert has a case that fires."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from devcluster.prometheus import alert_rules, promtool

CASES = Path(__file__).with_name("alert-cases.yaml")


def test_each_alert_fires_when_it_should_and_says_what_it_should(tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(alert_rules()))
    cases = {"rule_files": [str(rules)], **yaml.safe_load(CASES.read_text())}
    (tmp_path / "cases.yml").write_text(yaml.safe_dump(cases, sort_keys=False))
    result = subprocess.run(
        [promtool(), "test", "rules", str(tmp_path / "cases.yml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    alerts = {rule["alert"] for group in alert_rules()["groups"] for rule in group["rules"]}
    fired = {
        check["alertname"]
        for test in cases["tests"]
        for check in test["alert_rule_test"]
        if check["exp_alerts"]
    }
    assert fired == alerts
