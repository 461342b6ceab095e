"""mdops's alerts (manifests/components/alerts/) in a real Prometheus, scraping the real controller and
simulator: the rules load, a failed run raises its alert, and the feed's metrics are what the market-data
alerts read."""

from __future__ import annotations

from devcluster.processes import wait_until
from devcluster.prometheus import Prometheus, ScrapeTarget, alert_rules


def firing(prometheus: Prometheus, name: str) -> list[dict]:
    return [a for a in prometheus.alerts() if a["labels"]["alertname"] == name and a["state"] == "firing"]


def test_a_failed_run_after_the_controllers_start_raises_its_alert(
    tmp_path, sim, controller, scripts, runbooks
):
    targets = [
        ScrapeTarget("sim", f"127.0.0.1:{sim.port}"),
        ScrapeTarget("controller", f"127.0.0.1:{controller.metrics_port}"),
    ]
    with Prometheus(
        tmp_path / "prometheus", targets, scrape_interval="1s", rules=alert_rules()
    ) as prometheus:
        wait_until(prometheus.targets_up, 60, "Prometheus to scrape the simulator and the controller")
        # Its first failed run: the count it raises was there, at 0, from the controller's start.
        scripts.write("drill", "exit 1\n")
        runbooks.create("drill-fails", command="drill")
        assert runbooks.wait_finished("drill-fails")["status"]["result"] == "failed"
        (alert,) = wait_until(lambda: firing(prometheus, "MdopsRunbookFailed"), 60, "MdopsRunbookFailed")
        assert alert["labels"] | {"command": "drill", "severity": "warning"} == alert["labels"]
        assert alert["annotations"]["summary"] == "A drill runbook failed"
        assert not firing(prometheus, "MdopsFailoverFailed")
        # The simulator's healthy feed raises none of the market-data alerts, whose series it exports.
        for metric in ("md_feed_up", "md_subscription_coverage_ratio", "consumer_backlog_messages"):
            assert prometheus.query(metric), metric
        names = {a["labels"]["alertname"] for a in prometheus.alerts()}
        assert not names & {"MarketDataFeedDown", "MarketDataCoverageLow", "MarketDataBacklogHigh"}
