"""Benchmark: the Ops Console on the local stack (as `make up` starts it), in Debian's chromium.

1. **Overview usable**: from navigation to the tiles and the four charts drawn ("Last updated at ..."
   shown, which the page writes once the summary and every chart's samples are in), a signed-in tab.
   Target: within 1 s.
2. **Many consoles**: ``--consoles`` clients that each do what an open overview does (the summary and the
   four charts, every refresh interval, at random phases) for ``--intervals`` intervals; the summary
   computations are counted by Prometheus itself (its ``prometheus_http_requests_total`` of instant
   queries: a summary computation is ``len(SUMMARY_QUERIES)`` of them). Target: at most one per interval.
   The clients are HTTP clients, not 50 browser tabs (on two cores those would measure chromium).
3. **Log line to page**: the run page of a drill follows its event stream; each log line's arrival in the
   page (a MutationObserver's clock) minus the time the runner stamped on it when the script wrote it.
   Target: 300 ms.

    python -m bench.console [--consoles 50] [--intervals 6] [--opens 10] [--drills 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import tempfile
import threading
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

from api.prometheus import SUMMARY_QUERIES
from bench.api_latency import describe
from devcluster import browser as chromium
from devcluster.controlplane import binaries
from devcluster.processes import wait_until
from devcluster.prometheus import binary as prometheus_binary
from devcluster.stack import Stack

CHARTS = (
    "md_throughput_mps",
    "md_subscription_coverage_ratio",
    "consumer_backlog_messages",
    "md_failover_latency_ms",
)

# Records when each log line first shows in the page, with the time the line carries.
OBSERVE_LOGS = """() => {
  window.arrivals = {};
  new MutationObserver(() => {
    for (const t of document.querySelectorAll('.logs time[datetime]')) {
      const key = t.dateTime + ' ' + t.parentElement.textContent;
      if (!(key in window.arrivals)) window.arrivals[key] = [Date.parse(t.dateTime), Date.now()];
    }
  }).observe(document.body, {childList: true, subtree: true});
}"""


# Records (performance.now(): since the navigation started) when the overview is first drawn.
OBSERVE_OVERVIEW = """new MutationObserver((_, observer) => {
  if (document.querySelector('.updated')?.textContent.startsWith('Last updated at')
      && document.querySelectorAll('.chart canvas').length === 4) {
    window.usable = performance.now();
    observer.disconnect();
  }
}).observe(document, {childList: true, subtree: true, characterData: true});"""


def signed_in(browser, stack: Stack, script: str = ""):
    """A fresh tab with the admin token in its sessionStorage, and ``script`` run before the page's own.
    (Init scripts and ``evaluate`` go through the DevTools protocol: the page's CSP allows no eval.)"""
    context = browser.new_context(viewport={"width": 1200, "height": 860})
    context.add_init_script(
        f"sessionStorage.setItem('mdops.token', {json.dumps(stack.admin_token)});{script}"
    )
    return context, context.new_page()


def until(page, expression: str, timeout: float = 30):
    return wait_until(lambda: page.evaluate(expression), timeout, expression, interval=0.02)


def overview_opens(browser, stack: Stack, opens: int) -> dict:
    """Milliseconds from navigation to the overview drawn, in a fresh signed-in tab each time."""
    samples = []
    for _ in range(opens):
        context, page = signed_in(browser, stack, OBSERVE_OVERVIEW)
        page.goto(stack.console_url)
        samples.append(until(page, "window.usable"))
        context.close()
    return {**describe(samples), "max_ms": round(max(samples), 1), "first_ms": round(samples[0], 1)}


async def consoles(stack: Stack, count: int, interval: float, intervals: int) -> None:
    headers = {"Authorization": f"Bearer {stack.admin_token}"}
    async with httpx.AsyncClient(base_url=stack.api_url, headers=headers, timeout=30) as http:

        async def one() -> None:
            await asyncio.sleep(random.uniform(0, interval))
            for _ in range(intervals):
                began = time.monotonic()
                (await http.get("/api/ops/metrics/summary")).raise_for_status()
                for metric in CHARTS:
                    params = {"metric": metric, "minutes": 60, "step_seconds": 15}
                    (await http.get("/api/ops/metrics/timeseries", params=params)).raise_for_status()
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - began)))

        await asyncio.gather(*(one() for _ in range(count)))


def many_consoles(stack: Stack, count: int, intervals: int) -> dict:
    headers = {"Authorization": f"Bearer {stack.admin_token}"}
    answer = httpx.get(f"{stack.api_url}/api/ops/metrics/summary", headers=headers)
    interval = float(re.search(r"max-age=([\d.]+)", answer.headers["cache-control"])[1])
    before = stack.prometheus.queries_answered()
    began = time.monotonic()
    asyncio.run(consoles(stack, count, interval, intervals))
    elapsed = time.monotonic() - began
    computations = (stack.prometheus.queries_answered() - before) / len(SUMMARY_QUERIES)
    return {
        "consoles": count,
        "refresh_interval_s": interval,
        "elapsed_s": round(elapsed, 1),
        "summary_computations": computations,
        "computations_per_interval": round(computations / (elapsed / interval), 2),
        "summary_requests": count * intervals,
    }


def log_latency(browser, stack: Stack, drills: int) -> dict:
    """Per log line: page arrival minus the runner's stamp (ms), over ``drills`` drills."""
    headers = {"Authorization": f"Bearer {stack.admin_token}"}
    samples = []
    for n in range(drills):
        request_id = f"bench-drill-{n}-{random.randrange(10**6)}"
        context, page = signed_in(browser, stack)
        page.goto(f"{stack.console_url}#/runbooks/{request_id}")
        until(page, "document.querySelector('.live')?.textContent.startsWith('Live:')")
        page.evaluate(OBSERVE_LOGS)
        body = {"command": "drill", "request_id": request_id, "reason": "bench"}
        run = threading.Thread(
            target=lambda body=body: httpx.post(
                f"{stack.api_url}/api/ops/runbooks/execute", json=body, headers=headers, timeout=60
            )
        )
        run.start()
        until(page, "document.querySelector('.run-state')?.textContent.includes('exit code')", 60)
        run.join()
        samples += [shown - stamped for stamped, shown in page.evaluate("Object.values(window.arrivals)")]
        context.close()
    return {**describe(samples), "min_ms": round(min(samples), 1), "max_ms": round(max(samples), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--consoles", type=int, default=50)
    parser.add_argument("--intervals", type=int, default=6)
    parser.add_argument("--opens", type=int, default=10)
    parser.add_argument("--drills", type=int, default=3)
    args = parser.parse_args()
    bin_dir = binaries()
    prometheus_binary()
    with Stack(Path(tempfile.mkdtemp(prefix="mdops-bench-console-")), bin_dir, fixed_ports=False) as stack:
        wait_until(stack.prometheus.targets_up, 60, "Prometheus to scrape its targets")
        report = {}
        with sync_playwright() as playwright:
            browser = chromium.launch(playwright)
            report["overview_usable"] = overview_opens(browser, stack, args.opens)
            report["log_line_to_page"] = log_latency(browser, stack, args.drills)
            browser.close()
        report["many_consoles"] = many_consoles(stack, args.consoles, args.intervals)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
