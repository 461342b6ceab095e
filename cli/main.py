"""The console scripts ``mdops`` and ``kubectl-mdops`` (which kubectl runs for ``kubectl mdops``).

Apart from the commands (:mod:`cli.commands`) on purpose: their libraries (click, Rich, httpx) take a few
hundred milliseconds to import, and a Ctrl-C meanwhile ends mdops as one later does, with one line and
exit 130, not with the traceback of an import.

Later, the first Ctrl-C is a ``KeyboardInterrupt`` for the commands, and mdops stops; a Ctrl-C again
changes nothing. Raised while mdops stops its threads, closes its connections and says so, it would end
mdops with a traceback of wherever it came; and once Python finalizes, when its handlers are gone, by the
signal. So mdops ends then without finalizing: there is nothing left to clean up.
"""

import contextlib
import os
import signal
import sys

INTERRUPTED = 130  # mdops's exit status after a Ctrl-C
_CTRL_C: list[int] = []  # a Ctrl-C came: mdops stops (a list: a handler may run inside itself)


def _interrupted(signum: int, frame: object) -> None:
    os.write(sys.stderr.fileno(), b"mdops: interrupted\n")
    os._exit(INTERRUPTED)  # nothing to flush or clean up yet


def _ctrl_c(signum: int, frame: object) -> None:
    if not _CTRL_C:
        _CTRL_C.append(signum)
        raise KeyboardInterrupt


def main() -> None:
    # Python's own handler, unless Ctrl-C is ignored (`mdops ... &` in a script): then it stays ignored.
    handled = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if handled:
        signal.signal(signal.SIGINT, _interrupted)
    from cli import commands

    if handled:
        signal.signal(signal.SIGINT, _ctrl_c)
    try:
        commands.main()
    except SystemExit as end:
        if not _CTRL_C:
            raise
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError):  # a pipe closed meanwhile: what it did not take is lost
                stream.flush()
        os._exit(end.code if isinstance(end.code, int) else 1)
