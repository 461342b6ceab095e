// Four eyes on a run's page: while the gate holds the run for approvals (its Succeeded condition's reason
// is AwaitingApproval), a token with runbooks:approve approves or rejects it, with an optional comment
// (POST /api/ops/runbooks/{request_id}/approve or /reject). Approve is not offered to the run's requester,
// whom the API refuses (403): the page says why instead. Reject ends the run failed: it is confirmed first.
// A press while a decision is on its way does nothing; the API keeps one decision per person and run, and
// its refusals (403, 409) are shown as it words them. A decision names the run shown (its created_at and
// uid, which tells apart one made again within the same second): a page that missed its deletion and a new
// run with the request id (a stream that could not follow) is refused (409), not taken as a decision on a
// run the person never saw: after a 409 (or a 404) the page reads the run again (reread), and when it is
// another Runbook the box says so, so that a second press decides on the run the page now shows.
import { ApiError, call } from "./api.js";
import { el, unavailable, whenWithOffset } from "./format.js";

const APPROVE = "runbooks:approve";

// Whether the gate holds the run of `detail` (a run event's, or a read shown over one) for approvals.
export function awaiting(detail) {
  const succeeded = (detail.conditions || []).find((c) => c.type === "Succeeded");
  return !detail.runbook.finished_at && Boolean(succeeded) && succeeded.reason === "AwaitingApproval";
}

// The gate's "waiting for n of N approvals (who) until <deadline>" with the deadline as the page's other
// times ("2026-12-06 01:27:13 +08:00"; the controller writes it in ISO 8601, in MDOPS_TIMEZONE).
const zoned = (message, zone) => message.replace(/ until (\S+)$/, (_, at) => ` until ${whenWithOffset(at, zone)}`);

// The decision's part of a run's page for the token `me` (whoami's answer): {element, update(detail)},
// update at each change of the run; reread() reads the run again (after a refusal: the page may be out
// of date). Nothing at all for a token without runbooks:approve.
export function decision(me, requestId, reread = () => {}) {
  const answer = el("p", { class: "decision-answer", role: "status", tabindex: -1 });
  const element = el("section", { class: "decision", "aria-labelledby": "decision-title", hidden: true });
  if (!me.permissions.includes(APPROVE)) return { element, update: () => {} };

  const waiting = el("p", { id: "decision-waiting" });
  const comment = el("textarea", { id: "decision-comment", rows: 2, "aria-describedby": "decision-comment-help" });
  const own = el("p", { class: "note" }, "You asked for this run: another person approves it. You may reject it, to withdraw it.");
  const approve = el("button", { type: "button" }, "Approve");
  const reject = el("button", { type: "button", class: "danger" }, "Reject");
  const controls = el(
    "div",
    { class: "decision-controls" },
    el("div", { class: "field" }, el("label", { for: "decision-comment" }, "Comment (optional)"), comment,
      el("small", { id: "decision-comment-help" }, "Why, for the audit: kept with the decision.")),
    own,
    el("div", { class: "actions" }, approve, reject),
  );
  const confirmReject = el("button", { type: "button", class: "danger" }, "Reject the run");
  // Not "Cancel": the page has a Cancel box, whose Cancel run stops the run.
  const keep = el("button", { type: "button" }, "Do not reject");
  const dialog = el(
    "dialog",
    { "aria-labelledby": "reject-title", "aria-describedby": "reject-text" },
    el("h2", { id: "reject-title" }, "Reject this run?"),
    el("p", { id: "reject-text" }, `Run ${requestId} ends failed, Rejected: its script never runs. A decision is not changed.`),
    el("div", { class: "actions" }, confirmReject, keep),
  );
  element.append(el("h2", { id: "decision-title" }, "Approval"), waiting, controls, answer, dialog);

  let busy = false; // a decision is on its way: further presses do nothing
  let decided = false; // this token's decision is made: the API would refuse another (409)
  let open = false; // the run waits for approvals
  let shown = null; // the Runbook shown, {created_at, uid}: one made again with the request id is new
  let refused = false; // the last decision was refused (409, 404): nothing was decided

  function show() {
    controls.hidden = !open || decided;
    unavailable(busy, approve, reject, confirmReject);
  }

  async function decide(verb) {
    if (busy || decided) return;
    busy = true;
    refused = false;
    show();
    answer.textContent = verb === "approve" ? "Approving…" : "Rejecting…";
    const body = { ...shown };
    if (comment.value) body.comment = comment.value;
    try {
      await call(`/api/ops/runbooks/${encodeURIComponent(requestId)}/${verb}`, { method: "POST", body });
      decided = true;
      answer.textContent = `${verb === "approve" ? "Approved" : "Rejected"} by you (${me.name}).`;
      answer.className = "decision-answer";
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      answer.textContent = error.message; // the API's own words (its detail), or why there was no answer
      answer.className = "decision-answer message";
      if (error.status === 409 || error.status === 404) {
        refused = true;
        reread(); // made again, deleted, started, decided elsewhere: the page shows the run as it is now
      }
    } finally {
      busy = false;
      show();
      answer.focus(); // the buttons may be gone: the answer is where the keyboard goes on from
    }
  }

  approve.addEventListener("click", () => decide("approve"));
  reject.addEventListener("click", () => {
    if (busy || decided) return;
    dialog.showModal();
    keep.focus();
  });
  confirmReject.addEventListener("click", () => {
    dialog.close();
    decide("reject");
  });
  keep.addEventListener("click", () => dialog.close());

  function update(detail) {
    open = awaiting(detail);
    const r = detail.runbook;
    const changed = Boolean(shown && r.uid && r.uid !== shown.uid); // deleted and asked for again
    // The run went on while Reject was asked (decided elsewhere, started), or is another one now: a modal
    // dialog left open in a hidden box would leave the whole page inert, unseen, and one about the run seen
    // would reject a run the person never read. Nothing was decided here: the page says so.
    const unasked = (!open || changed) && dialog.open;
    if (unasked) dialog.close();
    if (changed) {
      // A decision on the old Runbook does not count for this one.
      decided = false;
      answer.textContent =
        `${refused || unasked ? "Nothing was decided. " : ""}This is a new run: ${requestId} was asked for ` +
        `again (created ${whenWithOffset(r.created_at, me.time_zone)}) after the run this page showed was ` +
        "deleted. Look at it before you decide: decisions on that one do not count for it.";
      answer.className = "decision-answer message";
    } else if (unasked) {
      answer.textContent = "The run no longer waits for approvals: nothing was decided here.";
      answer.className = "decision-answer";
    }
    refused = false; // said with the run shown next only: the one read again after the refusal
    if (r.uid) shown = { created_at: r.created_at, uid: r.uid };
    if (open) waiting.textContent = `This run waits for approvals: ${zoned(r.message || "–", me.time_zone)}.`;
    waiting.hidden = !open;
    approve.hidden = r.requested_by === me.name;
    own.hidden = !approve.hidden;
    element.hidden = !open && !answer.textContent; // an answer stays shown once the run goes on
    show();
    if (unasked) answer.focus(); // the focus was in the dialog
  }

  return { element, update };
}
