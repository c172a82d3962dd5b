"""`grade` over a folder of every fixture scenario, attacks included, with the tiny model, in the sandbox.

Every scenario must get its golden verdict, the grader must not crash, and nothing outside the
sandbox may change: the repository, the submissions, the data and model folders are hashed
before and after, the files the attacks try to write must not exist, and the loopback listener
must see no connection.
"""
import csv
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest

from grader import GradingOptions, grade_submissions
from grader.build import ROOT
from grader.results import NOT_GRADABLE
from grader.sandbox import GB, MB, Limits
from scenarios import CAFE, CORPUS_EXPECTED, Targets, write_scenarios

# Long enough for a tiny run on a busy 2-core machine, two notebooks at once.
TIME_LIMIT_S = 150
# The scenarios whose point is the time limit run in a batch of their own, under a short one.
TIME_LIMIT_SCENARIOS = {"infinite-loop": 20, "sleeps-ignoring-interrupts": 20}
SHORT_TIME_LIMIT_S = 20
# Small enough for the attacks to reach quickly, large enough for the tiny model's training.
TEST_LIMITS = Limits(memory_bytes=3 * GB, max_processes=64, max_file_bytes=256 * MB, disk_bytes=1 * GB)


def options(tiny_parameters, tiny_data_dir, output_dir, **overrides):
    settings = dict(output_dir=output_dir, hidden_set=tiny_data_dir / "test.csv", hidden_size=100,
                    parameters=tiny_parameters, time_limit_s=TIME_LIMIT_S, limits=TEST_LIMITS, sandbox="require")
    return GradingOptions(**{**settings, **overrides})


def tree_digest(*folders: Path) -> dict[str, str]:
    """Every file under ``folders``, by path, with a hash of its bytes."""
    digest = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and ".pytest_cache" not in path.parts:
                digest[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


class Listener:
    """A TCP port on the grader's loopback that records whoever connects."""

    def __init__(self):
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.connections = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                connection, address = self.socket.accept()
            except OSError:
                return
            self.connections.append(address)
            connection.close()


def plant_targets(targets: Targets, tiny_model_dir: Path) -> None:
    """What the attacks aim at must exist while they run, or a failed attack proves nothing."""
    targets.earlier_run.parent.mkdir(parents=True, exist_ok=True)
    targets.earlier_run.write_text('[{"text": "an earlier run\'s hidden review", "label": 1}]')
    shutil.copytree(tiny_model_dir, targets.other_model, dirs_exist_ok=True)
    (targets.output_dir / "results").mkdir(parents=True, exist_ok=True)
    for victim in targets.victims:
        victim.write_text("the instructor's file")


@pytest.fixture(scope="module")
def mixed_batch(tiny_parameters, tiny_data_dir, tiny_model_dir, sandbox_flags, tmp_path_factory):
    listener = Listener()
    output_dir = tmp_path_factory.mktemp("results")
    targets = Targets(output_dir=output_dir, hidden_set=tiny_data_dir / "test.csv",
                      outside=tmp_path_factory.mktemp("outside"), port=listener.port)
    plant_targets(targets, tiny_model_dir)
    names = sorted(set(CORPUS_EXPECTED) - set(TIME_LIMIT_SCENARIOS))
    folder = write_scenarios(tmp_path_factory.mktemp("submissions"), names, targets)
    (folder / "notes.txt").write_text("not a submission")
    limit_folder = write_scenarios(tmp_path_factory.mktemp("limit-submissions"), TIME_LIMIT_SCENARIOS, targets)
    limit_output = tmp_path_factory.mktemp("limit-results")
    watched = [ROOT / "grader", ROOT / "answer_key", ROOT / "notebooks", folder, tiny_data_dir, tiny_model_dir,
               targets.outside, targets.earlier_run.parent]
    before = tree_digest(*watched)
    try:
        batch = grade_submissions(folder, options(tiny_parameters, tiny_data_dir, output_dir, jobs=2), progress=False)
        limited = grade_submissions(limit_folder, options(tiny_parameters, tiny_data_dir, limit_output, jobs=2,
                                                          time_limit_s=SHORT_TIME_LIMIT_S), progress=False)
        listener.socket.close()
        after = tree_digest(*watched)
    finally:
        shutil.rmtree(targets.earlier_run.parent.parent, ignore_errors=True)
    batch.results = sorted(batch.results + limited.results, key=lambda result: result.student_id)
    outside_effects = {"changed": {path for path in set(before) | set(after) if before.get(path) != after.get(path)},
                       "written": [path for path in targets.writes_attempted if path.exists()],
                       "connections": listener.connections}
    return folder, output_dir, batch, outside_effects


def student(batch, scenario: str):
    return next(r for r in batch.results if r.student_id == scenario)


@pytest.mark.parametrize("scenario", sorted(CORPUS_EXPECTED))
def test_each_scenario_gets_its_verdict(mixed_batch, scenario):
    result = student(mixed_batch[2], scenario)
    expected = CORPUS_EXPECTED[scenario]
    assert result.status == expected.status, result.reason
    assert result.sandboxed or result.status == NOT_GRADABLE
    outcome = {check.name: check.passed for check in result.checks}
    assert {name for name in expected.fails if outcome.get(name)} == set(), (scenario, result.checks)
    assert {name for name in expected.passes if not outcome.get(name)} == set(), (scenario, result.checks)
    assert result.total == sum(c.points for c in result.checks if c.passed)
    reasons = " | ".join([result.reason] + [c.message for c in result.checks if not c.passed])
    assert re.search(expected.reason, reasons), reasons
    if expected.ran_message:
        assert re.search(expected.ran_message, result.check("ran_to_end").message), result.check("ran_to_end").message


def test_nothing_outside_the_sandbox_changes(mixed_batch):
    effects = mixed_batch[3]
    assert effects == {"changed": set(), "written": [], "connections": []}
    output_dir = mixed_batch[1]
    for path in [output_dir / "gradebook.csv", *(output_dir / "results").glob("*.json")]:
        assert "PWNED" not in path.read_text(encoding="utf-8"), path


def test_a_scan_of_the_whole_filesystem_finds_no_hidden_data(mixed_batch):
    executed = nbformat.read(mixed_batch[1] / "executed" / "scans-for-csv.ipynb", as_version=4)
    printed = "".join(output.get("text", "") for cell in executed.cells for output in cell.get("outputs", []))
    assert "CSV files found; leaked: []" in printed


def test_nothing_is_lost_and_every_student_has_feedback(mixed_batch):
    folder, output_dir, batch, _ = mixed_batch
    assert sorted(r.student_id for r in batch.results) == sorted(CORPUS_EXPECTED)
    assert batch.skipped == [(str(folder / "notes.txt"), "not a notebook")]
    with open(output_dir / "gradebook.csv", newline="", encoding="utf-8") as handle:
        rows = {row["student_id"]: row for row in csv.DictReader(handle)}
    assert set(rows) == set(CORPUS_EXPECTED) - set(TIME_LIMIT_SCENARIOS)
    assert rows["passes"]["total"] == "100" and rows["todo-left"]["no_todo_left"] == "fail"
    assert rows[CAFE]["name"] == "caf\ufffd-latin-1-name"
    for student in rows:
        assert (output_dir / "feedback" / f"{student}.html").is_file()
        assert json.loads((output_dir / "results" / f"{student}.json").read_text())["student_id"] == student
    assert (output_dir / "executed" / "passes.ipynb").is_file()
    # Each student's working folder is removed once graded; the planted decoy of another student stays.
    assert sorted(path.name for path in (output_dir / "work").iterdir()) == ["another-student"]


def test_the_reasons_students_read(mixed_batch):
    output_dir, results = mixed_batch[1], {r.student_id: r for r in mixed_batch[2].results}
    assert "time limit" in results["infinite-loop"].reason
    assert "TODO left" in results["todo-left"].check("no_todo_left").message
    assert NOT_GRADABLE == results["not-json"].status and "not a valid Jupyter notebook" in results["not-json"].reason
    assert "NameError" in results["raises-midway"].check("ran_to_end").message
    fake = results["prints-fake-metrics"]
    assert fake.reported_metrics["accuracy"] == 0.97 and any("accuracy" in d for d in fake.disagreement)
    assert "reproduce" in results["reload-differs"].check("reload").message
    feedback = (output_dir / "feedback" / "raises-midway.html").read_text()
    assert "NameError" in feedback and "split[" in feedback   # the failing cell's source and traceback


def test_a_rerun_resumes(mixed_batch, tiny_parameters, tiny_data_dir):
    folder, output_dir = mixed_batch[:2]
    (output_dir / "results" / "too-few-predictions.json").unlink()
    again = grade_submissions(folder, options(tiny_parameters, tiny_data_dir, output_dir, force=False), progress=False)
    assert again.graded_now == ["too-few-predictions"]
    assert sorted(again.resumed) == sorted(set(CORPUS_EXPECTED) - set(TIME_LIMIT_SCENARIOS) - {"too-few-predictions"})


def test_a_huge_error_stays_small_in_every_file(mixed_batch):
    output_dir = mixed_batch[1]
    for path in (output_dir / "results" / "raises-a-huge-error.json", output_dir / "feedback" / "raises-a-huge-error.html",
                 output_dir / "executed" / "raises-a-huge-error.ipynb"):
        assert path.stat().st_size < 200_000, path


def test_no_execute_grades_the_saved_outputs_unverified(mixed_batch, tiny_parameters, tiny_data_dir, tmp_path):
    output_dir = mixed_batch[1]
    executed = tmp_path / "executed"
    executed.mkdir()
    for name in ("passes", "raises-midway"):
        (executed / f"{name}.ipynb").write_bytes((output_dir / "executed" / f"{name}.ipynb").read_bytes())
    batch = grade_submissions(executed, options(tiny_parameters, tiny_data_dir, tmp_path / "out", mode="saved outputs"),
                              progress=False)
    results = {r.student_id: r for r in batch.results}
    assert not results["passes"].verified and results["passes"].passed
    assert not results["raises-midway"].check("ran_to_end").passed
    assert results["passes"].reported_metrics["accuracy"] >= 0.85


def test_a_killed_run_resumes_with_every_student_graded_once(tiny_parameters, tiny_data_dir, tmp_path):
    folder = write_scenarios(tmp_path / "subs", ["not-json", "todo-left", "passes"])
    output_dir = tmp_path / "out"
    command = [sys.executable, "-m", "grader.cli", str(folder), "-o", str(output_dir), "-q",
               "--hidden-set", str(tiny_data_dir / "test.csv"), "--hidden-size", "100",
               "--timeout", str(TIME_LIMIT_S)] + [f"-p{k}={json.dumps(v)}" for k, v in tiny_parameters.items()]
    # The limits of the rerun below: results made under other limits would be stale, and regraded.
    command += ["--memory-limit", str(TEST_LIMITS.memory_bytes), "--max-processes", str(TEST_LIMITS.max_processes),
                "--max-file-size", str(TEST_LIMITS.max_file_bytes), "--disk-limit", str(TEST_LIMITS.disk_bytes)]
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((output_dir / "results").glob("*.json")):
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)   # the grader and its kernels, mid-batch
    process.wait()
    done_before = {path.stem for path in (output_dir / "results").glob("*.json")}
    assert done_before and len(done_before) < 3

    batch = grade_submissions(folder, options(tiny_parameters, tiny_data_dir, output_dir), progress=False)
    assert set(batch.resumed) == done_before
    assert sorted(batch.resumed + batch.graded_now) == ["not-json", "passes", "todo-left"]
    with open(output_dir / "gradebook.csv", newline="") as handle:
        assert sorted(row["student_id"] for row in csv.DictReader(handle)) == ["not-json", "passes", "todo-left"]


# The attacks that the sandbox (not the grader's other checks) stops, run once without it.
CONTROLLED_ATTACKS = ["reads-hidden-set", "reads-an-earlier-run", "scans-for-csv", "opens-socket",
                      "writes-outside-its-folder", "edits-the-gradebook", "steals-another-students-model",
                      "plants-links-for-the-grader"]


def test_the_attacks_succeed_without_the_sandbox(tiny_parameters, tiny_data_dir, tiny_model_dir, tmp_path):
    """The negative control: with the sandbox off, each attack reaches what it aims at (throwaway
    copies here), so the corpus's green verdicts mean the sandbox stopped them."""
    listener = Listener()
    hidden_set = tmp_path / "data" / "test.csv"
    hidden_set.parent.mkdir()
    shutil.copy(tiny_data_dir / "test.csv", hidden_set)
    targets = Targets(output_dir=tmp_path / "out", hidden_set=hidden_set, outside=tmp_path / "outside",
                      port=listener.port, home=tmp_path / "home", repository=tmp_path / "repository",
                      earlier_run=tmp_path / "build" / "earlier" / ".grader" / "hidden-set.json")
    for folder in (targets.outside, targets.home, targets.repository):
        folder.mkdir()
    plant_targets(targets, tiny_model_dir)
    folder = write_scenarios(tmp_path / "submissions", CONTROLLED_ATTACKS, targets)
    with pytest.warns(UserWarning, match="WITHOUT a sandbox"):
        batch = grade_submissions(folder, options(tiny_parameters, tiny_data_dir, targets.output_dir, jobs=2,
                                                  hidden_set=hidden_set, sandbox="off", keep_work=True),
                                  progress=False)
    listener.socket.close()
    results = {result.student_id: result for result in batch.results}
    for attack in ("reads-hidden-set", "reads-an-earlier-run", "edits-the-gradebook", "steals-another-students-model"):
        assert results[attack].errors == [], (attack, results[attack].errors)
    assert [error.ename for error in results["scans-for-csv"].errors] == ["AssertionError"]   # it found them
    assert listener.connections
    assert all(path.exists() for path in targets.writes_attempted), targets.writes_attempted
    planted = targets.output_dir / "work" / "plants-links-for-the-grader"
    assert [os.readlink(planted / name) for name in ("verify-request.json", "verify-result.json", "submission.ipynb")] \
        == [str(victim) for victim in targets.victims]


def test_the_corpus_batchs_class_report_renders(mixed_batch):
    """The class report of the whole corpus (attacks, broken files, odd names), as grade wrote it, in Chromium."""
    from report_checks import assert_report_renders

    output_dir, batch = mixed_batch[1], mixed_batch[2]
    students = len({r.student_id for r in batch.results} - set(TIME_LIMIT_SCENARIOS))   # those graded into output_dir
    page = assert_report_renders(output_dir / "report.html", students)
    assert page["pwned"] is None
