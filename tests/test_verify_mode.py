"""`grade --verify`: the executed notebook and the model a student submitted, graded without a re-run.

The submission is real: the answer key is executed once by `grade` (tiny model, --keep-work), which
leaves the executed notebook and what its submit cell wrote (the model folder, the zip). Each layout a
student may submit in must get execute mode's verdicts; each tampering must fail the reload check; each
hostile zip or folder must be refused without a byte written outside the working folder.
"""
import copy
import csv
import io
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
from grader.build import STUB, build_template
from grader.course import ANSWER_KEY, ANSWER_KEYS, ROOT
from grader.errors import ConfigError, UsageError
from grader.execute import MAX_ERRORS_KEPT
from grader.results import NOT_GRADABLE, VERIFY_MODE
from grader.rubric import load_rubric
from grader.sandbox import GB, MB, Limits
from grader.verify_mode import MODEL_SUFFIXES, ModelNotStaged, saved_contract, stage_model
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
    batch = grade_submissions(folder, grading_options(tiny_parameters, tiny_data_dir, out, mode="verify",
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
    stage_model(nested, contract, tmp_path / "staged", TEST_LIMITS.disk_bytes)
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


@pytest.mark.parametrize("kind,refused", [("escapes", None), ("link", "link"), ("bomb", "declares 64 MB"),
                                          ("spread", "declares 36 MB"), ("many", "201 files")])
def test_hostile_zips_write_nothing_outside(kind, refused, tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    archive = hostile_zip(tmp_path / "a" / "b" / "model.zip", kind)
    target = tmp_path / "a" / "b" / "work" / "model"
    target.parent.mkdir()
    before = set(tmp_path.rglob("*"))
    small = 32 * MB
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
        stage_model(folder, saved_contract(nbformat.v4.new_notebook()), tmp_path / "staged", TEST_LIMITS.disk_bytes)


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


def test_a_model_pinned_on_the_hub_is_graded_from_the_graders_own_cache(executed, tiny_parameters, tiny_data_dir,
                                                                         tmp_path):
    """Verify mode keeps students' Hub models in a cache of its own (the output folder's private part, which
    no sandbox sees), never in the Hugging Face cache whose models every execute-mode sandbox can read."""
    out = tmp_path / "out"
    model = executed["outputs"] / "sentiment-model"
    hub_cache(out / ".grader" / "hub", "jane-doe/amazon-sentiment", model)   # an earlier run's download
    shared = hub_cache(tmp_path / "huggingface-cache", "mallory/in-the-shared-cache", model)

    def on_the_hub(repository):
        def edit(nb):
            model = submission_output(nb)["model"]
            model.pop("zip")
            model.update(hub=repository, revision=COMMIT)
        return edit

    def branch_not_commit(nb):
        on_the_hub("jane-doe/amazon-sentiment")(nb)
        submission_output(nb)["model"]["revision"] = "main"

    folder = tmp_path / "submissions"
    for name, edit in (("hub-student", on_the_hub("jane-doe/amazon-sentiment")), ("unpinned", branch_not_commit),
                       ("shared-cache", on_the_hub("mallory/in-the-shared-cache"))):
        (folder / name).mkdir(parents=True)
        edited_notebook(executed["notebook"], folder / name / "project.ipynb", edit)
    params = tmp_path / "params.json"
    params.write_text(json.dumps(tiny_parameters))
    env = {**os.environ, "HF_HUB_CACHE": str(shared), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "grader.cli", str(folder), "--verify", "-o", str(out),
                          "--hidden-set", str(tiny_data_dir / "test.csv"), "--hidden-size", "100",
                          "--hidden-seed", "7", "--params-file", str(params), "-q"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = {path.stem: json.loads(path.read_text()) for path in (out / "results").glob("*.json")}
    hub = results["hub-student"]
    assert hub["total"] == hub["max_total"], [c["message"] for c in hub["checks"] if not c["passed"]]
    assert hub["verification"]["model_source"] == f"jane-doe/amazon-sentiment@{COMMIT[:12]}"
    assert hub["verification"]["accuracy"] == executed["result"].verification.accuracy
    unpinned = {c["name"]: c["message"] for c in results["unpinned"]["checks"]}
    assert "not pinned to a commit" in unpinned["accuracy"]
    # control: the very model, in the Hugging Face cache only, is not taken from there
    shared_student = {c["name"]: c["message"] for c in results["shared-cache"]["checks"]}
    assert "cannot be downloaded" in shared_student["reload"]


class FakeHub:
    """The Hub as verify mode's two calls reach it (nothing here can reach the real one): what each call was
    asked, and the answers, as huggingface_hub's own types."""

    def __init__(self, monkeypatch, snapshot: Path, resolves_to: str = COMMIT):
        import huggingface_hub
        from huggingface_hub.hf_api import ModelInfo

        self.calls = []

        def model_info(api, repository, revision=None, **kwargs):
            self.calls.append(("model_info", revision, kwargs))
            return ModelInfo(id=repository, sha=resolves_to, siblings=[{"rfilename": "model.safetensors", "size": 1000}])

        def snapshot_download(repository, revision=None, **kwargs):
            self.calls.append(("snapshot_download", revision, kwargs))
            return str(snapshot)

        monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)

    def called(self, name: str) -> list:
        return [call for call in self.calls if call[0] == name]


def hub_students(executed, folder: Path, repository: str) -> Path:
    def on_the_hub(nb):
        model = submission_output(nb)["model"]
        model.pop("zip")
        model.update(hub=repository, revision=COMMIT)

    (folder / "hub-student").mkdir(parents=True)
    edited_notebook(executed["notebook"], folder / "hub-student" / "project.ipynb", on_the_hub)
    return folder


def test_students_hub_models_are_downloaded_without_credentials_into_the_graders_cache(
        executed, tiny_parameters, tiny_data_dir, tmp_path, monkeypatch):
    """The instructor's token would let a student name a repository only the instructor can read."""
    cache = hub_cache(tmp_path / "downloaded", "jane-doe/amazon-sentiment", executed["outputs"] / "sentiment-model")
    hub = FakeHub(monkeypatch, cache / "models--jane-doe--amazon-sentiment" / "snapshots" / COMMIT)
    monkeypatch.setenv("HF_TOKEN", "hf_the_instructors_own_token")
    folder = hub_students(executed, tmp_path / "submissions", "jane-doe/amazon-sentiment")
    result = grade_verify(folder, tiny_parameters, tiny_data_dir, tmp_path / "out")["hub-student"]
    assert result.total == result.max_total, [c.message for c in result.checks if not c.passed]
    assert hub.called("model_info") and hub.called("snapshot_download")
    assert all(kwargs.get("token") is False for _, _, kwargs in hub.calls), hub.calls
    (_, revision, kwargs), = hub.called("snapshot_download")
    assert revision == COMMIT and Path(kwargs["cache_dir"]) == (tmp_path / "out" / ".grader" / "hub").absolute()


def test_a_branch_named_like_a_commit_is_refused_before_downloading(executed, tiny_parameters, tiny_data_dir,
                                                                   tmp_path, monkeypatch):
    """A branch (or tag) may be named with 40 hexadecimal digits, and it can move after the deadline: the Hub
    resolves the name to another commit, and nothing is downloaded."""
    cache = hub_cache(tmp_path / "downloaded", "jane-doe/amazon-sentiment", executed["outputs"] / "sentiment-model")
    hub = FakeHub(monkeypatch, cache / "models--jane-doe--amazon-sentiment" / "snapshots" / COMMIT,
                  resolves_to="f" * 40)
    folder = hub_students(executed, tmp_path / "submissions", "jane-doe/amazon-sentiment")
    result = grade_verify(folder, tiny_parameters, tiny_data_dir, tmp_path / "out")["hub-student"]
    assert "names a branch or tag" in result.check("reload").message
    assert not hub.called("snapshot_download")


def test_a_hub_model_over_the_size_limit_is_refused_before_downloading(monkeypatch, tmp_path):
    """The Hub's own listing of the files' sizes is asked first (here answered as the Hub would, by a stand-in:
    nothing can reach the Hub from this machine); snapshot_download must never be called."""
    import huggingface_hub
    from huggingface_hub.hf_api import ModelInfo

    listing = ModelInfo(id="mallory/huge", sha=COMMIT, siblings=[{"rfilename": "model.safetensors", "size": 40 * GB},
                                                                {"rfilename": "config.json", "size": 600}])
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, *args, **kwargs: listing)
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda *args, **kwargs: pytest.fail("the download started"))
    contract = saved_contract(nbformat.v4.new_notebook())
    contract.model = {"hub": "mallory/huge", "revision": COMMIT}
    with pytest.raises(ModelNotStaged, match="over the limit"):
        stage_model(None, contract, tmp_path / "staged", TEST_LIMITS.disk_bytes, hub_cache=tmp_path / "cache")


# The course's notebook ------------------------------------------------------------------------------
def submit_cell(nb):
    return next(cell for cell in nb.cells if cell.get("id") == "submit")


def never_ran_template(executed) -> nbformat.NotebookNode:
    """The issue's attack: the student template, each stub replaced by `pass`, execution counts typed in
    1..N, and the submit cell's output pasted from a real run (whose zip goes with it)."""
    nb = build_template()
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    for count, cell in enumerate(code, start=1):
        cell.source = cell.source.replace(STUB, "pass")
        cell.execution_count = count
    submit_cell(nb).outputs = copy.deepcopy(submit_cell(nbformat.read(executed["notebook"], as_version=4)).outputs)
    return nb


def one_cell_notebook(executed) -> nbformat.NotebookNode:
    """The issue's other attack: one code cell, whose only output is a pasted submission."""
    pasted = copy.deepcopy(submit_cell(nbformat.read(executed["notebook"], as_version=4)).outputs)
    cell = nbformat.v4.new_code_cell("print('my project')", execution_count=1, outputs=pasted)
    return nbformat.v4.new_notebook(cells=[cell])


def course_notebook_students(executed, folder: Path) -> None:
    notebook, model = executed["notebook"], executed["outputs"] / "sentiment-model.zip"

    def student(name, nb):
        (folder / name).mkdir(parents=True)
        nbformat.write(nb, folder / name / "project.ipynb")
        shutil.copy(model, folder / name)

    def edited(edit):
        nb = nbformat.read(notebook, as_version=4)
        edit(nb)
        return nb

    def weaker_self_check(nb):
        cell = next(c for c in nb.cells if c.get("id") == "check-accuracy")
        cell.source = cell.source.replace(">= 0.85", ">= 0.5")

    def drop_error_analysis(nb):
        nb.cells = [c for c in nb.cells if c.get("id") != "error-analysis"]

    def own_cell_and_ids(nb):   # a student's own cell at the end, every id renamed, trailing spaces
        last = max(c.execution_count for c in nb.cells if c.cell_type == "code" and c.execution_count)
        nb.cells.append(nbformat.v4.new_code_cell("print('my own look at the data')", execution_count=last + 1,
                                                  outputs=[nbformat.v4.new_output("stream", text="my own look\n")]))
        for index, cell in enumerate(nb.cells):
            cell.id = f"cell-{index}"
        next(c for c in nb.cells if "check-f1" in c.source or "Test F1 is" in c.source).source += "   \n\n"

    student("never-ran-template", never_ran_template(executed))
    student("one-cell", one_cell_notebook(executed))
    student("weaker-self-check", edited(weaker_self_check))
    student("dropped-a-given-cell", edited(drop_error_analysis))
    student("own-cell-and-ids", edited(own_cell_and_ids))


def test_only_the_course_notebook_as_run_passes_ran_to_end(executed, tiny_parameters, tiny_data_dir, tmp_path):
    """The answer key's locked cells (self-checks, the submit cell, the given cells) must all be there, in
    order, with their source and the outputs they print: a notebook that never ran, or one cell holding a
    pasted submission, or a locked cell edited or deleted, fails `ran to the end`, naming the cell."""
    folder = tmp_path / "submissions"
    course_notebook_students(executed, folder)
    results = grade_verify(folder, tiny_parameters, tiny_data_dir, tmp_path / "out")
    ran = {student: result.check("ran_to_end") for student, result in results.items()}

    assert not ran["never-ran-template"].passed
    assert "'imports'" in ran["never-ran-template"].message and "saved output is empty" in ran["never-ran-template"].message
    assert not ran["one-cell"].passed and "'install'" in ran["one-cell"].message
    assert "is missing" in ran["one-cell"].message
    assert not ran["weaker-self-check"].passed and "'check-accuracy'" in ran["weaker-self-check"].message
    assert "was edited" in ran["weaker-self-check"].message and "13. Self-checks" in ran["weaker-self-check"].message
    assert not ran["dropped-a-given-cell"].passed and "'error-analysis'" in ran["dropped-a-given-cell"].message
    # the pasted submission is read from the course's submit cell only: the one-cell notebook has none
    assert not results["one-cell"].check("predictions").passed
    # control: a student's own cell, new ids and stray whitespace change nothing
    control = results["own-cell-and-ids"]
    assert control.total == control.max_total, [c.message for c in control.checks if not c.passed]


def test_the_same_notebook_structure_holds_in_execute_mode_and_from_saved_outputs(executed, tmp_path):
    """Execute mode checks the cells' sources (the run makes the outputs); --no-execute checks both."""
    from grader.identity import notebook_problem
    from grader.saved_outputs import grade_saved_outputs
    from grader.results import GradeResult

    rubric = load_rubric()
    key = nbformat.read(ANSWER_KEY, as_version=4)
    assert notebook_problem(key, ANSWER_KEY, outputs=False)[0] is None   # the answer key is its own notebook
    assert "'install'" in notebook_problem(one_cell_notebook(executed), ANSWER_KEY, outputs=False)[0]
    template = never_ran_template(executed)
    assert notebook_problem(template, ANSWER_KEY, outputs=False)[0] is None    # every given cell is there
    assert "'imports'" in notebook_problem(template, ANSWER_KEY, outputs=True)[0]   # but none ran
    result = GradeResult("template", "template.ipynb")
    grade_saved_outputs(result, template, rubric)
    assert not result.check("ran_to_end").passed and "'imports'" in result.check("ran_to_end").message


def test_the_going_further_rubric_grades_only_the_going_further_notebook(executed, tiny_parameters, tiny_data_dir,
                                                                         tmp_path):
    folder = tmp_path / "submissions"
    (folder / "main-notebook").mkdir(parents=True)
    shutil.copy(executed["notebook"], folder / "main-notebook" / "project.ipynb")
    shutil.copy(executed["outputs"] / "sentiment-model.zip", folder / "main-notebook")
    results = grade_verify(folder, tiny_parameters, tiny_data_dir, tmp_path / "out",
                           rubric=load_rubric(ROOT / "grader" / "rubrics" / "going_further.toml"))
    main = results["main-notebook"]
    assert main.status == NOT_GRADABLE and main.total == 0
    assert "MLB_Project_FineTuning_AnswerKey" in main.reason and "MLB_Project_GoingFurther_AnswerKey" in main.reason


def test_each_kit_notebook_is_recognised_as_itself_and_not_the_other():
    from grader.identity import other_kit_notebook

    main, going_further = (nbformat.read(path, as_version=4) for path in ANSWER_KEYS)
    assert other_kit_notebook(main, ANSWER_KEYS[1], ANSWER_KEYS) == ANSWER_KEYS[0]
    assert other_kit_notebook(going_further, ANSWER_KEYS[0], ANSWER_KEYS) == ANSWER_KEYS[1]
    # controls: each is its own rubric's notebook; a hand-made notebook is neither (it fails ran_to_end instead)
    assert other_kit_notebook(main, ANSWER_KEYS[0], ANSWER_KEYS) is None
    assert other_kit_notebook(going_further, ANSWER_KEYS[1], ANSWER_KEYS) is None
    assert other_kit_notebook(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), ANSWER_KEYS[1],
                              ANSWER_KEYS) is None


def test_a_rubric_names_its_notebook(tmp_path):
    assert load_rubric().answer_key_path == ANSWER_KEYS[0]
    assert load_rubric(ROOT / "grader" / "rubrics" / "going_further.toml").answer_key_path == ANSWER_KEYS[1]
    own = tmp_path / "rubric.toml"
    own.write_text('[notebook]\nanswer_key = "no-such-notebook.ipynb"\n')
    with pytest.raises(ConfigError, match="no-such-notebook"):
        load_rubric(own)


# The course's model ---------------------------------------------------------------------------------
def resubmitted(executed, model_folder: Path, folder: Path, name: str) -> None:
    """A student who submits ``model_folder`` with the executed notebook, its submission rewritten to be
    that model's own: the predictions it makes (as the model check computes them) and its weights' sha256.
    Everything the notebook says is then true of the model; only where the model came from is not."""
    import hashlib

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from grader.course import LABELS
    from grader.model_check.inference import output_to_class, predict_probabilities

    model = AutoModelForSequenceClassification.from_pretrained(model_folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    to_class = output_to_class(model)

    def own_predictions(nb):
        submission = submission_output(nb)
        texts = [p["text"] for p in submission["predictions"]]
        rows = predict_probabilities(model, tokenizer, texts, 256)
        submission["predictions"] = [{"text": text, "label": LABELS[to_class[row.argmax()]],
                                      "confidence": float(row.max())} for text, row in zip(texts, rows)]
        submission["model"]["weights_sha256"] = {
            "model.safetensors": hashlib.sha256((model_folder / "model.safetensors").read_bytes()).hexdigest()}

    (folder / name).mkdir(parents=True)
    edited_notebook(executed["notebook"], folder / name / "project.ipynb", own_predictions)
    shutil.make_archive(str(folder / name / "sentiment-model"), "zip", model_folder)


def not_fine_tunes(tiny_model_dir: Path, root: Path) -> dict[str, Path]:
    """Models that are not fine-tunes of the course's (tiny) base model, each with its tokenizer."""
    import torch
    from transformers import (AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer,
                              DistilBertConfig, DistilBertForSequenceClassification)

    labels = {"num_labels": 2, "id2label": {0: "negative", 1: "positive"}, "label2id": {"negative": 0, "positive": 1}}
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = AutoConfig.from_pretrained(tiny_model_dir, **labels)
    torch.manual_seed(123)
    models = {
        # another architecture, twice as deep and wide
        "foreign-architecture": DistilBertForSequenceClassification(DistilBertConfig(
            vocab_size=config.vocab_size, dim=64, n_layers=4, n_heads=2, hidden_dim=128, **labels)),
        # the base's very shape, random weights: trained from scratch, it could score on easy data
        "random-of-its-shape": AutoModelForSequenceClassification.from_config(config),
        # random encoder under the base's own word embeddings
        "grafted-embeddings": AutoModelForSequenceClassification.from_config(config),
    }
    models["grafted-embeddings"].base_model.embeddings.word_embeddings.weight.data.copy_(
        AutoModel.from_pretrained(tiny_model_dir).embeddings.word_embeddings.weight.data)
    folders = {}
    for name, model in models.items():
        folders[name] = root / name
        model.save_pretrained(folders[name])
        tokenizer.save_pretrained(folders[name])
    return folders


def test_a_model_that_is_not_a_fine_tune_of_the_course_model_fails_reload(executed, tiny_model_dir, tiny_parameters,
                                                                         tiny_data_dir, tmp_path):
    folder = tmp_path / "submissions"
    for name, model in not_fine_tunes(tiny_model_dir, tmp_path / "models").items():
        resubmitted(executed, model, folder, name)
    resubmitted(executed, executed["outputs"] / "sentiment-model", folder, "honest")   # control
    results = grade_verify(folder, tiny_parameters, tiny_data_dir, tmp_path / "out")
    reload = {student: result.check("reload") for student, result in results.items()}
    for student in ("foreign-architecture", "random-of-its-shape", "grafted-embeddings"):
        assert not reload[student].passed, (student, reload[student].message)
        assert results[student].verification.reproduced, student   # its predictions are its own: only its origin fails
        assert "not a fine-tune of the course's model" in reload[student].message
    assert "model_type 'distilbert'" in reload["foreign-architecture"].message
    assert "word embeddings" in reload["random-of-its-shape"].message
    assert "other weight matrices" in reload["grafted-embeddings"].message
    honest = results["honest"]
    assert honest.total == honest.max_total, [c.message for c in honest.checks if not c.passed]
    assert honest.verification.base_model_checked and "fine-tune of the course's model" in reload["honest"].message
    similarity = honest.verification.base_similarity
    assert similarity["word_embeddings"] > 0.5 and similarity["encoder_min"] > 0.5, similarity


def test_the_base_model_check_compares_like_with_like(tiny_model_dir, saved_model_folder):
    """The base against itself (through another architecture's names) is identical; --base-model none is off."""
    from transformers import AutoTokenizer

    from grader.verify_mode import resolve_base_model
    from grader.model_check.base_model import base_model_check

    problem, similarity = base_model_check(saved_model_folder, tiny_model_dir, AutoTokenizer.from_pretrained(
        saved_model_folder), "tiny")
    assert problem is None and similarity["word_embeddings"] == pytest.approx(1.0)
    assert similarity["encoder_median"] == pytest.approx(1.0) and similarity["matrices"] > 4
    assert resolve_base_model("none") is None and resolve_base_model(str(tiny_model_dir)) == tiny_model_dir.resolve()
    with pytest.raises(UsageError, match="--base-model"):
        resolve_base_model("no-such-owner/no-such-model")


def test_a_foreign_config_names_the_settings_it_lacks(tiny_model_dir, saved_model_folder, tmp_path):
    """DistilBERT's config has ``dim`` and ``n_layers``, not BERT's ``hidden_size``: it is said to have none
    (it said "hidden_size None")."""
    from transformers import AutoTokenizer

    from grader.model_check.base_model import base_model_check

    foreign = tmp_path / "foreign"
    shutil.copytree(saved_model_folder, foreign)
    config = json.loads((foreign / "config.json").read_text())
    config.pop("hidden_size")
    (foreign / "config.json").write_text(json.dumps({**config, "model_type": "distilbert", "dim": 32}))
    problem, _ = base_model_check(foreign, tiny_model_dir, AutoTokenizer.from_pretrained(saved_model_folder), "tiny")
    hidden = json.loads((tiny_model_dir / "config.json").read_text())["hidden_size"]
    assert f"model_type 'distilbert' (the course's model has 'bert'), no hidden_size (the course's model has {hidden})" \
        in problem, problem


# Limits that hold in verify mode too ----------------------------------------------------------------
def test_a_result_stays_small_whatever_the_submission_lists(executed, tiny_parameters, tiny_data_dir, tmp_path):
    """200,000 zeros as predictions, or 25,000 predictions the model does not make: a count and the first
    few, not a line each (they wrote 16 MB and 8 MB)."""
    def zeros(nb):
        submission_output(nb)["predictions"] = [0] * 200_000

    def mismatched(nb):
        submission_output(nb)["predictions"] = [{"text": f"review {index}", "label": ("negative", "positive")[index % 2],
                                                 "confidence": 0.5} for index in range(25_000)]

    folder = tmp_path / "submissions"
    for name, edit in (("zeros", zeros), ("mismatched", mismatched)):
        (folder / name).mkdir(parents=True)
        edited_notebook(executed["notebook"], folder / name / "project.ipynb", edit)
        shutil.copy(executed["outputs"] / "sentiment-model.zip", folder / name)
    results = grade_verify(folder, tiny_parameters, tiny_data_dir, tmp_path / "out")
    for name in ("zeros", "mismatched"):
        size = (tmp_path / "out" / "results" / f"{name}.json").stat().st_size
        assert size < 50_000, (name, size)
        assert (tmp_path / "out" / "feedback" / f"{name}.html").stat().st_size < 50_000
    assert len(results["zeros"].contract_problems) <= 12 and "200,000 items" in results["zeros"].contract_problems[0]
    mismatches = results["mismatched"].verification.mismatches
    assert len(mismatches) <= 12 and "more mismatch" in mismatches[-1]
    assert not results["mismatched"].check("reload").passed


class CountedCell(nbformat.NotebookNode):
    """A cell that counts every read of its fields, to measure how much work reading a notebook takes."""

    reads = 0

    def __getitem__(self, key):
        CountedCell.reads += 1
        return super().__getitem__(key)

    def get(self, key, default=None):
        CountedCell.reads += 1
        return super().get(key, default)


def test_reading_a_notebook_of_thousands_of_failing_cells_is_linear():
    """8,000 cells with saved errors took 25 s of the grader's own time: each error was numbered by
    counting the cells before it. The work is counted here (reads of the cells' fields), not timed."""
    from grader.verify_mode import ran_in_order

    def notebook(cells: int):
        error = nbformat.v4.new_output("error", ename="ValueError", evalue="no", traceback=["no"])
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"x = {index}", execution_count=index + 1,
                                                                       outputs=[error]) for index in range(cells)])
        nb.cells = [CountedCell(cell) for cell in nb.cells]
        return nb

    reads = {}
    for cells in (1_000, 8_000):
        nb = notebook(cells)
        CountedCell.reads = 0
        ran, message, errors = ran_in_order(nb, ANSWER_KEY)
        reads[cells] = CountedCell.reads
        assert not ran and "raised ValueError" in message and len(errors) == MAX_ERRORS_KEPT
    assert reads[8_000] < 10 * reads[1_000], reads   # 8 times the cells, 8 times the work (64 times if quadratic)
    assert reads[8_000] < 100 * 8_000, reads


def name_patched_zip(source: Path, target: Path, name: bytes, utf8_flag: bool) -> Path:
    """The model zip plus one member whose stored name is ``name`` (bytes as the zip holds them), flagged
    UTF-8 (bit 11 of the general-purpose flags) when ``utf8_flag``: written with a placeholder name, then
    patched in place, in the member's local header and in the central directory."""
    import struct

    placeholder = b"p" * len(name)
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w") as archive:
        for info in original.infolist():
            archive.writestr(info, original.read(info))
        archive.writestr(placeholder.decode() + ".json", "{}")
    data = bytearray(target.read_bytes())
    found = [index for index in range(len(data)) if data.startswith(placeholder + b".json", index)]
    assert len(found) == 2   # the local header and the central directory
    for at, (signature, header, flags_at) in zip(found, ((b"PK\x03\x04", 30, 6), (b"PK\x01\x02", 46, 8))):
        start = at - header
        assert data[start:start + 4] == signature
        if utf8_flag:
            flags, = struct.unpack_from("<H", data, start + flags_at)
            struct.pack_into("<H", data, start + flags_at, flags | 0x800)
        data[at:at + len(name)] = name
    target.write_bytes(bytes(data))
    return target


def test_zip_names_the_file_system_cannot_hold_are_the_students_problem(executed, tiny_parameters, tiny_data_dir,
                                                                        tmp_path):
    """A name too long for the file system is not a model file (skipped); a name flagged UTF-8 that is not
    makes the zip unreadable: the student's result says so. Both were internal grader errors."""
    model = executed["outputs"] / "sentiment-model.zip"
    folder = tmp_path / "submissions"
    for name, member, flag in (("long-name", b"n" * 300, False), ("not-utf-8", b"caf\xe9-\xff\xfe", True)):
        (folder / name).mkdir(parents=True)
        shutil.copy(executed["notebook"], folder / name / "project.ipynb")
        name_patched_zip(model, folder / name / "sentiment-model.zip", member, flag)
    results = grade_verify(folder, tiny_parameters, tiny_data_dir, tmp_path / "out")
    assert results["long-name"].status == "graded" and results["long-name"].total == results["long-name"].max_total
    unreadable = results["not-utf-8"]
    assert unreadable.status == "graded" and "the zip cannot be read" in unreadable.check("reload").message


def test_a_zip_is_refused_by_the_sizes_it_declares_before_a_byte_is_written(tmp_path, monkeypatch):
    """Two members of 24 MB each (zeros, a few kB compressed) against a limit of 32 MB: refused from the zip's
    own directory; nothing is copied. (A zip's sizes can lie; the copy still counts every byte: below.)"""
    import grader.verify_mode as verify_mode

    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zip_:
        zip_.writestr("config.json", "{}")
        for index in range(2):
            zip_.writestr(f"model-0000{index}-of-00002.safetensors", b"\0" * (24 * MB))
    assert archive.stat().st_size < 1 * MB
    monkeypatch.setattr(verify_mode, "_copy_capped", lambda *args: pytest.fail("a byte was copied"))
    with pytest.raises(ModelNotStaged, match="declares 48 MB"):
        stage_model(archive, saved_contract(nbformat.v4.new_notebook()), tmp_path / "staged", 32 * MB)


def test_the_copy_counts_every_byte_whatever_the_zip_declares(tmp_path):
    from grader.verify_mode import _copy_capped

    with pytest.raises(ModelNotStaged, match="over the limit of 4 MB"):
        _copy_capped(io.BytesIO(b"\0" * (6 * MB)), tmp_path / "model.safetensors", [4 * MB], 4 * MB)
    assert (tmp_path / "model.safetensors").stat().st_size <= 4 * MB


def test_the_model_size_limit_fits_the_course_and_is_not_the_notebooks_disk_limit():
    from grader.cli import grading_parser, options_from_args

    default = GradingOptions()
    assert 2 * 268_000_000 < default.max_model_bytes < 8 * 268_000_000 < default.limits.disk_bytes
    args = grading_parser().parse_args(["subs", "--verify", "--max-model-size", "300M", "--disk-limit", "5G"])
    options = options_from_args(args)
    assert options.max_model_bytes == 300 * MB and options.limits.disk_bytes == 5 * GB


def test_the_gradebook_says_the_model_check_ran_sandboxed(executed, sandbox_flags, tiny_parameters, tiny_data_dir,
                                                          tmp_path):
    folder = tmp_path / "submissions"
    (folder / "zip-student").mkdir(parents=True)
    shutil.copy(executed["notebook"], folder / "zip-student" / "project.ipynb")
    shutil.copy(executed["outputs"] / "sentiment-model.zip", folder / "zip-student")
    result = grade_verify(folder, tiny_parameters, tiny_data_dir, tmp_path / "out", sandbox="require")["zip-student"]
    assert result.sandboxed
    with open(tmp_path / "out" / "gradebook.csv", newline="") as handle:
        assert [row["sandboxed"] for row in csv.DictReader(handle)] == ["True"]


# Re-derived test metrics ----------------------------------------------------------------------------
def test_the_test_metrics_are_re_measured_on_the_re_derived_test_split(executed, tiny_parameters, tiny_data_dir,
                                                                       tmp_path):
    """With --rederive, the grader rebuilds each student's test split from the data and the notebook's SEED and
    SUBSET_SIZE (the course's recipe), and only when its digest is the one the submit cell recorded; the
    model must measure there the test_metrics the notebook printed."""
    def inflated(nb):
        metrics = submission_output(nb)["test_metrics"]
        metrics["accuracy"] = min(1.0, metrics["accuracy"] + 0.1) if metrics["accuracy"] < 0.9 \
            else metrics["accuracy"] - 0.1

    def other_split(nb):   # the student's own split code gave another split: it is not compared at all
        submission_output(nb)["test_split"]["sha256"] = "0" * 64

    def older_notebook(nb):
        submission_output(nb).pop("test_split")

    folder = tmp_path / "submissions"
    for name, edit in (("honest", None), ("inflated", inflated), ("other-split", other_split),
                       ("older-notebook", older_notebook)):
        (folder / name).mkdir(parents=True)
        edited_notebook(executed["notebook"], folder / name / "project.ipynb", edit or (lambda nb: None))
        shutil.copy(executed["outputs"] / "sentiment-model.zip", folder / name)
    results = grade_verify(folder, tiny_parameters, tiny_data_dir, tmp_path / "out", rederive=True)

    honest = results["honest"]
    assert honest.total == honest.max_total, [c.message for c in honest.checks if not c.passed]
    assert honest.rederivation.startswith("re-derived: ")
    measured, printed = honest.verification.test_split_metrics, honest.reported_metrics
    assert all(abs(measured[name] - printed[name]) <= 0.01 for name in printed), (measured, printed)
    inflated_result = results["inflated"]
    assert not inflated_result.check("reload").passed
    assert "re-derived by the grader" in inflated_result.check("reload").message
    for name in ("other-split", "older-notebook"):   # not re-derived, said so, and nothing else changes
        assert results[name].total == results[name].max_total, name
        assert results[name].rederivation.startswith("not re-derived: "), results[name].rederivation
    assert "another test split" in results["other-split"].rederivation
    feedback = (tmp_path / "out" / "feedback" / "honest.html").read_text(encoding="utf-8")
    assert "re-derived" in feedback and "audit" in feedback


def test_the_graders_recipe_is_the_answer_keys(executed, tiny_parameters):
    """The split the grader rebuilds has the digest the answer key's own submit cell recorded."""
    from grader.rederive import course_test_split, split_digest

    recorded = submission_output(nbformat.read(executed["notebook"], as_version=4))["test_split"]
    texts, labels = course_test_split(tiny_parameters["LOCAL_DATA_DIR"], recorded["SUBSET_SIZE"], recorded["SEED"])
    assert len(texts) == recorded["reviews"] and split_digest(texts, labels) == recorded["sha256"]
    other_texts, other_labels = course_test_split(tiny_parameters["LOCAL_DATA_DIR"], recorded["SUBSET_SIZE"],
                                                  recorded["SEED"] + 1)
    assert split_digest(other_texts, other_labels) != recorded["sha256"]   # control: the seed matters


def test_the_verify_mode_options_go_with_verify(tmp_path):
    from grader.options import validate

    for options in (GradingOptions(rederive=True), GradingOptions(course_data=str(tmp_path))):
        with pytest.raises(UsageError, match="--verify"):
            validate(options)
    with pytest.raises(UsageError, match="train.csv"):
        validate(GradingOptions(mode="verify", rederive=True, course_data=str(tmp_path)))


def test_a_notebook_of_thousands_of_cells_is_refused_before_it_is_validated(tmp_path, monkeypatch):
    """Validating 8,000 cells takes the grader seconds of its own time outside any limit: over MAX_CELLS,
    the notebook is not gradable, and nbformat never sees it."""
    from grader.errors import NotebookInvalid
    from grader.pipeline import MAX_CELLS, read_submission

    cells = [nbformat.v4.new_code_cell(f"x = {index}") for index in range(MAX_CELLS + 1)]
    path = tmp_path / "big.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    monkeypatch.setattr(nbformat, "reads", lambda *args, **kwargs: pytest.fail("the notebook was parsed"))
    with pytest.raises(NotebookInvalid, match=f"{MAX_CELLS + 1:,} cells"):
        read_submission(path)
