"""Headless execution facts, on notebooks of a few lines (a kernel start each, no model)."""
import subprocess
import sys

import nbformat

from grader.execute import execute_notebook


def notebook(*sources):
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])


def test_errors_are_recorded_and_execution_carries_on(tmp_path):
    execution = execute_notebook(notebook("x = 1", "1 / 0", "y = x + 1", "print(y)"), tmp_path, time_limit_s=60)
    assert execution.completed and [e.ename for e in execution.errors] == ["ZeroDivisionError"]
    assert execution.errors[0].cell_number == 2 and execution.errors[0].source == "1 / 0"
    assert "\x1b[" not in execution.errors[0].traceback
    assert execution.notebook.cells[3].outputs[0]["text"] == "2\n"


def test_the_wall_clock_limit_stops_a_loop_that_ignores_interrupts(tmp_path):
    source = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
    execution = execute_notebook(notebook("x = 1", source, "print('never')"), tmp_path, time_limit_s=5)
    assert execution.timed_out and not execution.completed
    assert execution.last_cell_index == 1
    assert execution.notebook.cells[2].outputs == []


def test_a_kernel_that_ends_its_own_process(tmp_path):
    execution = execute_notebook(notebook("import os\nos._exit(1)", "print('never')"), tmp_path, time_limit_s=60)
    assert execution.kernel_died and execution.last_cell_index == 0


def test_output_is_capped(tmp_path):
    source = "for _ in range(200):\n    print('x' * 1000)"
    execution = execute_notebook(notebook(source, "print('after')"), tmp_path, time_limit_s=60, max_output_bytes=20_000)
    assert execution.output_truncated
    recorded = sum(len(o.get("text", "")) for c in execution.notebook.cells for o in c.outputs)
    assert recorded < 30_000


def test_the_kernel_runs_in_the_working_folder(tmp_path):
    execution = execute_notebook(notebook("open('made-here.txt', 'w').write('x')"), tmp_path, time_limit_s=60)
    assert execution.completed and (tmp_path / "made-here.txt").is_file()


def test_a_kernel_that_never_starts_leaves_no_atexit_traceback(tmp_path):
    """nbclient registers an atexit clean-up that fails loudly once a start has failed; the grader drops it."""
    script = (
        "import nbformat\n"
        "from grader.execute import execute_notebook\n"
        "from grader.sandbox import SandboxPlan\n"
        "nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('1')])\n"
        "try:\n"
        f"    execute_notebook(nb, {str(tmp_path)!r}, time_limit_s=60,\n"
        "                     sandbox=SandboxPlan(('--no-such-bubblewrap-flag',)))\n"
        "except Exception as error:\n"
        "    print('start failed:', type(error).__name__)\n")
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "start failed" in completed.stdout, completed.stderr[-2000:]
    assert "AssertionError" not in completed.stderr and "atexit" not in completed.stderr, completed.stderr[-2000:]
