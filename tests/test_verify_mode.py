"""`grade --verify`: the executed notebook and the model a student submitted, graded without a re-run.

The submission is real: the answer key is executed once by `grade` (tiny model, --keep-work), which
leaves the executed notebook and what its submit cell wrote (the model folder, the zip). Each layout a
student may submit in must get execute mode's verdicts; each tampering must fail the reload check; each
hostile zip or folder must be refused without a byte written outside the working folder.
"""
import copy
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from grader import GradingOptions, grade_submissions
from grader.results import VERIFY_MODE
from grader.sandbox import GB, MB, Limits
from grader.submitted import MODEL_SUFFIXES, ModelNotStaged, saved_contract, stage_model
from scenarios import EDITS, SELF_CHECKED, write_scenarios

TEST_LIMITS = Limits(memory_bytes=3 * GB, max_processes=64, max_file_bytes=256 * MB, disk_bytes=1 * GB)
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def grading_options(tiny_parameters, tiny_data_dir, output_dir, **overrides):
    settings = dict(output_dir=output_dir, hidden_set=tiny_data_dir / "test.csv", hidden_size=100, hidden_seed=7,
                    parameters=tiny_parameters, time_limit_s=300, limits=TEST_LIMITS)
    return GradingOptions(**{**settings, **overrides})


# The fixture scenarios verify mode applies to: all the answer key's edits but the time limit's
# (a notebook stopped by the grader has no saved outputs of a student's own run to verify).
VERIFY_SCENARIOS = sorted(set(EDITS) - {"infinite-loop"} - SELF_CHECKED) + ["todo-left"]


@pytest.fixture(scope="module")
def executed_scenarios(tmp_path_factory, tiny_parameters, tiny_data_dir):
    """The scenarios run by `grade` in execute mode (tiny model, --keep-work), with what each left:
    the executed notebook, its outputs folder (sentiment-model/, sentiment-model.zip) and its result."""
    root = tmp_path_factory.mktemp("executed")
    write_scenarios(root / "submissions", VERIFY_SCENARIOS)
    batch = grade_submissions(root / "submissions", grading_options(tiny_parameters, tiny_data_dir, root / "out",
                                                                    keep_work=True, jobs=2), progress=False)
    return {result.student_id: {"notebook": root / "out" / "executed" / f"{result.student_id}.ipynb",
                                "outputs": root / "out" / "work" / result.student_id / "outputs", "result": result}
            for result in batch.results}


@pytest.fixture(scope="module")
def executed(executed_scenarios):
    """The answer key as run in execute mode (the ``passes`` scenario): 100 points, and a zip."""
    passes = executed_scenarios["passes"]
    result = passes["result"]
    assert result.total == result.max_total, [c.message for c in result.checks if not c.passed]
    assert (passes["outputs"] / "sentiment-model.zip").is_file(), sorted(os.listdir(passes["outputs"]))
    return passes


def test_the_fixture_scenarios_get_execute_modes_verdicts(executed_scenarios, tiny_parameters, tiny_data_dir,
                                                          tmp_path):
    """Each scenario's executed notebook and whatever model its run left, graded without a re-run."""
    folder = tmp_path / "submissions"
    for name, run in executed_scenarios.items():
        (folder / name).mkdir(parents=True)
        shutil.copy(run["notebook"], folder / name / "project.ipynb")
        if (run["outputs"] / "sentiment-model.zip").is_file():
            shutil.copy(run["outputs"] / "sentiment-model.zip", folder / name)
    results = grade_verify(folder, tiny_parameters, tiny_data_dir, tmp_path / "out")
    assert sorted(results) == sorted(executed_scenarios) == sorted(VERIFY_SCENARIOS)
    for name, run in executed_scenarios.items():
        assert verdicts(results[name]) == verdicts(run["result"]), (
            name, [c.message for c in results[name].checks], [c.message for c in run["result"].checks])
        assert results[name].total == run["result"].total
    assert results["passes"].total == results["passes"].max_total
    assert not verdicts(results["no-save"])["reload"] and not verdicts(results["todo-left"])["no_todo_left"]


def verdicts(result) -> dict[str, bool]:
    return {check.name: check.passed for check in result.checks}


def edited_notebook(source: Path, target: Path, edit) -> Path:
    nb = nbformat.read(source, as_version=4)
    edit(nb)
    nbformat.write(nb, target)
    return target


def submission_output(nb) -> dict:
    """The submit cell's displayed JSON, which verify mode reads (and a student could edit)."""
    return next(output["data"]["application/json"] for cell in nb.cells if cell.cell_type == "code"
                for output in cell.get("outputs", []) if "application/json" in output.get("data", {}))


def grade_verify(folder: Path, tiny_parameters, tiny_data_dir, out: Path, **overrides):
    batch = grade_submissions(folder, grading_options(tiny_parameters, tiny_data_dir, out, verify_submitted=True,
                                                      jobs=2, **overrides), progress=False)
    return {result.student_id: result for result in batch.results}


def test_every_layout_gets_execute_modes_verdicts(executed, tiny_parameters, tiny_data_dir, tmp_path):
    notebook, outputs = executed["notebook"], executed["outputs"]
    folder = tmp_path / "submissions"
    (folder / "folder-student").mkdir(parents=True)
    shutil.copy(notebook, folder / "folder-student" / "project.ipynb")
    shutil.copytree(outputs / "sentiment-model", folder / "folder-student" / "sentiment-model")
    (folder / "zip-student").mkdir()
    shutil.copy(notebook, folder / "zip-student" / "project.ipynb")
    shutil.copy(outputs / "sentiment-model.zip", folder / "zip-student" / "sentiment-model.zip")
    # Canvas names both uploads lastfirst_userid_submissionid_<file>
    shutil.copy(notebook, folder / "doejane_4242_9001_MLB_Project_FineTuning.ipynb")
    shutil.copy(outputs / "sentiment-model.zip", folder / "doejane_4242_9001_sentiment-model.zip")
    shutil.copy(notebook, folder / "alice.ipynb")
    shutil.copy(outputs / "sentiment-model.zip", folder / "alice-model.zip")

    results = grade_verify(folder, tiny_parameters, tiny_data_dir, tmp_path / "out")

    expected = executed["result"]
    assert sorted(results) == ["4242", "alice", "folder-student", "zip-student"]
    for student, result in results.items():
        assert result.mode == VERIFY_MODE
        assert verdicts(result) == verdicts(expected), (student, [c.message for c in result.checks])
        assert result.total == expected.total == expected.max_total
        # the same model on the same hidden sample: the very same figures
        assert result.verification.accuracy == expected.verification.accuracy
        assert result.verification.f1 == expected.verification.f1
    feedback = (tmp_path / "out" / "feedback" / "alice.html").read_text(encoding="utf-8")
    assert "not re-run" in feedback and "alice-model.zip" in feedback


def tampered_submissions(executed, folder: Path, other_model: Path) -> None:
    notebook, outputs = executed["notebook"], executed["outputs"]

    def student(name, edit=None, model=outputs / "sentiment-model.zip"):
        (folder / name).mkdir(parents=True)
        if edit:
            edited_notebook(notebook, folder / name / "project.ipynb", edit)
        else:
            shutil.copy(notebook, folder / name / "project.ipynb")
        if model is not None:
            (shutil.copytree if model.is_dir() else shutil.copy)(model, folder / name / model.name)

    def drop_digest(nb):
        submission_output(nb)["model"].pop("weights_sha256")

    def raise_confidence(nb):
        prediction = submission_output(nb)["predictions"][0]
        prediction["confidence"] = min(1.0, prediction["confidence"] + 0.1) if prediction["confidence"] < 0.9 \
            else prediction["confidence"] - 0.1

    def flip_label(nb):
        prediction = submission_output(nb)["predictions"][0]
        prediction["label"] = "positive" if prediction["label"] == "negative" else "negative"

    def out_of_order(nb):
        code = [cell for cell in nb.cells if cell.cell_type == "code" and cell.get("execution_count")]
        code[3].execution_count = code[-1].execution_count + 1   # cell 4 run again at the end

    def never_ran_submit(nb):
        for cell in nb.cells:
            if cell.get("id") == "submit":
                cell.outputs, cell.execution_count = [], None

    student("swapped-weights", model=other_model)
    student("swapped-weights-no-digest", drop_digest, model=other_model)
    student("edited-confidence", raise_confidence)
    student("edited-label", flip_label)
    student("out-of-order", out_of_order)
    student("no-model", model=None)
    student("never-ran-submit", never_ran_submit)


@pytest.fixture(scope="module")
def other_model(executed, tmp_path_factory) -> Path:
    """A model that did not make the notebook's predictions: the same files, with the classifier's
    weights redrawn (a student swapping in another run's model)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    folder = tmp_path_factory.mktemp("other") / "sentiment-model"
    shutil.copytree(executed["outputs"] / "sentiment-model", folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    torch.manual_seed(1)
    for parameter in model.classifier.parameters():
        parameter.data.normal_(0, 0.5)
    model.save_pretrained(folder)
    archive = shutil.make_archive(str(folder.parent / "sentiment-model"), "zip", folder)
    return Path(archive)


def test_tampering_fails_the_reload_check(executed, other_model, tiny_parameters, tiny_data_dir, tmp_path):
    folder = tmp_path / "submissions"
    tampered_submissions(executed, folder, other_model)
    results = grade_verify(folder, tiny_parameters, tiny_data_dir, tmp_path / "out")
    message = {student: {c.name: c.message for c in r.checks} for student, r in results.items()}

    for student in ("swapped-weights", "swapped-weights-no-digest", "edited-confidence", "edited-label"):
        failed = {name for name, passed in verdicts(results[student]).items() if not passed}
        assert {"reload", "predictions"} <= failed, (student, message[student])
        assert failed <= {"reload", "predictions", "accuracy", "f1"}, (student, message[student])
    # the digest the submit cell recorded names the swap; without it, the predictions still give it away
    assert "sha256" in message["swapped-weights"]["reload"]
    assert "sha256" not in message["swapped-weights-no-digest"]["reload"]
    assert "does not reproduce" in message["swapped-weights-no-digest"]["reload"]
    assert "does not reproduce" in message["edited-confidence"]["reload"]

    assert {n for n, p in verdicts(results["out-of-order"]).items() if not p} == {"ran_to_end"}
    assert "out of order" in message["out-of-order"]["ran_to_end"]
    assert not verdicts(results["no-model"])["reload"] and not verdicts(results["no-model"])["accuracy"]
    assert "no model was submitted" in message["no-model"]["accuracy"]
    never = {n for n, p in verdicts(results["never-ran-submit"]).items() if not p}
    assert {"ran_to_end", "predictions", "reload"} <= never


# Hostile zips and folders -------------------------------------------------------------------------
def test_a_zip_is_taken_in_file_by_file(executed, tmp_path):
    contract = saved_contract(nbformat.read(executed["notebook"], as_version=4))
    nested = tmp_path / "nested.zip"
    with zipfile.ZipFile(executed["outputs"] / "sentiment-model.zip") as source, zipfile.ZipFile(nested, "w") as zip_:
        for info in source.infolist():   # a zipped folder, as a file browser makes it, plus stray files
            zip_.writestr(f"sentiment-model/{info.filename}", source.read(info))
        zip_.writestr("sentiment-model/notes.ipynb", "{}")
        zip_.writestr("__MACOSX/sentiment-model/._config.json", "x")
    stage_model(nested, contract, tmp_path / "staged", TEST_LIMITS)
    with zipfile.ZipFile(executed["outputs"] / "sentiment-model.zip") as source:
        names = source.namelist()
    # the model card (README.md) travels in the zip; only the model's own files are staged
    assert "README.md" in names and "results.json" in names
    assert sorted(os.listdir(tmp_path / "staged")) == sorted(name for name in names if name.endswith(MODEL_SUFFIXES))


def hostile_zip(path: Path, kind: str) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", "{}")
        if kind == "escapes":
            archive.writestr("../../escaped.json", "{}")
            archive.writestr("/tmp/absolute-escape.json", "{}")
        elif kind == "link":
            info = zipfile.ZipInfo("tokenizer.json")
            info.external_attr = (0o120777 << 16)   # a symbolic link to the grader's files
            archive.writestr(info, "/etc/passwd")
        elif kind == "bomb":
            archive.writestr("model.safetensors", b"\0" * (64 * MB))   # deflates to about 64 kB
        elif kind == "spread":   # each file under the limit of a file, together over the disk limit
            for index in range(3):
                archive.writestr(f"model-0000{index}-of-00003.safetensors", b"\0" * (12 * MB))
        elif kind == "many":
            for index in range(200):
                archive.writestr(f"shard-{index}.json", "{}")
    return path


@pytest.mark.parametrize("kind,refused", [("escapes", None), ("link", "link"), ("bomb", "bytes a file"),
                                          ("spread", "bytes in all"), ("many", "201 files")])
def test_hostile_zips_write_nothing_outside(kind, refused, tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    archive = hostile_zip(tmp_path / "a" / "b" / "model.zip", kind)
    target = tmp_path / "a" / "b" / "work" / "model"
    target.parent.mkdir()
    before = set(tmp_path.rglob("*"))
    small = Limits(max_file_bytes=16 * MB, disk_bytes=32 * MB)
    if refused:
        with pytest.raises(ModelNotStaged, match=refused):
            stage_model(archive, saved_contract(nbformat.v4.new_notebook()), target, small)
    else:
        stage_model(archive, saved_contract(nbformat.v4.new_notebook()), target, small)
        assert os.listdir(target) == ["config.json"]
    after = set(tmp_path.rglob("*"))
    assert {path for path in after - before if not path.is_relative_to(target)} == set()
    assert not Path("/tmp/absolute-escape.json").exists()


def test_the_zip_attacks_succeed_without_the_checks(tmp_path):
    """Control: written as the zip names them, the entries land outside and the link is a link."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    archive = hostile_zip(tmp_path / "a" / "b" / "model.zip", "escapes")
    target = tmp_path / "a" / "b" / "work"
    target.mkdir()
    with zipfile.ZipFile(archive) as zip_:
        for info in zip_.infolist():
            if not info.filename.startswith("/"):
                destination = target / info.filename
                destination.parent.mkdir(parents=True, exist_ok=True)
                destination.write_bytes(zip_.read(info))
    assert (tmp_path / "a" / "escaped.json").is_file()   # work/../../ is a/


def test_a_model_folder_with_links_is_refused(executed, tmp_path):
    folder = tmp_path / "sentiment-model"
    shutil.copytree(executed["outputs"] / "sentiment-model", folder)
    (folder / "tokenizer_config.json").unlink()
    (folder / "tokenizer_config.json").symlink_to("/etc/passwd")
    with pytest.raises(ModelNotStaged, match="link"):
        stage_model(folder, saved_contract(nbformat.v4.new_notebook()), tmp_path / "staged", TEST_LIMITS)


# The Hub -------------------------------------------------------------------------------------------
def hub_cache(cache: Path, repository: str, model_folder: Path) -> Path:
    """The Hugging Face cache's own layout: blobs by hash, a snapshot of links per commit, refs/main."""
    import hashlib

    repo = cache / f"models--{repository.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for path in model_folder.iterdir():
        blob = hashlib.sha256(path.read_bytes()).hexdigest()
        shutil.copy(path, repo / "blobs" / blob)
        (repo / "snapshots" / COMMIT / path.name).symlink_to(f"../../blobs/{blob}")
    return cache


def test_a_model_pinned_on_the_hub_is_graded_from_the_hub_cache(executed, tiny_parameters, tiny_data_dir, tmp_path):
    cache = hub_cache(tmp_path / "hub", "jane-doe/amazon-sentiment", executed["outputs"] / "sentiment-model")

    def on_the_hub(nb):
        model = submission_output(nb)["model"]
        model.pop("zip")
        model.update(hub="jane-doe/amazon-sentiment", revision=COMMIT)

    def branch_not_commit(nb):
        on_the_hub(nb)
        submission_output(nb)["model"]["revision"] = "main"

    folder = tmp_path / "submissions"
    for name, edit in (("hub-student", on_the_hub), ("unpinned", branch_not_commit)):
        (folder / name).mkdir(parents=True)
        edited_notebook(executed["notebook"], folder / name / "project.ipynb", edit)
    params = tmp_path / "params.json"
    params.write_text(json.dumps(tiny_parameters))
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "grader.cli", str(folder), "--verify", "-o", str(tmp_path / "out"),
                          "--hidden-set", str(tiny_data_dir / "test.csv"), "--hidden-size", "100",
                          "--hidden-seed", "7", "--params-file", str(params), "-q"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = {path.stem: json.loads(path.read_text()) for path in (tmp_path / "out" / "results").glob("*.json")}
    hub = results["hub-student"]
    assert hub["total"] == hub["max_total"], [c["message"] for c in hub["checks"] if not c["passed"]]
    assert hub["verification"]["model_source"] == f"jane-doe/amazon-sentiment@{COMMIT[:12]}"
    assert hub["verification"]["accuracy"] == executed["result"].verification.accuracy
    unpinned = {c["name"]: c["message"] for c in results["unpinned"]["checks"]}
    assert "not pinned to a commit" in unpinned["accuracy"]


def test_a_hub_model_over_the_disk_limit_is_refused_before_downloading(monkeypatch, tmp_path):
    """The Hub's own listing of the files' sizes is asked first (here answered as the Hub would, by a stand-in:
    nothing can reach the Hub from this machine); snapshot_download must never be called."""
    import huggingface_hub
    from huggingface_hub.hf_api import ModelInfo

    listing = ModelInfo(id="mallory/huge", siblings=[{"rfilename": "model.safetensors", "size": 40 * GB},
                                                    {"rfilename": "config.json", "size": 600}])
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, *args, **kwargs: listing)
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda *args, **kwargs: pytest.fail("the download started"))
    contract = saved_contract(nbformat.v4.new_notebook())
    contract.model = {"hub": "mallory/huge", "revision": COMMIT}
    with pytest.raises(ModelNotStaged, match="over the limit"):
        stage_model(None, contract, tmp_path / "staged", TEST_LIMITS)
