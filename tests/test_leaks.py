"""A class graded in one process keeps its file descriptors, threads and processes flat, and a kernel
whose start fails leaves nothing behind: what ended a batch of 300 about 50 students in."""
import errno
import gc
import os

import nbformat
import psutil
import pytest
import zmq
from jupyter_client.manager import KernelManager

from grader import GradingOptions, grade_submissions
from grader.execute import execute_notebook
from grader.sandbox import SandboxPlan
from scenarios import write_fast_class


def usage() -> dict:
    """What this process holds now: open file descriptors, threads (ZeroMQ's are native), child processes."""
    gc.collect()
    me = psutil.Process()
    children = me.children(recursive=True)
    zombies = [child for child in children if _status(child) == psutil.STATUS_ZOMBIE]
    return {"open fds": me.num_fds(), "threads": me.num_threads(), "children": len(children),
            "zombies": len(zombies)}


def _status(process: psutil.Process) -> str:
    try:
        return process.status()
    except psutil.Error:
        return "gone"


def class_options(output_dir, tiny_data_dir) -> GradingOptions:
    """Confined kernels (the sandbox required); the notebooks fail before they read their data or model."""
    return GradingOptions(output_dir=output_dir, hidden_set=tiny_data_dir / "test.csv", hidden_size=50,
                          time_limit_s=120, parameters={"LOCAL_DATA_DIR": str(tiny_data_dir)}, sandbox="require")


def test_a_class_graded_in_one_process_keeps_fds_threads_and_processes_flat(tmp_path, tiny_data_dir, sandbox_flags):
    """Each student used to keep ~19 fds, two threads and a zombie: after a warm-up of 2, a class of 5."""
    # A kernel each, that runs every cell to a quick failure or dies at once; no model check (its process was
    # always waited on), which would cost a PyTorch import each.
    fast = ["typos-in-imports", "exits-before-the-imports"]
    first = class_options(tmp_path / "first", tiny_data_dir)
    warm_up = grade_submissions(write_fast_class(tmp_path / "class", 2, fast), first, progress=False)
    before = usage()
    later = class_options(tmp_path / "later", tiny_data_dir)
    later = grade_submissions(write_fast_class(tmp_path / "class", 5, fast), later, progress=False)
    after = usage()
    # The class really ran: every kernel started, confined, and ran the notebook to its failing import or exit.
    for result in warm_up.results + later.results:
        assert result.status == "graded" and result.sandboxed, (result.status, result.reason)
        assert (result.errors and result.errors[0].ename == "ModuleNotFoundError") or "kernel died" in result.reason, \
            (result.reason, result.errors[:1])
    assert len(later.graded_now) == 5
    assert after["children"] == 0 and after["zombies"] == 0, (before, after)
    assert after["threads"] <= before["threads"], (before, after)
    assert after["open fds"] <= before["open fds"] + 2, (before, after)


def test_a_kernel_whose_start_fails_leaves_nothing_behind(tmp_path, monkeypatch, sandbox_flags):
    """Out of file descriptors while the kernel starts (its control socket): the kernel, bubblewrap and all
    they started are killed and waited on, and the error is the grader's (a retried grader error)."""
    started = []
    before = usage()

    def out_of_descriptors(self):
        started.append(self.provisioner.process.pid)
        raise zmq.ZMQError(errno.EMFILE)

    monkeypatch.setattr(KernelManager, "_connect_control_socket", out_of_descriptors)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
    with pytest.raises(zmq.ZMQError):
        execute_notebook(nb, tmp_path, time_limit_s=60, sandbox=SandboxPlan(tuple(sandbox_flags)))
    assert started, "the failure was not met while the kernel started"
    with pytest.raises(psutil.NoSuchProcess):   # not alive, and not a zombie: killed and waited on
        psutil.Process(started[0])
    after = usage()
    assert after["children"] == before["children"] and after["zombies"] == 0, (before, after)
    assert after["threads"] <= before["threads"] and after["open fds"] <= before["open fds"] + 2, (before, after)


def test_no_zeromq_context_is_left_to_the_garbage_collector(tmp_path, sandbox_flags):
    """The kernel client's own ZeroMQ context is destroyed with the kernel: left to the garbage collector, a
    class of 60 held 127 fds and 44 threads in its second half against 86 and 27 in its first."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
    gc.collect()
    gc.disable()   # what a full collection would free must already be free
    try:
        execute_notebook(nb, tmp_path, time_limit_s=60, sandbox=SandboxPlan(tuple(sandbox_flags)))
        left = [context for context in gc.get_objects() if isinstance(context, zmq.Context) and not context.closed]
    finally:
        gc.enable()
    assert left == []
