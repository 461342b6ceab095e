// Cancel on a run's page: while the run has not finished, a token that may execute its command (whoami's
// `commands`) cancels it (POST /api/ops/runbooks/{request_id}/cancel), after a question whose "Keep the
// run" has the focus, with an optional reason. A run not started never starts; one running is stopped
// (exit code 130); the live updates show its end. A press while the cancel is on its way does nothing;
// once the run is cancelled (by anyone: its `cancel`, which the run's details show) the button goes. The
// API's refusals are shown as it words them; after a 409 (finished meanwhile, or made again) or a 404 the
// page reads the run again. A cancel names the run shown (its uid): a page that missed its deletion and a
// new run with the request id is refused (409), never taken as a cancel of a run the person never saw.
import { ApiError, call } from "./api.js";
import { el, unavailable } from "./format.js";

// "by bob: wrong venue": who cancelled a run, and why.
export const cancelledBy = (c) => `by ${c.requested_by || "–"}${c.reason ? `: ${c.reason}` : ""}`;

// The cancel's part of a run's page for the token `me` (whoami's answer): {element, update(detail)},
// update at each change of the run; reread() reads the run again (after a refusal).
export function cancelling(me, requestId, reread = () => {}) {
  const element = el("section", { class: "cancel", "aria-labelledby": "cancel-title", hidden: true });
  // Hidden while it says nothing: the run's own state is the one status of a run's page until then.
  const answer = el("p", { class: "cancel-answer", role: "status", tabindex: -1, hidden: true });
  const say = (text, message = false) => {
    answer.textContent = text;
    answer.className = message ? "cancel-answer message" : "cancel-answer";
    answer.hidden = false;
  };
  const ask = el("button", { type: "button", class: "danger" }, "Cancel run");
  const reason = el("textarea", { id: "cancel-reason", rows: 2, "aria-describedby": "cancel-reason-help" });
  const confirm = el("button", { type: "button", class: "danger" }, "Cancel the run");
  const keep = el("button", { type: "button" }, "Keep the run");
  const dialog = el(
    "dialog",
    { "aria-labelledby": "cancel-question", "aria-describedby": "cancel-text" },
    el("h2", { id: "cancel-question" }, "Cancel this run?"),
    el(
      "p",
      { id: "cancel-text" },
      `Run ${requestId} ends failed, Cancelled: if it has not started, it never starts; if it runs, it is ` +
        "stopped (exit code 130). A cancel is not taken back.",
    ),
    el("div", { class: "field" }, el("label", { for: "cancel-reason" }, "Reason (optional)"), reason,
      el("small", { id: "cancel-reason-help" }, "Why, for the audit: kept with the run.")),
    el("div", { class: "actions" }, confirm, keep),
  );
  element.append(el("h2", { id: "cancel-title" }, "Cancel"), ask, answer, dialog);

  let busy = false; // the cancel is on its way: further presses do nothing
  let shown = null; // the uid of the Runbook shown: one made again with the request id is another run

  async function send() {
    if (busy) return;
    busy = true;
    unavailable(true, ask, confirm);
    say("Cancelling…");
    const body = { ...(shown && { uid: shown }), ...(reason.value && { reason: reason.value }) };
    try {
      const { status, data } = await call(`/api/ops/runbooks/${encodeURIComponent(requestId)}/cancel`, {
        method: "POST",
        body,
      });
      say(
        status === 202
          ? `Cancelled by you (${me.name}): the run stops, or never starts; this page shows its end.`
          : `Nothing changed: the run was already cancelled ${cancelledBy(data.cancel)}.`,
      );
      update(data);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      say(error.message, true); // the API's own words (its detail), or why there was no answer
      if (error.status === 409 || error.status === 404) reread(); // finished, made again, deleted
    } finally {
      busy = false;
      unavailable(false, ask, confirm);
      answer.focus(); // the button may be gone: the answer is where the keyboard goes on from
    }
  }

  ask.addEventListener("click", () => {
    if (busy) return;
    dialog.showModal();
    keep.focus();
  });
  confirm.addEventListener("click", () => {
    dialog.close();
    send();
  });
  keep.addEventListener("click", () => dialog.close());

  function update(detail) {
    const r = detail.runbook;
    if (r.uid) shown = r.uid;
    const open = !r.finished_at && !detail.cancel && me.commands.includes(r.command);
    // The run ended, or was cancelled elsewhere, while the question was asked: a modal dialog left open in
    // a hidden part would leave the whole page inert, unseen. Nothing was cancelled here: the page says so.
    const unasked = !open && dialog.open;
    if (unasked) {
      dialog.close();
      say(
        detail.cancel
          ? `Nothing was cancelled here: the run was cancelled meanwhile ${cancelledBy(detail.cancel)}.`
          : "Nothing was cancelled here: the run has finished.",
      );
    }
    ask.hidden = !open;
    element.hidden = !open && !answer.textContent; // an answer stays shown once the run goes on
    if (unasked) answer.focus(); // the focus was in the dialog
  }

  return { element, update };
}
