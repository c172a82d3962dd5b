"""Benchmark: what building the class report (OUT/report.html) costs, for classes of several sizes.

Each class is the fixture class of the tests (tests/class_fixture.py: 40 students of varied results, plus
three not graded) repeated to the size asked, written as `grade` writes its output folder. Reported per size:
seconds to build the report (grader.class_report.write_class_report, matplotlib's import included in the
first), and the page's size.

    .venv/bin/python benchmarks/class_report.py [--sizes 43,200,1000]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from class_fixture import class_results, write_class  # noqa: E402  (tests/, put on the path above)


def a_class(size: int) -> list:
    base, results = class_results(), []
    while len(results) < size:
        for result in base[:size - len(results)]:
            clone = copy.deepcopy(result)
            clone.student_id = f"{result.student_id}-{len(results):04d}"
            results.append(clone)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="43,200,1000")
    args = parser.parse_args()
    from grader.class_report import write_class_report

    report = []
    with tempfile.TemporaryDirectory() as work:
        for size in map(int, args.sizes.split(",")):
            root = Path(work) / f"class-{size}"
            write_class(root, a_class(size))
            started = time.perf_counter()
            page = write_class_report(root)
            report.append({"students": size, "seconds": round(time.perf_counter() - started, 2),
                           "page_kb": round(page.stat().st_size / 1024)})
            print(json.dumps(report[-1]), file=sys.stderr, flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
