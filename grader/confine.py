"""The first program run inside the sandbox: set the kernel's resource limits, then become the kernel.

    python -P -m grader.confine --max-tasks N --max-file-bytes B -- python -m ipykernel_launcher ...

The limits are set here, inside bubblewrap's user namespace, so that the task count is the
sandbox's own and not every process of the instructor's account.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys


def set_limits(max_tasks: int, max_file_bytes: int) -> None:
    # RLIMIT_NPROC counts threads too, and root is exempt from it: the watchdog counts processes.
    resource.setrlimit(resource.RLIMIT_NPROC, (max_tasks, max_tasks))
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:  # when memory runs out anyway, the kernel's OOM killer takes the student's process first
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write("1000")
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader.confine")
    parser.add_argument("--max-tasks", type=int, required=True)
    parser.add_argument("--max-file-bytes", type=int, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run")
    set_limits(args.max_tasks, args.max_file_bytes)
    os.execvp(command[0], command)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
