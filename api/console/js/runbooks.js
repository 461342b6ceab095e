// Runbooks: the runs, newest first, from the runs list (GET /api/ops/runbooks) with its filters, 50 at first
// and 50 more at each press of "Show older runs"; read at once, again when a filter changes, and every few
// seconds while the live updates are paused; kept current by them: a run shown as its event shows it, the
// newest runs read again for a new one (however many are shown).
import { ApiError, POLL_SECONDS, call, now, paused, stale } from "./api.js";
import {
  changesEnvironment,
  clock,
  control,
  duration,
  el,
  labelled,
  listTable,
  offset,
  placeRows,
  say,
  when,
} from "./format.js";
import { follow } from "./live.js";

const RESULTS = ["success", "failed", "running", "queued", "pending"];
const PAGE = 50; // runs shown at first, and added by "Show older runs"
const MOST = 200; // the most the API lists in one answer

// Whether the API's filter on the requester (a part of the name, in any case: Python's casefold) may match
// `name`: said no only where lowercase is the same (ASCII), else taken as a match (the list is read).
const ASCII = /^[\x00-\x7f]*$/;
function mayBeBy(name, part) {
  return !part || !ASCII.test(name + part) || name.toLowerCase().includes(part.toLowerCase());
}

// The runs list `list` ({runs, matched, more}: the newest runs that pass the filters, as drawn) after the live
// updates `events` ([name, data] of runbook and deleted events, in order), where they say all that changed: a
// run shown is drawn as its event shows it, and goes once deleted, or once it no longer has the result
// filtered on (`filters.status`; a run's command and requester do not change); a run not shown of another
// command or requester than the one filtered on (`filters.command`, `filters.who`) is none of the list's,
// nor, without a result filtered on, one created in an earlier second than the oldest run shown (the list
// is newest first by creation, to the second first): it is past the runs shown, and the count is the same
// (a backlog of runs run through while the list shows the newest read the list at every change). `read`
// says what they do not: "head" (a run not shown: a new one, or a deletion that may change the count),
// "all" (a run not shown that may now have the result filtered on, wherever it is in the list), or "none".
export function applied(list, events, { command = "", status = "", who = "" } = {}) {
  const runs = [...list.runs];
  let matched = list.matched;
  let read = "none";
  const before = (r) => runs.length > 0 && Date.parse(r.created_at) < Date.parse(runs.at(-1).created_at);
  for (const [name, data] of events) {
    const at = runs.findIndex((r) => r.name === (data.runbook || data).name);
    const other = data.runbook;
    if (at < 0 && other && command && other.command !== command) continue;
    if (at < 0 && other && !mayBeBy(other.requested_by || "", who)) continue;
    if (at < 0 && other && !status && before(other)) continue;
    if (at < 0) read = read === "all" || (status && name === "runbook") ? "all" : "head";
    else if (name === "runbook" && (!status || data.runbook.status === status)) runs[at] = data.runbook;
    else {
      runs.splice(at, 1);
      matched -= 1;
    }
  }
  return { list: { ...list, runs, matched }, read };
}

// The runs list `list` after a read of its newest runs (`page`, an answer of GET /api/ops/runbooks): the
// page's runs, then those of the list older than its last, `wanted` at most. null when the page does not
// reach a run of the list (more new runs than it holds): the list is read whole.
export function merged(list, page, wanted) {
  if (page.next_cursor === null) return { runs: page.runbooks, matched: page.matched, more: false };
  const at = list.runs.findIndex((r) => r.name === page.runbooks.at(-1).name);
  if (at < 0) return null;
  const runs = [...page.runbooks, ...list.runs.slice(at + 1)].slice(0, wanted);
  return { runs, matched: page.matched, more: page.matched > runs.length };
}

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
    control(commandLabel, command),
    control(resultLabel, result),
    control(el("label", { for: "filter-who" }, "Who"), who),
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
    labelled(
      columns,
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
      ),
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

  function render({ runs, matched, more }) {
    caption.textContent = counted(runs.length, matched, more, command.value || result.value || who.value.trim());
    const going = !more && older === document.activeElement; // the button goes with the keyboard's focus
    older.hidden = !more;
    drawn = placeRows(body, drawn, runs, shows, row);
    // "Show older runs" goes once the oldest run is shown: its focus goes to the first run it added, where one
    // reads on, never to the top of the page.
    if (going) body.children[Math.min(firstAdded, body.children.length - 1)]?.querySelector("a")?.focus();
  }

  // The filters as applied() takes them.
  const filtersOn = () => ({ command: command.value, status: result.value, who: who.value.trim() });

  // A query of the runs list with the filters: `limit` runs after `cursor` (null: the newest).
  function query(limit, cursor = null) {
    const filters = { command: command.value, status: result.value, requested_by: who.value.trim(), cursor };
    const made = new URLSearchParams({ limit });
    for (const [name, value] of Object.entries(filters)) if (value) made.set(name, value);
    return `/api/ops/runbooks?${made}`;
  }

  // The `wanted` newest runs that pass the filters, a page of at most MOST at a time.
  async function runs() {
    const found = [];
    let cursor = null;
    let matched = 0;
    do {
      const page = (await call(query(Math.min(wanted - found.length, MOST), cursor))).data;
      found.push(...page.runbooks);
      ({ matched, next_cursor: cursor } = page);
    } while (cursor && found.length < wanted);
    return { runs: found, matched, more: cursor !== null };
  }

  let list = null; // the runs drawn: {runs, matched, more}
  let queue = []; // the live updates (runbook, deleted) since the list, or the read on its way, was read
  let whole = true; // the list is read whole next: at first, after a filter, "Show older runs", a reconnection
  let pending = null;
  let reading = 0; // the newest read wins: an older answer (other filters) is dropped
  let onItsWay = 0; // the read on its way, if any: its answer takes the updates that come meanwhile
  let lastRead = null; // when the runs drawn were read
  let stopped = false; // left: a read that fails does not ask again
  // Draw the list as the live updates say it, reading the API only for what they do not say (see applied()):
  // a change of a run shown costs no request, a new run one of the newest PAGE runs, however many are shown.
  async function load() {
    pending = null;
    if (onItsWay && !whole) return;
    let read = "all";
    if (list && !whole) {
      ({ list, read } = applied(list, queue, filtersOn()));
      queue = [];
      render(list);
      if (read === "none") return;
    }
    whole = false;
    queue = []; // what came until now is in the read
    const mine = ++reading;
    onItsWay = mine;
    const started = now();
    try {
      const head = read === "head" ? merged(list, (await call(query(PAGE))).data, wanted) : null;
      const found = head || (mine === reading ? await runs() : null);
      if (mine !== reading) return;
      const updated = applied(found, queue, filtersOn());
      queue = [];
      list = updated.list;
      lastRead = started;
      say(problem, "");
      render(list);
      if (updated.read !== "none") {
        whole = updated.read === "all";
        changed();
      }
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (mine !== reading) return;
      // What the live updates said meanwhile is not drawn: the list, as of its last read (said, never shown as
      // current), is read whole again soon.
      whole = true;
      const shown = lastRead ? `The runs shown are as of ${clock(lastRead, zone)}` : "No run read yet";
      say(problem, `${error.message}. ${shown}; asking again every ${POLL_SECONDS} s.`);
      if (!stopped) pending = pending || setTimeout(load, POLL_SECONDS * 1000);
    } finally {
      if (onItsWay === mine) onItsWay = 0;
    }
  }
  // Many events may come at once (a burst of runs), and a name is typed a key at a time: read once for them.
  const changed = () => (pending = pending || setTimeout(load, 200));
  const anew = () => {
    whole = true;
    changed();
  };
  const filter = () => {
    wanted = PAGE;
    anew();
  };
  for (const input of [command, result, who]) input.addEventListener("input", filter);
  filters.addEventListener("submit", (event) => {
    event.preventDefault(); // Enter in "Who": the filter at once, never the browser's reload of the page
    clearTimeout(pending);
    wanted = PAGE;
    whole = true;
    load();
  });
  older.addEventListener("click", () => {
    wanted += PAGE;
    firstAdded = body.children.length;
    whole = true;
    load();
  });

  const stop = follow(
    (name, data) => {
      if (name === "log") return;
      if (name === "reset") return anew(); // what changed meanwhile is not said: the list is read whole
      // The list only: the header reads the status (a pass over every Runbook the API holds, where the
      // list's first page is not) on its own clock, and once for the runs that report a state meanwhile.
      if (changesEnvironment(data)) ctx.environmentChanged();
      queue.push([name, data]);
      changed();
    },
    (state, message, since) => {
      if (state === "live") say(live, "Live: updated as runs change.");
      else if (state === "stale") say(live, stale(message, since, zone, "The list"));
      else say(live, paused(state, message, "The list"));
      live.classList.toggle("is-stale", state === "stale");
      if (state === "live") anew(); // (re)connected, or current again: read what may have changed meanwhile
    },
    () => {
      whole = true; // paused: no update says what changes
      load();
    },
  );
  load(); // at once, whatever the live updates do
  return () => {
    stopped = true;
    stop();
    clearTimeout(pending);
  };
}
