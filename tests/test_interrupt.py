"""Ctrl-C: the run stops at once, running notebooks and verifiers are stopped, and the students it
did not grade are listed as not graded and graded by the next run."""
import csv
import os
import signal
import subprocess
import sys
import threading
import time

import nbformat
import psutil

from grader import GradingOptions, grade_submissions
from grader.build import ROOT
from grader.cancel import Cancellation
from grader.results import INTERRUPTED
from grader.model_check.worker import check_model_in_subprocess
from waiting import wait_for


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def waiting_notebook(flag, pids) -> nbformat.NotebookNode:
    """A notebook that records its kernel's pid, then waits (up to 2 minutes) while ``flag`` exists."""
    source = (f"import os, pathlib, time\n"
              f"pathlib.Path({str(pids)!r}, str(os.getpid())).touch()\n"
              f"for _ in range(240):\n"
              f"    if not os.path.exists({str(flag)!r}):\n"
              f"        break\n"
              f"    time.sleep(0.5)\n")
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])


def test_ctrl_c_stops_the_run_and_a_rerun_grades_who_was_not_graded(tmp_path, tiny_data_dir):
    flag, pids, folder, output_dir = tmp_path / "hold", tmp_path / "pids", tmp_path / "subs", tmp_path / "out"
    flag.touch()
    pids.mkdir()
    folder.mkdir()
    for name in ("ann", "bob"):
        nbformat.write(waiting_notebook(flag, pids), folder / f"{name}.ipynb")
    command = [sys.executable, "-m", "grader.cli", str(folder), "-o", str(output_dir), "-q", "--sandbox", "off",
               "--hidden-set", str(tiny_data_dir / "test.csv"), "--hidden-size", "20"]
    # A session of its own, so that the test can send Ctrl-C to its whole process group, as a terminal does.
    process = subprocess.Popen(command, start_new_session=True, cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: any(pids.iterdir()), 120), "no kernel started"
        time.sleep(1)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        flag.unlink(missing_ok=True)   # lets any kernel left behind finish

    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("grade: interrupted; 2 student(s) not graded"), stderr
    kernel = int(next(pids.iterdir()).name)
    assert wait_for(lambda: not alive(kernel), 5), "the running kernel outlived the interrupted run"
    with open(output_dir / "gradebook.csv", newline="") as handle:
        statuses = {row["student_id"]: row["status"] for row in csv.DictReader(handle)}
    assert statuses == {"ann": INTERRUPTED, "bob": INTERRUPTED}

    # Not grades: the next run grades both, though nothing about them changed.
    rerun = grade_submissions(folder, GradingOptions(output_dir=output_dir, hidden_set=tiny_data_dir / "test.csv",
                                                     hidden_size=20, sandbox="off"), progress=False)
    assert sorted(rerun.graded_now) == ["ann", "bob"] and rerun.resumed == []
    assert {r.status for r in rerun.results} == {"graded"}


def test_a_cancel_stops_the_verifier_which_a_terminals_ctrl_c_does_not_reach(tmp_path, monkeypatch):
    session = tmp_path / "session"
    stand_in = tmp_path / "python"   # stands in for the verifier's Python: says its session, then hangs
    stand_in.write_text(f"#!{sys.executable}\nimport os, time\n"
                        f"open({str(session)!r}, 'w').write(str(os.getsid(0)))\ntime.sleep(120)\n")
    stand_in.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(stand_in))
    cancellation = Cancellation()

    def cancel_once_it_runs():
        wait_for(lambda: session.is_file() and session.read_text(), 30)
        cancellation.cancel()

    threading.Thread(target=cancel_once_it_runs, daemon=True).start()
    started = time.monotonic()
    verification = check_model_in_subprocess({}, timeout_s=120, watch_folder=tmp_path, cancellation=cancellation)
    assert time.monotonic() - started < 30
    assert not verification.loaded and verification.problem
    assert int(session.read_text()) != os.getsid(0)   # not in the terminal's session: Ctrl-C does not reach it


def test_a_stopper_registered_after_the_cancel_is_called_at_once():
    cancellation, stopped = Cancellation(), []
    cancellation.cancel()
    with cancellation.register(lambda: stopped.append(True)):
        assert stopped == [True]
