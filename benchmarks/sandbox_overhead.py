"""What the sandbox costs: the same PyTorch training steps in a kernel, unconfined and in bubblewrap.

    .venv/bin/python benchmarks/sandbox_overhead.py [--rounds 2] [--steps 30]

Prints the kernel start-up plus run time of each execution and the in-kernel training time.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import nbformat

from grader.execute import execute_notebook
from grader.sandbox import SandboxPlan, bubblewrap_flags

TRAINING = """import time, torch
torch.manual_seed(0)
layer = torch.nn.TransformerEncoderLayer(256, 4, 1024, batch_first=True)
model = torch.nn.TransformerEncoder(layer, 4)
batch = torch.randn(16, 128, 256)
optimizer = torch.optim.AdamW(model.parameters())
started = time.perf_counter()
for _ in range({steps}):
    optimizer.zero_grad()
    model(batch).sum().backward()
    optimizer.step()
print(time.perf_counter() - started)"""


def run_once(sandbox: SandboxPlan | None, steps: int) -> tuple[float, float]:
    workdir = Path(tempfile.mkdtemp(prefix="sandbox-bench-"))
    try:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(TRAINING.format(steps=steps))])
        started = time.perf_counter()
        execution = execute_notebook(nb, workdir, time_limit_s=600, sandbox=sandbox)
        total = time.perf_counter() - started
        if execution.errors or not execution.completed:
            raise SystemExit(f"the benchmark notebook failed: {execution.errors or execution}")
        return total, float(nb.cells[0].outputs[0].text)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    flags, problem = bubblewrap_flags()
    if flags is None:
        raise SystemExit(f"no sandbox here: {problem}")
    for round_number in range(1, args.rounds + 1):
        for name, mode in (("unconfined", None), ("sandboxed", SandboxPlan(tuple(flags)))):
            total, training = run_once(mode, args.steps)
            print(f"round {round_number} {name:10s}: {args.steps} training steps {training:6.2f} s; "
                  f"kernel start to finish {total:6.2f} s")


if __name__ == "__main__":
    main()
