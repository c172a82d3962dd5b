"""The templates completed from their TODO comments and hints alone, graded offline: they must earn full points.

``tests/completions/`` holds solutions written from what a student has (the template's TODO text and hints,
the students' guide, public documentation), never from the answer key: each ``<name>.ipynb`` is a template
with its TODOs done. A completion is laid onto the CURRENT template (``lay_onto_template``): every cell whose
template source holds the stub takes the completion's cell of the same id, every other cell is the
template's. So a given cell that changes after the fixture was written (the training curves, a self-check)
is run with every completion, which is the point: a given cell must work for every completion the hints allow.

Besides the fixtures, variants of the answer key that the hints allow are graded the same way:
``minimal-training-arguments`` gives ``TrainingArguments`` exactly the arguments its TODO lists (no
``logging_steps``: the Trainer then logs the training loss every 500 steps, more than the tiny run takes).

The going-further notebook is graded with its bonus rubric, then graded again in verify mode from the
executed notebook and the zip its submit cell wrote, which must give the same verdicts.
"""
from __future__ import annotations

import copy
import csv
import random
import shutil
from pathlib import Path

import nbformat
import pytest

from grader import GradingOptions, grade_submissions
from grader.build import (ANSWER_KEY, GOING_FURTHER_ANSWER_KEY, GOING_FURTHER_TEMPLATE, ROOT, STUB, TEMPLATE,
                          build_template)
from grader.rubric import load_rubric
from grader.sandbox import GB, MB, Limits
from completion_fixtures import completion_fixtures, is_going_further, lay_onto_template
from scenarios import _cell, _replace

GOING_FURTHER_RUBRIC = ROOT / "grader" / "rubrics" / "going_further.toml"
TIME_LIMIT_S = 300
TEST_LIMITS = Limits(memory_bytes=3 * GB, max_processes=64, max_file_bytes=256 * MB, disk_bytes=1 * GB)


def minimal_training_arguments(nb):
    """The answer key with only the arguments the training-args TODO lists: the logging ones go."""
    _replace(nb, "training-args", '    logging_strategy="steps",\n    logging_steps=max(1, steps_per_epoch // 5),\n', "")


ANSWER_KEY_VARIANTS = {"minimal-training-arguments": minimal_training_arguments}


def main_submissions(folder: Path) -> list[str]:
    """Every main-template completion and answer-key variant, as notebooks in ``folder``."""
    folder.mkdir(parents=True)
    template = build_template(ANSWER_KEY, TEMPLATE)
    names = []
    for name, path in completion_fixtures().items():
        completion = nbformat.read(path, as_version=4)
        if not is_going_further(completion):
            nbformat.write(lay_onto_template(completion, template), folder / f"{name}.ipynb")
            names.append(name)
    for name, edit in ANSWER_KEY_VARIANTS.items():
        nb = nbformat.read(ANSWER_KEY, as_version=4)
        edit(nb)
        nbformat.write(nb, folder / f"{name}.ipynb")
        names.append(name)
    return names


def options(output_dir, parameters, hidden_set, **overrides) -> GradingOptions:
    settings = dict(output_dir=output_dir, hidden_set=hidden_set, hidden_size=100, hidden_seed=7,
                    parameters=parameters, time_limit_s=TIME_LIMIT_S, limits=TEST_LIMITS, sandbox="require", jobs=2)
    return GradingOptions(**{**settings, **overrides})


def failures(result) -> list[str]:
    return [f"{c.name}: {c.message}" for c in result.checks if not c.passed] + ([result.reason] if result.reason else [])


@pytest.fixture(scope="module")
def graded_completions(tiny_parameters, tiny_data_dir, sandbox_flags, tmp_path_factory):
    root = tmp_path_factory.mktemp("completions")
    names = main_submissions(root / "submissions")
    batch = grade_submissions(root / "submissions", options(root / "out", tiny_parameters, tiny_data_dir / "test.csv"),
                              progress=False)
    results = {result.student_id: result for result in batch.results}
    assert sorted(results) == sorted(names)
    return results, root / "out"


@pytest.mark.parametrize("name", sorted(set(ANSWER_KEY_VARIANTS) | {
    name for name, path in completion_fixtures().items()
    if not is_going_further(nbformat.read(path, as_version=4))}))
def test_a_completion_from_the_hints_earns_full_points(graded_completions, name):
    result = graded_completions[0][name]
    assert result.total == result.max_total == 100, failures(result)


def test_the_training_curves_say_why_no_training_loss_is_shown(graded_completions):
    executed = nbformat.read(graded_completions[1] / "executed" / "minimal-training-arguments.ipynb", as_version=4)
    printed = "".join(output.get("text", "") for output in _cell(executed, "curves").outputs)
    assert "No training loss was logged: the Trainer logs it every 500 steps" in printed


def test_the_train_cell_does_not_print_the_model(graded_completions):
    executed = nbformat.read(graded_completions[1] / "executed" / "minimal-training-arguments.ipynb", as_version=4)
    shown = [output for output in _cell(executed, "train").outputs if output.get("output_type") == "execute_result"]
    assert shown == [], shown


# --- laying a completion onto the template ----------------------------------------------------
def test_a_completion_is_laid_onto_the_current_template():
    template = build_template(ANSWER_KEY, TEMPLATE)
    key = nbformat.read(ANSWER_KEY, as_version=4)
    completion = copy.deepcopy(key)
    _cell(completion, "curves").source = "raise RuntimeError('an old given cell')"   # a stale copy of a given cell
    laid = lay_onto_template(completion, template)
    assert _cell(laid, "curves").source == _cell(template, "curves").source
    assert _cell(laid, "split").source == _cell(key, "split").source
    assert not any(STUB in cell.source for cell in laid.cells)
    del completion.cells[[cell.get("id") for cell in completion.cells].index("predict")]
    with pytest.raises(AssertionError, match="no cell 'predict'"):
        lay_onto_template(completion, template)


# --- the going-further notebook: its rubric, in execute mode and in verify mode ------------------
@pytest.fixture(scope="module")
def going_further_model_dir(tiny_data_dir, tmp_path_factory) -> Path:
    """A small BERT "pre-trained" here in seconds: fine-tuned on the tiny reviews, its encoder then saved
    without its head, so that a frozen copy of it (LoRA's) has features that tell the reviews apart, as a
    real pre-trained model's do. Large enough that every LoRA the TODO allows trains under 5 % of it, as the
    notebook's own check demands. No download."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from conftest import NEGATIVE, NEUTRAL, POSITIVE, SPECIAL, answer_key_words

    folder = tmp_path_factory.mktemp("going-further-bert")
    words = set(POSITIVE + NEGATIVE + NEUTRAL) | answer_key_words() | going_further_words()
    # Unused entries as BERT's own vocabulary has: with them the embeddings are about a third of the model, as in
    # DistilBERT, so LoRA's share is near what it is there (rank 8 on all four projections trains ~3 %, not ~6 %)
    vocab = SPECIAL + sorted(words) + list(".,!?;:'") + [f"[unused{index}]" for index in range(6000)]
    tokenizer = BertTokenizerFast(vocab={token: index for index, token in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=512, max_position_embeddings=128)
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    with open(tiny_data_dir / "train.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    # The reviews with other words of the notebooks' own reviews slipped in, so that the encoder learns them
    # as the filler they are here (its features would otherwise follow their random embeddings)
    rng = random.Random(0)
    texts = [f"{row['title']}. {row['content']}" for row in rows]
    filler = sorted((answer_key_words() | going_further_words()) - set(POSITIVE + NEGATIVE))
    texts = [" ".join(rng.sample(filler, 4) + text.split() + rng.sample(filler, 4)) for text in texts]
    labels = torch.tensor([int(row["label"]) for row in rows])
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(2):   # 26 steps: seconds on an idle CPU
        for start in range(0, len(texts), 32):
            batch = tokenizer(texts[start:start + 32], padding=True, truncation=True, max_length=32,
                              return_tensors="pt")
            loss = model(**batch, labels=labels[start:start + 32]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.bert.save_pretrained(folder)   # the encoder alone: the notebook puts a new head on it
    return folder


def going_further_words() -> set[str]:
    import re

    source = _cell(nbformat.read(GOING_FURTHER_ANSWER_KEY, as_version=4), "predict").source
    return set(re.findall(r"[a-z]+", source.lower()))


@pytest.fixture(scope="module")
def going_further_data(tiny_data_dir, tmp_path_factory) -> Path:
    """LOCAL_DATA_DIR as the going-further notebook reads it: one folder per dataset."""
    folder = tmp_path_factory.mktemp("going-further-data")
    (folder / "amazon_polarity").mkdir()
    shutil.copy(tiny_data_dir / "train.csv", folder / "amazon_polarity" / "train.csv")
    return folder


@pytest.fixture(scope="module")
def going_further_parameters(going_further_model_dir, going_further_data) -> dict:
    return {"MODEL_NAME": str(going_further_model_dir), "LOCAL_DATA_DIR": str(going_further_data),
            "DATASET": "amazon_polarity", "SUBSET_SIZE": 300, "MAX_LENGTH": 32, "NUM_EPOCHS": 2,
            "LEARNING_RATE": 1e-3, "LORA_LEARNING_RATE": 5e-3,
            "SEARCH_SETTINGS": [[2e-3, 2], [5e-3, 2], [1e-2, 1]]}


@pytest.fixture(scope="module")
def graded_going_further(going_further_parameters, tiny_data_dir, sandbox_flags, tmp_path_factory):
    """The going-further answer key and every going-further completion, graded with the bonus rubric
    (--keep-work, so the zips their submit cells wrote stay)."""
    root = tmp_path_factory.mktemp("going-further")
    folder = root / "submissions"
    folder.mkdir()
    shutil.copy(GOING_FURTHER_ANSWER_KEY, folder / "answer-key.ipynb")
    template = build_template(GOING_FURTHER_ANSWER_KEY, GOING_FURTHER_TEMPLATE)
    for name, path in completion_fixtures().items():
        completion = nbformat.read(path, as_version=4)
        if is_going_further(completion):
            nbformat.write(lay_onto_template(completion, template), folder / f"{name}.ipynb")
    rubric = load_rubric(GOING_FURTHER_RUBRIC)
    batch = grade_submissions(folder, options(root / "out", going_further_parameters, tiny_data_dir / "test.csv",
                                              rubric=rubric, keep_work=True), progress=False)
    return {result.student_id: result for result in batch.results}, root, rubric


@pytest.mark.parametrize("name", ["answer-key"] + [
    name for name, path in completion_fixtures().items() if is_going_further(nbformat.read(path, as_version=4))])
def test_the_going_further_notebook_earns_its_full_bonus_points(graded_going_further, name):
    results, _, rubric = graded_going_further
    assert results[name].total == results[name].max_total == rubric.max_points == 20, failures(results[name])


def test_verify_mode_grades_the_going_further_notebook_with_its_rubric(graded_going_further, going_further_parameters,
                                                                        tiny_data_dir, tmp_path):
    """Its submit cell writes the same zip and displays the same JSON as the main notebook's, so verify mode
    grades the executed notebook and that zip as execute mode graded the run."""
    results, root, rubric = graded_going_further
    folder = tmp_path / "submissions" / "answer-key"
    folder.mkdir(parents=True)
    shutil.copy(root / "out" / "executed" / "answer-key.ipynb", folder / "project.ipynb")
    shutil.copy(root / "out" / "work" / "answer-key" / "outputs-going-further" / "sentiment-model.zip", folder)
    batch = grade_submissions(tmp_path / "submissions",
                              options(tmp_path / "out", going_further_parameters, tiny_data_dir / "test.csv",
                                      rubric=rubric, mode="verify"), progress=False)
    [verified] = batch.results
    executed = results["answer-key"]
    assert {c.name: c.passed for c in verified.checks} == {c.name: c.passed for c in executed.checks}, (
        failures(verified))
    assert verified.total == executed.total == rubric.max_points
    assert verified.verification.accuracy == executed.verification.accuracy
    with open(tmp_path / "out" / "gradebook.csv", newline="", encoding="utf-8") as handle:
        assert [row["total"] for row in csv.DictReader(handle)] == ["20"]
