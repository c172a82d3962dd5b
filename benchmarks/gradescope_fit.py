"""Benchmark: does the Gradescope autograder's model check fit Gradescope's container, for a DistilBERT-sized model?

The zip `grade gradescope build` writes is unpacked into a temporary /autograder (AUTOGRADER_ROOT), and its
run_autograder command runs with this environment's Python standing for the venv setup.sh makes (setup.sh's
cost is the test's: tests/test_gradescope.py). It grades one upload: the answer key's notebook with its saved outputs made here and the zip of a DistilBERT-sized
model (DistilBertConfig's defaults, 66 M parameters, random weights, MiniLM's vocabulary: benchmarks/verify_mode.py's
worst case, all of it measured in fp32). Reported:

- peak_tree_rss_mb: the most memory run_autograder and all its processes held at once (sampled every 50 ms):
  what the container's memory limit must hold (Gradescope's default is 768 MB);
- largest_process_rss_mb: the largest single process (sampled likewise): the model check itself;
- cpu_s: the CPU seconds all its processes used (sampled likewise); on Gradescope's default half a vCPU the
  wall time is about twice that;
- wall_s: on this machine, restricted to --cpus CPUs (taskset); a timing only on an idle machine;
- the score and the zip's size (what the student uploads).

With --container-memory 768M, the model check's limit is set as run_autograder sets it in a container of that
memory: the check must then stop with a result that says so, not be killed with the container.

    .venv/bin/python benchmarks/gradescope_fit.py [--hidden-size 500] [--cpus 1] [--container-memory 768M]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import verify_mode  # noqa: E402  (benchmarks/, put on the path above)
import verify_throughput as throughput  # noqa: E402


def rss_by_process(pid: int, cpu: dict[int, float]) -> dict[int, int]:
    """The resident memory of ``pid`` and each of its descendants, now; ``cpu`` keeps each one's CPU seconds
    so far (getrusage misses the model check, whose sandbox reaps it in a PID namespace of its own)."""
    import psutil

    found = {}
    try:
        process = psutil.Process(pid)
        for member in [process, *process.children(recursive=True)]:
            try:
                found[member.pid] = member.memory_info().rss
                times = member.cpu_times()
                cpu[member.pid] = max(cpu.get(member.pid, 0.0), times.user + times.system)
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return found


def run_measured(command: list[str], env: dict, cwd: Path) -> dict:
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, largest, cpu = [0], [0], {}

    def sample():
        while process.poll() is None:
            now = rss_by_process(process.pid, cpu)
            peak[0] = max(peak[0], sum(now.values()))
            largest[0] = max([largest[0], *now.values()])
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    sampler.join()
    return {"wall_s": round(time.perf_counter() - started, 1), "peak_tree_rss_mb": round(peak[0] / 2**20),
            "largest_process_rss_mb": round(largest[0] / 2**20),
            "cpu_s": round(sum(cpu.values()), 1),
            "returncode": process.returncode, "log_tail": output[-600:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden-size", type=int, default=500)
    parser.add_argument("--cpus", type=int, default=1, help="CPUs run_autograder may use (taskset; default: 1)")
    parser.add_argument("--data", type=Path, default=throughput.AMAZON_DATA)
    parser.add_argument("--container-memory", help="a container memory limit to grade under, e.g. 768M (Gradescope's "
                        "default): the model check's limit is then set as run_autograder sets it under a cgroup's")
    args = parser.parse_args()
    from grader.cli import size
    from grader.gradescope import BundleConfig, build_bundle, check_limits

    config = BundleConfig(hidden_figures="visible", hidden_size=args.hidden_size, hidden_seed=1)
    if args.container_memory:
        config.memory_bytes = check_limits(config, size(args.container_memory)).memory_bytes

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        model_dir = verify_mode.model_folder("distilbert_sized", args.data, work)
        upload = work / "upload"
        verify_mode.submission(model_dir, upload)
        root = work / "autograder"
        bundle = build_bundle(work / "autograder.zip", args.data / "test.csv", config)
        with zipfile.ZipFile(bundle) as archive:
            archive.extractall(root / "source")
        shutil.copytree(upload, root / "submission")
        (root / "results").mkdir()
        # run_autograder's command, with this environment's Python standing for the venv setup.sh makes
        env = {**os.environ, "AUTOGRADER_ROOT": str(root), "PYTHONPATH": str(root / "source" / "kit"),
               "TOKENIZERS_PARALLELISM": "false"}
        cpus = ",".join(map(str, sorted(os.sched_getaffinity(0))[:args.cpus]))
        measured = run_measured(["taskset", "-c", cpus, sys.executable, "-m", "grader.gradescope", "run"], env, root)
        results = json.loads((root / "results" / "results.json").read_text())
        report = {"model": "distilbert_sized (66 M parameters, fp32, random weights)",
                  "zip_mb": round((upload / "sentiment-model.zip").stat().st_size / 1e6, 1),
                  "hidden_size": args.hidden_size, "cpus": args.cpus, "machine_cpus": os.cpu_count(),
                  "load_average": [round(x, 1) for x in os.getloadavg()],
                  "container_memory": args.container_memory, "check_memory_limit_mb": config.memory_bytes // 2**20,
                  "score": results["score"], "accuracy_test": next(t["output"] for t in results["tests"]
                                                                  if t["name"] == "Accuracy on the hidden set"),
                  **measured}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
