"""Prometheus exposition of the simulator: a custom collector that reads the model at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .model import SOURCES, FeedModel

METRIC_NAMES = (
    "md_subscription_coverage_ratio",
    "md_subscription_expected_total",
    "md_subscription_active_total",
    "md_subscription_matched_total",
    "md_subscription_ignored_total",
    "md_throughput_mps",
    "md_failover_latency_ms",
    "consumer_backlog_messages",
    "md_feed_up",
    "md_active_source_info",
)


class FeedCollector(Collector):
    """Yields the ``md_*`` gauges from the model's current state (no label except where stated)."""

    def __init__(self, model: FeedModel, before_collect: Callable[[], None] | None = None) -> None:
        self.model = model
        self.before_collect = before_collect

    def collect(self) -> Iterator[Metric]:
        if self.before_collect is not None:
            self.before_collect()
        m = self.model
        with m.cond:
            gauges = [
                ("md_subscription_coverage_ratio", "Matched over expected instruments.", m.coverage_ratio),
                ("md_subscription_expected_total", "Instruments expected in the window.", m.expected_total),
                ("md_subscription_active_total", "Subscribed instruments.", m.active_total),
                ("md_subscription_matched_total", "Subscribed instruments receiving ticks.", m.matched_total),
                ("md_subscription_ignored_total", "Instruments deliberately ignored.", m.ignored_total),
                ("md_throughput_mps", "Messages per second received.", m.throughput),
                ("consumer_backlog_messages", "Messages waiting for the consumer.", float(int(m.backlog))),
            ]
            latency = m.failover_latency_ms
            up = {source: m.source_up(source) for source in SOURCES}
            active = m.active_source
        for name, doc, value in gauges:
            yield GaugeMetricFamily(name, doc, value=float(value))
        if latency is not None:  # only once a switch has been measured
            yield GaugeMetricFamily(
                "md_failover_latency_ms", "Duration of the last failover or failback.", value=latency
            )
        feed_up = GaugeMetricFamily(
            "md_feed_up", "1 for the source the feed runs on and receives data from.", labels=["source"]
        )
        for source in SOURCES:
            feed_up.add_metric([source], 1.0 if up[source] else 0.0)
        yield feed_up
        info = GaugeMetricFamily("md_active_source_info", "The active source (always 1).", labels=["source"])
        info.add_metric([active], 1.0)
        yield info


def make_registry(model: FeedModel, before_collect: Callable[[], None] | None = None) -> CollectorRegistry:
    """A registry of its own (not the global one) holding only the feed collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FeedCollector(model, before_collect))
    return registry
