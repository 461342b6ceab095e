// Numbers, times and durations as the console shows them. Times are shown in the API's zone (the
// exchange's, from /api/ops/whoami), whatever the browser's own zone is.

// One formatter per zone, made once: making one costs about 50 times as much as using it, and a log
// panel or a list formats hundreds of times.
const formatters = new Map();

function parts(date, zone) {
  if (!formatters.has(zone)) {
    formatters.set(
      zone,
      new Intl.DateTimeFormat("en-CA", {
        timeZone: zone,
        year: "numeric",
        month: "2-digit",
        day: "2-digit",
        hour: "2-digit",
        minute: "2-digit",
        second: "2-digit",
        hourCycle: "h23",
      }),
    );
  }
  return Object.fromEntries(formatters.get(zone).formatToParts(date).map((x) => [x.type, x.value]));
}

// "+08:00" for Asia/Shanghai.
export function offset(zone, date = new Date()) {
  const name = new Intl.DateTimeFormat("en", { timeZone: zone, timeZoneName: "longOffset" })
    .formatToParts(date)
    .find((p) => p.type === "timeZoneName").value;
  return name === "GMT" ? "+00:00" : name.replace("GMT", "");
}

// The Date of a time (a Date, or an ISO 8601 string from the API); null for text that is not one (a
// status writer may put any text in a condition's time), which is shown as it is written.
function moment(value) {
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

// "2026-11-26 16:00:01"; "–" for nothing.
export function when(value, zone) {
  if (!value) return "–";
  const date = moment(value);
  if (!date) return String(value);
  const p = parts(date, zone);
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second}`;
}

// "2026-11-26 16:00:01 +08:00": for a page that does not say the zone elsewhere.
export function whenWithOffset(value, zone) {
  const date = value && moment(value);
  return date ? `${when(date, zone)} ${offset(zone, date)}` : when(value, zone);
}

// "16:00:01"
export function clock(value, zone) {
  return moment(value) ? when(value, zone).slice(11) : when(value, zone);
}

// "3 s", "3 min 04 s" (the API's times are whole seconds); "–" when it has not ended.
export function duration(start, end) {
  if (!start || !end) return "–";
  const seconds = Math.round((new Date(end) - new Date(start)) / 1000);
  if (seconds < 60) return `${seconds} s`;
  return `${Math.floor(seconds / 60)} min ${String(seconds % 60).padStart(2, "0")} s`;
}

// A metric's value with its unit: "5,400 msg/s", "99.90 %" for a ratio, "–" for none.
export function quantity(value, unit) {
  if (value === null || value === undefined) return "–";
  if (unit === "ratio") return `${(value * 100).toFixed(2)} %`;
  const text = Number.isInteger(value) ? value.toLocaleString("en") : value.toLocaleString("en", { maximumFractionDigits: 2 });
  return unit ? `${text} ${unit}` : text;
}

// A script's log line as a person reads it: without the escape sequences a terminal acts on instead of
// showing (colours, a cursor's moves, a window's title: "\x1b[1;31mFAILED\x1b[0m" is "FAILED"), which a
// page would show as stray boxes and brackets; nor the bidirectional embeddings, overrides and isolates
// (U+202A-U+202E, U+2066-U+2069), which would show the line in another order than it was written (a
// Runbook's own fields may not hold them; a script's output may).
const ESCAPES = /\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])|[\u202a-\u202e\u2066-\u2069]/g;
export const readable = (message) => message.replace(ESCAPES, "");

// The text of a live region (role status or alert), put there only when it changes: a screen reader says
// the region again at each change of its nodes, even to the same words (an error at each failed refresh,
// every 2 s while the API is away; a list's state at each check while it is stale).
export function say(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

// Buttons that say whether they are unavailable while a request of theirs is on its way (`busy`): marked
// aria-disabled, a press doing nothing (their handlers check), but never disabled, which would throw the
// keyboard's focus off the button pressed, to the top of the page, until the answer.
export function unavailable(busy, ...buttons) {
  for (const b of buttons) {
    if (busy) b.setAttribute("aria-disabled", "true");
    else b.removeAttribute("aria-disabled");
  }
}

// Whether a run's event may change what the header says of the environment: it reported a state, or it
// may have changed the platform without one (the API says so of a run: state_unreported).
export function changesEnvironment(detail) {
  return Boolean(detail.state) || detail.state_unreported === true;
}

// An element with text: el("td", {class: "x"}, "text", child, ...).
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

// A table in a box of its own that scrolls sideways when the table is wider than the page (a phone). The
// box takes the keyboard's focus, so that the arrow keys scroll it, and is named as the table (`name`: its
// aria-label or aria-labelledby).
export const scrolling = (table, name) => el("div", { class: "scroll", role: "region", tabindex: 0, ...name }, table);

// The rows of a list's table body (`body`), one per item, as a read of the list says them. A row that shows
// the same as before (its `key`, among the rows `drawn` last time) is kept where it is, untouched: a read
// (every few seconds, or at every change of any run) must not replace the row under the pointer (a click
// would fall between the old row and the new one), a selection or the keyboard's focus. Only new and changed
// rows are made (`make`) and put in place; a link that had the focus in a row made again has it again.
// Returns the rows by key: `drawn` of the next read.
export function placeRows(body, drawn, items, key, make) {
  const focused = body.contains(document.activeElement) ? document.activeElement.getAttribute("href") : null;
  const rows = new Map();
  for (const item of items) {
    const shows = key(item);
    rows.set(shows, drawn.get(shows) || make(item));
  }
  const kept = new Set(rows.values());
  for (const tr of [...body.children]) if (!kept.has(tr)) tr.remove();
  [...rows.values()].forEach((tr, i) => {
    if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null);
  });
  if (focused && !body.contains(document.activeElement)) {
    [...body.querySelectorAll("a")].find((a) => a.getAttribute("href") === focused)?.focus();
  }
  return rows;
}

// A label and its control, kept on one line: a narrow screen wraps between such pairs, never inside one (a
// label at the end of a line, its control at the start of the next, reads as the next one's).
export const control = (label, input) => el("span", { class: "control" }, label, input);

// A row of a table of `columns` (a list's, a run's conditions) whose cells say their column's name
// (data-label): a narrow screen (a phone) stacks a row's cells, each under that name, instead of a table
// wider than the screen (console.css's .stacked).
export function labelled(columns, tr) {
  [...tr.children].forEach((td, i) => (td.dataset.label = columns[i]));
  return tr;
}

// The table of a list view (runs, schedules): its caption and body are filled in as the list is read.
export function listTable(caption, columns, body) {
  const headers = columns.map((c) => el("th", { scope: "col" }, c));
  caption.id = "list-caption";
  const table = el("table", { class: "history stacked" }, caption, el("thead", {}, el("tr", {}, ...headers)), body);
  return scrolling(table, { "aria-labelledby": caption.id });
}
