// Sign-in: the person pastes a token once; it is kept for this browser tab only (see api.js).
import { el } from "./format.js";
import { session } from "./api.js";

export function show(container, message, signedIn) {
  const token = el("input", { id: "token", type: "password", autocomplete: "off", required: true, spellcheck: "false" });
  const status = el("p", { class: "message", role: "status" }, message);
  const form = el(
    "form",
    { class: "signin", "aria-labelledby": "signin-title" },
    el("h1", { id: "signin-title" }, "Sign in"),
    el("p", {}, "Paste your API token. It is kept in this browser tab only, until you sign out or close the tab."),
    el("label", { for: "token" }, "API token"),
    token,
    el("button", { type: "submit" }, "Sign in"),
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
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
    await signedIn();
  });
  container.replaceChildren(form);
  token.focus();
}
