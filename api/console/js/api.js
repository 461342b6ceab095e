// Talking to the API: the session's token (the only state the console keeps), fetch wrappers that turn
// the API's errors into words, and the live updates of GET /api/ops/events.
import { EventSourceParserStream } from "../vendor/eventsource-parser/stream.js";

const TOKEN_KEY = "mdops.token";

// The token lives in this tab's sessionStorage only: sent as a bearer header, never in a URL or a cookie.
export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  signIn: (token) => sessionStorage.setItem(TOKEN_KEY, token),
  signOut: () => sessionStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const WHAT = {
  401: "The API refused the token",
  403: "Not allowed",
  404: "Not found",
  409: "Conflict",
  422: "Invalid request",
  429: "Too many requests",
  500: "The run could not be executed",
  503: "Unavailable",
};

// The API's answer in words: its `detail` (a sentence, or FastAPI's list of field errors), after what
// the status means.
export function describe(status, body) {
  let detail = body && body.detail;
  if (Array.isArray(detail)) {
    detail = detail
      .map((e) => `${(e.loc || []).filter((p) => p !== "body").join(".") || "request"}: ${e.msg}`)
      .join("; ");
  }
  const what = WHAT[status] || `HTTP ${status}`;
  return detail ? `${what}: ${detail}` : what;
}

function headers(extra = {}) {
  return { Authorization: `Bearer ${session.token()}`, ...extra };
}

// A 401 anywhere means the token is no longer good: the page signs out (main.js listens).
function refused(error) {
  if (error.status === 401) {
    window.dispatchEvent(new CustomEvent("mdops:unauthorized", { detail: error.message }));
  }
  return error;
}

// One API call: {data, headers} of a 2xx answer, else an ApiError whose message says what went wrong.
export async function call(path, { method = "GET", body, signal } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      signal,
      cache: "no-store",
      headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, `The API cannot be reached (${error.message})`);
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) throw refused(new ApiError(response.status, describe(response.status, data)));
  return { status: response.status, data, headers: response.headers };
}

// Follow GET /api/ops/events (query: "" or "?request_id=..."). EventSource cannot send a bearer header,
// so this is fetch with an SSE parser, reconnecting with Last-Event-ID: after a dropped connection the
// stream resumes where it stopped (or sends `reset`, and the view reads its state again).
// onEvent(name, data); onState("live" | "reconnecting" | "stopped", message). Returns stop().
export function follow(query, onEvent, onState = () => {}) {
  const controller = new AbortController();
  let lastId = null;
  let delay = 500;

  async function connect() {
    const extra = { Accept: "text/event-stream" };
    if (lastId) extra["Last-Event-ID"] = lastId;
    const response = await fetch(`/api/ops/events${query}`, {
      headers: headers(extra),
      signal: controller.signal,
      cache: "no-store",
    });
    if (!response.ok) {
      const data = await response.json().catch(() => null);
      throw refused(new ApiError(response.status, describe(response.status, data)));
    }
    onState("live", "");
    delay = 500;
    const events = response.body
      .pipeThrough(new TextDecoderStream())
      .pipeThrough(new EventSourceParserStream());
    for await (const event of events) {
      if (event.id) lastId = event.id;
      onEvent(event.event || "message", JSON.parse(event.data));
    }
  }

  (async () => {
    while (!controller.signal.aborted) {
      try {
        await connect();
        onState("reconnecting", "the live updates ended; reconnecting");
      } catch (error) {
        if (controller.signal.aborted) break;
        if (error.status >= 400 && error.status < 500 && error.status !== 408 && error.status !== 429) {
          onState("stopped", error.message); // refused as asked (a token, an id): asking again changes nothing
          return;
        }
        onState("reconnecting", error.message);
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
    }
  })();
  return () => controller.abort();
}
