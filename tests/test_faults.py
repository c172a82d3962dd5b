"""Faults of the machine, not of a student: each is one line that says what to do, the right exit code,
and the gradebook rewritten from the results on disk; an I/O error is never a student's final grade."""
import csv
import builtins
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import nbformat
import pytest

from grader import GradingOptions, batch as batch_module, cli, grade_submissions
from grader.build import ROOT
from grader.errors import OutputUnwritable
from grader.pipeline import read_submission
from grader.results import GRADER_ERROR, INTERRUPTED, NOT_GRADABLE, GradeResult
from grader.submissions import Submission
from grader import pipeline


def write_notebooks(folder, names, source="x = 1", outputs_bytes=0):
    """Notebooks of one cell; ``outputs_bytes`` of saved output each (their executed copies fill a disk)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        cell = nbformat.v4.new_code_cell(source, execution_count=1)
        if outputs_bytes:
            cell.outputs = [nbformat.v4.new_output("stream", text="x" * outputs_bytes)]
        nbformat.write(nbformat.v4.new_notebook(cells=[cell]), folder / f"{name}.ipynb")
    return folder


def gradebook_rows(output_dir) -> dict:
    with open(Path(output_dir) / "gradebook.csv", newline="", encoding="utf-8") as handle:
        return {row["student_id"]: row for row in csv.DictReader(handle)}


# --- reading a notebook: the machine's failure is not the notebook's ---------------------------
@pytest.mark.parametrize("code", [errno.EMFILE, errno.EIO])
def test_an_io_error_reading_a_notebook_is_a_retried_grader_error(tmp_path, monkeypatch, code):
    """The machine fails to open ann's notebook (every way of opening a file goes through io.open)."""
    folder = write_notebooks(tmp_path / "subs", ["ann", "bob"])
    real_open = io.open

    def failing_open(file, *args, **kwargs):
        if str(file).endswith("ann.ipynb"):
            raise OSError(code, os.strerror(code), str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", failing_open)
    monkeypatch.setattr(builtins, "open", failing_open)
    options = GradingOptions(output_dir=tmp_path / "out", mode="saved outputs")
    results = {r.student_id: r for r in grade_submissions(folder, options, progress=False).results}
    assert results["ann"].status == GRADER_ERROR, results["ann"]
    assert os.strerror(code) in results["ann"].reason and "rerun" in results["ann"].reason
    assert results["bob"].status == "graded"   # negative control: the same run reads the others
    monkeypatch.undo()
    again = grade_submissions(folder, options, progress=False)
    assert again.graded_now == ["ann"] and again.resumed == ["bob"]


def test_a_notebook_that_is_invalid_stays_not_gradable(tmp_path):
    """Negative control of the above: a file that is not a notebook is the student's, and final."""
    path = tmp_path / "broken.ipynb"
    path.write_text("{ not json", encoding="utf-8")
    result, _ = pipeline.grade_submission(Submission("broken", path), GradingOptions(mode="saved outputs"), None,
                                          tmp_path / "work")
    assert result.status == NOT_GRADABLE and "not a valid Jupyter notebook" in result.reason


@pytest.mark.parametrize("content, kind", [("[]", "a list"), ('[{"cells": []}]', "a list"), ("42", "a number"),
                                           ("null", "null"), ('"a notebook"', "a string")])
def test_a_notebook_that_is_json_but_not_an_object_gets_a_readable_reason(tmp_path, content, kind):
    path = tmp_path / "list.ipynb"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(Exception) as raised:
        read_submission(path)
    assert str(raised.value) == (f"not a valid Jupyter notebook: the file holds {kind} in JSON, where a notebook is "
                                 "a JSON object with its cells")


# --- result files ------------------------------------------------------------------------------
@pytest.mark.parametrize("content", ["null", "[]", "42", '"graded"', "{not json"])
def test_a_result_file_that_is_not_a_result_object_is_regraded(tmp_path, content):
    folder = write_notebooks(tmp_path / "subs", ["ann", "bob"])
    options = GradingOptions(output_dir=tmp_path / "out", mode="saved outputs")
    grade_submissions(folder, options, progress=False)
    (tmp_path / "out" / "results" / "ann.json").write_text(content, encoding="utf-8")
    again = grade_submissions(folder, options, progress=False)
    assert again.graded_now == ["ann"] and again.resumed == ["bob"]
    assert json.loads((tmp_path / "out" / "results" / "ann.json").read_text())["student_id"] == "ann"


# --- a full disk and a read-only folder, for real: a small tmpfs and a read-only mount (bubblewrap) ----
def in_a_mount_namespace(mounts: list[str], script: str, timeout_s: float = 240) -> subprocess.CompletedProcess:
    """Run ``script`` (bash) with the host as it is, but for ``mounts`` (bubblewrap's arguments): a real
    full disk or read-only folder, even for root, whom a chmod would not stop."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        pytest.skip("bubblewrap is not installed")
    command = [bwrap, "--dev-bind", "/", "/", *mounts, "--die-with-parent", "bash", "-c", script]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)
    if "Operation not permitted" in done.stderr and "bwrap" in done.stderr:
        pytest.skip(f"bubblewrap cannot make a mount namespace here: {done.stderr.strip()}")
    return done


def console_script() -> tuple[str, str]:
    """What `grade` runs, as pyproject.toml declares it: (module, function)."""
    with open(ROOT / "pyproject.toml", "rb") as handle:
        module, function = tomllib.load(handle)["project"]["scripts"]["grade"].split(":")
    return module, function


GRADE = "{} -c 'import sys; from {} import {}; sys.exit({}())'".format(sys.executable, *console_script(),
                                                                        console_script()[1])


def test_a_full_disk_stops_the_run_in_one_line_and_the_gradebook_lists_what_is_on_disk(tmp_path):
    folder = write_notebooks(tmp_path / "subs", [f"s{i:02d}" for i in range(12)], outputs_bytes=150_000)
    out = tmp_path / "out"
    out.mkdir()
    # 1 MB: a few students' executed copies (150 kB each) fit, then the disk is full.
    script = (f"{GRADE} {folder} -o {out} --no-execute -q -j 1; echo \"rc=$?\"; "
              f"ls {out}/results; echo ---; cat {out}/gradebook.csv")
    done = in_a_mount_namespace(["--size", str(1024 * 1024), "--tmpfs", str(out)], script)
    listing, gradebook = done.stdout.split("---\n")
    assert "rc=74" in listing, done.stdout + done.stderr
    saved = {name[:-len(".json")] for name in listing.split() if name.endswith(".json")}
    assert 0 < len(saved) < 12, listing
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "No space left on device" in lines[0] and "free some space" in lines[0], lines[0]
    assert "gradebook was rewritten" in lines[0], lines[0]
    rows = {row["student_id"]: row for row in csv.DictReader(gradebook.splitlines())}
    assert set(rows) == {f"s{i:02d}" for i in range(12)}   # everyone, no one silently missing
    # Saved: the graded, and the one student the single job may have started as the run stopped (interrupted).
    assert {row["status"] for name, row in rows.items() if name in saved} <= {"graded", INTERRUPTED}
    assert sum(row["status"] == INTERRUPTED for row in rows.values()) <= 1
    assert all(row["status"] == GRADER_ERROR and "output folder could not be written" in row["reason"]
               for name, row in rows.items() if name not in saved)


def test_a_read_only_output_folder_is_one_line_for_grade_and_for_collect(tmp_path):
    folder = write_notebooks(tmp_path / "subs", ["ann"])
    out = tmp_path / "out"
    assert cli.main([str(folder), "-o", str(out), "--no-execute", "-q"]) == 0
    script = (f"{GRADE} {folder} -o {out} --no-execute -q --force; echo \"grade rc=$?\"; "
              f"{GRADE} collect {out}; echo \"collect rc=$?\"")
    done = in_a_mount_namespace(["--ro-bind", str(out), str(out)], script)
    assert "grade rc=74" in done.stdout and "collect rc=74" in done.stdout, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in done.stderr, done.stderr
    assert all("Read-only file system" in line and "make it writable" in line for line in lines), lines


def test_a_failing_write_keeps_the_results_already_saved(tmp_path, monkeypatch):
    """The same, faked in-process, and the disk stays full: the first student's five files (executed copy,
    feedback, result, two gradebooks) are written, then every write fails as on a full disk."""
    folder = write_notebooks(tmp_path / "subs", ["ann", "bob", "cat", "dan"])
    real_fsync, writes = os.fsync, []

    def filling_fsync(descriptor):
        writes.append(descriptor)
        if len(writes) > 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", filling_fsync)
    with pytest.raises(OutputUnwritable) as raised:
        grade_submissions(folder, GradingOptions(output_dir=tmp_path / "out", mode="saved outputs", jobs=1), progress=False)
    monkeypatch.setattr(os, "fsync", real_fsync)
    message = str(raised.value)
    assert "No space left on device" in message and "could not be rewritten either" in message, message
    assert "grade collect" in message, message
    assert {path.stem for path in (tmp_path / "out" / "results").glob("*.json")} == {"ann"}
    assert not list((tmp_path / "out").rglob("*.tmp")), "a temporary file was left behind"
    # Once there is space again, a rerun keeps ann and grades the others.
    again = grade_submissions(folder, GradingOptions(output_dir=tmp_path / "out", mode="saved outputs"), progress=False)
    assert again.resumed == ["ann"] and sorted(again.graded_now) == ["bob", "cat", "dan"]


# --- signals -----------------------------------------------------------------------------------
@pytest.mark.parametrize("module, signum", [("grader.cli", signal.SIGINT), ("nbclient", signal.SIGINT),
                                            ("nbclient", signal.SIGTERM)])
def test_a_signal_while_grade_starts_is_one_line_and_128_plus_the_signal(tmp_path, module, signum):
    """Ctrl-C (or SIGTERM) in the first second, while the grader is still being imported: a real signal,
    sent by the process to itself at the moment ``module`` starts to import."""
    folder = write_notebooks(tmp_path / "subs", ["ann"])
    target_module, function = console_script()
    code = (f"import os, sys\n"
            f"class Trip:\n"
            f"    def find_spec(self, name, path=None, target=None):\n"
            f"        if name == {module!r}:\n"
            f"            os.kill(os.getpid(), {int(signum)})\n"
            f"        return None\n"
            f"sys.meta_path.insert(0, Trip())\n"
            f"from {target_module} import {function}\n"
            f"sys.argv = ['grade', {str(folder)!r}, '-o', {str(tmp_path / 'out')!r}, '--no-execute', '-q']\n"
            f"sys.exit({function}())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 128 + signum, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr[-3000:]
    assert not (tmp_path / "out" / "gradebook.csv").exists()


def test_sigterm_during_a_batch_is_handled_as_ctrl_c(tmp_path, monkeypatch, capsys):
    """Interrupted rows, the gradebook written, exit 143. In this process: a SIGTERM the grader did not
    handle would reach the test's own handler (which says so) instead of ending pytest."""
    entered, unhandled = threading.Event(), []

    def waiting_grade(submission, options, hidden, workdir, env, sandbox, cancellation=None):
        entered.set()
        for _ in range(600):   # stops when the run is cancelled, as a kernel does (60 s at most: a loaded
            if cancellation.cancelled:   # CI machine took over 10 s to deliver the signal, and ann was graded)
                break
            threading.Event().wait(0.1)
        return GradeResult(submission.student_id, str(submission.notebook)), None

    monkeypatch.setattr(batch_module, "grade_submission", waiting_grade)
    folder = write_notebooks(tmp_path / "subs", ["ann", "bob", "cat"])
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: unhandled.append(signum))
    sender = threading.Thread(target=lambda: entered.wait(30) and os.kill(os.getpid(), signal.SIGTERM))
    sender.start()
    try:
        code = cli.main([str(folder), "-o", str(tmp_path / "out"), "--no-execute", "-q", "-j", "1"])
    finally:
        sender.join()
        signal.signal(signal.SIGTERM, previous)
    assert not unhandled, "SIGTERM reached no handler of the grader"
    assert code == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("grade: stopped by SIGTERM; 3 student(s) not graded"), err
    assert {row["status"] for row in gradebook_rows(tmp_path / "out").values()} == {INTERRUPTED}


# --- the hidden set without the Hub --------------------------------------------------------------
def test_without_the_hub_and_without_a_hidden_set_the_message_says_how_to_pass_a_csv(tmp_path, monkeypatch, capsys):
    datasets = pytest.importorskip("datasets")

    def hub_down(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'fancyzhx/amazon_polarity' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", hub_down)
    folder = write_notebooks(tmp_path / "subs", ["ann"])
    assert cli.main([str(folder), "-o", str(tmp_path / "out"), "-q", "--sandbox", "off"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--hidden-set" in err[0] and "ConnectionError" in err[0], err
    assert "Hub" in err[0] and "test.csv" in err[0], err


# --- an empty submissions folder -----------------------------------------------------------------
def test_an_empty_submissions_folder_is_an_error_that_says_no_notebook_was_found(tmp_path, capsys):
    (tmp_path / "subs").mkdir()
    assert cli.main([str(tmp_path / "subs"), "-o", str(tmp_path / "out"), "--no-execute", "-q"]) == 2
    assert "no notebook to grade in" in capsys.readouterr().err
    (tmp_path / "subs" / "notes.txt").write_text("not a notebook")
    assert cli.main([str(tmp_path / "subs"), "-o", str(tmp_path / "out"), "--no-execute", "-q"]) == 2
    assert "1 entry skipped, such as notes.txt: not a notebook" in capsys.readouterr().err
    assert not (tmp_path / "out" / "gradebook.csv").exists()
