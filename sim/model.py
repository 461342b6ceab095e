"""The feed-handler model of the market-data simulator.

Pure state and arithmetic, no threads and no I/O: time only moves when :meth:`FeedModel.step` (or
:meth:`FeedModel.advance_to`) is called, so unit tests drive it deterministically. The server advances it
with the monotonic wall clock, so there model time is wall time.

Every public method takes the model's lock; a :class:`threading.Condition` on that lock is notified on every
change, so a caller can wait for a switch to finish (see :meth:`FeedModel.wait_for`).
"""

from __future__ import annotations

import dataclasses
import math
import random
import threading
from collections.abc import Callable
from typing import Any

SOURCES = ("primary", "backup")
WINDOWS = ("day", "night")
RUNNING, STOPPED, FAILING_OVER = "running", "stopped", "failing_over"
UNSET: Any = object()  # "argument not given", where None is a meaningful value


class SimError(Exception):
    """A refused admin action; ``status`` is the HTTP status the server answers with."""

    def __init__(self, detail: str, status: int = 409) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


@dataclasses.dataclass
class Faults:
    lose_instruments: int = 0  # that many subscribed instruments stop matching
    stall_source: str | None = None  # that source delivers nothing
    grow_backlog: int = 0  # extra msgs/s pushed into the consumer backlog

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Transition:
    """A pending switch: a failover/failback (``target`` = the new source) or a restart (``target`` None)."""

    action: str
    target: str | None
    requested_at: float
    due_at: float

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "action": self.action,
            "target": self.target,
            "elapsed_ms": round((now - self.requested_at) * 1000),
            "expected_ms": round((self.due_at - self.requested_at) * 1000),
        }


@dataclasses.dataclass
class Config:
    instruments: int = 1280
    seed: int = 0
    both_sessions_share: float = 0.7  # the rest trades in the day session only
    ignored: int = 2  # instruments the handler deliberately ignores
    msg_rate: float = 4.2  # msgs/s per matched instrument
    noise: float = 0.03  # relative standard deviation of the throughput
    consumer_capacity: float = 8000.0  # msgs/s the consumer drains
    failover_ms: float = 1500.0
    failover_jitter: float = 0.2  # the switch takes failover_ms * uniform(1 - jitter, 1 + jitter)
    restart_ms: float = 300.0
    window: str = "day"
    start_running: bool = True

    def validate(self) -> None:
        numbers = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.type == "float"}
        if not_finite := [name for name, value in numbers.items() if not math.isfinite(value)]:
            raise ValueError(f"{', '.join(not_finite)}: not a finite number")
        if self.instruments < 0:
            raise ValueError("instruments must be >= 0")
        if not 0.0 <= self.both_sessions_share <= 1.0:
            raise ValueError("both_sessions_share must be within [0, 1]")
        if not 0.0 <= self.failover_jitter < 1.0:
            raise ValueError("failover_jitter must be within [0, 1)")
        if self.failover_ms < 0 or self.restart_ms < 0:
            raise ValueError("failover_ms and restart_ms must be >= 0")
        if self.ignored < 0 or self.msg_rate < 0 or self.noise < 0 or self.consumer_capacity < 0:
            raise ValueError("ignored, msg_rate, noise and consumer_capacity must be >= 0")
        if self.window not in WINDOWS:
            raise ValueError(f"window must be one of {WINDOWS}")


def build_universe(instruments: int, seed: int, both_share: float = 0.7) -> list[frozenset[str]]:
    """Sessions of each instrument: ``both_share`` of them trade day and night, the rest day only."""
    both = round(instruments * both_share)
    sessions = [frozenset(WINDOWS)] * both + [frozenset({"day"})] * (instruments - both)
    random.Random(f"universe-{seed}").shuffle(sessions)
    return sessions


class FeedModel:
    def __init__(self, config: Config | None = None, *, start_time: float = 0.0) -> None:
        self.config = config or Config()
        self.config.validate()
        cfg = self.config
        self.universe = build_universe(cfg.instruments, cfg.seed, cfg.both_sessions_share)
        self._noise_rng = random.Random(f"noise-{cfg.seed}")
        self._switch_rng = random.Random(f"switch-{cfg.seed}")
        self.cond = threading.Condition(threading.RLock())
        self.now = start_time
        self.state = RUNNING if cfg.start_running else STOPPED
        self.active_source = "primary"
        self.window = cfg.window
        self.faults = Faults()
        self.transition: Transition | None = None
        self.failover_latency_ms: float | None = None
        self.last_switch: dict[str, Any] | None = None
        self.backlog = 0.0
        self.throughput = 0.0
        self._sample_throughput()

    # -- derived quantities ------

    @property
    def expected_total(self) -> int:
        return sum(1 for sessions in self.universe if self.window in sessions)

    @property
    def active_total(self) -> int:
        return self.expected_total if self.state != STOPPED else 0

    @property
    def stalled(self) -> bool:
        return self.faults.stall_source is not None and self.faults.stall_source == self.active_source

    @property
    def matched_total(self) -> int:
        if self.state != RUNNING or self.stalled:
            return 0
        return max(0, self.active_total - self.faults.lose_instruments)

    @property
    def ignored_total(self) -> int:
        return self.config.ignored if self.state != STOPPED else 0

    @property
    def coverage_ratio(self) -> float:
        expected = self.expected_total
        if self.state == STOPPED or expected == 0:
            return 0.0
        return self.matched_total / expected

    def source_up(self, source: str) -> bool:
        """The source the handler is running on and that delivers data."""
        return self.state == RUNNING and source == self.active_source and not self.stalled

    # -- time ------

    def step(self, dt: float) -> None:
        """Advance model time by ``dt`` s: finish a due switch, integrate the backlog, sample throughput."""
        if dt < 0 or math.isnan(dt):
            raise ValueError("dt must be >= 0")
        with self.cond:
            end = self.now + dt
            changed = False
            # A switch that falls due inside the step completes exactly at its due time; the rest of the step
            # is integrated with the new state.
            while self.transition is not None and self.transition.due_at <= end:
                self._integrate(max(0.0, self.transition.due_at - self.now))
                self.now = max(self.now, self.transition.due_at)
                self._complete_transition()
                changed = True
            self._integrate(end - self.now)
            self.now = end
            self._sample_throughput()
            if changed:
                self.cond.notify_all()

    def advance_to(self, t: float) -> None:
        """Advance model time to ``t`` (no-op if the model is already there)."""
        with self.cond:
            if t > self.now:
                self.step(t - self.now)

    def seconds_to_next_event(self) -> float | None:
        with self.cond:
            if self.transition is None:
                return None
            return max(0.0, self.transition.due_at - self.now)

    def wait_for(self, predicate: Callable[[], bool], timeout: float, clock: Callable[[], float]) -> bool:
        """Wait up to ``timeout`` s until ``predicate()``, advancing the model with ``clock``."""
        deadline = clock() + timeout
        with self.cond:
            while True:
                self.advance_to(clock())
                if predicate():
                    return True
                remaining = deadline - clock()
                if remaining <= 0:
                    return False
                nxt = self.seconds_to_next_event()
                self.cond.wait(min(remaining, 0.5 if nxt is None else nxt + 0.001))

    def _integrate(self, dt: float) -> None:
        if dt <= 0:
            return
        net = self.throughput + self.faults.grow_backlog - self.config.consumer_capacity
        self.backlog = max(0.0, self.backlog + net * dt)

    def _sample_throughput(self) -> None:
        matched = self.matched_total
        if matched == 0:
            self.throughput = 0.0
            return
        factor = 1.0 + self._noise_rng.gauss(0.0, self.config.noise) if self.config.noise else 1.0
        self.throughput = max(0.0, matched * self.config.msg_rate * factor)

    def _complete_transition(self) -> None:
        tr = self.transition
        assert tr is not None
        self.transition = None
        latency_ms = (tr.due_at - tr.requested_at) * 1000.0
        if tr.action == "restart":
            self.state = RUNNING
        else:
            previous = self.active_source
            self.active_source = tr.target or previous
            self.state = RUNNING
            self.failover_latency_ms = latency_ms
            self.last_switch = {
                "action": tr.action,
                "from": previous,
                "to": self.active_source,
                "latency_ms": round(latency_ms),
            }
        self._sample_throughput()

    # -- admin actions ------

    def _refuse_if_busy(self, action: str) -> None:
        if self.transition is not None:
            raise SimError(f"cannot {action}: a {self.transition.action} is in progress")

    def start(self) -> bool:
        """Subscribe and run; returns False if it was already running."""
        with self.cond:
            self._refuse_if_busy("start")
            if self.state == RUNNING:
                return False
            self.state = RUNNING
            self._sample_throughput()
            self.cond.notify_all()
            return True

    def stop(self) -> bool:
        """Unsubscribe everything; returns False if it was already stopped."""
        with self.cond:
            self._refuse_if_busy("stop")
            if self.state == STOPPED:
                return False
            self.state = STOPPED
            self._sample_throughput()
            self.cond.notify_all()
            return True

    def restart(self) -> Transition:
        """Stop now, be running again after ``restart_ms``."""
        with self.cond:
            self._refuse_if_busy("restart")
            self.state = STOPPED
            self.transition = Transition(
                "restart", None, self.now, self.now + self.config.restart_ms / 1000.0
            )
            self._sample_throughput()
            self.cond.notify_all()
            return self.transition

    def switch(self, target: str, latency_ms: float | None = None, jitter: float | None = None) -> Transition:
        """Start a failover (``target="backup"``) or failback (``target="primary"``)."""
        if target not in SOURCES:
            raise SimError(f"unknown source {target!r}", 400)
        action = "failover" if target == "backup" else "failback"
        base = self.config.failover_ms if latency_ms is None else float(latency_ms)
        jitter = self.config.failover_jitter if jitter is None else float(jitter)
        if base < 0 or not 0.0 <= jitter < 1.0:
            raise SimError("latency_ms must be >= 0 and jitter within [0, 1)", 400)
        with self.cond:
            self._refuse_if_busy(action)
            if self.state == STOPPED:
                raise SimError(f"cannot {action}: the feed is stopped; start it first")
            if self.active_source == target:
                raise SimError(f"cannot {action}: the active source is already {target}")
            duration_ms = base * self._switch_rng.uniform(1.0 - jitter, 1.0 + jitter)
            self.transition = Transition(action, target, self.now, self.now + duration_ms / 1000.0)
            self.state = FAILING_OVER
            self._sample_throughput()
            self.cond.notify_all()
            return self.transition

    def set_window(self, window: str) -> None:
        if window not in WINDOWS:
            raise SimError(f"window must be one of {list(WINDOWS)}, got {window!r}", 400)
        with self.cond:
            self.window = window
            self._sample_throughput()
            self.cond.notify_all()

    def set_faults(
        self,
        *,
        lose_instruments: int | None = None,
        stall_source: Any = UNSET,
        grow_backlog: int | None = None,
    ) -> None:
        """Update the given faults; the others keep their value. ``stall_source=None`` clears that fault."""
        if lose_instruments is not None and lose_instruments < 0:
            raise SimError("lose_instruments must be >= 0", 400)
        if grow_backlog is not None and grow_backlog < 0:
            raise SimError("grow_backlog must be >= 0", 400)
        if stall_source is not UNSET and stall_source is not None and stall_source not in SOURCES:
            raise SimError(f"stall_source must be one of {list(SOURCES)} or null", 400)
        with self.cond:
            if lose_instruments is not None:
                self.faults.lose_instruments = lose_instruments
            if stall_source is not UNSET:
                self.faults.stall_source = stall_source
            if grow_backlog is not None:
                self.faults.grow_backlog = grow_backlog
            self._sample_throughput()
            self.cond.notify_all()

    def clear_faults(self) -> None:
        with self.cond:
            self.faults = Faults()
            self._sample_throughput()
            self.cond.notify_all()

    # -- views ------

    def status(self) -> dict[str, Any]:
        with self.cond:
            latency = self.failover_latency_ms
            return {
                "state": self.state,
                "active_source": self.active_source,
                "window": self.window,
                "expected_total": self.expected_total,
                "active_total": self.active_total,
                "matched_total": self.matched_total,
                "ignored_total": self.ignored_total,
                "coverage_ratio": round(self.coverage_ratio, 6),
                "throughput_mps": round(self.throughput, 1),
                "consumer_backlog_messages": int(self.backlog),
                "failover_latency_ms": None if latency is None else round(latency),
                "faults": self.faults.as_dict(),
                "transition": None if self.transition is None else self.transition.as_dict(self.now),
                "last_switch": self.last_switch,
                "sources_up": {source: self.source_up(source) for source in SOURCES},
                "instruments_total": len(self.universe),
            }
