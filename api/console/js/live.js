// The live updates (GET /api/ops/events), one stream for all the tabs of this browser that are signed in
// with the same token. A browser opens at most six HTTP/1.1 connections to one origin, and a stream holds
// one for as long as it is open: with a stream per tab, the seventh tab's requests (and soon every tab's)
// waited for a connection that never came.
// The tabs that follow something ask for a Web Lock named after the token (its SHA-256): the one that holds
// it (the leader) holds the stream, and passes its events and states to the others over a BroadcastChannel
// of the same name. When it closes (or follows nothing any more, or the browser freezes it) another tab
// gets the lock and resumes after the last event it saw (Last-Event-ID). Every event has the API's id
// (`<epoch>-<number>`): a tab takes each once, in order, whichever tab relayed it. A leader that says
// nothing for twice the stream's own watchdog while its stream is open (its tab no longer runs) has the
// lock taken from it. Tabs signed in with other tokens share nothing: the API shows each token only what
// it may read. Without Web Locks (a page served over plain HTTP, but from localhost, is not a secure
// context) each tab holds a stream of its own.
import { POLL_SECONDS, session, silence, stream } from "./api.js";

const hubs = new Map(); // the hubs of this tab, by token: a promise of each

// Whether the event of `id` comes after the one of `last` (null: none yet). An id of another epoch (another
// API process) is taken as newer: the stream that brings it starts with `reset`.
export function newer(id, last) {
  if (!id || !last) return true;
  const [epoch, number] = id.split("-");
  const [lastEpoch, lastNumber] = last.split("-");
  return epoch !== lastEpoch || Number(number) > Number(lastNumber);
}

async function lockName(token) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(token));
  return `mdops.events.${[...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

// This tab's side of the stream shared under `name`: its subscribers (the views that follow), and its turn
// as leader. Closed once it has no subscriber.
function hub(name) {
  const channel = new BroadcastChannel(name);
  const subscribers = new Set();
  let told = null; // the stream's state as last told: {state, message, since}
  let lastId = null; // the id of the newest event this tab took
  let candidate = null; // this tab's request of the lock (an AbortController), or its turn holding it
  let leading = null; // the same, while this tab holds the stream
  let frozen = false; // the browser froze this tab: it runs nothing, so it neither leads nor asks to
  // Events other tabs relayed while this one led: a tab that took the lock from this one (which has not
  // heard yet, its stream's last events still on their way to it), or one that has just lost it. Taken
  // once this tab stops leading: its own stream may stop short of them, and they are the events between.
  let relayed = [];
  let silenceTimer = null;

  function take(name, data, id) {
    if (!newer(id, lastId)) return; // relayed by a leader that has just lost the lock, or shown already
    if (id) lastId = id;
    for (const s of subscribers) {
      try {
        s.onEvent(name, data, id);
      } catch (error) {
        reportError(error); // the view's own failure: logged, and the others get the event all the same
      }
    }
  }

  function inform(state) {
    told = state;
    for (const s of subscribers) s.onState(state.state, state.message, state.since);
    watch();
  }

  // A follower whose leader says nothing while its stream is open takes the lock (the leader's tab does not
  // run: a modal dialog, a debugger); not while it reconnects, which says why at each try.
  function watch() {
    clearTimeout(silenceTimer);
    if (leading || frozen || !told || !["live", "stale"].includes(told.state)) return;
    silenceTimer = setTimeout(() => lead(true), 2 * silence() * 1000);
  }

  channel.onmessage = ({ data: message }) => {
    if (message.type === "hello") {
      if (leading && told) channel.postMessage({ type: "state", ...told, lastId });
      return;
    }
    if (leading) {
      if (message.type === "event") relayed.push(message);
      return;
    }
    if (message.type === "event") take(message.name, message.data, message.id);
    else if (message.type === "state") {
      if (newer(message.lastId, lastId)) lastId = message.lastId; // where a new leader resumes
      inform(message);
    }
    watch(); // "alive" too
  };

  // Ask for the lock (`steal`: take it from the leader); this tab leads once it has it, until it closes,
  // is frozen, or has it taken.
  function lead(steal = false) {
    candidate?.abort();
    const mine = new AbortController();
    candidate = mine;
    clearTimeout(silenceTimer);
    const options = steal ? { steal: true } : { signal: mine.signal };
    navigator.locks
      .request(name, options, () => {
        if (mine.signal.aborted) return undefined;
        leading = mine;
        const relay = (event, data, id) => {
          channel.postMessage({ type: "event", name: event, data, id });
          take(event, data, id);
          if (relayed.length) relayed = relayed.filter((m) => newer(m.id, lastId)); // this stream has them
        };
        const tell = (state, message, since) => {
          const said = { state, message, since };
          channel.postMessage({ type: "state", ...said, lastId });
          inform(said);
        };
        const stop = stream(lastId, relay, tell, () => channel.postMessage({ type: "alive" }));
        return new Promise((resolve) => mine.signal.addEventListener("abort", () => resolve(stop()), { once: true }));
      })
      .catch(() => mine.abort()) // taken by another tab, or no longer asked for
      .finally(() => {
        if (leading === mine) {
          leading = null;
          for (const m of relayed.splice(0)) take(m.name, m.data, m.id);
        }
        if (candidate === mine && subscribers.size && !frozen) lead(); // taken: this tab waits for its turn again
      });
  }

  const freeze = () => {
    frozen = true;
    candidate?.abort();
    candidate = null;
    clearTimeout(silenceTimer);
  };
  const resume = () => {
    frozen = false;
    if (subscribers.size) lead();
  };
  document.addEventListener("freeze", freeze);
  document.addEventListener("resume", resume);

  return {
    add(subscriber) {
      subscribers.add(subscriber);
      if (told) subscriber.onState(told.state, told.message, told.since);
      if (subscribers.size === 1) {
        channel.postMessage({ type: "hello" }); // the leader, if any, says how its stream is
        lead();
      }
    },
    remove(subscriber) {
      subscribers.delete(subscriber);
      if (subscribers.size) return;
      candidate?.abort(); // its stream, if it leads, goes to another tab that follows something
      candidate = null;
      clearTimeout(silenceTimer);
      channel.close();
      document.removeEventListener("freeze", freeze);
      document.removeEventListener("resume", resume);
      hubs.delete(name);
    },
  };
}

// Follow the live updates: onEvent(name, data, id) for each event of every run the token may read, in
// order; onState(state, message, since) as api.js's stream() says them (at once, if already known); read(),
// if given, every POLL_SECONDS while the stream reconnects: the view reads the API meanwhile. Returns stop().
export function follow(onEvent, onState = () => {}, read = null) {
  let poll = null;
  let stopped = false;
  const subscriber = {
    onEvent,
    onState(state, message, since) {
      if (state === "reconnecting" && read) poll = poll || setInterval(read, POLL_SECONDS * 1000);
      else {
        clearInterval(poll);
        poll = null;
      }
      onState(state, message, since);
    },
  };
  const end = () => {
    stopped = true;
    clearInterval(poll);
  };
  if (!(navigator.locks && window.BroadcastChannel)) {
    const stop = stream(null, onEvent, subscriber.onState);
    return () => {
      end();
      stop();
    };
  }
  const joined = (async () => {
    const name = await lockName(session.token());
    if (stopped) return null;
    if (!hubs.has(name)) hubs.set(name, hub(name));
    const shared = hubs.get(name);
    shared.add(subscriber);
    return shared;
  })();
  return () => {
    end();
    joined.then((shared) => shared?.remove(subscriber));
  };
}
