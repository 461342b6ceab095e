// Sign-in: the person pastes a token once; it is kept for this browser tab only (see api.js).
import { el, unavailable } from "./format.js";
import { session } from "./api.js";

export function show(container, message, signedIn) {
  const token = el("input", { id: "token", type: "password", autocomplete: "off", required: true, spellcheck: "false" });
  const status = el("p", { class: "message", role: "status" }, message);
  const button = el("button", { type: "submit" }, "Sign in");
  const form = el(
    "form",
    { class: "signin", "aria-labelledby": "signin-title" },
    el("h1", { id: "signin-title" }, "Sign in"),
    el("p", {}, "Paste your API token. It is kept in this browser tab only, until you sign out or close the tab."),
    el("label", { for: "token" }, "API token"),
    token,
    button,
    status,
  );
  let busy = false; // the token is being checked: a second press (or Enter) sends nothing more
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy) return;
    const value = token.value.trim();
    if (!value) {
      status.textContent = "That is only spaces: paste your token."; // "required" lets spaces through
      return;
    }
    if (/[^\x21-\x7e]/.test(value)) {
      // A header cannot carry it; the browser would refuse the request as if the API were unreachable.
      status.textContent = "A token has no spaces, quotes like “ ” or other characters beyond ASCII: paste it again.";
      return;
    }
    session.signIn(value);
    status.textContent = "Checking the token…";
    busy = true;
    unavailable(true, button);
    try {
      await signedIn();
    } finally {
      busy = false;
      unavailable(false, button);
    }
  });
  container.replaceChildren(form);
  token.focus();
}
