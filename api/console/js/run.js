// One run: its request, state, conditions, health report with the gate's verdict, resulting state and
// logs, kept current by the live updates (GET /api/ops/events). The run page shows it; the
// command form shows the same panel for the run it started.
import { ApiError, POLL_SECONDS, call, now, paused, refusal, runNow, stale } from "./api.js";
import {
  changesEnvironment,
  clock,
  duration,
  el,
  labelled,
  offset,
  readable,
  say,
  scrolling,
  whenWithOffset,
} from "./format.js";
import { cancelledBy, cancelling } from "./cancel.js";
import { decision } from "./decide.js";
import { follow, newer } from "./live.js";

const LOG_LINES = 200; // the most log lines a panel shows: the oldest go
const STATUS_LINES = 50; // the lines a run's status keeps, as its events bring them (the newest)
// Where lines may be missing: between lines that two updates of the run's status brought, when more were
// written between them than the status keeps (a chatty script, or lines written while the API or the
// kube-apiserver was away). The status numbers no line, so how many is not known.
const GAP = {
  gap:
    `… lines may be missing here: the API keeps a run's last ${STATUS_LINES} lines, and more came between two ` +
    "of its updates. The whole log is the runner's own: its Job pod's (kubectl logs), or runner.log of a local run. …",
};
const yesNo = (value) => (value === undefined ? "–" : value ? "yes" : "no"); // undefined: not said

function pairs(entries) {
  return el("dl", { class: "pairs" }, ...entries.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "–")]));
}

// A table; the columns named in `free` hold free text (a message, a value), broken anywhere when long. One
// of more than two columns is stacked on a narrow screen (see labelled()); one of two fits it as it is.
function table(label, columns, rows, free = []) {
  const cell = (value, i) => el("td", { class: free.includes(columns[i]) ? "wrap" : null }, value ?? "–");
  const made = el(
    "table",
    { class: columns.length > 2 ? "plain stacked" : "plain" },
    el("caption", {}, label),
    el("thead", {}, el("tr", {}, ...columns.map((c) => el("th", { scope: "col" }, c)))),
    el("tbody", {}, ...rows.map((row) => labelled(columns, el("tr", {}, ...row.map(cell))))),
  );
  return scrolling(made, { "aria-label": label });
}

// "success, exit code 0"; a run that did not run has no exit code.
export const outcome = (r) => `${r.status}${r.exit_code === null ? "" : `, exit code ${r.exit_code}`}`;

// The gate's verdict as the runner writes it. Anything else under health.gate (a status writer's, which
// nothing checks) is shown as it is, never as a verdict.
function gate(health) {
  const verdict = health && health.gate;
  if (verdict === undefined || verdict === null) return el("p", {}, "Gate: not evaluated.");
  if (typeof verdict.passed !== "boolean" || !Array.isArray(verdict.failures)) {
    return el("p", {}, `Gate: ${JSON.stringify(verdict)}`);
  }
  const text = verdict.passed ? "Gate passed" : `Gate failed: ${verdict.failures.join("; ")}`;
  return el("p", { class: verdict.passed ? "gate passed" : "gate failed" }, `${text} (${verdict.enforced ? "enforced" : "not enforced"}).`);
}

// The lines of `more` after those `old` ends with: both are last lines of one growing log, `more` the
// later. `more` may begin within `old` (the status keeps the last 50 lines) or before it (a box whose first
// lines came with the live updates, after a read that had none): the lines they share end `old`, and are
// found where they end in `more`, the latest such place that shares the most. None shared: all of `more`.
const same = (a, b) => a.time === b.time && a.level === b.level && a.message === b.message;
export function after(old, more) {
  for (let end = more.length; end > 0; end--) {
    const shared = Math.min(end, old.length);
    const tail = old.slice(old.length - shared);
    if (shared && tail.every((line, i) => same(line, more[end - shared + i]))) return more.slice(end);
  }
  return more;
}

// A panel that follows one run; onChange(detail) after each transition (e.g. to update the header);
// `actions`, if any, shown under the run's state (the run page's decision and cancel).
export function panel(zone, onChange = () => {}, actions = null) {
  const heading = el("h2", {}, "Waiting for the run…");
  const state = el("p", { class: "run-state", role: "status" });
  const live = el("p", { class: "live" });
  const details = el("div", { class: "details" });
  const logs = el("ol", { class: "logs", tabindex: 0 }); // it scrolls: the keyboard's arrow keys scroll it
  const element = el(
    "section",
    { class: "run", "aria-label": "Run", tabindex: -1 }, // the run form's keyboard goes on from it
    heading,
    state,
    live,
    actions,
    details,
    el("h3", { id: "logs-title" }, `Logs (times in ${offset(zone)})`),
    logs,
  );
  logs.setAttribute("aria-labelledby", "logs-title");
  let lines = []; // the run's last lines as the live updates brought them
  let readShown = false; // the box shows the lines of a read of the API instead (see the log event below)
  let seen = false; // the run was shown
  let shown = null; // what was shown of it: an event's detail, or execute's shape over it
  let evented = false; // an event of the Runbook shown was shown (its conditions, its lines' times)
  let following = false; // the live updates are live: what they say is newer than a read of the API
  let stopFollowing = () => {};
  let reread = () => {};
  // Whether `runbook` is another Runbook than the one shown: deleted and asked for again with its request id.
  const another = (runbook) => Boolean(shown?.runbook.uid && runbook.uid && runbook.uid !== shown.runbook.uid);

  const item = (l) =>
    l.gap
      ? el("li", { class: "gap" }, l.gap)
      : el(
          "li",
          { class: `level-${l.level}` },
          l.time ? el("time", { datetime: l.time }, clock(l.time, zone)) : null, // the API's reads have none
          l.time ? " " : null,
          el("span", { class: "level" }, l.level),
          " ",
          readable(l.message),
        );

  // Log lines: `more` after those in the box, or instead of them (`anew`). Only the new lines are drawn,
  // so that a selection in the box survives them. A box scrolled to its end stays at the end.
  function showLines(more, anew) {
    const atEnd = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 1;
    if (anew) logs.replaceChildren();
    logs.querySelector(".none")?.remove();
    logs.append(...more.slice(-LOG_LINES).map(item));
    while (logs.children.length > LOG_LINES) logs.firstElementChild.remove();
    if (!logs.children.length) logs.append(el("li", { class: "none" }, "No log lines yet."));
    if (atEnd) logs.scrollTop = logs.scrollHeight;
  }

  // `whole`: the run as an event shows it (its conditions and its lines' times), not only as a read does.
  function showRun(detail, whole = true) {
    const r = detail.runbook;
    seen = true;
    shown = detail;
    heading.textContent = `${r.command}${r.dry_run ? " (dry run)" : ""} · ${r.request_id}`;
    say(state, `Status: ${outcome(r)}`);
    state.className = `run-state state-${r.status}`;
    const s = detail.state;
    // A table's box that has the keyboard's focus (to scroll it) has it again once the details are drawn anew.
    const focused = details.contains(document.activeElement) ? document.activeElement.getAttribute("aria-label") : null;
    details.replaceChildren(
      pairs([
        ["Command", r.command],
        ["Request id", r.request_id],
        ["Who", r.requested_by],
        ["Why", r.reason || "–"],
        ["Mode", r.mode],
        ["Profile", r.profile],
        ["Window", r.window],
        ["Config", r.config || "–"],
        ["Enforce", yesNo(r.enforce)],
        ["Dry run", yesNo(r.dry_run)],
        ["Created", whenWithOffset(r.created_at, zone)],
        ["Started", whenWithOffset(r.started_at, zone)],
        ["Finished", whenWithOffset(r.finished_at, zone)],
        ["Duration", duration(r.started_at, r.finished_at)],
        ["Message", r.message || "–"],
        ...(detail.cancel ? [["Cancelled", cancelledBy(detail.cancel)]] : []),
      ]),
      detail.conditions === undefined
        ? el("p", {}, "Conditions: shown with the live updates.")
        : table(
            "Conditions",
            ["Type", "Status", "Reason", "Message", "Since"],
            detail.conditions.map((c) => [c.type, c.status, c.reason, c.message || "–", whenWithOffset(c.last_transition_time, zone)]),
            ["Message"],
          ),
      el("h3", {}, "Health"),
      gate(detail.health),
      detail.health
        ? table(
            "Health report",
            ["Measure", "Value"],
            Object.entries(detail.health)
              .filter(([k]) => k !== "gate")
              .map(([k, v]) => [k, typeof v === "object" && v !== null ? JSON.stringify(v) : String(v ?? "–")]),
            ["Measure", "Value"],
          )
        : el("p", {}, "No health report."),
      el("h3", {}, "Resulting state"),
      s
        ? pairs([["Mode", s.environment_mode], ["Active profile", s.active_profile], ["Active window", s.active_window]])
        : el("p", { class: detail.state_unreported ? "caution" : null }, resultingState(detail)),
    );
    if (focused) [...details.querySelectorAll(".scroll")].find((box) => box.getAttribute("aria-label") === focused)?.focus();
    showLines(detail.lines, true);
    if (r.finished_at && whole) {
      // Nothing more will change: the live updates (or the reads) stop, once they have shown it whole (a
      // read of the API has no times on its lines: a finished run read first is still shown by its event).
      stopFollowing();
      live.textContent = "This run has finished: it is not followed any more.";
      live.classList.remove("is-stale");
    }
    onChange(detail);
  }

  // The run as execute answers it, or GET /api/ops/runbooks/{request_id}: less than an event says (execute:
  // no parameters, conditions or resulting state; both: log lines without their times), so it is shown
  // over the last event's detail, and only when it may be newer (the live updates paused, nothing shown
  // yet, or `force`: a refusal says that the page is out of date). Another Runbook's (made again with the
  // request id) is shown instead, nothing of the one before kept.
  function showAnswer(answer, force = false) {
    if (following && seen && !force) return;
    if (another(answer.runbook)) {
      shown = null;
      evented = false;
      lines = [];
    }
    const last = shown || {};
    const runbook = { ...last.runbook, ...answer.runbook };
    showRun({ ...last, ...answer, runbook, lines: answer.runbook.logs }, evented);
    readShown = true;
  }

  // Follow the run of requestId, reading it from the API while the live updates are paused; `page`: read
  // it at once too, and say so if there is no such run (the run page; the run form's run is not made
  // yet). Its events come on the stream the tabs share (live.js), whose other runs' events are passed
  // over; each time that stream (re)opens without resuming, or resets, the run is read as it is now from
  // its own stream's first event (runNow), and its events that come meanwhile are shown after it, those
  // it holds already (by their ids) not again. Returns stop().
  function start(requestId, { page = false } = {}) {
    lines = [];
    showLines([], true);
    const leaving = new AbortController();
    let last = null; // the id of the newest event of the run shown
    let held = null; // while the run is read as it is now: its events that came meanwhile
    let again = false; // a reset came while it was read: read it again
    let currentAt = null; // when the run shown was last known current: its last read, or the stream's end
    let pausedText = ""; // what `live` says while the live updates are paused
    let unread = ""; // and, while the run cannot be read either, why, and as of when the run shown is
    const sayPaused = () => !following && say(live, pausedText + unread);
    async function read(force = false) {
      try {
        showAnswer((await call(`/api/ops/runbooks/${encodeURIComponent(requestId)}`)).data, force === true);
        currentAt = now();
        unread = "";
        sayPaused();
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        if (error.status === 404 && page && !seen) {
          say(state, `No run has the request id ${requestId}: this page shows it if one is created.`);
        } else if (error.status === 404 && force === true) say(state, "This Runbook was deleted.");
        else if (error.status !== 404 && seen) {
          // The run shown is not current, and nothing says so but this (its state reads as if it were).
          const since = currentAt ? `what is shown is as of ${clock(currentAt, zone)}` : "what is shown is older";
          unread = ` It cannot be read either (${error.message}): ${since}.`;
          sayPaused();
        }
      }
    }
    function show(name, data, id) {
      if (!newer(id, last)) return;
      if (id) last = id;
      if (name === "runbook") {
        if (another(data.runbook)) lines = []; // made again: none of the old run's lines
        evented = true;
        // Its lines are the status' last 50 only: those the box showed before them stay, each once; when
        // they share none of them, lines may be missing in between.
        const more = after(lines, data.lines);
        const gap = lines.length && more.length && more.length === data.lines.length ? [GAP] : [];
        lines = [...lines, ...gap, ...more].slice(-LOG_LINES);
        readShown = false;
        showRun({ ...data, lines });
      } else if (name === "log") {
        // A stream that resumes brings the lines after its last event, which a read meanwhile may have
        // shown already: the box is drawn again from the live updates' own lines, never twice.
        // The API sends the lines its previous version of the status did not have: all it keeps, when it
        // shares none of them with that version, and lines may be missing before them.
        const more = lines.length && data.lines.length >= STATUS_LINES ? [GAP, ...data.lines] : data.lines;
        lines = [...lines, ...more].slice(-LOG_LINES);
        showLines(readShown ? lines : more, readShown);
        readShown = false;
      } else if (name === "deleted") say(state, "This Runbook was deleted.");
    }
    async function catchUp() {
      if (leaving.signal.aborted) return;
      if (held) {
        again = true;
        return;
      }
      held = [];
      let now = null;
      let unread = false; // not read for a while only (the token's streams all taken, a 5xx): asked again
      try {
        now = await runNow(requestId, leaving.signal);
      } catch (error) {
        if (leaving.signal.aborted) return;
        if (!(error instanceof ApiError)) throw error;
        if (refusal(error)) {
          // An id that cannot be one (a link cut short), or a run this token may not read: asking again
          // changes nothing.
          stopFollowing();
          live.textContent = paused("stopped", error.message, "The run");
          return;
        }
        // Else not read: the run's events go on as they come, and it is read again in POLL_SECONDS (after a
        // reset, nothing else would show what changed while the API was away: a run that ended then).
        unread = true;
      }
      if (leaving.signal.aborted) return;
      const meanwhile = held;
      held = null;
      if (now) show("runbook", now.data, now.id);
      for (const event of meanwhile) show(...event);
      if (again) {
        again = false;
        catchUp();
      } else if (unread) setTimeout(catchUp, POLL_SECONDS * 1000);
    }
    const stop = follow(
      (name, data, id) => {
        if (name === "reset") return catchUp();
        if ((data.runbook ? data.runbook.request_id : data.request_id) !== requestId) return;
        if (held) held.push([name, data, id]);
        else show(name, data, id);
      },
      (s, message, since) => {
        if (s === "live" && !following) catchUp(); // (re)opened: what came meanwhile is not on it
        const open = s === "live" || s === "stale";
        if (following && !open) currentAt = now(); // what it showed was current until now
        following = open; // the stream is open: a read would say no more
        if (open) unread = "";
        if (s === "live") live.textContent = "Live: updated as the run goes on.";
        else if (s === "stale") live.textContent = stale(message, since, zone, "The run");
        else {
          pausedText = paused(s, message, "The run");
          live.textContent = pausedText + unread;
        }
        live.classList.toggle("is-stale", s === "stale");
      },
      read,
    );
    stopFollowing = () => {
      stop();
      leaving.abort();
    };
    reread = () => read(true);
    if (page) read();
    return stopFollowing;
  }

  // The run read again now, whatever the live updates say (a decision refused: the page may be out of date).
  return { element, start, answer: showAnswer, reread: () => reread() };
}

// What a run's page says of the state it left, when it reported none.
function resultingState(detail) {
  if (detail.runbook.dry_run) return "None: a dry run changes nothing.";
  if (detail.state_unreported) {
    return (
      "None reported: what it changed is not known, and the header shows the state from before it. " +
      "A health_check reports the state as it is."
    );
  }
  return detail.state === null ? "None reported (yet)." : "Shown with the live updates.";
}

export function show(container, ctx, requestId) {
  ctx.title(`Run ${requestId}`);
  const decide = decision(ctx.me, requestId, () => run.reread());
  const cancel = cancelling(ctx.me, requestId, () => run.reread());
  const changed = (detail) => {
    decide.update(detail);
    cancel.update(detail);
    if (changesEnvironment(detail)) ctx.environmentChanged();
  };
  const actions = el("div", { class: "run-actions" }, decide.element, cancel.element);
  const run = panel(ctx.me.time_zone, changed, actions);
  container.append(el("h1", {}, "Run"), el("p", {}, el("a", { href: "#/runbooks" }, "← All runs")), run.element);
  return run.start(requestId, { page: true });
}
