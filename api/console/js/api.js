// Talking to the API: the session's token (the only state the console keeps), fetch wrappers that turn
// the API's errors into words, and the live updates of GET /api/ops/events.
import { EventSourceParserStream } from "../vendor/eventsource-parser/stream.js";
import { clock } from "./format.js";

const TOKEN_KEY = "mdops.token";
const ANSWER_SECONDS = 10; // a call not answered by then has failed: a hung API must not freeze a view
let silentSeconds = 45; // an event stream that sends nothing for this long is dropped: see heartbeat()
let skew = 0; // ms the API's clock is ahead of this browser's: see now()

// The token lives in this tab's sessionStorage only: sent as a bearer header, never in a URL or a cookie.
export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  signIn: (token) => sessionStorage.setItem(TOKEN_KEY, token),
  signOut: () => sessionStorage.removeItem(TOKEN_KEY),
};

export class ApiError extends Error {
  constructor(status, message, detail = "") {
    super(message);
    this.status = status;
    this.detail = detail; // the API's own words, if it said any
  }
}

const WHAT = {
  401: "The API refused the token",
  403: "Not allowed",
  404: "Not found",
  409: "Conflict",
  422: "Invalid request",
  429: "Too many requests",
  500: "The API failed",
  503: "Unavailable",
};

// The API's refusal or failure in words: what the status means, then its `detail` (a sentence, or
// FastAPI's list of field errors).
function answerError(status, body) {
  let detail = body && body.detail;
  if (Array.isArray(detail)) {
    detail = detail
      .map((e) => `${(e.loc || []).filter((p) => p !== "body").join(".") || "request"}: ${e.msg}`)
      .join("; ");
  }
  const what = WHAT[status] || `HTTP ${status}`;
  return refused(new ApiError(status, detail ? `${what}: ${detail}` : what, detail || ""));
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

// The API's heartbeat on the event stream (whoami says it): as the mdops command does, a stream silent
// for three heartbeats (45 s by default) is taken as dropped.
export function heartbeat(seconds) {
  silentSeconds = 3 * seconds;
}

export const silence = () => silentSeconds; // seconds

// The time now by the API's clock, which the runs' times are in: what the console says of its own reads
// ("Last updated at", "Stale since") and the charts' spans, which end now, are by it, however wrong this
// computer's clock is (a chart would miss its last minutes, or end in a gap that looks like a stopped
// feed). Taken from each answer's Date header, which says whole seconds: less than 2 s apart is the same.
export const now = () => new Date(Date.now() + skew);

function clockOf(response) {
  const said = Date.parse(response.headers.get("Date")); // NaN without one
  if (Number.isNaN(said)) return;
  const ahead = said + 500 - Date.now(); // the header's second, half of it gone on average
  skew = Math.abs(ahead) < 2000 ? 0 : ahead;
}

// One API call: {data, headers} of a 2xx answer, else an ApiError whose message says what went wrong.
// It fails after `timeout` seconds without its whole answer (0: no limit; execute's is longer than the
// API's wait for the run's end).
export async function call(path, { method = "GET", body, signal, timeout = ANSWER_SECONDS } = {}) {
  const signals = [signal, timeout && AbortSignal.timeout(timeout * 1000)].filter(Boolean);
  let response, data;
  try {
    response = await fetch(path, {
      method,
      signal: signals.length ? AbortSignal.any(signals) : undefined,
      cache: "no-store",
      headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    clockOf(response);
    data = await response.json().catch((error) => {
      if (error.name === "SyntaxError") return null; // no JSON: the status alone says what it is
      throw error;
    });
  } catch (error) {
    if (error.name === "TimeoutError") throw new ApiError(0, `The API did not answer within ${timeout} s`);
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, `The API cannot be reached (${error.message})`);
  }
  if (!response.ok) throw answerError(response.status, data);
  return { status: response.status, data, headers: response.headers };
}

// A refusal that asking again does not change (the token, an id), unlike a 404, a 408, a 429 or a 5xx.
export const refusal = (error) => error.status >= 400 && error.status < 500 && ![404, 408, 429].includes(error.status);

export const POLL_SECONDS = 5; // while the live updates are paused, a view reads the API this often instead

// What a view says while its live updates are paused: why, and that `what` is read meanwhile (while they
// reconnect); once they stopped, refused (asking again changes nothing, and reading would be refused too),
// that they will not come back: `what` is shown as it was, never taken for current.
export function paused(state, message, what) {
  if (state === "stopped") return `Live updates stopped: ${message}. ${what} is not updated any more.`;
  const meanwhile = state === "reconnecting" ? ` ${what} is read every ${POLL_SECONDS} s meanwhile.` : "";
  return `Live updates paused: ${message}.${meanwhile}`;
}

// What a view says while the stream is open but the API's view of the cluster is not current (see
// follow()): since when, the API's reason, and that `what` ("The list") may be out of date.
export function stale(message, since, zone, what) {
  return (
    `Stale since ${clock(since, zone)}: the API has lost its view of the cluster (${message}). ` +
    `${what} may be out of date; it is live again once the API sees the cluster again.`
  );
}

// What the API's /readyz (no token) says of its view of the cluster: "" while it is current; the API's
// reason while it is not (its watch of the Kubernetes API is down: it serves what it saw until then, and
// its streams stay open, quiet but for their heartbeats); undefined when not known (no answer, or not
// the API's: a hung API is the stream watchdog's to tell).
export async function clusterView(signal = null) {
  try {
    const limit = AbortSignal.timeout(ANSWER_SECONDS * 1000);
    const response = await fetch("/readyz", {
      cache: "no-store",
      signal: signal ? AbortSignal.any([signal, limit]) : limit,
    });
    const data = await response.json().catch(() => null);
    if (response.ok) return "";
    if (response.status === 503 && data && data.status === "not ready") return data.reason || "not ready";
  } catch {
    // no answer: not known
  }
  return undefined;
}

// One stream of GET /api/ops/events, the live updates of every run the token may read (see live.js, which
// shares it between the tabs of a browser). EventSource cannot send a bearer header, so this is fetch with
// an SSE parser, reconnecting with Last-Event-ID: after a dropped connection the stream resumes where it
// stopped (or sends `reset`, and the views read their state again); `from`, an event id, resumes after it
// from the start. A connection that brings no byte for three heartbeats (a hung API, a proxy that holds it)
// is dropped and made again.
// An open stream only says that the API is there: while it is, the API's /readyz is read every
// POLL_SECONDS too, and a view that it says is not current (the API lost its watch of the Kubernetes API)
// is "stale", not "live", until it is current again.
// onEvent(name, data, id); onState("live" | "stale" | "reconnecting" | "stopped", message, since): message
// says why it is not live (for "stale", the API's reason), since when it is stale; onHeard() at each byte
// that comes. Returns stop().
export function stream(from, onEvent, onState, onHeard = () => {}) {
  const controller = new AbortController();
  let lastId = from;
  let delay = 500;
  let current = null; // the state last told
  let checks = null; // while the stream is open: the API's view of the cluster is read every POLL_SECONDS
  let opened = 0; // the stream's states: a read of /readyz begun in an earlier one is dropped
  let staleSince = null; // when the API's view was first said not current (kept through a reconnection)
  const tell = (s, message) => {
    current = s;
    onState(s, message, staleSince);
  };
  const state = (s, message) => {
    clearInterval(checks);
    checks = null;
    opened += 1;
    if (s === "live") {
      checks = setInterval(check, POLL_SECONDS * 1000);
      check();
    }
    tell(s, message);
  };
  async function check() {
    const mine = opened;
    const reason = await clusterView(controller.signal);
    if (mine !== opened || controller.signal.aborted || reason === undefined) return;
    if (reason) {
      staleSince = staleSince || now();
      tell("stale", reason);
    } else {
      staleSince = null;
      if (current === "stale") tell("live", "");
    }
  }

  async function connect() {
    const connection = new AbortController();
    const stop = () => connection.abort();
    controller.signal.addEventListener("abort", stop);
    let watchdog = null;
    let silent = false;
    const heard = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => {
        silent = true;
        connection.abort();
      }, silentSeconds * 1000);
    };
    heard();
    try {
      const extra = { Accept: "text/event-stream" };
      if (lastId) extra["Last-Event-ID"] = lastId;
      const response = await fetch("/api/ops/events", {
        headers: headers(extra),
        signal: connection.signal,
        cache: "no-store",
      });
      if (!response.ok) {
        const data = await response.json().catch(() => null);
        throw answerError(response.status, data);
      }
      state("live", "");
      delay = 500;
      const tap = new TransformStream({
        transform(bytes, next) {
          heard(); // any byte counts, a heartbeat's (a comment line, which the parser passes over) too
          onHeard();
          next.enqueue(bytes);
        },
      });
      const events = response.body
        .pipeThrough(tap)
        .pipeThrough(new TextDecoderStream())
        .pipeThrough(new EventSourceParserStream());
      for await (const event of events) {
        if (event.id) lastId = event.id;
        const data = JSON.parse(event.data);
        try {
          onEvent(event.event || "message", data, event.id || null);
        } catch (error) {
          reportError(error); // the view's own failure, not the connection's: logged, and the stream goes on
        }
      }
    } catch (error) {
      if (silent) throw new ApiError(0, `the API sent nothing for ${silentSeconds} s`);
      if (error instanceof ApiError || controller.signal.aborted) throw error;
      throw new ApiError(0, `The API cannot be reached (${error.message})`);
    } finally {
      clearTimeout(watchdog);
      controller.signal.removeEventListener("abort", stop);
    }
  }

  (async () => {
    while (!controller.signal.aborted) {
      try {
        await connect();
        state("reconnecting", "the live updates ended; reconnecting");
      } catch (error) {
        if (controller.signal.aborted) break;
        if (refusal(error) || error.status === 404) {
          state("stopped", error.message); // refused as asked (a token; no stream here): asking again changes nothing
          return;
        }
        state("reconnecting", `${error.message}; reconnecting`);
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
    }
  })();
  return () => {
    controller.abort();
    clearInterval(checks);
  };
}

// A run as its `runbook` event shows it now (with its conditions, resulting state and its lines' times,
// which GET /api/ops/runbooks/{request_id} lacks): the first event of the run's own stream
// (`?request_id=`), which is closed once it has come. {data, id}; null when there is no such run (yet: its
// stream would wait for it, so GET says whether there is one first), or when its stream says nothing within
// three heartbeats. Throws an ApiError when it cannot be read (a 422: an id that cannot be one).
export async function runNow(requestId, signal) {
  const limit = AbortSignal.timeout(silentSeconds * 1000);
  const connection = new AbortController();
  const abort = AbortSignal.any([signal, limit, connection.signal].filter(Boolean));
  try {
    const response = await fetch(`/api/ops/events?request_id=${encodeURIComponent(requestId)}`, {
      headers: headers({ Accept: "text/event-stream" }),
      signal: abort,
      cache: "no-store",
    });
    if (!response.ok) throw answerError(response.status, await response.json().catch(() => null));
    try {
      await call(`/api/ops/runbooks/${encodeURIComponent(requestId)}`, { signal: abort });
    } catch (error) {
      if (error.status === 404) return null; // its events, once it is made, come on the shared stream
      throw error;
    }
    const events = response.body.pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream());
    for await (const event of events) {
      if (event.event === "runbook") return { data: JSON.parse(event.data), id: event.id };
    }
    return null;
  } catch (error) {
    if (error instanceof ApiError || signal?.aborted) throw error;
    if (limit.aborted) return null;
    throw new ApiError(0, `The API cannot be reached (${error.message})`);
  } finally {
    connection.abort(); // the run's stream is not followed: its first event was all that was wanted
  }
}
