// Runbooks: the recent runs (status' runbook_history) with filters, read at once, then again whenever the
// live updates say a run changed, and every few seconds while they are paused.
import { ApiError, call, follow, paused } from "./api.js";
import { duration, el, listTable, when } from "./format.js";

const RESULTS = ["success", "failed", "running", "queued", "pending"];

function select(id, label, values) {
  return [
    el("label", { for: id }, label),
    el("select", { id }, el("option", { value: "" }, "All"), ...values.map((v) => el("option", { value: v }, v))),
  ];
}

export function show(container, ctx) {
  ctx.title("Runbooks");
  const zone = ctx.me.time_zone;
  const [commandLabel, command] = select("filter-command", "Command", [
    "start", "stop", "restart", "failover", "failback", "drill", "health_check",
  ]);
  const [resultLabel, result] = select("filter-result", "Result", RESULTS);
  const who = el("input", { id: "filter-who", type: "search", autocomplete: "off" });
  const live = el("p", { class: "live", role: "status" });
  const problem = el("p", { class: "message", role: "alert" });
  const caption = el("caption", {});
  const body = el("tbody", {});
  const columns = ["Command", "Result", "Exit code", "Who", "Why", "When", "Duration", "Request id"];
  container.append(
    el("h1", {}, "Runbooks"),
    live,
    el(
      "form",
      { class: "filters", role: "search", "aria-label": "Filter the runs" },
      commandLabel, command, resultLabel, result, el("label", { for: "filter-who" }, "Who"), who,
    ),
    problem,
    listTable(caption, columns, body),
  );

  let runs = [];
  function render() {
    const shown = runs.filter(
      (r) =>
        (!command.value || r.command === command.value) &&
        (!result.value || r.status === result.value) &&
        (!who.value || (r.requested_by || "").toLowerCase().includes(who.value.toLowerCase())),
    );
    caption.textContent = `${shown.length} of the ${runs.length} most recent runs, newest first (times in the exchange's zone)`;
    body.replaceChildren(
      ...shown.map((r) =>
        el(
          "tr",
          {},
          el("td", {}, r.command + (r.dry_run ? " (dry run)" : "")),
          el("td", {}, el("span", { class: `state state-${r.status}` }, r.status)),
          el("td", {}, r.exit_code ?? "–"),
          el("td", { class: "wrap" }, r.requested_by || "–"),
          el("td", { class: "wrap" }, r.reason || "–"),
          el("td", {}, when(r.created_at, zone)),
          el("td", {}, duration(r.started_at, r.finished_at)),
          el("td", { class: "wrap" }, el("a", { href: `#/runbooks/${encodeURIComponent(r.request_id)}` }, r.request_id)),
        ),
      ),
    );
  }

  let pending = null;
  async function load() {
    pending = null;
    try {
      const status = (await call("/api/ops/status")).data;
      ctx.showEnvironment(status);
      runs = status.runbook_history;
      problem.textContent = "";
      render();
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      problem.textContent = error.message;
    }
  }
  // Many events may come at once (a burst of runs): read the status once for them.
  const changed = () => (pending = pending || setTimeout(load, 200));
  for (const input of [command, result, who]) input.addEventListener("input", render);

  const stop = follow(
    "",
    (name) => name !== "log" && changed(),
    (state, message) => {
      live.textContent = state === "live" ? "Live: updated as runs change." : paused(state, message, "The list");
      if (state === "live") changed(); // (re)connected: read what may have changed meanwhile
    },
    load,
  );
  load(); // at once, whatever the live updates do
  return () => {
    stop();
    clearTimeout(pending);
  };
}
