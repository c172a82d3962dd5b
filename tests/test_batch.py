"""Batch behaviour: parallel jobs and their GPUs, a grader bug staying one student's result, resuming
only results that still stand, the output folder's lock, and the hidden sample's private seed."""
import json
import os
import subprocess
import sys
import threading
import time

import nbformat
import pytest

from grader import GradingOptions, batch as batch_module, cli, grade_submissions, run_folder
from grader.errors import UsageError
from grader.results import GRADER_ERROR, GradeResult
from grader.rubric import load_rubric


def write_notebooks(folder, names, source="x = 1"):
    folder.mkdir(exist_ok=True)
    for name in names:
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)]), folder / f"{name}.ipynb")
    return folder


def fake_grade(submission, *args, **kwargs):
    return GradeResult(submission.student_id, str(submission.notebook)), None


def hidden_options(tiny_data_dir, output_dir, **overrides):
    """Options of a run that executes notebooks (with grade_submission faked, none runs)."""
    settings = dict(output_dir=output_dir, hidden_set=tiny_data_dir / "test.csv", hidden_size=50, sandbox="off")
    return GradingOptions(**{**settings, **overrides})


def test_parallel_jobs_get_one_gpu_each(tmp_path, monkeypatch):
    seen, running, lock = [], set(), threading.Lock()

    def fake_grade(submission, options, hidden, workdir, env, sandbox, **kwargs):
        gpu = env["CUDA_VISIBLE_DEVICES"]
        with lock:
            assert gpu not in running, "two jobs on one GPU"
            running.add(gpu)
            seen.append(gpu)
        time.sleep(0.2)
        with lock:
            running.discard(gpu)
        return GradeResult(submission.student_id, str(submission.notebook)), None

    monkeypatch.setattr(run_folder, "visible_gpus", lambda: ["0", "1"])
    monkeypatch.setattr(batch_module, "grade_submission", fake_grade)
    folder = write_notebooks(tmp_path / "subs", [f"s{i}" for i in range(6)])
    batch = grade_submissions(folder, GradingOptions(output_dir=tmp_path / "out", mode="saved outputs", jobs=2),
                              progress=False)
    assert len(batch.results) == 6 and sorted(set(seen)) == ["0", "1"]


def test_a_grader_bug_becomes_that_students_result_and_is_retried(tmp_path, monkeypatch):
    def flaky(submission, *args, **kwargs):
        if submission.student_id == "bad":
            raise RuntimeError("boom")
        return GradeResult(submission.student_id, str(submission.notebook)), None

    monkeypatch.setattr(batch_module, "grade_submission", flaky)
    folder = write_notebooks(tmp_path / "subs", ["bad", "good"])
    options = GradingOptions(output_dir=tmp_path / "out", mode="saved outputs")
    first = {r.student_id: r for r in grade_submissions(folder, options, progress=False).results}
    assert first["bad"].status == GRADER_ERROR and "boom" in first["bad"].reason
    assert first["good"].status == "graded"
    again = grade_submissions(folder, options, progress=False)
    assert again.graded_now == ["bad"] and again.resumed == ["good"]


# --- parallel jobs ----------------------------------------------------------------------------
CLOCK = """import json, os, time
start = time.time()
time.sleep(8)
print(json.dumps({"start": start, "end": time.time(), "threads": os.environ.get("OMP_NUM_THREADS")}))
"""


def clock_readings(output_dir, name) -> dict:
    cell = nbformat.read(output_dir / "executed" / f"{name}.ipynb", as_version=4).cells[0]
    return json.loads("".join(output.get("text", "") for output in cell.outputs))


def test_jobs_run_that_many_notebooks_at_once_without_gpus(tmp_path, tiny_data_dir):
    """A concurrency test, not a timing one: with -j 2, two notebooks' running times overlap."""
    folder = write_notebooks(tmp_path / "subs", ["ann", "bob"], CLOCK)
    options = hidden_options(tiny_data_dir, tmp_path / "out", jobs=2, time_limit_s=120)
    batch = grade_submissions(folder, options, progress=False)
    assert sorted(batch.graded_now) == ["ann", "bob"]
    ann, bob = clock_readings(tmp_path / "out", "ann"), clock_readings(tmp_path / "out", "bob")
    assert ann["start"] < bob["end"] and bob["start"] < ann["end"], (ann, bob)
    assert ann["threads"] == bob["threads"] == str(max(1, (os.cpu_count() or 1) // 2))


def test_gpus_are_handed_round_the_jobs(monkeypatch):
    monkeypatch.setattr(run_folder, "visible_gpus", lambda: ["0", "1"])
    tokens = run_folder.job_tokens(4)
    assert [tokens.get_nowait() for _ in range(4)] == ["0", "1", "0", "1"]
    monkeypatch.setattr(run_folder, "visible_gpus", lambda: [])
    tokens = run_folder.job_tokens(3)
    assert [tokens.get_nowait() for _ in range(3)] == [None, None, None]


# --- resuming only what still stands ----------------------------------------------------------
def test_an_unchanged_rerun_resumes_everyone(tmp_path, tiny_data_dir, monkeypatch):
    monkeypatch.setattr(batch_module, "grade_submission", fake_grade)
    folder = write_notebooks(tmp_path / "subs", ["ann", "bob"])
    options = hidden_options(tiny_data_dir, tmp_path / "out", force=False)
    assert sorted(grade_submissions(folder, options, progress=False).graded_now) == ["ann", "bob"]
    again = grade_submissions(folder, options, progress=False)
    assert again.graded_now == [] and sorted(again.resumed) == ["ann", "bob"]


def test_a_changed_notebook_is_regraded(tmp_path):
    folder = write_notebooks(tmp_path / "subs", ["ann", "bob"])
    options = GradingOptions(output_dir=tmp_path / "out", mode="saved outputs", force=False)
    grade_submissions(folder, options, progress=False)
    write_notebooks(folder, ["bob"], "x = 2  # resubmitted")
    again = grade_submissions(folder, options, progress=False)
    assert again.graded_now == ["bob"] and again.resumed == ["ann"]


def test_a_changed_rubric_regrades_everyone(tmp_path):
    folder = write_notebooks(tmp_path / "subs", ["ann", "bob"])
    grade_submissions(folder, GradingOptions(output_dir=tmp_path / "out", mode="saved outputs"), progress=False)
    stricter = tmp_path / "rubric.toml"
    stricter.write_text("[thresholds]\naccuracy = 0.9\n")
    again = grade_submissions(folder, GradingOptions(output_dir=tmp_path / "out", mode="saved outputs", force=False,
                                                     rubric=load_rubric(stricter)), progress=False)
    assert sorted(again.graded_now) == ["ann", "bob"] and again.resumed == []


def test_an_unverified_result_is_not_kept_by_a_run_that_executes(tmp_path, tiny_data_dir, monkeypatch):
    folder = write_notebooks(tmp_path / "subs", ["ann"])
    first = grade_submissions(folder, GradingOptions(output_dir=tmp_path / "out", mode="saved outputs"), progress=False)
    assert not first.results[0].verified
    monkeypatch.setattr(batch_module, "grade_submission", fake_grade)
    again = grade_submissions(folder, hidden_options(tiny_data_dir, tmp_path / "out", force=False), progress=False)
    assert again.graded_now == ["ann"] and again.results[0].verified


def test_the_cli_and_the_api_agree_on_what_still_stands(tmp_path):
    folder = write_notebooks(tmp_path / "subs", ["ann"])
    assert cli.main([str(folder), "-o", str(tmp_path / "out"), "--no-execute", "-q", "--timeout", "150"]) == 0
    again = grade_submissions(folder, GradingOptions(output_dir=tmp_path / "out", mode="saved outputs", time_limit_s=150),
                              progress=False)
    assert again.resumed == ["ann"]


def test_a_second_run_into_the_same_folder_fails_at_once(tmp_path, capsys, monkeypatch):
    entered, release = threading.Event(), threading.Event()

    def slow_grade(submission, *args, **kwargs):
        entered.set()
        release.wait(timeout=10)
        return fake_grade(submission)

    monkeypatch.setattr(batch_module, "grade_submission", slow_grade)
    folder = write_notebooks(tmp_path / "subs", ["ann"])
    options = GradingOptions(output_dir=tmp_path / "out", mode="saved outputs")
    first = threading.Thread(target=grade_submissions, args=(folder, options), kwargs={"progress": False})
    first.start()
    try:
        assert entered.wait(timeout=10)
        started = time.monotonic()
        assert cli.main([str(folder), "-o", str(tmp_path / "out"), "--no-execute", "-q"]) == 2
        assert time.monotonic() - started < 5
        assert "another grade run is writing into" in capsys.readouterr().err
    finally:
        release.set()
        first.join()
    # Once the first run is over, the folder is free again.
    grade_submissions(folder, GradingOptions(output_dir=tmp_path / "out", mode="saved outputs", force=True), progress=False)


# --- the hidden sample's seed -----------------------------------------------------------------
def hidden_sample(output_dir) -> list:
    return json.loads((output_dir / ".grader" / "hidden-set.json").read_text())


def test_each_output_folder_draws_a_private_seed_that_its_reruns_keep(tmp_path, tiny_data_dir, monkeypatch):
    monkeypatch.setattr(batch_module, "grade_submission", fake_grade)
    folder = write_notebooks(tmp_path / "subs", ["ann"])
    grade_submissions(folder, hidden_options(tiny_data_dir, tmp_path / "one"), progress=False)
    grade_submissions(folder, hidden_options(tiny_data_dir, tmp_path / "two"), progress=False)
    first = hidden_sample(tmp_path / "one")
    assert first != hidden_sample(tmp_path / "two")
    rerun = grade_submissions(folder, hidden_options(tiny_data_dir, tmp_path / "one"), progress=False)
    assert hidden_sample(tmp_path / "one") == first and rerun.resumed == ["ann"]


def test_hidden_seed_reproduces_a_sample_and_is_kept(tmp_path, tiny_data_dir, monkeypatch):
    monkeypatch.setattr(batch_module, "grade_submission", fake_grade)
    folder = write_notebooks(tmp_path / "subs", ["ann"])

    def grade(output_dir, *extra):
        argv = [str(folder), "-o", str(output_dir), "-q", "--sandbox", "off", "--hidden-set",
                str(tiny_data_dir / "test.csv"), "--hidden-size", "50", *extra]
        assert cli.main(argv) == 0
        return hidden_sample(output_dir)

    seeded = grade(tmp_path / "one", "--hidden-seed", "7")
    assert grade(tmp_path / "two", "--hidden-seed", "7") == seeded
    assert grade(tmp_path / "one") == seeded        # recorded: later runs into the folder keep it
    assert grade(tmp_path / "three") != seeded


def test_an_unreadable_seed_file_is_a_usage_error(tmp_path, tiny_data_dir):
    folder = write_notebooks(tmp_path / "subs", ["ann"])
    (tmp_path / "out" / ".grader").mkdir(parents=True)
    (tmp_path / "out" / ".grader" / "hidden-seed").write_text("not a number")
    with pytest.raises(UsageError, match="hidden-seed"):
        grade_submissions(folder, hidden_options(tiny_data_dir, tmp_path / "out"), progress=False)


def test_a_grade_made_without_the_sandbox_is_regraded_once_it_can_run(tmp_path, tiny_data_dir, monkeypatch,
                                                                       sandbox_flags):
    folder = write_notebooks(tmp_path / "subs", ["ann"])
    monkeypatch.setattr(batch_module, "grade_submission", fake_grade)
    with pytest.warns(UserWarning, match="WITHOUT a sandbox"):
        grade_submissions(folder, hidden_options(tiny_data_dir, tmp_path / "out", sandbox="off"), progress=False)
    again = grade_submissions(folder, hidden_options(tiny_data_dir, tmp_path / "out", force=False, sandbox="require"),
                              progress=False)
    assert again.graded_now == ["ann"] and again.resumed == []


# --- counting GPUs without torch -----------------------------------------------------------------
def fake_nvidia_smi(folder, listing: str, exit_code: int = 0):
    folder.mkdir(exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nprintf '{listing}'\nexit {exit_code}\n")
    script.chmod(0o755)
    return folder


def test_gpus_are_counted_by_nvidia_smi_then_the_driver_then_the_device_nodes(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    driver, dev = tmp_path / "gpus", tmp_path / "dev"
    driver.mkdir()
    dev.mkdir()
    for name in ("0000:17:00.0", "0000:65:00.0"):
        (driver / name).mkdir()
    for name in ("nvidia0", "nvidia1", "nvidia2", "nvidiactl", "nvidia-uvm"):
        (dev / name).touch()
    monkeypatch.setenv("PATH", str(fake_nvidia_smi(tmp_path / "smi", "0\\n1\\n2\\n3\\n")))
    assert run_folder.visible_gpus(driver, dev) == ["0", "1", "2", "3"]
    monkeypatch.setenv("PATH", str(fake_nvidia_smi(tmp_path / "broken", "No devices were found\\n", 6)))
    assert run_folder.visible_gpus(driver, dev) == ["0", "1"]     # the driver's folder per GPU
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert run_folder.visible_gpus(driver, dev) == ["0", "1"]
    assert run_folder.visible_gpus(tmp_path / "no-driver", dev) == ["0", "1", "2"]   # the device nodes
    assert run_folder.visible_gpus(tmp_path / "no-driver", tmp_path) == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert run_folder.visible_gpus(driver, dev) == ["3", "1"]


def test_several_jobs_do_not_import_torch_to_count_gpus():
    code = ("import importlib.util, sys\nfrom grader import batch\nbatch.job_tokens(2)\n"
            "print('torch' in sys.modules, importlib.util.find_spec('torch') is not None)")
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    # torch is installed (else not importing it would prove nothing), and counting GPUs did not import it.
    assert done.stdout.split() == ["False", "True"], done.stdout + done.stderr[-2000:]
