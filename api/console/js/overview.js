// Overview: the five summary metrics as tiles, charts of four metrics over a chosen range, refreshed
// as often as the API renews its answers (their Cache-Control max-age).
import uPlot from "../vendor/uPlot.esm.js";
import { ApiError, call, now } from "./api.js";
import { clock, control, el, offset, quantity, say } from "./format.js";

const TILES = [
  { key: "coverage_ratio", title: "Coverage", unit: "ratio" },
  { key: "throughput_mps", title: "Throughput" },
  { key: "failover_latency_ms", title: "Failover latency" },
  { key: "consumer_backlog_messages", title: "Consumer backlog" },
  { key: "runbook_exit_code", title: "Last runbook exit code" },
];
const TOTALS = [
  ["expected_total", "Expected"],
  ["active_total", "Active"],
  ["matched_total", "Matched"],
  ["ignored_total", "Ignored"],
];
const CHARTS = [
  { metric: "md_throughput_mps", title: "Throughput" },
  { metric: "md_subscription_coverage_ratio", title: "Coverage", unit: "ratio" },
  { metric: "consumer_backlog_messages", title: "Consumer backlog" },
  { metric: "md_failover_latency_ms", title: "Failover latency" },
];
// minutes -> step_seconds: a few hundred points per chart
const RANGES = [
  [15, 5, "15 min"],
  [60, 15, "1 h"],
  [360, 60, "6 h"],
  [1440, 300, "24 h"],
];
const DEFAULT_REFRESH_SECONDS = 5;
const MIN_CHART_WIDTH = 200; // px: a chart is as wide as its box (a phone's is about 320 px), never less

function tile(spec) {
  const id = `tile-${spec.key}`;
  const value = el("p", { class: "value" }, "–");
  const badge = el("p", { class: "badge stale", hidden: true }, "Stale");
  const note = el("p", { class: "note" });
  const totals = spec.key === "coverage_ratio" ? el("dl", { class: "totals" }) : null;
  const section = el("section", { class: "tile", "aria-labelledby": id }, el("h2", { id }, spec.title), value, badge, note, totals);
  return {
    section,
    show(metric) {
      value.textContent = quantity(metric.value, spec.unit || metric.unit);
      badge.hidden = !metric.stale;
      section.classList.toggle("is-stale", metric.stale);
      const context = metric.context || {};
      note.textContent = metric.stale ? context.note || "no sample" : context.window || "";
      if (totals) {
        totals.replaceChildren(
          ...TOTALS.flatMap(([key, label]) => [el("dt", {}, label), el("dd", {}, quantity(context[key] ?? null))]),
        );
      }
    },
    // The summary could not be read: the number shown (if any) is an old one.
    stale(why) {
      badge.hidden = false;
      section.classList.add("is-stale");
      note.textContent = why;
    },
  };
}

function chart(spec, zone) {
  const id = `chart-${spec.metric}`;
  const plot = el("div", { class: "plot" });
  const message = el("p", { class: "note" });
  const caption = el("figcaption", { id }, spec.title);
  const badge = el("p", { class: "badge stale", hidden: true }, "Stale");
  const figure = el("figure", { class: "chart", "aria-labelledby": id }, caption, badge, plot, message);
  let made = null;
  let span = [0, 1]; // the x scale: the chosen range, however few samples there are in it
  return {
    figure,
    show(body, minutes, label) {
      const end = now().getTime() / 1000;
      span = [end - minutes * 60, end];
      caption.textContent = `${spec.title}, last ${label}`;
      const unit = spec.unit || body.unit;
      const xs = body.points.map((p) => Date.parse(p.timestamp) / 1000);
      const ys = body.points.map((p) => p.value);
      message.textContent = body.points.length ? "" : "No samples in this range.";
      badge.hidden = true;
      if (made) {
        made.setData([xs, ys]);
        return;
      }
      made = new uPlot(
        {
          width: Math.max(plot.clientWidth, MIN_CHART_WIDTH),
          height: 180,
          tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), zone),
          legend: { show: false },
          cursor: { show: true },
          scales: { x: { time: true, range: () => span } },
          series: [{}, { label: spec.title, stroke: "#1d4ed8", width: 2, value: (u, v) => quantity(v, unit) }],
          axes: [
            { values: (u, splits) => splits.map((ts) => clock(new Date(ts * 1000), zone).slice(0, 5)) },
            { label: unit === "ratio" ? "ratio" : unit || "", size: 70 },
          ],
        },
        [xs, ys],
        plot,
      );
      made.root.setAttribute("aria-hidden", "true"); // a canvas: the figure's caption and the tiles say it in words
    },
    fail(error) {
      message.textContent = error.message;
      badge.hidden = false; // what it draws (if anything) is from an earlier refresh
    },
    resize() {
      if (made) made.setSize({ width: Math.max(plot.clientWidth, MIN_CHART_WIDTH), height: 180 });
    },
    destroy() {
      if (made) made.destroy();
    },
  };
}

export function show(container, ctx) {
  ctx.title("Overview");
  const zone = ctx.me.time_zone;
  const tiles = TILES.map(tile);
  const charts = CHARTS.map((spec) => chart(spec, zone));
  const range = el(
    "select",
    { id: "range" },
    ...RANGES.map(([minutes, , label]) => el("option", { value: minutes, selected: minutes === 60 }, label)),
  );
  const updated = el("p", { class: "updated" }, "Loading…");
  const problem = el("p", { class: "message", role: "alert" });
  container.append(
    el("h1", {}, "Overview"),
    updated,
    problem,
    el("section", { class: "tiles", "aria-label": "Platform metrics" }, ...tiles.map((t) => t.section)),
    el(
      "div",
      { class: "charts-head" },
      el("h2", {}, `Charts (times in ${offset(zone)})`),
      control(el("label", { for: "range" }, "Range"), range),
    ),
    el("div", { class: "charts" }, ...charts.map((c) => c.figure)),
  );

  let timer = null;
  let stopped = false;
  let refreshSeconds = DEFAULT_REFRESH_SECONDS; // the API's max-age, once it has said it
  let lastRead = null; // when the summary was last read: only a successful refresh moves "Last updated"
  let latest = 0; // the newest refresh: an older one's answers (another range, an older summary) are dropped
  async function refresh() {
    clearTimeout(timer);
    const mine = ++latest;
    const current = () => mine === latest && !stopped;
    const [minutes, step, label] = RANGES.find(([m]) => String(m) === range.value);
    let read = null;
    let refused = false; // a 403: the token may not read the metrics, and asking again changes nothing
    // The summary and the four charts at once: the overview is drawn after the slowest of them.
    const summary = (async () => {
      try {
        const answer = await call("/api/ops/metrics/summary");
        if (!current()) return;
        const maxAge = /max-age=([\d.]+)/.exec(answer.headers.get("Cache-Control") || "");
        if (maxAge && Number(maxAge[1]) > 0) refreshSeconds = Number(maxAge[1]);
        TILES.forEach((spec, i) => tiles[i].show(answer.data[spec.key]));
        say(problem, "");
        read = now();
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        if (!current()) return;
        if (error.status === 403) {
          refused = true;
          say(problem, `${error.message}. The overview needs the permission metrics:read, which this token lacks: it is not read again.`);
          return;
        }
        say(problem, error.message);
        const since = lastRead ? `not refreshed since ${clock(lastRead, zone)}` : "not read yet";
        tiles.forEach((t) => t.stale(since));
      }
    })();
    const series = CHARTS.map(async (spec, i) => {
      try {
        const query = new URLSearchParams({ metric: spec.metric, minutes, step_seconds: step });
        const answer = await call(`/api/ops/metrics/timeseries?${query}`);
        if (current()) charts[i].show(answer.data, minutes, label);
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        if (current()) charts[i].fail(error);
      }
    });
    await Promise.all([summary, ...series]);
    if (!current()) return; // left, or another range chosen meanwhile: the newer refresh says it
    if (read) lastRead = read;
    if (refused) {
      updated.textContent = "Not read.";
      return; // not refreshed: only another token can read it
    }
    updated.textContent = lastRead
      ? `Last updated at ${clock(lastRead, zone)} (${offset(zone)}); refreshed every ${refreshSeconds} s`
      : `Not read yet; trying again every ${refreshSeconds} s`;
    timer = setTimeout(refresh, refreshSeconds * 1000);
  }
  range.addEventListener("change", refresh);
  const resized = new ResizeObserver(() => charts.forEach((c) => c.resize()));
  resized.observe(container);
  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
    resized.disconnect();
    charts.forEach((c) => c.destroy());
  };
}
