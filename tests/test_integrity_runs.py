"""The class review and the spot audits on real submissions: the answer key run by `grade` (tiny BERT), then
handed in, copied, disguised and forged as students would, and graded by `grade --verify` (--audit).

The tiny model labels the fixtures' synthetic reviews perfectly whatever its seed, so two honest runs would
agree on every one of them. The class is measured instead on a hidden set half of whose reviews carry praise
and complaint words at once: there two seeds disagree (measured: 76 % agreement on such reviews alone), while
a copy with noise added to its weights does not. The thresholds' real evidence is
benchmarks/integrity_agreement.py's, on real reviews (docs/integrity.md).
"""
import csv
import json
import random
import shutil
import zipfile
from pathlib import Path

import nbformat
import pytest

from grader import GradingOptions, grade_submissions
from grader.audit import AUDIT_SEED_FILE, AUDIT_STATE, draw_sample
from grader.integrity import (IDENTICAL_NOTEBOOK, IDENTICAL_WEIGHTS, NEAR_IDENTICAL_PREDICTIONS,
                              SAME_HUB_REPOSITORY)
from grader.sandbox import GB, MB, Limits

TEST_LIMITS = Limits(memory_bytes=3 * GB, max_processes=64, max_file_bytes=256 * MB, disk_bytes=1 * GB)
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def mixed_hidden_set(path: Path, count: int = 100) -> Path:
    """Reviews half clean (the fixtures' own), half mixed: cue words of both labels, the label the first's."""
    from conftest import NEGATIVE, NEUTRAL, POSITIVE, make_review

    rng = random.Random(9)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["label", "title", "content"])
        writer.writeheader()
        for index in range(count):
            label = index % 2
            if index % 4 < 2:
                writer.writerow(make_review(rng, label))
                continue
            ours, theirs = (POSITIVE, NEGATIVE) if label else (NEGATIVE, POSITIVE)
            words = rng.choices(NEUTRAL, k=rng.randint(4, 10)) + rng.choices(ours, k=rng.randint(1, 2)) \
                + rng.choices(theirs, k=rng.randint(1, 2))
            rng.shuffle(words)
            writer.writerow({"label": label, "title": "", "content": " ".join(words)})
    return path


def options(tiny_parameters, tiny_data_dir, out, **overrides):
    settings = dict(output_dir=out, hidden_set=tiny_data_dir / "test.csv", hidden_size=100, hidden_seed=7,
                    parameters=tiny_parameters, time_limit_s=300, limits=TEST_LIMITS, jobs=2)
    return GradingOptions(**{**settings, **overrides})


def with_seed(nb, seed: int):
    cell = next(c for c in nb.cells if c.get("id") == "parameters")
    cell.source = cell.source.replace("SEED = 42", f"SEED = {seed}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_parameters, tiny_data_dir):
    """The answer key run by `grade` with its own seed and with SEED = 3: each run's executed notebook and zip."""
    from grader.course import ANSWER_KEY

    root = tmp_path_factory.mktemp("runs")
    (root / "submissions").mkdir()
    for name, seed in (("seed42", 42), ("seed3", 3)):
        nb = nbformat.read(ANSWER_KEY, as_version=4)
        with_seed(nb, seed)
        nbformat.write(nb, root / "submissions" / f"{name}.ipynb")
    batch = grade_submissions(root / "submissions", options(tiny_parameters, tiny_data_dir, root / "out",
                                                            keep_work=True), progress=False)
    found = {}
    for result in batch.results:
        assert result.total == result.max_total, [c.message for c in result.checks if not c.passed]
        found[result.student_id] = {"notebook": root / "out" / "executed" / f"{result.student_id}.ipynb",
                                    "zip": root / "out" / "work" / result.student_id / "outputs" / "sentiment-model.zip"}
    return found


def hand_in(folder: Path, name: str, notebook: Path, model: Path | None, edit=None) -> None:
    (folder / name).mkdir(parents=True)
    if edit is None:
        shutil.copy(notebook, folder / name / "project.ipynb")
    else:
        nb = nbformat.read(notebook, as_version=4)
        edit(nb)
        nbformat.write(nb, folder / name / "project.ipynb")
    if model is not None:
        shutil.copy(model, folder / name / model.name)


def submission_output(nb) -> dict:
    return next(output["data"]["application/json"] for cell in nb.cells if cell.cell_type == "code"
                for output in cell.get("outputs", []) if "application/json" in output.get("data", {}))


def noisy_copy(zip_path: Path, target: Path, relative: float = 0.01) -> Path:
    """The zip's model with Gaussian noise of ``relative`` times each tensor's spread added to every weight:
    other bytes (another sha256), nearly the same function."""
    import torch
    from safetensors.torch import load_file, save_file

    folder = target.parent / "noisy"
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(folder)
    weights = load_file(folder / "model.safetensors")
    generator = torch.Generator().manual_seed(5)
    for name, tensor in weights.items():
        if tensor.is_floating_point() and tensor.numel() > 1:
            weights[name] = tensor + torch.randn(tensor.shape, generator=generator) * relative * tensor.float().std()
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return Path(shutil.make_archive(str(target.with_suffix("")), "zip", folder))


def flags_by_kind(out: Path) -> dict[str, list[list[str]]]:
    found: dict[str, list[list[str]]] = {}
    for flag in json.loads((out / "integrity.json").read_text())["flags"]:
        found.setdefault(flag["kind"], []).append(flag["students"])
    return found


def test_copies_are_flagged_in_the_review_and_the_gradebook_and_honest_work_is_not(runs, tiny_parameters,
                                                                                   tiny_data_dir, tmp_path):
    folder, out = tmp_path / "submissions", tmp_path / "out"
    alice, carol = runs["seed42"], runs["seed3"]

    def annotated(text):
        def edit(nb):
            nb.cells.append(nbformat.v4.new_markdown_cell(text))   # a cell of one's own: another source
        return edit

    def on_the_hub(text):
        def edit(nb):
            annotated(text)(nb)
            model = submission_output(nb)["model"]
            model.pop("zip")
            model.update(hub="Jane-Doe/amazon-sentiment", revision=COMMIT)
        return edit

    hand_in(folder, "alice", alice["notebook"], alice["zip"])
    hand_in(folder, "bob", alice["notebook"], alice["zip"])                   # alice's files, as they are
    hand_in(folder, "carol", carol["notebook"], carol["zip"])                 # honest: her own run
    hand_in(folder, "mallory", alice["notebook"], noisy_copy(alice["zip"], tmp_path / "noisy" / "sentiment-model.zip"),
            annotated("My own notes."))                                       # alice's model, disguised
    hand_in(folder, "dan", alice["notebook"], None, on_the_hub("Dan's notes."))
    hand_in(folder, "erin", alice["notebook"], None, on_the_hub("Erin's notes."))
    hidden = mixed_hidden_set(tmp_path / "mixed.csv")
    batch = grade_submissions(folder, options(tiny_parameters, tiny_data_dir, out, mode="verify",
                                              hidden_set=hidden), progress=False)

    results = {r.student_id: r for r in batch.results}
    assert results["alice"].total == results["bob"].total and results["alice"].verification.loaded
    assert results["mallory"].provenance.weights_sha256 != results["alice"].provenance.weights_sha256
    flags = flags_by_kind(out)
    assert flags[IDENTICAL_WEIGHTS] == [["alice", "bob"]]
    assert flags[IDENTICAL_NOTEBOOK] == [["alice", "bob"]]
    assert flags[SAME_HUB_REPOSITORY] == [["dan", "erin"]]   # neither could be downloaded here: named is enough
    assert sorted(flags[NEAR_IDENTICAL_PREDICTIONS]) == [["alice", "mallory"], ["bob", "mallory"]]
    # carol trained her own model from another seed: not flagged at all (the negative control)
    assert all("carol" not in students for found in flags.values() for students in found)
    agreement = sum(a == b for a, b in zip(results["alice"].verification.hidden_predictions,
                                           results["carol"].verification.hidden_predictions)) / 100
    assert agreement < 0.95, agreement   # the two honest models do disagree on this hidden set
    assert results["carol"].provenance.seed == 3 and results["alice"].provenance.seed == 42

    rows = {row["student_id"]: row["flags"] for row in csv.DictReader(open(out / "gradebook.csv"))}
    assert "identical-weights with bob" in rows["alice"] and "near-identical-predictions with mallory" in rows["alice"]
    assert rows["dan"] == "same-hub-repository with erin"
    for name in ("alice", "bob", "mallory"):   # the feedback a student reads names no classmate
        page = (out / "feedback" / f"{name}.html").read_text()
        assert not any(other in page for other in ("alice", "bob", "mallory", "carol") if other != name)
    page = (out / "integrity.html").read_text()
    assert "id='mallory'" in page and "near-identical-predictions" in page


def forged(nb) -> None:
    """A notebook that does not train the model handed in beside it: the learning rate made a millionth,
    after the run whose outputs (and model) it keeps. Its saved outputs and the model still agree."""
    cell = next(c for c in nb.cells if c.get("id") == "training-args")
    assert "learning_rate=LEARNING_RATE," in cell.source
    cell.source = cell.source.replace("learning_rate=LEARNING_RATE,", "learning_rate=LEARNING_RATE * 1e-6,")


def test_a_spot_audit_reruns_the_sample_and_flags_a_notebook_that_did_not_make_its_model(
        runs, tiny_parameters, tiny_data_dir, tmp_path):
    folder, out = tmp_path / "submissions", tmp_path / "out"
    hand_in(folder, "alice", runs["seed42"]["notebook"], runs["seed42"]["zip"])
    hand_in(folder, "frank", runs["seed3"]["notebook"], runs["seed3"]["zip"], forged)
    settings = options(tiny_parameters, tiny_data_dir, out, mode="verify")

    plain = grade_submissions(folder, settings, progress=False)   # control: verify mode alone cannot tell
    assert all(r.total == r.max_total for r in plain.results), [(r.student_id, r.total) for r in plain.results]
    assert "audit-disagrees" not in (out / "integrity.json").read_text()

    batch = grade_submissions(folder, options(tiny_parameters, tiny_data_dir, out, mode="verify", audit=2,
                                              audit_seed=11), progress=False)
    assert sorted(batch.resumed) == ["alice", "frank"]   # the verify results stand; only the audit ran
    state = json.loads((out / ".grader" / AUDIT_STATE).read_text())
    assert state["seed"] == 11 and sorted(state["sample"]) == ["alice", "frank"]
    assert (out / ".grader" / AUDIT_SEED_FILE).read_text() == "11"
    assert state["results"]["alice"]["verdict"] == "agrees", state["results"]["alice"]
    frank = state["results"]["frank"]
    assert frank["verdict"] == "disagrees" and "hidden accuracy" in frank["message"], frank
    assert frank["evidence"]["hidden_accuracy"]["rerun"] < frank["evidence"]["hidden_accuracy"]["submitted"] - 0.2

    review = json.loads((out / "integrity.json").read_text())
    audited = [(f["kind"], f["students"]) for f in review["flags"] if f["kind"] == "audit-disagrees"]
    assert audited == [("audit-disagrees", ["frank"])]
    assert review["audit"]["seed"] == 11 and sorted(review["audit"]["results"]) == ["alice", "frank"]
    rows = {row["student_id"]: row for row in csv.DictReader(open(out / "gradebook.csv"))}
    assert "audit-disagrees" in rows["frank"]["flags"] and "audit-disagrees" not in rows["alice"]["flags"]
    assert rows["frank"]["total"] == rows["alice"]["total"]   # a flag changes no points
    assert (out / ".grader" / "audit" / "executed" / "frank.ipynb").is_file()

    # a later run without --audit keeps the audit on record; a repeated audit re-runs nobody
    again = grade_submissions(folder, settings, progress=False)
    assert again.audit is None and "audit-disagrees" in (out / "integrity.json").read_text()
    repeat = grade_submissions(folder, options(tiny_parameters, tiny_data_dir, out, mode="verify", audit=2),
                               progress=False)
    assert repeat.audit["seed"] == 11 and repeat.audit["results"]["frank"]["verdict"] == "disagrees"


def test_the_sample_is_seeded_stable_and_grows_with_n():
    from grader.results import GradeResult, Verification

    def graded(name):
        return GradeResult(name, f"{name}.ipynb", mode="verify", verification=Verification(loaded=True, accuracy=0.9))

    results = [graded(f"s{index:03d}") for index in range(300)]
    five, ten = draw_sample(results, 5, seed=1), draw_sample(results, 10, seed=1)
    assert ten[:5] == five and len(set(ten)) == 10
    assert draw_sample(results, 5, seed=2) != five   # another seed, another sample
    assert draw_sample(results[:150] + results[151:], 5, seed=1) == [s for s in ten if s != "s150"][:5]
    unmeasured = GradeResult("x", "x.ipynb", mode="verify", verification=Verification(problem="no model"))
    assert draw_sample([unmeasured], 5, seed=1) == []   # nothing to compare a re-run with


def test_an_audit_compares_figures_and_a_grader_failure_is_no_disagreement(tmp_path):
    from grader.audit import AUDIT_METRIC_BAND, finding
    from grader.results import GRADER_ERROR, GradeResult, Verification
    from grader.rubric import CheckResult
    from grader.submissions import Submission

    def graded(accuracy, labels, status="graded"):
        return GradeResult("frank", "frank.ipynb", status=status, mode="verify",
                           checks=[CheckResult("ran_to_end", True, 10, 10, "")],
                           reported_metrics={"accuracy": accuracy, "f1": accuracy},
                           verification=Verification(loaded=True, accuracy=accuracy, f1=accuracy,
                                                     hidden_predictions=labels, hidden_set_sha256="h"))

    labels = [index % 2 for index in range(200)]
    submission = Submission("frank", tmp_path / "missing.ipynb")   # no notebook: its predictions are not compared
    submitted = graded(0.90, labels)
    assert finding(submitted, submission, graded(0.90 - AUDIT_METRIC_BAND / 2, labels), tmp_path)["verdict"] == "agrees"
    worse = finding(submitted, submission, graded(0.90 - 2 * AUDIT_METRIC_BAND, labels), tmp_path)
    assert worse["verdict"] == "disagrees" and "hidden accuracy" in worse["message"]
    flipped = finding(submitted, submission, graded(0.90, [1 - label for label in labels]), tmp_path)
    assert flipped["verdict"] == "disagrees" and "0.0% of the hidden reviews" in flipped["message"]
    failed = finding(submitted, submission, graded(0.5, labels, status=GRADER_ERROR), tmp_path)
    assert failed["verdict"] == "not audited" and not failed["disagrees"]
