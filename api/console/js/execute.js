// Run a command: a form with every field of the execute body, checked with the API's own rules (read
// from its OpenAPI document, so that they cannot drift). A mutating command is planned first (a dry run,
// its result shown), then run for real after a confirmation that names the command and the profile.
// The page makes each request id before sending: a double click or a retry is the same request, never a
// second run. After a 5xx the page asks for the run: one that has ended (its script could not execute,
// exit code 125, the API's 500, which the API keeps for its id) stays shown, and the next press is a new
// request; one that runs on stays shown until it ends; one whose fate is unknown is retried with the same id.
// An answer that does not come within a time limit (longer than the API's own wait) is taken as lost: the
// run may exist, and is looked up by its request id, never sent again under another.
import { ApiError, call } from "./api.js";
import { changesEnvironment, el, unavailable } from "./format.js";
import { outcome, panel } from "./run.js";

const NOT_EXECUTED = 125; // the exit code of a run whose script could not execute
const RETRY_SECONDS = 5; // the form's fields are asked for again this long after a failure
// Execute's answer is awaited this much longer than the API waits for the run's end (whoami's
// execute_wait_seconds, after which it answers 202): the API's making of the run (its cache's sync, the
// create) and the way back. Past it the answer is lost.
const EXECUTE_SLACK_SECONDS = 30;

const LABELS = {
  command: "Command",
  mode: "Mode",
  window: "Window",
  profile: "Profile",
  config: "Config set",
  request_id: "Request id",
  enforce: "Enforce the health gate",
  reason: "Reason",
  timeout_seconds: "Timeout (seconds)",
};

// A UUID4 from the browser's random numbers (crypto.randomUUID needs a secure context; this page may be
// served over plain HTTP inside a cluster).
function newRequestId() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// The run of requestId as GET /api/ops/runbooks/{request_id} says (execute's `runbook`); null: none, or
// not known.
async function runOf(requestId) {
  try {
    return (await call(`/api/ops/runbooks/${encodeURIComponent(requestId)}`)).data.runbook;
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    return null;
  }
}

// The JSON schema of one field of ExecuteRequest, without its "or null".
function rule(schema, document) {
  let s = schema.anyOf ? schema.anyOf.find((x) => x.type !== "null") : schema;
  if (s.$ref) s = document.components.schemas[s.$ref.split("/").pop()];
  return { ...s, description: schema.description || s.description };
}

function field(name, r, value) {
  const id = `field-${name}`;
  const help = r.description ? el("small", { id: `${id}-help` }, r.description) : null;
  const common = { id, name, "aria-describedby": help ? `${id}-help` : null };
  let input;
  if (r.enum) {
    input = el("select", common, ...r.enum.map((v) => el("option", { value: v, selected: v === value }, v)));
  } else if (r.type === "boolean") {
    input = el("input", { ...common, type: "checkbox", checked: Boolean(value) });
    return { name, input, row: el("div", { class: "field check" }, input, el("label", { for: id }, LABELS[name]), help) };
  } else if (r.type === "integer") {
    input = el("input", { ...common, type: "number", step: 1, min: r.minimum, max: r.maximum, value: value ?? "" });
  } else if (name === "reason") {
    input = el("textarea", { ...common, rows: 2, maxlength: r.maxLength });
  } else {
    input = el("input", { ...common, type: "text", autocomplete: "off", maxlength: r.maxLength, value: value ?? "" });
  }
  if (r.pattern) {
    const pattern = new RegExp(r.pattern, "u");
    const check = () => input.setCustomValidity(!input.value || pattern.test(input.value) ? "" : `Letters, digits, '.', '_' and '-' only, starting with a letter or digit (${r.pattern}).`);
    input.addEventListener("input", check);
  }
  if (r.minLength) input.required = true;
  return { name, input, row: el("div", { class: "field" }, el("label", { for: id }, LABELS[name]), input, help) };
}

function read(f) {
  if (f.input.type === "checkbox") return f.input.checked;
  if (f.input.type === "number") return f.input.value === "" ? null : Number(f.input.value);
  return f.input.value;
}

export function show(container, ctx) {
  ctx.title("Run a command");
  const me = ctx.me;
  const problem = el("p", { class: "message", role: "alert" });
  const form = el("form", { class: "execute", "aria-labelledby": "execute-title", novalidate: true });
  const actions = el("div", { class: "actions" });
  const plan = el("button", { type: "button" }, "Plan (dry run)");
  const real = el("button", { type: "button", class: "danger", hidden: true }, "Run for real");
  const runNow = el("button", { type: "button" }, "Run");
  const confirmText = el("p", { id: "confirm-text" });
  const confirmRun = el("button", { type: "button", class: "danger" }, "Run for real");
  const cancel = el("button", { type: "button" }, "Cancel");
  const dialog = el(
    "dialog",
    { "aria-labelledby": "confirm-title", "aria-describedby": "confirm-text" },
    el("h2", { id: "confirm-title" }, "Run for real?"),
    confirmText,
    el("div", { class: "actions" }, confirmRun, cancel),
  );
  const result = el("div", { class: "result" });
  container.append(el("h1", { id: "execute-title" }, "Run a command"), form, problem, result, dialog);
  form.append(el("p", {}, "Loading the request's fields…"));

  let fields = [];
  let busy = false; // a request is on its way: further clicks do nothing
  let planId = newRequestId(); // the dry run's own request id, for the parameters as they are
  let edits = 0; // changes of the parameters: a plan made before the last one no longer holds
  let planned = null; // the finished plan of the current parameters: its run
  let stopFollowing = () => {};
  let shown = null; // the panel of the run last sent

  const answerWithin = me.execute_wait_seconds + EXECUTE_SLACK_SECONDS; // execute's time limit
  const value = (name) => read(fields.find((f) => f.name === name));
  const renewRequestId = () => (fields.find((f) => f.name === "request_id").input.value = newRequestId());
  const mutating = () => me.mutating_commands.includes(value("command")); // planned first

  // While a request is on its way the buttons say they are unavailable (see unavailable()). A button that
  // goes with the focus on it (Run for real, once its run is done: the plan no longer holds) leaves it on
  // the run's panel.
  function showButtons() {
    const focused = [plan, real, runNow].find((b) => b === document.activeElement);
    plan.hidden = !mutating();
    runNow.hidden = mutating();
    real.hidden = !(mutating() && planned);
    unavailable(busy, plan, real, runNow, confirmRun);
    if (focused?.hidden) shown?.focus();
  }

  function body(dryRun) {
    const out = { dry_run: dryRun };
    for (const f of fields) {
      const v = read(f);
      if (v !== null && v !== "") out[f.name] = v;
    }
    if (dryRun) out.request_id = planId;
    if (!out.reason) delete out.reason;
    return out;
  }

  // The request was made (answered, or its run shown finished): a run for real is done, and the next
  // press is a new request with a new id (a failure keeps the id, unless its run has ended). A plan holds
  // once its panel shows it finished.
  function made(dryRun) {
    if (dryRun) return;
    renewRequestId();
    planned = null;
    planId = newRequestId();
  }

  // No answer (none within the time limit, or the API unreachable): the run may have been made. Where to
  // look it up, and that the same button asks again under the same request id.
  function lost(error, requestId, button) {
    problem.replaceChildren(
      `${error.message}: the answer was lost, and the run may exist. Look it up by its request id: `,
      el("a", { href: `#/runbooks/${encodeURIComponent(requestId)}` }, requestId),
      `. Pressing "${button}" again sends the same request id, never a second run.`,
    );
  }

  // Send one execute request, following its run live while the API waits for the run's end.
  async function send(dryRun) {
    if (busy || !form.reportValidity()) return;
    busy = true;
    showButtons();
    problem.textContent = "";
    const request = body(dryRun);
    const button = dryRun ? plan.textContent : mutating() ? real.textContent : runNow.textContent;
    stopFollowing();
    const version = edits; // the parameters as sent
    let finished = false; // the panel shows the run finished
    let unknown = false; // the request failed without an answer, or with a 5xx while its run went on
    const run = panel(me.time_zone, (detail) => {
      if (changesEnvironment(detail)) ctx.environmentChanged();
      finished = finished || Boolean(detail.runbook.finished_at);
      if (dryRun && finished && version === edits) {
        planned = detail.runbook;
        showButtons();
      }
      if (finished && unknown) answered(); // it has reconnected and shows the run's end
    });
    // The run is shown finished after the request failed without its answer: that is the answer the API
    // would have given. The error goes, and the request is made, as after a success.
    function answered() {
      unknown = false;
      problem.textContent = "";
      made(dryRun);
      showButtons();
    }
    result.replaceChildren(
      el("p", {}, el("a", { href: `#/runbooks/${encodeURIComponent(request.request_id)}` }, "Open this run's page")),
      run.element,
    );
    shown = run.element;
    stopFollowing = run.start(request.request_id); // before sending: no event of the run is missed
    try {
      // The API answers once the run has ended (or its wait did): the run's result, shown even when the live
      // updates could not follow it.
      const answer = await call("/api/ops/runbooks/execute", { method: "POST", body: request, timeout: answerWithin });
      run.answer(answer.data);
      made(dryRun);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      problem.textContent = error.message;
      const asked = error.status >= 500 ? await runOf(request.request_id) : null;
      if (asked && asked.finished_at !== null) {
        // Its run has ended (the same id would only get this answer again): its panel stays, and the next
        // press is a new request. What was planned stays planned: the parameters are the same.
        if (error.status === 500 && asked.exit_code === NOT_EXECUTED) {
          problem.textContent = `The run could not be executed: ${error.detail}`;
        }
        if (dryRun) planId = newRequestId();
        else renewRequestId();
      } else if (asked || error.status === 0) {
        // It runs on, or no answer: the panel goes on following the run, and the same id is sent again
        // until it shows its end.
        if (asked) problem.textContent = `${error.message}. The run is still running: it is shown below.`;
        else lost(error, request.request_id, button);
        unknown = true;
        if (finished) answered();
      } else {
        stopFollowing();
        result.replaceChildren();
      }
    } finally {
      busy = false;
      showButtons();
    }
  }

  plan.addEventListener("click", () => send(true));
  runNow.addEventListener("click", () => send(false));
  real.addEventListener("click", () => {
    if (busy || !form.reportValidity()) return;
    const warning = planned.status === "success" ? "" : `The plan did not succeed: ${outcome(planned)}. `;
    confirmText.textContent = `${warning}This runs ${value("command")} for real on profile ${value("profile") || me.execute_defaults.profile} (mode ${value("mode") || me.execute_defaults.mode}). It changes the platform.`;
    confirmRun.textContent = `Run ${value("command")} for real`;
    dialog.showModal();
    cancel.focus();
  });
  confirmRun.addEventListener("click", () => {
    dialog.close();
    send(false);
  });
  cancel.addEventListener("click", () => dialog.close());

  let retry = null;
  let stopped = false; // left: a read still on its way must not ask again
  async function load() {
    let document;
    try {
      document = (await call("/openapi.json")).data;
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      form.replaceChildren(el("p", { class: "message" }, `${error.message}. Asking again in ${RETRY_SECONDS} s.`));
      if (!stopped) retry = setTimeout(load, RETRY_SECONDS * 1000);
      return;
    }
    const schema = document.components.schemas.ExecuteRequest;
    const defaults = { ...me.execute_defaults, request_id: newRequestId() };
    fields = Object.entries(schema.properties)
      .filter(([name]) => name !== "dry_run") // the buttons choose it: Plan is a dry run
      .map(([name, s]) => {
        const r = rule(s, document);
        if (name === "command") r.enum = r.enum.filter((c) => me.commands.includes(c));
        return field(name, r, defaults[name]);
      });
    form.replaceChildren(
      ...fields.map((f) => f.row),
      el("p", { class: "note" }, "Plan runs the command with dry_run: the script changes nothing and reports what it would do."),
      actions,
    );
    actions.append(plan, real, runNow);
    for (const f of fields) {
      if (f.name === "request_id") continue;
      // Other parameters: what was planned no longer holds.
      f.input.addEventListener("input", () => {
        edits += 1;
        planned = null;
        planId = newRequestId();
        showButtons();
      });
    }
    form.addEventListener("submit", (event) => event.preventDefault());
    showButtons();
  }
  load();
  return () => {
    stopped = true;
    clearTimeout(retry);
    stopFollowing();
  };
}
