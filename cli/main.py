"""The console scripts ``mdops`` and ``kubectl-mdops`` (which kubectl runs for ``kubectl mdops``).

Apart from the commands (:mod:`cli.commands`) on purpose: their libraries (click, Rich, httpx) take a few
hundred milliseconds to import, and a Ctrl-C meanwhile ends mdops as one later does, with one line and
exit 130, not with the traceback of an import.
"""

import os
import signal
import sys

INTERRUPTED = 130  # as a Ctrl-C later (cli.errors.interrupted), which this module does not import


def _interrupted(signum: int, frame: object) -> None:
    os.write(sys.stderr.fileno(), b"mdops: interrupted\n")
    os._exit(INTERRUPTED)  # nothing to flush or clean up yet


def main() -> None:
    # Python's own handler, unless Ctrl-C is ignored (`mdops ... &` in a script): then it stays ignored.
    handled = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if handled:
        signal.signal(signal.SIGINT, _interrupted)
    from cli import commands

    if handled:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # KeyboardInterrupt, for the commands
    commands.main()
