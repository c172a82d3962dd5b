"""What the package-set matrix (tests/test_package_sets.py) costs: builds, each notebook run, the whole file.

    python benchmarks/package_sets.py [-k EXPRESSION] [--fresh]

Runs the matrix's tests with pytest (``-k`` selects sets or notebooks as pytest does) and prints, per set, the
environment's build time (0 when an earlier build of the same file was reused), each notebook run's wall time
and the CPU seconds its kernel used, and the whole run's wall time. ``--fresh`` builds every environment anew
in an empty cache folder (what a new machine's first CI run pays). Run it on an idle machine: on a loaded one
the wall times measure the other load; the kernels' CPU seconds much less so.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="pytest -k expression (default: the whole matrix)")
    parser.add_argument("--fresh", action="store_true", help="build every environment anew, in an empty cache")
    args = parser.parse_args()
    timings = Path(tempfile.mkdtemp(prefix="matrix-timings-")) / "timings.jsonl"
    env = dict(os.environ, KIT_MATRIX_TIMINGS=str(timings), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    if args.fresh:
        env["KIT_ENV_CACHE"] = tempfile.mkdtemp(prefix="matrix-environments-")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_package_sets.py"]
    command += ["-k", args.k] if args.k else []
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=env)
    wall = time.monotonic() - started
    by_set = defaultdict(list)
    for line in timings.read_text(encoding="utf-8").splitlines() if timings.is_file() else []:
        entry = json.loads(line)
        by_set[entry["set"]].append(entry)
    print(f"\n{'set':<16} {'what':<58} {'wall (s)':>9} {'kernel CPU (s)':>15}")
    for name, entries in sorted(by_set.items()):
        for entry in entries:
            cpu = entry.get("kernel_cpu_s")
            print(f"{name:<16} {entry['what']:<58} {entry['wall_s']:>9.0f} {'' if cpu is None else f'{cpu:.0f}':>15}")
    print(f"\nthe matrix's tests: {wall:.0f} s wall in all (pytest exit code {done.returncode}); "
          f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
