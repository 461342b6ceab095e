// The console's frame: sign-in, the header (environment, who is signed in), the navigation, and the
// view of the current address (#/overview, #/runbooks, #/runbooks/<request id>, #/schedules, #/run).
import { ApiError, call, clusterView, heartbeat, now, session } from "./api.js";
import * as execute from "./execute.js";
import { clock, el, say, whenWithOffset } from "./format.js";
import * as overview from "./overview.js";
import * as run from "./run.js";
import * as runbooks from "./runbooks.js";
import * as schedules from "./schedules.js";
import * as signin from "./signin.js";

const $ = (id) => document.getElementById(id);
const RETRY_SECONDS = 5; // whoami is asked again this long after a failure that is not the token's
const ENVIRONMENT_SECONDS = 10; // the header's environment is read this often, whatever the view
const main = $("main");
let leave = () => {}; // stops the current view's timers and streams
let me = null; // what /api/ops/whoami said of the session's token
const CHANGED_SECONDS = 2; // the header's environment is read again this long after a run reported one
let environmentTimer = null;
let environmentSoon = null; // the read after runs reported the environment's state
let environmentRead = null; // when the header's environment was last read

function chrome(visible) {
  for (const id of ["nav", "who", "environment"]) $(id).hidden = !visible;
}

// A name in the header, cut short with an ellipsis when longer than the band (a phone): whole in its tooltip,
// and, as a phone has no pointer to hover with, once tapped or reached with the keyboard: one cut short takes
// the focus, and shows whole while it has it (console.css). One that fits takes none.
const NAMES = ["env-mode", "env-profile", "env-window", "env-venue", "who-name"];
function reachable(node) {
  if (node === document.activeElement || node.scrollWidth > node.clientWidth) node.tabIndex = 0;
  else node.removeAttribute("tabindex");
}

function name(id, text, title = text) {
  $(id).textContent = text;
  $(id).title = title;
  reachable($(id));
}

// "XHKG open: closes 2026-12-07 16:00:00 +08:00, opens 2026-12-08 09:30:00 +08:00": the venue's next
// close and next open, in the order they come, in its tooltip.
function venueTitle(text, session) {
  const changes = [
    ["closes", session.next_close],
    ["opens", session.next_open],
  ].filter(([, at]) => at && !Number.isNaN(Date.parse(at)));
  changes.sort((a, b) => Date.parse(a[1]) - Date.parse(b[1]));
  const zone = me ? me.time_zone : undefined;
  const said = changes.map(([verb, at]) => `${verb} ${whenWithOffset(at, zone)}`);
  return said.length ? `${text}: ${said.join(", ")}` : text;
}

// The band's width changes (a phone turned, the header shown, a name shown whole or cut short again).
new ResizeObserver(() => NAMES.forEach((id) => reachable($(id)))).observe(document.querySelector("header"));

function showEnvironment(status) {
  name("env-mode", status.environment_mode || "–");
  name("env-profile", status.active_profile || "–");
  name("env-window", status.active_window || "–");
  const session = status.session || {};
  const venue = session.venue ? `${session.venue} ${session.state || "(unknown)"}` : "–";
  name("env-venue", venue, venueTitle(venue, session));
  environmentRead = now();
  $("env-stale").hidden = true;
  // A run since the state shown was reported may have changed the platform without a report of its own.
  const since = status.state_stale_by;
  $("env-unreported").hidden = !since;
  $("env-unreported-by").replaceChildren(
    ...(since
      ? [
          el("a", { href: `#/runbooks/${encodeURIComponent(since.request_id)}` }, since.command, " ", since.request_id),
          ` ended without reporting the state it left (exit code ${since.exit_code}): what it changed is not known`,
        ]
      : []),
  );
}

// Whether the token is still good, for a token without status:read: whoami (any token's) is asked every
// ENVIRONMENT_SECONDS instead of the status, so that a token revoked meanwhile (the API restarted without
// it) signs out (its 401) whatever the view, even one that reads nothing by itself (the run form).
async function checkToken() {
  try {
    await call("/api/ops/whoami");
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
  }
}

// Read the environment again (every ENVIRONMENT_SECONDS, and after a run changed it). A read that fails
// marks what the header shows stale, with the time of the last read; so does an API that has lost its
// view of the cluster (its /readyz), whose answer is what it saw until then. A token without status:read
// shows none, and is not asked again (checkToken instead).
async function refreshEnvironment() {
  try {
    const [status, view] = await Promise.all([call("/api/ops/status"), clusterView()]);
    showEnvironment(status.data);
    if (view) {
      $("env-as-of").textContent = `the API has lost its view of the cluster (${view})`;
      $("env-stale").hidden = false;
    }
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    if (!me) return; // signed out meanwhile
    if (error.status === 403) {
      clearInterval(environmentTimer); // asking again changes nothing
      environmentTimer = setInterval(checkToken, ENVIRONMENT_SECONDS * 1000);
      return;
    }
    const since = environmentRead ? `as of ${clock(environmentRead, me.time_zone)}` : "not read yet";
    $("env-as-of").textContent = `${since}: ${error.message}`;
    $("env-stale").hidden = false;
  }
}

// A run reported the environment's state (a view's live update): the header reads it again, once for all
// the runs that report one within CHANGED_SECONDS. The status is a pass over every Runbook the API holds:
// read at each of a burst of runs, by each open view, it cost the API a third of a core.
function environmentChanged() {
  environmentSoon =
    environmentSoon ||
    setTimeout(() => {
      environmentSoon = null;
      refreshEnvironment();
    }, CHANGED_SECONDS * 1000);
}

function showSignIn(message = "") {
  leave();
  leave = () => {};
  clearInterval(environmentTimer);
  clearTimeout(environmentSoon);
  environmentSoon = null;
  me = null;
  chrome(false);
  signin.show(main, message, start);
}

// A link's request id; one with a broken %-escape (typed, or cut short) is taken as it is written.
function decoded(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

function route() {
  leave();
  const hash = location.hash || "#/overview";
  const mayRun = me.commands.length > 0;
  const ctx = { me, environmentChanged, title: (t) => (document.title = `${t} · mdops Ops Console`) };
  const section = hash.split("/")[1]; // "overview", "runbooks" (a run's page too), "schedules" or "run"
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.getAttribute("href") === `#/${section}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  main.replaceChildren();
  const runPage = hash.match(/^#\/runbooks\/(.+)$/);
  if (runPage) leave = run.show(main, ctx, decoded(runPage[1]));
  else if (hash === "#/runbooks") leave = runbooks.show(main, ctx);
  else if (hash === "#/schedules") leave = schedules.show(main, ctx);
  else if (hash === "#/run" && mayRun) leave = execute.show(main, ctx);
  else if (["#", "#/", "#/overview", "#/run"].includes(hash)) leave = overview.show(main, ctx);
  else showNoSuchPage(ctx);
  main.focus({ preventScroll: true });
}

// An address of no view (a typo, a link from elsewhere): said, never another view under that address.
function showNoSuchPage(ctx) {
  ctx.title("No such page");
  main.append(
    el("h1", {}, "No such page"),
    el("p", {}, `The console has no page at ${location.hash}. `, el("a", { href: "#/overview" }, "Go to the overview")),
  );
  leave = () => {};
}

// whoami failed for a reason other than the token (a 503, a refused connection while the API restarts):
// the token stays, and the page asks again. While it asks the view is kept, only its words change: made
// again at each try, it took the keyboard's focus off Sign out, and a screen reader said its alert again
// every RETRY_SECONDS.
let retrying = null; // the alert of the view that asks again, while it is shown
function showRetry(error) {
  chrome(false);
  if (!retrying?.isConnected) {
    const signOut = el("button", { type: "button" }, "Sign out");
    signOut.addEventListener("click", () => {
      session.signOut();
      showSignIn("Signed out.");
    });
    retrying = el("p", { class: "message", role: "alert" });
    main.replaceChildren(el("h1", {}, "Signing in"), retrying, signOut);
  }
  say(retrying, `${error.message}. Asking again in ${RETRY_SECONDS} s.`);
  const timer = setTimeout(start, RETRY_SECONDS * 1000);
  leave = () => clearTimeout(timer);
}

async function start() {
  leave();
  leave = () => {};
  if (!session.token()) return showSignIn();
  try {
    me = (await call("/api/ops/whoami")).data;
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    if (error.status === 401) return; // the token is refused: mdops:unauthorized signs out (below)
    return showRetry(error);
  }
  heartbeat(me.events_heartbeat_seconds);
  name("who-name", `Signed in as ${me.name}`);
  $("nav-run").hidden = me.commands.length === 0;
  chrome(true);
  clearInterval(environmentTimer);
  environmentTimer = setInterval(refreshEnvironment, ENVIRONMENT_SECONDS * 1000);
  refreshEnvironment();
  route();
}

$("sign-out").addEventListener("click", () => {
  session.signOut();
  showSignIn("Signed out.");
});
window.addEventListener("hashchange", () => me && route());
// The token is refused (mistyped, revoked, another installation's): signed out, saying what to do.
window.addEventListener("mdops:unauthorized", (event) => {
  session.signOut();
  showSignIn(`${event.detail}. Paste a token the API knows to sign in.`);
});
start();
