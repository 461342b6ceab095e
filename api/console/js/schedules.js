// Schedules: the RunbookSchedules with their next slots and last run (GET /api/ops/schedules), read
// again every few seconds while the view is open.
import { ApiError, call, now } from "./api.js";
import { clock, el, labelled, listTable, offset, placeRows, say, when } from "./format.js";

const REFRESH_SECONDS = 5;
const SLOTS = 3;

export function show(container, ctx) {
  ctx.title("Schedules");
  const zone = ctx.me.time_zone;
  const problem = el("p", { class: "message", role: "alert" });
  const caption = el("caption", {});
  const body = el("tbody", {});
  const columns = ["Schedule", "Trigger", "Command", "Next slots", "Last slot", "Last run", "Result", "Missed", "Skipped", "Note"];
  container.append(
    el("h1", {}, "Schedules"),
    problem,
    listTable(caption, columns, body),
  );

  function row(s) {
    const next = s.next_slots === null ? "–" : s.next_slots.map((at) => when(at, zone)).join(", ") || "–";
    // Named as kubectl names it, read by its request id (a slot's differs from its name).
    const last = !s.last_runbook
      ? "–"
      : s.last_request_id
        ? el("a", { href: `#/runbooks/${encodeURIComponent(s.last_request_id)}` }, s.last_runbook)
        : s.last_runbook;
    const result = s.last_result ? el("span", { class: `state state-${s.last_result}` }, s.last_result) : "–";
    return labelled(
      columns,
      el(
        "tr",
        {},
        el("td", { class: "wrap" }, s.name),
        el("td", {}, s.schedule || "–"),
        el("td", {}, s.command || "–"),
        el("td", {}, next),
        el("td", {}, when(s.last_slot, zone)),
        el("td", { class: "wrap" }, last),
        el("td", {}, result),
        el("td", {}, String(s.missed_slots)),
        el("td", {}, String(s.skipped_slots)),
        el("td", { class: "wrap" }, s.suspended ? "suspended" : s.problem || ""),
      ),
    );
  }

  let timer = null;
  let stopped = false; // left: a read still on its way must not start another
  let lastRead = null; // when the schedules shown were read
  let drawn = new Map(); // the rows shown, by what they show
  async function load() {
    try {
      const answer = (await call(`/api/ops/schedules?slots=${SLOTS}`)).data;
      const count = answer.schedules.length;
      caption.textContent = `${count} schedule${count === 1 ? "" : "s"}${answer.truncated ? " (more exist)" : ""}; times in ${offset(zone)}, refreshed every ${REFRESH_SECONDS} s`;
      drawn = placeRows(body, drawn, answer.schedules, (s) => JSON.stringify(s), row);
      say(problem, "");
      lastRead = now();
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      // The table (its next slots, its last runs) is as it was last read: said, never shown as current.
      const shown = lastRead ? `The schedules shown are as of ${clock(lastRead, zone)}` : "No schedule read yet";
      say(problem, `${error.message}. ${shown}; asking again every ${REFRESH_SECONDS} s.`);
    }
    if (!stopped) timer = setTimeout(load, REFRESH_SECONDS * 1000);
  }
  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
