"""The Gradescope autograder, tested the way Gradescope runs it.

`grade gradescope build` writes the zip; the test lays out an /autograder of its own (AUTOGRADER_ROOT): the
zip unpacked into source/, its setup.sh run once (a fresh virtualenv: torch 2.13.0 and the pinned
requirements, from pip's cache here), run_autograder copied beside it. Then, per submission, the student's
upload goes into submission/ and run_autograder writes results/results.json. Three real submissions (made
by tests/verify_submissions.py from the answer key and a tiny BERT): an honest one, a failing one (an
untrained model) and a hostile one (its zip reaches for results.json and the hidden set, and holds another
model's weights). Each results.json must follow Gradescope's documented format, and its scores must be
`grade --verify`'s on the same upload, hidden set and seed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from grader import gradescope
from grader.gradescope import VISIBILITIES, BundleConfig, container_cpus, gradescope_results, pinned_requirements
from grader.results import GradeResult, Verification
from grader.rubric import CHECKS, CheckResult, load_rubric

HIDDEN_SIZE, SEED = 100, 7
TOP_LEVEL = {"score": (int, float), "execution_time": (int, float), "output": str, "visibility": str,
             "stdout_visibility": str, "extra_data": dict, "tests": list, "leaderboard": list, "output_format": str}
PER_TEST = {"score": (int, float), "max_score": (int, float), "name": str, "number": str, "output": str,
            "tags": list, "visibility": str, "extra_data": dict, "status": str, "name_format": str,
            "output_format": str}


def gradescope_problems(results: dict) -> list[str]:
    """What in ``results`` departs from Gradescope's documented results.json (its specs page): the fields and
    their types, a known visibility, a score at the top or on every test, and a test's score within its max."""
    problems = [f"unknown field {key!r}" for key in results if key not in TOP_LEVEL]
    problems += [f"{key} is not {kind}" for key, kind in TOP_LEVEL.items() if key in results
                 and not isinstance(results[key], kind)]
    for key in ("visibility", "stdout_visibility"):
        if key in results and results[key] not in VISIBILITIES:
            problems.append(f"{key} {results[key]!r} is not one of {VISIBILITIES}")
    tests = results.get("tests", [])
    if "score" not in results and not (tests and all("score" in test for test in tests)):
        problems.append("no score: neither at the top nor on every test")
    for index, test in enumerate(tests if isinstance(tests, list) else []):
        problems += [f"test {index}: unknown field {key!r}" for key in test if key not in PER_TEST]
        problems += [f"test {index}: {key} is not {kind}" for key, kind in PER_TEST.items() if key in test
                     and not isinstance(test[key], kind)]
        if test.get("visibility", "visible") not in VISIBILITIES:
            problems.append(f"test {index}: visibility {test['visibility']!r}")
        if isinstance(test.get("score"), (int, float)) and isinstance(test.get("max_score"), (int, float)) \
                and not 0 <= test["score"] <= test["max_score"]:
            problems.append(f"test {index}: score {test['score']} outside 0..{test['max_score']}")
    return problems


def test_the_format_check_sees_a_wrong_results_file():
    """Negative control: the check above finds what Gradescope would refuse."""
    wrong = {"score": "100", "visibility": "public", "tests": [{"name": 1, "score": 30, "max_score": 20, "colour": 1}]}
    problems = gradescope_problems(wrong)
    assert {"score is not (<class 'int'>, <class 'float'>)", "test 0: unknown field 'colour'",
            "test 0: score 30 outside 0..20"} <= set(problems)
    assert any("visibility 'public'" in problem for problem in problems)
    assert gradescope_problems({"tests": [{"name": "a"}]}) == ["no score: neither at the top nor on every test"]


# --- results.json from a result, without Gradescope -------------------------------------------------
def a_result(accuracy=0.912, f1=0.903) -> GradeResult:
    rubric = load_rubric()
    checks = [CheckResult(name, True, rubric.points[name], rubric.points[name], f"{name} fine") for name in CHECKS]
    checks[2] = CheckResult("accuracy", True, 20, 20, f"hidden-set accuracy {accuracy:.3f} (95% CI 0.871-0.943) >= 0.85")
    checks[3] = CheckResult("f1", False, 0, 20, f"hidden-set f1 {f1:.3f} (95% CI 0.801-0.880) < 0.85")
    return GradeResult(student_id="s", notebook="n.ipynb", mode="verify", checks=checks,
                       verification=Verification(loaded=True, hidden_size=500, accuracy=accuracy, f1=f1,
                                                 accuracy_ci=(0.871, 0.943), f1_ci=(0.801, 0.880)),
                       disagreement=[f"the notebook reports test accuracy 0.990, the saved model measures {accuracy:.3f}"])


def student_visible_text(results: dict) -> str:
    """What a student can read: the top-level output and the visible tests (stdout is hidden)."""
    tests = [test for test in results["tests"] if test.get("visibility", "visible") == "visible"]
    return json.dumps([results.get("output", ""), [(t["name"], t.get("output", "")) for t in tests]])


def test_pass_fail_shows_no_hidden_set_figure():
    rubric = load_rubric()
    hidden = gradescope_results(a_result(), rubric, "pass-fail")
    assert not gradescope_problems(hidden)
    text = student_visible_text(hidden) + json.dumps(hidden.get("extra_data"))
    for figure in ("0.912", "0.903", "0.871", "0.943", "0.801", "0.880"):
        assert figure not in text, figure
    tests = {test["name"]: test for test in hidden["tests"]}
    assert "meets the threshold of 0.85" in tests["Accuracy on the hidden set"]["output"]
    assert "is below the threshold of 0.85" in tests["F1 on the hidden set"]["output"]
    assert hidden["score"] == sum(test["score"] for test in hidden["tests"]) == 80


@pytest.mark.parametrize("mode", ["visible", "after_due_date", "after_published"])
def test_the_figures_are_shown_as_the_instructor_chose(mode):
    shown = gradescope_results(a_result(), load_rubric(), mode)
    assert not gradescope_problems(shown)
    tests = {test["name"]: test for test in shown["tests"]}
    accuracy = tests["Accuracy on the hidden set"]
    assert "0.912" in accuracy["output"] and "reports test accuracy 0.990" in accuracy["output"]
    assert accuracy["visibility"] == tests["F1 on the hidden set"]["visibility"] == mode
    assert {test["visibility"] for name, test in tests.items() if "hidden set" not in name} == {"visible"}


def test_a_submission_that_is_not_graded_gets_every_test_at_zero():
    result = GradeResult(student_id="s", notebook="", status="not gradable", reason="no notebook (.ipynb)")
    answer = gradescope_results(result, load_rubric(), "pass-fail")
    assert not gradescope_problems(answer)
    assert answer["score"] == 0 and len(answer["tests"]) == len(CHECKS)
    assert all(test["output"] == "not graded: no notebook (.ipynb)" for test in answer["tests"])


def test_the_requirements_are_pinned_to_what_is_installed_and_closed():
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = dict(line.split("==") for line in pinned_requirements())
    assert {"torch", "transformers", "safetensors", "nbformat", "numpy"} <= set(pins)
    for name, version in pins.items():
        distribution = metadata.distribution(name)
        assert distribution.version.split("+")[0] == version
        for text in distribution.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                assert canonicalize_name(requirement.name) in pins, (name, text)


def test_the_model_check_stays_under_the_containers_memory(tmp_path):
    """Over its memory, Gradescope kills the container and no results.json is left: the check's own limit must
    lie under the container's, so that the watchdog stops it first and the result says why."""
    config = BundleConfig(memory_bytes=3 * 2**30)
    (tmp_path / "memory.max").write_text("805306368\n")                  # Gradescope's default, 768 MB
    container = gradescope.container_memory([tmp_path / "missing", tmp_path / "memory.max"])
    assert container == 768 * 2**20
    assert gradescope.check_limits(config, container).memory_bytes <= container - 300 * 2**20
    (tmp_path / "memory.max").write_text("max\n")
    assert gradescope.container_memory([tmp_path / "memory.max"]) is None
    assert gradescope.check_limits(config, None).memory_bytes == 3 * 2**30
    assert gradescope.check_limits(config, 8 * 2**30).memory_bytes == 3 * 2**30
    # too small for the course's model: the student reads that it is the autograder's setting
    note = gradescope.memory_note(gradescope.check_limits(config, container))
    assert "not your model" in note and "at least 2 GB" in note
    assert "not your model" in gradescope_results(a_result(), load_rubric(), notes=[note])["output"]
    assert gradescope.memory_note(gradescope.check_limits(config, 8 * 2**30)) == ""


def test_run_writes_a_results_file_even_when_the_autograder_breaks(tmp_path):
    """Gradescope shows "The autograder failed to execute correctly" and nothing else when results.json is
    missing; a broken zip (here its config) must still give the student a result that says what happened."""
    (tmp_path / "source").mkdir()
    (tmp_path / "source" / "config.json").write_text("{ broken")
    gradescope.run(tmp_path)
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert not gradescope_problems(results)
    assert results["score"] == 0 and "The autograder failed: JSONDecodeError" in results["output"]


@pytest.mark.parametrize("cpu_max,expected", [("50000 100000\n", 1), ("200000 100000\n", 2), ("150000 100000", 2)])
def test_the_checks_threads_follow_the_containers_cpu_quota(tmp_path, cpu_max, expected):
    (tmp_path / "cpu.max").write_text(cpu_max)
    assert container_cpus(tmp_path / "cpu.max") == expected
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert container_cpus(tmp_path / "cpu.max") == len(os.sched_getaffinity(0))


# --- the zip, set up and run as Gradescope does ----------------------------------------------------------
def build(tmp_path: Path, tiny_data_dir: Path, figures: str, base_model: Path) -> Path:
    target = tmp_path / f"autograder-{figures}.zip"
    done = subprocess.run([sys.executable, "-m", "grader.cli", "gradescope", "build", "-o", str(target),
                           "--hidden-set", str(tiny_data_dir / "test.csv"), "--hidden-size", str(HIDDEN_SIZE),
                           "--hidden-seed", str(SEED), "--hidden-figures", figures, "--time-limit", "300",
                           "--base-model", str(base_model)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "keep it private" in done.stdout
    return target


def unpack(bundle: Path, root: Path) -> None:
    """What Gradescope does with the zip: its files into /autograder/source, run_autograder beside it."""
    shutil.rmtree(root / "source", ignore_errors=True)
    with zipfile.ZipFile(bundle) as archive:
        archive.extractall(root / "source")
        for info in archive.infolist():   # extractall drops the modes; Gradescope keeps them
            os.chmod(root / "source" / info.filename, (info.external_attr >> 16) & 0o777 or 0o644)
    shutil.copy(root / "source" / "run_autograder", root / "run_autograder")


@pytest.fixture(scope="module")
def autograder(tmp_path_factory, tiny_data_dir, saved_model_folder):
    """An /autograder built from the zip: setup.sh run once, into a virtualenv of its own."""
    work = tmp_path_factory.mktemp("gradescope")
    root = work / "autograder"
    root.mkdir()
    # the command writes the zip the run uses; the pass-fail one differs only in its config (and costs a start less)
    # the course's base model is the tiny BERT the students fine-tune: carried in the zip
    bundles = {"visible": build(work, tiny_data_dir, "visible", saved_model_folder),
               "pass-fail": gradescope.build_bundle(work / "autograder-pass-fail.zip", tiny_data_dir / "test.csv",
                                                    BundleConfig(hidden_figures="pass-fail", hidden_size=HIDDEN_SIZE,
                                                                 hidden_seed=SEED, verify_time_limit_s=300),
                                                    base_model_folder=saved_model_folder)}
    unpack(bundles["visible"], root)
    with zipfile.ZipFile(bundles["visible"]) as archive:
        names = set(archive.namelist())
    assert {"setup.sh", "run_autograder", "requirements.txt", "rubric.toml", "hidden-set.json", "config.json",
            "kit/grader/gradescope.py", "kit/answer_key/MLB_Project_FineTuning_AnswerKey.ipynb",
            "base-model/config.json", "base-model/model.safetensors"} <= names
    environment = {**os.environ, "AUTOGRADER_ROOT": str(root)}
    environment.pop("VIRTUAL_ENV", None)
    started = time.monotonic()
    setup = subprocess.run(["bash", str(root / "source" / "setup.sh")], cwd=root / "source", env=environment,
                           capture_output=True, text=True, timeout=900)
    assert setup.returncode == 0, setup.stdout[-2000:] + setup.stderr[-4000:]
    print(f"setup.sh: {time.monotonic() - started:.0f} s")
    assert (root / "venv" / "bin" / "python").is_file()
    return {"root": root, "bundles": bundles, "env": environment}


@pytest.fixture(scope="module")
def uploads(tmp_path_factory, saved_model_folder, tiny_data_dir):
    """The three students' uploads, each a folder as Gradescope puts it in /autograder/submission."""
    from verify_submissions import trained_copy, write_submission

    work = tmp_path_factory.mktemp("uploads")
    trained = trained_copy(saved_model_folder, tiny_data_dir, work / "trained")
    test_csv = tiny_data_dir / "test.csv"
    write_submission(work / "honest", trained, test_csv)
    write_submission(work / "failing", saved_model_folder, test_csv)
    # hostile: the notebook of the trained run, a zip of the untrained model's weights (a swap), and entries
    # that climb out of the staging folder towards results.json and the hidden set, and a link
    hostile = write_submission(work / "hostile", trained, test_csv, zipped_model=saved_model_folder)
    with zipfile.ZipFile(hostile / "sentiment-model.zip", "a") as archive:
        archive.writestr("../../results/results.json", json.dumps({"score": 100, "tests": []}))
        archive.writestr("../../source/hidden-set.json", "[]")
        link = zipfile.ZipInfo("vocab.txt")
        link.external_attr = 0o120777 << 16
        archive.writestr(link, "/autograder/source/hidden-set.json")
    (hostile / "hidden.ipynb").symlink_to("/autograder/source/hidden-set.json")   # older than project.ipynb
    os.utime(hostile / "hidden.ipynb", (1, 1), follow_symlinks=False)
    return {name: work / name for name in ("honest", "failing", "hostile")}


def run_autograder(autograder: dict, upload: Path | None) -> tuple[dict, str]:
    root = autograder["root"]
    for folder in ("submission", "results", "grading"):
        shutil.rmtree(root / folder, ignore_errors=True)
    if upload is None:
        (root / "submission").mkdir()
    else:
        shutil.copytree(upload, root / "submission", symlinks=True)
    (root / "results").mkdir()
    (root / "submission_metadata.json").write_text(json.dumps({"users": [{"id": 4242, "name": "Jane Doe"}]}))
    done = subprocess.run([str(root / "run_autograder")], cwd=root, env=autograder["env"], capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((root / "results" / "results.json").read_text()), done.stdout


@pytest.fixture(scope="module")
def verify_mode(uploads, tmp_path_factory, tiny_data_dir, saved_model_folder):
    """`grade --verify` on the same uploads, hidden set, size and seed: the scores Gradescope must match."""
    folder = tmp_path_factory.mktemp("verify") / "submissions"
    for name, upload in uploads.items():
        shutil.copytree(upload, folder / name, symlinks=True)
    out = folder.parent / "out"
    done = subprocess.run([sys.executable, "-m", "grader.cli", str(folder), "--verify", "-o", str(out), "-q",
                           "--hidden-set", str(tiny_data_dir / "test.csv"), "--hidden-size", str(HIDDEN_SIZE),
                           "--hidden-seed", str(SEED), "-j", "2", "--base-model", str(saved_model_folder)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return {name: json.loads((out / "results" / f"{name}.json").read_text()) for name in uploads}


def test_the_three_submissions_get_grade_verifys_scores(autograder, uploads, verify_mode):
    hidden_set = autograder["root"] / "source" / "hidden-set.json"
    digest = hashlib.sha256(hidden_set.read_bytes()).hexdigest()
    for name, upload in uploads.items():
        results, log = run_autograder(autograder, upload)
        assert not gradescope_problems(results), (name, gradescope_problems(results))
        expected = verify_mode[name]
        checks = {check["name"]: check for check in expected["checks"]}
        assert results["score"] == expected["total"] == sum(test["score"] for test in results["tests"]), name
        for test, check_name in zip(results["tests"], CHECKS):
            assert test["score"] == checks[check_name]["points"], (name, check_name)
            # visible figures: the very message grade --verify wrote (same sample, same order, same intervals)
            assert test["output"].splitlines()[0] == checks[check_name]["message"], (name, check_name)
        assert results["execution_time"] >= 0 and "Jane Doe" in log
    assert verify_mode["honest"]["total"] == verify_mode["honest"]["max_total"]
    failing = {check["name"] for check in verify_mode["failing"]["checks"] if not check["passed"]}
    assert {"accuracy", "f1"} <= failing and "reload" not in failing   # untrained: it reloads, and fails
    hostile = {check["name"]: check for check in verify_mode["hostile"]["checks"]}
    assert not hostile["reload"]["passed"] and "link" in hostile["reload"]["message"]
    # the hostile zip wrote nothing where it aimed: the results are the grader's, the hidden set is whole
    assert hashlib.sha256(hidden_set.read_bytes()).hexdigest() == digest
    assert not (autograder["root"] / "grading" / "results" / "results.json").exists()


def test_pass_fail_keeps_the_figures_from_students(autograder, uploads, verify_mode):
    unpack(autograder["bundles"]["pass-fail"], autograder["root"])   # the same image, the other zip's settings
    try:
        for name in ("failing",):   # the figures of a passing one: test_pass_fail_shows_no_hidden_set_figure
            results, log = run_autograder(autograder, uploads[name])
            assert not gradescope_problems(results)
            assert results["score"] == verify_mode[name]["total"]
            measured = verify_mode[name]["verification"]
            text = student_visible_text(results) + json.dumps(results.get("extra_data"))
            for value in (measured["accuracy"], measured["f1"], *measured["accuracy_ci"], *measured["f1_ci"]):
                assert f"{value:.3f}" not in text, (name, value)
            assert f"{measured['accuracy']:.3f}" in log   # the instructor's log (stdout, hidden) keeps them
    finally:
        unpack(autograder["bundles"]["visible"], autograder["root"])


def test_an_upload_without_a_notebook_and_a_broken_autograder_still_write_results(autograder):
    results, _ = run_autograder(autograder, None)
    assert not gradescope_problems(results)
    assert results["score"] == 0 and "no notebook (.ipynb)" in results["tests"][0]["output"]
    config = autograder["root"] / "source" / "config.json"
    saved = config.read_text()
    config.write_text("{ broken")
    try:
        results, log = run_autograder(autograder, None)
    finally:
        config.write_text(saved)
    assert not gradescope_problems(results)
    assert results["score"] == 0 and "The autograder failed: JSONDecodeError" in results["output"]
    assert "Traceback" in log


def test_bundle_config_round_trips():
    config = BundleConfig(hidden_figures="visible", hidden_size=3, hidden_seed=9)
    assert gradescope.BundleConfig(**json.loads(json.dumps(config.__dict__))) == config


def test_setup_fetches_the_course_base_model_into_the_image_once(tmp_path, monkeypatch, saved_model_folder):
    """setup.sh's fetch-base-model step copies the base model's files (not links into a cache) into
    source/base-model, and from then on the model check is given that folder; 'none' turns the check off."""
    source = tmp_path / "source"
    source.mkdir()
    shutil.copyfile(gradescope.DEFAULT_RUBRIC, source / gradescope.RUBRIC_FILE)
    monkeypatch.setenv(gradescope.ROOT_VARIABLE, str(tmp_path))

    def configure(base_model: str) -> BundleConfig:
        config = BundleConfig(hidden_seed=SEED, base_model=base_model)
        (source / gradescope.CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(config)), encoding="utf-8")
        return config

    rubric_base = load_rubric(gradescope.DEFAULT_RUBRIC).base_model
    assert gradescope.base_model_name(configure(""), source) == rubric_base
    assert gradescope.base_model_name(configure("none"), source) == "none"

    config = configure(str(saved_model_folder))   # a folder stands in for the Hub id setup.sh would download
    assert gradescope.fetch_base_model() == 0
    fetched = source / gradescope.BASE_MODEL_DIR
    assert (fetched / "config.json").is_file() and not (fetched / "config.json").is_symlink()
    assert (fetched / "model.safetensors").read_bytes() == (saved_model_folder / "model.safetensors").read_bytes()
    assert gradescope.base_model_name(config, source) == str(fetched)
