// Runbooks: the runs, newest first, from the runs list (GET /api/ops/runbooks) with its filters, 50 at first
// and 50 more at each press of "Show older runs"; read at once, again when a filter changes, whenever the
// live updates say a run changed, and every few seconds while they are paused.
import { ApiError, call, paused, stale } from "./api.js";
import { duration, el, listTable, offset, placeRows, say, when } from "./format.js";
import { follow } from "./live.js";

const RESULTS = ["success", "failed", "running", "queued", "pending"];
const PAGE = 50; // runs shown at first, and added by "Show older runs"
const MOST = 200; // the most the API lists in one answer

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
  const who = el("input", { id: "filter-who", type: "search", autocomplete: "off", maxlength: 253 });
  const live = el("p", { class: "live", role: "status" });
  const problem = el("p", { class: "message", role: "alert" });
  const caption = el("caption", {});
  const body = el("tbody", {});
  const older = el("button", { type: "button", hidden: true }, "Show older runs");
  const filters = el(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter the runs" },
    commandLabel, command, resultLabel, result, el("label", { for: "filter-who" }, "Who"), who,
  );
  const columns = ["Command", "Result", "Exit code", "Who", "Why", "When", "Duration", "Request id"];
  container.append(
    el("h1", {}, "Runbooks"),
    live,
    filters,
    problem,
    listTable(caption, columns, body),
    older,
  );

  let wanted = PAGE;
  let firstAdded = 0; // the row of the first run the last press of "Show older runs" added
  let drawn = new Map(); // the rows shown, by what they show (see shows())
  // What a run's row shows, and which Runbook it is (its name): a row is made again only when this changes.
  const shows = (r) =>
    JSON.stringify([
      r.name, r.request_id, r.command, r.dry_run, r.status, r.exit_code, r.requested_by, r.reason,
      r.created_at, r.started_at, r.finished_at, waits(r),
    ]);
  // Why a run that has not started waits (its lock, its change window, approvals: the status' message), so
  // that the person on shift sees in the list the runs that wait for them.
  const waits = (r) => ((r.status === "pending" || r.status === "queued") && r.message) || "";
  const row = (r) =>
    el(
      "tr",
      {},
      el("td", {}, r.command + (r.dry_run ? " (dry run)" : "")),
      el(
        "td",
        { class: waits(r) ? "wrap" : false },
        el("span", { class: `state state-${r.status}` }, r.status),
        ...(waits(r) ? [el("br"), el("small", {}, waits(r))] : []),
      ),
      el("td", {}, r.exit_code ?? "–"),
      el("td", { class: "wrap" }, r.requested_by || "–"),
      el("td", { class: "wrap" }, r.reason || "–"),
      el("td", {}, when(r.created_at, zone)),
      el("td", {}, duration(r.started_at, r.finished_at)),
      el("td", { class: "wrap" }, el("a", { href: `#/runbooks/${encodeURIComponent(r.request_id)}` }, r.request_id)),
    );

  // The table's caption (its accessible name): "All 3 runs, newest first (times in +08:00)", "The one run
  // that matches the filters (...)", "No runs that match the filters".
  function counted(shown, matched, more, filtered) {
    const that = filtered ? ` that match${matched === 1 ? "es" : ""} the filters` : "";
    if (matched === 0) return `No runs${that}`;
    const times = `(times in ${offset(zone)})`;
    if (matched === 1) return `The one run${that} ${times}`;
    const which = more ? `The newest ${shown} of ${matched}` : `All ${matched}`;
    return `${which} runs${that}, newest first ${times}`;
  }

  function render(runs, matched, more) {
    caption.textContent = counted(runs.length, matched, more, command.value || result.value || who.value.trim());
    const going = !more && older === document.activeElement; // the button goes with the keyboard's focus
    older.hidden = !more;
    drawn = placeRows(body, drawn, runs, shows, row);
    // "Show older runs" goes once the oldest run is shown: its focus goes to the first run it added, where one
    // reads on, never to the top of the page.
    if (going) body.children[Math.min(firstAdded, body.children.length - 1)]?.querySelector("a")?.focus();
  }

  // The `wanted` newest runs that pass the filters, a page of at most MOST at a time.
  async function runs() {
    const filters = { command: command.value, status: result.value, requested_by: who.value.trim() };
    const found = [];
    let cursor = null;
    let matched = 0;
    do {
      const query = new URLSearchParams({ limit: Math.min(wanted - found.length, MOST) });
      for (const [name, value] of Object.entries(filters)) if (value) query.set(name, value);
      if (cursor) query.set("cursor", cursor);
      const page = (await call(`/api/ops/runbooks?${query}`)).data;
      found.push(...page.runbooks);
      ({ matched, next_cursor: cursor } = page);
    } while (cursor && found.length < wanted);
    return [found, matched, cursor !== null];
  }

  let pending = null;
  let reading = 0; // the newest read wins: an older answer (other filters) is dropped
  async function load() {
    pending = null;
    const mine = ++reading;
    try {
      const [found, matched, more] = await runs();
      if (mine !== reading) return;
      say(problem, "");
      render(found, matched, more);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (mine === reading) say(problem, error.message);
    }
  }
  // Many events may come at once (a burst of runs), and a name is typed a key at a time: read once for them.
  const changed = () => (pending = pending || setTimeout(load, 200));
  const filter = () => {
    wanted = PAGE;
    changed();
  };
  for (const input of [command, result, who]) input.addEventListener("input", filter);
  filters.addEventListener("submit", (event) => {
    event.preventDefault(); // Enter in "Who": the filter at once, never the browser's reload of the page
    clearTimeout(pending);
    wanted = PAGE;
    load();
  });
  older.addEventListener("click", () => {
    wanted += PAGE;
    firstAdded = body.children.length;
    load();
  });

  const stop = follow(
    (name, data) => {
      if (name === "log") return;
      // The list only: the header reads the status (a pass over every Runbook the API holds, where the
      // list's first page is not) on its own clock, and once for the runs that report a state meanwhile.
      if (data.state) ctx.environmentChanged();
      changed();
    },
    (state, message, since) => {
      if (state === "live") say(live, "Live: updated as runs change.");
      else if (state === "stale") say(live, stale(message, since, zone, "The list"));
      else say(live, paused(state, message, "The list"));
      live.classList.toggle("is-stale", state === "stale");
      if (state === "live") changed(); // (re)connected, or current again: read what may have changed meanwhile
    },
    load,
  );
  load(); // at once, whatever the live updates do
  return () => {
    stop();
    clearTimeout(pending);
  };
}
