"""The ``grade`` command's entry point: Ctrl-C and SIGTERM are taken care of before anything is imported.

Importing the grader takes a second or more (nbclient, ZeroMQ, NumPy); a Ctrl-C in that time would
otherwise end in a long ``KeyboardInterrupt`` traceback from deep inside some import, and exit -2.
"""
from __future__ import annotations

import signal
import sys

from .cancel import exit_code, raise_terminated


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, raise_terminated)   # SIGTERM as Ctrl-C, from the first instant
    try:
        from .cli import main as grade
    except KeyboardInterrupt as interrupt:
        what = "interrupted" if exit_code(interrupt) == 128 + signal.SIGINT else "stopped by SIGTERM"
        print(f"grade: {what} while starting; nothing was graded or written", file=sys.stderr)
        return exit_code(interrupt)
    return grade(argv)


if __name__ == "__main__":
    sys.exit(main())
