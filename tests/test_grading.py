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
from scenarios import CORPUS_EXPECTED, Targets, write_scenarios

# Long enough for a tiny run on a busy 2-core machine; the infinite loops run into it.
TIME_LIMIT_S = 150
# Small enough for the attacks to reach quickly, large enough for the tiny model's training.
TEST_LIMITS = Limits(memory_bytes=3 * GB, max_processes=64, max_file_bytes=256 * MB, disk_bytes=1 * GB)


def options(tiny_parameters, tiny_data_dir, output_dir, **overrides):
    return GradingOptions(output_dir=output_dir, hidden_set=tiny_data_dir / "test.csv", hidden_size=100,
                          parameters=tiny_parameters, time_limit_s=TIME_LIMIT_S, limits=TEST_LIMITS,
                          sandbox="require", **overrides)


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


@pytest.fixture(scope="module")
def mixed_batch(tiny_parameters, tiny_data_dir, tiny_model_dir, sandbox_flags, tmp_path_factory):
    listener = Listener()
    output_dir = tmp_path_factory.mktemp("results")
    targets = Targets(output_dir=output_dir, hidden_set=tiny_data_dir / "test.csv",
                      outside=tmp_path_factory.mktemp("outside"), port=listener.port)
    folder = write_scenarios(tmp_path_factory.mktemp("submissions"), CORPUS_EXPECTED, targets)
    (folder / "notes.txt").write_text("not a submission")
    watched = [ROOT / "grader", ROOT / "answer_key", ROOT / "notebooks", folder, tiny_data_dir, tiny_model_dir]
    before = tree_digest(*watched)
    batch = grade_submissions(folder, options(tiny_parameters, tiny_data_dir, output_dir, jobs=2), progress=False)
    listener.socket.close()
    after = tree_digest(*watched)
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
    assert set(rows) == set(CORPUS_EXPECTED)
    assert rows["passes"]["total"] == "100" and rows["todo-left"]["no_todo_left"] == "fail"
    assert rows["caf_-latin-1-name"]["name"] == "caf\ufffd-latin-1-name"
    for student in CORPUS_EXPECTED:
        assert (output_dir / "feedback" / f"{student}.html").is_file()
        assert json.loads((output_dir / "results" / f"{student}.json").read_text())["student_id"] == student
    assert (output_dir / "executed" / "passes.ipynb").is_file()
    assert not (output_dir / "work").exists() or not any((output_dir / "work").iterdir())


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


def test_a_rerun_resumes_and_force_regrades(mixed_batch, tiny_parameters, tiny_data_dir):
    folder, output_dir = mixed_batch[:2]
    (output_dir / "results" / "too-few-predictions.json").unlink()
    again = grade_submissions(folder, options(tiny_parameters, tiny_data_dir, output_dir), progress=False)
    assert again.graded_now == ["too-few-predictions"]
    assert sorted(again.resumed) == sorted(set(CORPUS_EXPECTED) - {"too-few-predictions"})


def test_no_execute_grades_the_saved_outputs_unverified(mixed_batch, tiny_parameters, tiny_data_dir, tmp_path):
    output_dir = mixed_batch[1]
    executed = tmp_path / "executed"
    executed.mkdir()
    for name in ("passes", "raises-midway"):
        (executed / f"{name}.ipynb").write_bytes((output_dir / "executed" / f"{name}.ipynb").read_bytes())
    batch = grade_submissions(executed, options(tiny_parameters, tiny_data_dir, tmp_path / "out", execute=False),
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
