"""``python -m sim --port N``: run the market-data simulator."""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
from types import FrameType

from .model import WINDOWS, Config, FeedModel
from .server import Simulator, make_server

log = logging.getLogger("sim")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _port(text: str) -> int:
    """A port to listen on (0: any free one): Python's bind() would refuse others with a traceback."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, got {text!r}")
    return int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = Config()
    p = argparse.ArgumentParser(prog="python -m sim", description="Market-data feed handler simulator.")
    p.add_argument("--port", type=_port, required=True, help="TCP port (0 = pick a free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    p.add_argument("--instruments", type=int, default=defaults.instruments, help="universe size")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed of the random generators")
    p.add_argument("--window", choices=WINDOWS, default=defaults.window, help="initial trading window")
    p.add_argument("--ignored", type=int, default=defaults.ignored, help="instruments deliberately ignored")
    p.add_argument("--msg-rate", type=float, default=defaults.msg_rate, help="msgs/s per matched instrument")
    p.add_argument("--noise", type=float, default=defaults.noise, help="relative noise of the throughput")
    p.add_argument(
        "--consumer-capacity",
        type=float,
        default=defaults.consumer_capacity,
        help="msgs/s the consumer drains",
    )
    p.add_argument(
        "--failover-ms", type=float, default=defaults.failover_ms, help="base duration of a failover/failback"
    )
    p.add_argument(
        "--failover-jitter", type=float, default=defaults.failover_jitter, help="relative jitter of a switch"
    )
    p.add_argument("--restart-ms", type=float, default=defaults.restart_ms, help="duration of a restart")
    p.add_argument("--stopped", action="store_true", help="start with the feed stopped")
    p.add_argument("--tick", type=_positive, default=0.5, help="seconds between model ticks")
    p.add_argument(
        "--log-level", type=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR"), default="INFO"
    )
    return p.parse_args(argv)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    config = Config(
        instruments=args.instruments,
        seed=args.seed,
        window=args.window,
        ignored=args.ignored,
        msg_rate=args.msg_rate,
        noise=args.noise,
        consumer_capacity=args.consumer_capacity,
        failover_ms=args.failover_ms,
        failover_jitter=args.failover_jitter,
        restart_ms=args.restart_ms,
        start_running=not args.stopped,
    )
    try:
        model = FeedModel(config)
    except ValueError as exc:
        print(f"python -m sim: error: {exc}", file=sys.stderr)
        return 2
    sim = Simulator(model, tick_interval=args.tick)
    try:
        server = make_server(sim, args.host, args.port)
    except OSError as exc:
        print(f"python -m sim: error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _terminate)
    sim.start_ticker()
    log.info("listening on %s (%d instruments, seed %d)", server.url, args.instruments, args.seed)
    # The one line on stdout: tells a parent process (see sim.process.run_sim) where we listen.
    print(f"READY {server.url}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop_ticker()
        server.server_close()
        log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
