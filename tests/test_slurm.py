"""Slurm mode on a real single-node Slurm (scripts/slurm-single-node): a representative subset of the
fixture scenarios graded here and through a job array must give the same gradebook, row by row; a
task that Slurm kills becomes that student's grader error (and a rerun grades them); Ctrl-C cancels
the array. CI sets KIT_REQUIRE_SLURM=1: there these tests fail, never skip, when Slurm cannot start.
"""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import nbformat
import psutil
import pytest

from grader import GradingOptions, grade_submissions
from grader.build import ROOT
from grader.results import GRADER_ERROR, INTERRUPTED, NOT_GRADABLE, Mode
from grader.options import options_from_dict, options_to_dict
from grader.sandbox import GB, MB, Limits
from grader.slurm import STOPPED_REASON, SlurmError, SlurmOptions, collect, tasks_in_queue
from scenarios import CORPUS_EXPECTED, write_scenarios
from waiting import wait_for

SCRIPT = ROOT / "scripts" / "slurm-single-node"
# Passing, failing (the template: every check fails), a notebook error, not gradable; and a timeout,
# in a batch of its own under a short limit (as in tests/test_grading.py).
SCENARIOS = ["passes", "raises-midway", "todo-left", "not-json"]
TIMEOUT_SCENARIO = "infinite-loop"
TIME_LIMIT_S, SHORT_TIME_LIMIT_S = 150, 20
LIMITS = Limits(memory_bytes=3 * GB, max_processes=64, max_file_bytes=256 * MB, disk_bytes=1 * GB)
FAST = dict(poll_s=1.0, grace_s=3.0)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A single-node Slurm that takes jobs: the one running here, or one this fixture starts (and stops)
    with scripts/slurm-single-node when KIT_REQUIRE_SLURM is set (CI). Elsewhere, without one, skip."""
    if subprocess.run([SCRIPT, "status"], capture_output=True).returncode == 0:
        yield
        return
    if not os.environ.get("KIT_REQUIRE_SLURM"):
        pytest.skip("no Slurm here (CI starts one: KIT_REQUIRE_SLURM=1, scripts/slurm-single-node start)")
    started = subprocess.run([SCRIPT, "start"], capture_output=True, text=True, timeout=600)
    assert started.returncode == 0, f"Slurm could not be started:\n{started.stderr}"
    try:
        yield
    finally:
        subprocess.run([SCRIPT, "stop"], timeout=120)


def options(tiny_parameters, tiny_data_dir, output_dir, **overrides):
    settings = dict(output_dir=output_dir, hidden_set=tiny_data_dir / "test.csv", hidden_size=100, hidden_seed=7,
                    parameters=tiny_parameters, time_limit_s=TIME_LIMIT_S, limits=LIMITS, sandbox="require", jobs=2)
    return GradingOptions(**{**settings, **overrides})


def gradebook_rows(output_dir: Path) -> dict[str, dict]:
    """The gradebook by student, without what differs between two runs of one notebook: the run time,
    and the seconds a time limit took to stop it."""
    with open(output_dir / "gradebook.csv", newline="", encoding="utf-8") as handle:
        rows = {row["student_id"]: row for row in csv.DictReader(handle)}
    for row in rows.values():
        row.pop("run_time_s")
        row["reason"] = re.sub(r"\d+ s\b", "N s", row["reason"])
    return rows


def differences(local: dict, array: dict) -> list:
    return [(student, name, local.get(student, {}).get(name), array.get(student, {}).get(name))
            for student in sorted(set(local) | set(array))
            for name in sorted(set(local.get(student, {})) | set(array.get(student, {})))
            if local.get(student, {}).get(name) != array.get(student, {}).get(name)]


@pytest.fixture(scope="module")
def local_and_array(slurm_cluster, sandbox_flags, tiny_parameters, tiny_data_dir, tmp_path_factory):
    """Each folder graded twice into output folders of their own: here (jobs=2) and as a Slurm array."""
    folder = write_scenarios(tmp_path_factory.mktemp("subs"), SCENARIOS)
    limit_folder = write_scenarios(tmp_path_factory.mktemp("limit-subs"), [TIMEOUT_SCENARIO])
    runs = {}
    for mode in ("local", "array"):
        slurm = SlurmOptions(**FAST) if mode == "array" else None
        out, limit_out = tmp_path_factory.mktemp(mode), tmp_path_factory.mktemp(f"{mode}-limit")
        started = time.monotonic()
        batch = grade_submissions(folder, options(tiny_parameters, tiny_data_dir, out), progress=False, slurm=slurm)
        limited = grade_submissions(limit_folder, options(tiny_parameters, tiny_data_dir, limit_out,
                                                          time_limit_s=SHORT_TIME_LIMIT_S), progress=False,
                                    slurm=slurm)
        print(f"{mode}: {time.monotonic() - started:.0f} s")
        runs[mode] = (folder, out, limit_out, batch, limited)
    return runs


def test_the_array_gives_the_local_gradebook_row_by_row(local_and_array):
    (_, local_out, local_limit, *_), (_, array_out, array_limit, batch, limited) = \
        local_and_array["local"], local_and_array["array"]
    assert batch.slurm_job and limited.slurm_job
    for local_folder, array_folder in ((local_out, array_out), (local_limit, array_limit)):
        local, array = gradebook_rows(local_folder), gradebook_rows(array_folder)
        assert differences(local, array) == []
        # The comparison sees a changed verdict: a row altered by one cell differs.
        student = sorted(local)[0]
        altered = {**local, student: {**local[student], "status": "altered"}}
        assert differences(altered, array) == [(student, "status", "altered", array[student]["status"])]
    assert sorted(gradebook_rows(array_out)) == sorted(SCENARIOS)
    assert sorted(gradebook_rows(array_limit)) == [TIMEOUT_SCENARIO]


def test_the_array_grades_each_scenario_as_expected_in_the_sandbox(local_and_array):
    batch, limited = local_and_array["array"][3:]
    for result in batch.results + limited.results:
        expected = CORPUS_EXPECTED[result.student_id]
        assert result.status == expected.status, (result.student_id, result.reason)
        assert result.sandboxed or result.status == NOT_GRADABLE
        outcome = {check.name: check.passed for check in result.checks}
        assert {name for name in expected.fails if outcome.get(name)} == set(), result.student_id
        assert {name for name in expected.passes if not outcome.get(name)} == set(), result.student_id
    assert "time limit" in limited.results[0].reason


def test_the_array_writes_every_file_a_local_run_writes(local_and_array):
    local_out, array_out = local_and_array["local"][1], local_and_array["array"][1]
    listing = lambda root: sorted(str(p.relative_to(root)) for p in root.rglob("*")   # noqa: E731
                                  if p.is_file() and ".grader" not in p.parts)
    assert listing(array_out) == listing(local_out)
    assert (array_out / "feedback" / "raises-midway.html").read_text().count("NameError")
    # The tasks saw the hidden sample the submitter drew, never one of their own.
    assert (array_out / ".grader" / "hidden-set.json").read_bytes() == \
        (local_out / ".grader" / "hidden-set.json").read_bytes()


def test_collect_rebuilds_the_gradebook_from_the_results(local_and_array):
    array_out = local_and_array["array"][1]
    before = (array_out / "gradebook.csv").read_text()
    (array_out / "gradebook.csv").unlink()
    (array_out / "canvas-import.csv").unlink()
    assert subprocess.run([sys.executable, "-m", "grader.cli", "collect", str(array_out)], cwd=ROOT).returncode == 0
    assert (array_out / "gradebook.csv").read_text() == before
    assert (array_out / "canvas-import.csv").is_file()


def test_a_rerun_on_slurm_resumes(local_and_array, tiny_parameters, tiny_data_dir):
    folder, array_out = local_and_array["array"][:2]
    (array_out / "results" / "not-json.json").unlink()
    again = grade_submissions(folder, options(tiny_parameters, tiny_data_dir, array_out, force=False),
                              progress=False, slurm=SlurmOptions(**FAST))
    assert again.graded_now == ["not-json"]
    assert sorted(again.resumed) == sorted(set(SCENARIOS) - {"not-json"})
    assert differences(gradebook_rows(array_out), gradebook_rows(local_and_array["local"][1])) == []


def waiting_notebook(flag: Path, started: Path) -> nbformat.NotebookNode:
    """Marks that it started, then waits (up to 2 minutes) while ``flag`` exists."""
    source = (f"import os, pathlib, time\npathlib.Path({str(started)!r}).touch()\n"
              f"for _ in range(240):\n    if not os.path.exists({str(flag)!r}):\n        break\n    time.sleep(0.5)\n")
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])


def waiting_class(tmp_path: Path, names) -> tuple[Path, Path, Path]:
    flag, started, folder = tmp_path / "hold", tmp_path / "started", tmp_path / "subs"
    flag.touch()
    started.mkdir()
    folder.mkdir()
    for name in names:
        nbformat.write(waiting_notebook(flag, started / name), folder / f"{name}.ipynb")
    return flag, started, folder


def test_a_task_killed_by_slurm_is_that_students_grader_error_and_a_rerun_grades_them(
        slurm_cluster, tiny_data_dir, tmp_path):
    """SIGKILL leaves no result and no time to write one: the submitter must see the task gone from squeue
    rather than wait for it forever. The other student is graded as usual."""
    flag, started, folder = waiting_class(tmp_path, ["ann", "bob"])
    output_dir = tmp_path / "out"
    settings = GradingOptions(output_dir=output_dir, hidden_set=tiny_data_dir / "test.csv", hidden_size=20,
                              sandbox="off", time_limit_s=120)
    killed = []

    def kill_bob():
        job_file = output_dir / ".grader" / "slurm-job"
        if wait_for(lambda: (started / "bob").exists() and job_file.exists(), 90):
            job = job_file.read_text().strip()
            # As the kernel's OOM killer or a node failure would: the task's grader dies at once, writing nothing.
            task = next(p for p in psutil.process_iter(["cmdline"])
                        if p.info["cmdline"] and "one" in p.info["cmdline"] and str(output_dir) in p.info["cmdline"]
                        and p.info["cmdline"][p.info["cmdline"].index("--index") + 1] == "1")   # bob is task 1
            task.kill()
            killed.append(job)
            wait_for(lambda: 1 not in (tasks_in_queue(job) or {1}), 60)
        flag.unlink()   # ann finishes

    killer = threading.Thread(target=kill_bob)
    killer.start()
    # In a thread, so that a grader waiting forever for the dead task fails the test instead of hanging it.
    graded = []
    grading = threading.Thread(target=lambda: graded.append(
        grade_submissions(folder, settings, progress=False, slurm=SlurmOptions(**FAST))), daemon=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # --sandbox off, on purpose
        grading.start()
        grading.join(timeout=150)
    killer.join()
    assert graded, "the grader is still waiting for a task that Slurm no longer runs"
    batch = graded[0]
    assert killed, "bob's task never started"
    results = {result.student_id: result for result in batch.results}
    assert results["ann"].status != GRADER_ERROR
    assert results["bob"].status == GRADER_ERROR
    assert f"Slurm task {killed[0]}_1 ended without a result" in results["bob"].reason
    with open(output_dir / "gradebook.csv", newline="") as handle:
        assert {row["student_id"]: row["status"] for row in csv.DictReader(handle)} == \
            {"ann": results["ann"].status, "bob": GRADER_ERROR}

    with pytest.warns(UserWarning, match="WITHOUT a sandbox"):
        again = grade_submissions(folder, settings, progress=False, slurm=SlurmOptions(**FAST))
    assert again.resumed == ["ann"] and again.graded_now == ["bob"]
    assert {r.student_id: r.status for r in again.results}["bob"] == results["ann"].status


def test_ctrl_c_cancels_the_array_and_lists_the_students_not_graded(slurm_cluster, tiny_data_dir, tmp_path):
    flag, started, folder = waiting_class(tmp_path, ["ann", "bob"])
    output_dir = tmp_path / "out"
    command = [sys.executable, "-m", "grader.cli", str(folder), "-o", str(output_dir), "-q", "--sandbox", "off",
               "--hidden-set", str(tiny_data_dir / "test.csv"), "--hidden-size", "20", "--slurm"]
    process = subprocess.Popen(command, start_new_session=True, cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: len(list(started.iterdir())) == 2, 90), "the tasks never started"
        job = (output_dir / ".grader" / "slurm-job").read_text().strip()
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
        flag.unlink(missing_ok=True)
    assert process.returncode == 130, stderr
    assert "2 student(s) not graded" in stderr
    assert tasks_in_queue(job) == set()   # the array was cancelled, not left running
    with open(output_dir / "gradebook.csv", newline="") as handle:
        assert {row["student_id"]: row["status"] for row in csv.DictReader(handle)} == \
            {"ann": INTERRUPTED, "bob": INTERRUPTED}


def test_the_options_reach_each_task_unchanged(tmp_path):
    """Each task grades with the submitter's options, read back from OUT/.grader/run.json."""
    settings = GradingOptions(output_dir=tmp_path, hidden_set=tmp_path / "t.csv", hidden_seed=3, time_limit_s=90,
                              parameters={"NUM_EPOCHS": 1, "MODEL_NAME": "/m"}, limits=LIMITS, sandbox="require",
                              mode="execute", keep_work=True)
    assert options_from_dict(options_to_dict(settings)) == settings


def test_collect_lists_a_student_whose_task_left_no_result(tmp_path, tiny_data_dir, monkeypatch):
    """--prepare-tasks from one folder, `grade one` from another (a pod's), `grade collect`: a task that never
    ran (another scheduler's pod lost) is a grader error in the gradebook, not a gap."""
    folder = write_scenarios(tmp_path / "subs", ["not-json", "todo-left"])
    output_dir = tmp_path / "out"
    monkeypatch.chdir(tmp_path)   # relative paths, as an instructor types them
    grade_submissions(Path("subs"), GradingOptions(output_dir=Path("out"), hidden_set=tiny_data_dir / "test.csv",
                                                   hidden_size=20, sandbox="off"),
                      progress=False, slurm=SlurmOptions(submit=False))
    assert subprocess.run([sys.executable, "-m", "grader.cli", "one", str(folder / "not-json.ipynb"),
                           "-o", str(output_dir)], cwd=ROOT, capture_output=True).returncode == 0
    results = {r.student_id: r for r in collect(output_dir)}
    assert results["not-json"].status == NOT_GRADABLE
    assert results["todo-left"].status == GRADER_ERROR and "no result" in results["todo-left"].reason


def test_a_task_stopped_by_its_scheduler_is_not_graded_as_a_dead_kernel(tmp_path, tiny_data_dir):
    """SIGTERM (Slurm's time limit or scancel, a Kubernetes pod's end) reaches the notebook's kernel too: the
    task must record that its scheduler stopped it (a grader error, retried), never a graded "kernel died"."""
    flag, started, folder = waiting_class(tmp_path, ["ann"])
    output_dir = tmp_path / "out"
    grade_submissions(folder, GradingOptions(output_dir=output_dir, hidden_set=tiny_data_dir / "test.csv",
                                             hidden_size=20, sandbox="off"),
                      progress=False, slurm=SlurmOptions(submit=False))
    task = subprocess.Popen([sys.executable, "-m", "grader.cli", "one", "--index", "0", "-o", str(output_dir)],
                            cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_for((started / "ann").exists, 60)
        os.killpg(task.pid, signal.SIGTERM)   # the task and its kernel, as slurmstepd signals a job
        task.communicate(timeout=60)
    finally:
        if task.poll() is None:
            task.kill()
        flag.unlink(missing_ok=True)
    result = json.loads((output_dir / "results" / "ann.json").read_text())
    assert (result["status"], result["reason"]) == (GRADER_ERROR, STOPPED_REASON)


def test_without_sbatch_the_run_fails_and_keeps_the_earlier_results(tmp_path, tiny_data_dir, monkeypatch):
    """--force sets the earlier results aside for the array's tasks to replace; a refused submission puts
    them back, and is an error of the run, not of a student."""
    folder = write_scenarios(tmp_path / "subs", ["not-json"])
    settings = GradingOptions(output_dir=tmp_path / "out", hidden_set=tiny_data_dir / "test.csv", hidden_size=20,
                              sandbox="off")
    grade_submissions(folder, settings, progress=False)
    earlier = (tmp_path / "out" / "results" / "not-json.json").read_text()
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    settings.force = True
    with pytest.raises(SlurmError, match="sbatch is not installed"):
        grade_submissions(folder, settings, progress=False, slurm=SlurmOptions())
    assert (tmp_path / "out" / "results" / "not-json.json").read_text() == earlier


def test_a_node_that_cannot_grade_gives_a_grader_error_with_the_reason(tmp_path, tiny_data_dir):
    """--sandbox require, on a node without bubblewrap: that student's result says so (and a rerun retries
    it); the task does not crash without one."""
    folder = write_scenarios(tmp_path / "subs", ["todo-left"])
    output_dir = tmp_path / "out"
    grade_submissions(folder, GradingOptions(output_dir=output_dir, hidden_set=tiny_data_dir / "test.csv",
                                             hidden_size=20, sandbox="require"),
                      progress=False, slurm=SlurmOptions(submit=False))
    no_bwrap = tmp_path / "bin"
    no_bwrap.mkdir()
    task = subprocess.run([sys.executable, "-m", "grader.cli", "one", "--index", "0", "-o", str(output_dir)],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PATH": str(no_bwrap)})
    assert task.returncode == 0, task.stderr
    result = json.loads((output_dir / "results" / "todo-left.json").read_text())
    assert result["status"] == GRADER_ERROR
    assert re.search(r"internal grader error on .+: SandboxUnavailable: --sandbox require", result["reason"])


def test_a_verify_mode_task_gets_the_students_submitted_model(tmp_path):
    """--verify --slurm: each task must check the model the student submitted, as a local run would."""
    from grader.report import OutputFolder
    from grader.slurm import load_run, task_submission, write_run
    from grader.submissions import Submission

    ann = Submission("ann", tmp_path / "ann.ipynb", display_name="Ann", canvas_user_id="12", attempt=2,
                     model=tmp_path / "ann-model.zip")
    out = OutputFolder(tmp_path / "out")
    write_run(out, tmp_path, GradingOptions(output_dir=out.root, mode="verify"), "{}", None, [ann],
              {"ann": "f"})
    [task] = load_run(out)["tasks"]
    assert task_submission(task) == ann and task["fingerprint"] == "f"
    assert options_from_dict(load_run(out)["options"]).mode is Mode.VERIFY


def array_watch(tmp_path, monkeypatch, queue_listings, **slurm_options):
    """An ArrayWatch over alice (task 0) and bob (task 1), squeue answering ``queue_listings`` in turn."""
    from grader import slurm
    from grader.report import OutputFolder
    from grader.rubric import load_rubric
    from grader.submissions import Submission

    listings, cancelled, recorded = iter(queue_listings), [], []
    monkeypatch.setattr(slurm, "tasks_in_queue", lambda job_id: next(listings))
    monkeypatch.setattr(slurm, "cancel_array", cancelled.append)
    pending = {0: Submission("alice", tmp_path / "alice.ipynb"), 1: Submission("bob", tmp_path / "bob.ipynb")}
    watch = slurm.ArrayWatch("77", pending, {"alice": "fa", "bob": "fb"}, OutputFolder(tmp_path / "out"),
                             load_rubric(), SlurmOptions(**slurm_options), tmp_path / "logs", recorded.append)
    return watch, recorded, cancelled


def test_the_array_watch_takes_each_tasks_result_and_a_killed_task_becomes_a_grader_error(tmp_path, monkeypatch):
    from grader.results import GradeResult

    watch, recorded, cancelled = array_watch(tmp_path, monkeypatch, [{0, 1}, {1}, set()], grace_s=0)
    assert watch.poll() and recorded == []                         # both queued, no result yet
    written = GradeResult.for_submission(watch.outstanding[0], fingerprint="fa")
    watch.out.save(written, None, watch.rubric)                    # alice's task wrote her result
    assert watch.poll() and [r.student_id for r in recorded] == ["alice"]
    assert watch.poll() and watch.outstanding == {}              # bob's task left the queue without a result
    bob = watch.out.load_result("bob")
    assert recorded[-1].student_id == "bob" and bob.status == GRADER_ERROR and "77_1 ended without a result" in bob.reason
    assert bob.fingerprint == "fb" and cancelled == []
    assert not watch.poll()                                       # nothing left to watch


def test_the_array_watch_waits_out_the_grace_period_and_gives_up_on_squeue_only_after_its_patience(
        tmp_path, monkeypatch):
    watch, recorded, cancelled = array_watch(tmp_path, monkeypatch, [set(), None, None], grace_s=3600,
                                             squeue_patience_s=0.05)
    assert watch.poll() and watch.poll() and recorded == []       # gone, but within the grace; squeue failing once
    time.sleep(0.1)
    assert not watch.poll() and cancelled == ["77"]
    assert [(r.student_id, r.status) for r in recorded] == [("alice", GRADER_ERROR), ("bob", GRADER_ERROR)]
    assert "squeue failed" in watch.out.load_result("alice").reason


def test_cancelling_the_array_watch_lists_the_students_left_as_not_graded(tmp_path, monkeypatch):
    watch, recorded, cancelled = array_watch(tmp_path, monkeypatch, [set()])
    watch.cancel()
    assert cancelled == ["77"] and [r.status for r in recorded] == [INTERRUPTED, INTERRUPTED]
    assert watch.out.load_result("bob").status == INTERRUPTED
