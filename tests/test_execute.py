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


def test_a_failing_cell_is_named_as_colab_shows_it_and_its_traceback_keeps_the_notebooks_frames(tmp_path):
    """Its section's headings, its id, its In [N]; the frames inside pandas folded into one line."""
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# The project\n\n## 8. Fine-tuning", id="train-md"),
        nbformat.v4.new_code_cell("import pandas as pd\nhistory = pd.DataFrame({'eval_loss': [0.3]})", id="train"),
        nbformat.v4.new_markdown_cell("### Training curves\n\nThe loss should fall.", id="curves-md"),
        nbformat.v4.new_code_cell("def losses(frame):\n    return frame['loss']\n\nlosses(history)", id="curves")])
    execution = execute_notebook(nb, tmp_path, time_limit_s=60)
    [error] = execution.errors
    assert (error.section, error.cell_id, error.execution_count) == ("8. Fine-tuning > Training curves", "curves", 2)
    assert error.where == "the cell 'curves' under \"8. Fine-tuning > Training curves\" (In [2])"
    assert "Cell In[2], line 4" in error.traceback and "Cell In[2], line 2, in losses" in error.traceback
    assert "site-packages" not in error.traceback and "frame(s) in installed libraries hidden" in error.traceback
    assert error.traceback.rstrip().endswith("KeyError: 'loss'")
    raw = "".join(execution.notebook.cells[3].outputs[0]["traceback"])
    assert "site-packages" in raw   # the executed notebook keeps the whole traceback


def test_a_cell_without_headings_above_is_named_by_its_id():
    from grader.execute import cell_location, cell_section

    nb = notebook("1", "2")
    nb.cells[1].id = "second"
    assert cell_section(nb, 1) == ""
    assert cell_location(cell_section(nb, 1), "second", 2) == "the cell 'second'"
    assert cell_location("", "", 2, 7) == "cell 2 (In [7])"
