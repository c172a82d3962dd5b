"""`grade` over a folder mixing every fixture scenario, with the tiny model: golden verdicts."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from grader import GradingOptions, grade_submissions
from grader.results import NOT_GRADABLE
from scenarios import EXPECTED, write_scenarios

# Long enough for a tiny run on a busy 2-core machine; the infinite loop runs into it.
TIME_LIMIT_S = 150


def options(tiny_parameters, tiny_data_dir, output_dir, **overrides):
    return GradingOptions(output_dir=output_dir, hidden_set=tiny_data_dir / "test.csv", hidden_size=100,
                          parameters=tiny_parameters, time_limit_s=TIME_LIMIT_S, **overrides)


@pytest.fixture(scope="module")
def mixed_batch(tiny_parameters, tiny_data_dir, tmp_path_factory):
    folder = write_scenarios(tmp_path_factory.mktemp("submissions"))
    (folder / "notes.txt").write_text("not a submission")
    output_dir = tmp_path_factory.mktemp("results")
    batch = grade_submissions(folder, options(tiny_parameters, tiny_data_dir, output_dir, jobs=2), progress=False)
    return folder, output_dir, batch


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_each_scenario_gets_its_verdict(mixed_batch, scenario):
    _, _, batch = mixed_batch
    result = next(r for r in batch.results if r.student_id == scenario)
    expected = EXPECTED[scenario]
    assert result.status == expected.status, result.reason
    outcome = {check.name: check.passed for check in result.checks}
    assert {name for name in expected.fails if outcome.get(name)} == set(), (scenario, result.checks)
    assert {name for name in expected.passes if not outcome.get(name)} == set(), (scenario, result.checks)
    assert result.total == sum(c.points for c in result.checks if c.passed)


def test_nothing_is_lost_and_every_student_has_feedback(mixed_batch):
    folder, output_dir, batch = mixed_batch
    assert sorted(r.student_id for r in batch.results) == sorted(EXPECTED)
    assert batch.skipped == [(str(folder / "notes.txt"), "not a notebook")]
    with open(output_dir / "gradebook.csv", newline="") as handle:
        rows = {row["student_id"]: row for row in csv.DictReader(handle)}
    assert set(rows) == set(EXPECTED)
    assert rows["passes"]["total"] == "100" and rows["todo-left"]["no_todo_left"] == "fail"
    for student in EXPECTED:
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
    folder, output_dir, _ = mixed_batch
    (output_dir / "results" / "too-few-predictions.json").unlink()
    again = grade_submissions(folder, options(tiny_parameters, tiny_data_dir, output_dir), progress=False)
    assert again.graded_now == ["too-few-predictions"]
    assert sorted(again.resumed) == sorted(set(EXPECTED) - {"too-few-predictions"})


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
