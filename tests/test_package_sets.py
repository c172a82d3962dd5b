"""The notebooks on the package sets they are promised on: Colab's runtimes and the declared minimums.

Each set of environments/ is built once (tests/package_sets.py: a virtualenv kept under ~/.cache and reused
while its file is unchanged) and every notebook of ``NOTEBOOKS`` runs there, offline, on a DistilBERT-architecture
checkpoint built in that environment by tests/distilbert_standin.py: MiniLM's first two layers renamed, which
learn enough in one short epoch for every check but the accuracy thresholds (random weights of the same shape
predict one label for every review, so the predictions check would fail too). Data: 400 reviews of the offline
Amazon Polarity copy, 64 tokens. A run passes when every cell but the accuracy checks ran.

Cells the test adds check what the outputs do not show. The main notebook runs twice in one folder: first up
to its train cell, stopped after the first of two epochs' checkpoints (as when a Colab session ends), then
whole, resuming from that checkpoint; at the end the test split's predictions must be those of each review (a
probe runs reviews through the model one at a time). Its executed notebook and submit zip are then graded by
`grade --verify`, and the going-further notebook must put LoRA on DistilBERT's q_lin/v_lin.

KIT_MATRIX_REVISION=<commit> runs the notebooks of that commit instead of the working tree's (to show what a
set would have caught there).
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from grader.build import ANSWER_KEY, GOING_FURTHER_ANSWER_KEY, ROOT
from grader.parameters import inject_parameters
from completion_fixtures import laid_completion
from conftest import write_reviews
from package_sets import PackageSet, build_all, cell_text, failing_cells, package_sets, run_notebook
from trainer_probes import STEP_PROBE

ACCURACY_CHECKS = {"check-accuracy", "check-f1"}   # may fail: passing them is not what these runs are for
SUBSET_SIZE, MAX_LENGTH = 300, 32
LEARNING_RATE = 1e-3                                 # full fine-tuning of the 2-layer stand-in
LORA_LEARNING_RATE = 1e-2                            # LoRA of it: learns the reviews in 3 epochs (1 epoch, or 3e-2, left F1 at 0)


@dataclass(frozen=True)
class MatrixNotebook:
    name: str
    path: Path            # relative to the repository root
    kind: str             # "main" or "going-further": its parameters and probes
    # A completion of a template from its hints (tests/completions/), laid onto the current template. The main
    # answer key alone is also stopped after its first checkpoint and resumed, and graded in verify mode.
    completion: bool = False


COMPLETIONS = Path("tests") / "completions"
# Adding a notebook to the matrix is one line here.
NOTEBOOKS = [
    MatrixNotebook("main-answer-key", ANSWER_KEY.relative_to(ROOT), "main"),
    MatrixNotebook("going-further-answer-key", GOING_FURTHER_ANSWER_KEY.relative_to(ROOT), "going-further"),
    MatrixNotebook("main-typical-completion", COMPLETIONS / "main-typical.ipynb", "main", completion=True),
    MatrixNotebook("going-further-completion", COMPLETIONS / "going-further.ipynb", "going-further", completion=True),
]
SETS = package_sets()


def read_notebook(notebook: MatrixNotebook) -> nbformat.NotebookNode:
    if notebook.completion:   # the working tree's templates, whatever KIT_MATRIX_REVISION says
        return laid_completion(ROOT / notebook.path)
    revision = os.environ.get("KIT_MATRIX_REVISION")
    if not revision:
        return nbformat.read(ROOT / notebook.path, as_version=4)
    text = subprocess.run(["git", "show", f"{revision}:{notebook.path.as_posix()}"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
    return nbformat.reads(text, as_version=4)


# --- the environments and the stand-in built in each ------------------------------------------------------
@pytest.fixture(scope="session")
def built_sets() -> dict:
    """Every set, built at once on first use (or found built)."""
    return build_all(SETS)


STANDINS: dict[str, Path] = {}


def standin(environment: PackageSet, minilm_dir: Path, folder: Path) -> Path:
    """The DistilBERT-architecture stand-in, written by the set's own transformers (once per set)."""
    if environment.name not in STANDINS:
        target = folder / f"distilbert-{environment.name}"
        done = subprocess.run([str(environment.python), str(ROOT / "tests" / "distilbert_standin.py"), str(target),
                               "--layers", "2", "--minilm", str(minilm_dir)], capture_output=True, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert done.returncode == 0, done.stderr[-3000:]
        STANDINS[environment.name] = target
    return STANDINS[environment.name]


# --- what the test adds to the notebooks ------------------------------------------------------------------
STOP_AFTER_FIRST_CHECKPOINT = '''
from transformers import TrainerCallback

class StopAfterFirstCheckpoint(TrainerCallback):   # as when the Colab session ends after a checkpoint
    def on_save(self, args, state, control, **kwargs):
        control.should_training_stop = True

trainer.add_callback(StopAfterFirstCheckpoint())
'''
TRAINING_PROBE = '''
import json as _json
print("PROBE " + _json.dumps({"global_step": trainer.state.global_step, "max_steps": trainer.state.max_steps}))
'''
# Each of some test reviews alone through the model (no batch, no padding) against the notebook's predictions
# for that row; and, as a negative control of the comparison, against the next row's predictions.
MAIN_PROBE = '''
import json as _json
_rows = list(range(0, len(splits["test"]) - 1, max(1, len(splits["test"]) // 12)))
_alone = []
for _row in _rows:
    _inputs = tokenizer(splits["test"][_row]["text"], truncation=True, max_length=MAX_LENGTH,
                        return_tensors="pt").to(trainer.model.device)
    with torch.no_grad():
        _alone.append(trainer.model.eval()(**_inputs).logits.float().cpu().numpy()[0])
_alone = np.array(_alone)
print("PROBE " + _json.dumps({
    "transformers": transformers.__version__,
    "model_type": trainer.model.config.model_type,
    "test_labels_in_order": [int(label) for label in test_output.label_ids] == list(splits["test"]["label"]),
    "baseline_labels_in_order": [int(label) for label in pretrained_test_output.label_ids] == list(splits["test"]["label"]),
    "difference_to_own_row": float(np.abs(_alone - test_output.predictions[_rows]).max()),
    "difference_to_next_row": float(np.abs(_alone - test_output.predictions[[row + 1 for row in _rows]]).max()),
    "steps": StepProbe.steps, "global_step": trainer.state.global_step, "max_steps": trainer.state.max_steps,
}))
'''
# The chosen model's adapters are merged by now: a fresh LoRA model shows where the notebook puts them.
GOING_FURTHER_PROBE = '''
import json as _json
_lora = make_lora_model(new_model())
print("PROBE " + _json.dumps({
    "transformers": transformers.__version__, "peft": peft.__version__,
    "model_type": reloaded_model.config.model_type, "targets": TARGET_MODULES,
    "lora_modules": sorted({name.split(".lora_A")[0].split(".")[-1]
                            for name, _ in _lora.named_parameters() if ".lora_A" in name}),
    "trained_in_full": sorted({name.split(".modules_to_save")[0].split(".")[-1]
                               for name, parameter in _lora.named_parameters()
                               if ".modules_to_save" in name and parameter.requires_grad}),
}))
'''


TEST_CELLS = {"stop-after-first-checkpoint", "step-probe", "probe"}


def probe(nb) -> dict:
    text = cell_text(nb, "probe")
    assert "PROBE " in text, f"the probe did not run: {failing_cells(nb).get('probe')}"
    return json.loads(text.split("PROBE ", 1)[1])


def insert_before(nb, cell_id: str, source: str, new_id: str) -> None:
    index = next(i for i, cell in enumerate(nb.cells) if cell.get("id") == cell_id)
    nb.cells.insert(index, nbformat.v4.new_code_cell(source, id=new_id))


@pytest.fixture(scope="session")
def reviews(tmp_path_factory) -> Path:
    """Short reviews in Amazon Polarity's columns whose sentiment words carry the label (tests/conftest.py), laid
    out as the notebooks' LOCAL_DATA_DIR expects: the stand-in learns them in one epoch of a few steps."""
    folder = tmp_path_factory.mktemp("reviews")
    (folder / "amazon_polarity").mkdir()
    write_reviews(folder / "amazon_polarity" / "train.csv", 400, seed=1)
    write_reviews(folder / "amazon_polarity" / "test.csv", 200, seed=2)
    return folder


def main_parameters(model: Path, data: Path, workdir: Path) -> dict:
    return {"MODEL_NAME": str(model), "LOCAL_DATA_DIR": str(data / "amazon_polarity"), "SUBSET_SIZE": SUBSET_SIZE,
            "MAX_LENGTH": MAX_LENGTH, "NUM_EPOCHS": 2, "LEARNING_RATE": LEARNING_RATE, "BATCH_SIZE": 16,
            "OUTPUT_DIR": str(workdir / "outputs")}


def going_further_parameters(model: Path, data: Path, workdir: Path) -> dict:
    return {"MODEL_NAME": str(model), "LOCAL_DATA_DIR": str(data), "DATASET": "amazon_polarity",
            "SUBSET_SIZE": SUBSET_SIZE, "MAX_LENGTH": MAX_LENGTH, "NUM_EPOCHS": 3, "LEARNING_RATE": LEARNING_RATE,
            "LORA_LEARNING_RATE": LORA_LEARNING_RATE,
            "SEARCH_SETTINGS": [[5e-3, 3], [LORA_LEARNING_RATE, 3], [2e-2, 3]], "OUTPUT_DIR": str(workdir / "outputs")}


def run_main(notebook: MatrixNotebook, environment: PackageSet, model: Path, data: Path, workdir: Path):
    """The main answer key stopped after its first checkpoint, then run whole in the same folder (it resumes);
    a completion run whole."""
    parameters = main_parameters(model, data, workdir)
    stopped = None if notebook.completion else run_until_the_first_checkpoint(notebook, environment, parameters,
                                                                               workdir)
    whole = inject_parameters(read_notebook(notebook), parameters)
    insert_before(whole, "train", STEP_PROBE, "step-probe")
    whole.cells.append(nbformat.v4.new_code_cell(MAIN_PROBE, id="probe"))
    run_notebook(environment, whole, workdir)
    return stopped, whole


def run_until_the_first_checkpoint(notebook: MatrixNotebook, environment: PackageSet, parameters: dict,
                                   workdir: Path) -> dict:
    first = inject_parameters(read_notebook(notebook), parameters)
    cut = next(i for i, cell in enumerate(first.cells) if cell.get("id") == "train")
    first.cells = first.cells[:cut + 1] + [nbformat.v4.new_code_cell(TRAINING_PROBE, id="probe")]
    insert_before(first, "train", STOP_AFTER_FIRST_CHECKPOINT, "stop-after-first-checkpoint")
    run_notebook(environment, first, workdir)
    assert set(failing_cells(first)) == set(), failing_cells(first)
    return probe(first)


def run_going_further(notebook: MatrixNotebook, environment: PackageSet, model: Path, data: Path, workdir: Path):
    nb = inject_parameters(read_notebook(notebook), going_further_parameters(model, data, workdir))
    nb.cells.append(nbformat.v4.new_code_cell(GOING_FURTHER_PROBE, id="probe"))
    return run_notebook(environment, nb, workdir)


RUNS: dict[tuple[str, str], dict] = {}


@pytest.fixture(scope="session")
def matrix_run(request, built_sets, minilm_dir, reviews, tmp_path_factory):
    """Run one notebook on one set (once per test session): what the test needs of it."""
    set_name, notebook_name = request.param
    key = (set_name, notebook_name)
    if key not in RUNS:
        built = built_sets[set_name]
        if isinstance(built, BaseException):
            pytest.fail(f"the package set {set_name} does not install:\n{built}")
        notebook = next(n for n in NOTEBOOKS if n.name == notebook_name)
        workdir = tmp_path_factory.mktemp(f"{set_name}-{notebook_name}")
        model = standin(built, minilm_dir, tmp_path_factory.getbasetemp())
        if notebook.kind == "main":
            stopped, nb = run_main(notebook, built, model, reviews, workdir)
        else:
            stopped, nb = None, run_going_further(notebook, built, model, reviews, workdir)
        nbformat.write(nb, workdir / "executed.ipynb")
        RUNS[key] = {"set": built, "notebook": notebook, "nb": nb, "workdir": workdir, "stopped": stopped}
    return RUNS[key]


MATRIX = [(s.name, n.name) for s in SETS for n in NOTEBOOKS]   # (set, notebook)
MAIN_RUNS = [(s.name, n.name) for s in SETS for n in NOTEBOOKS if n.kind == "main"]
MAIN_KEY_RUNS = [(s.name, n.name) for s in SETS for n in NOTEBOOKS if n.kind == "main" and not n.completion]
pytestmark = pytest.mark.package_sets


@pytest.mark.parametrize("matrix_run", MATRIX, indirect=True, ids=lambda key: "-on-".join(reversed(key)))
def test_every_cell_but_the_accuracy_checks_runs(matrix_run):
    nb = matrix_run["nb"]
    failing = {cell_id: error for cell_id, error in failing_cells(nb).items() if cell_id not in ACCURACY_CHECKS}
    assert failing == {}, f"on {matrix_run['set'].name} ({matrix_run['set'].versions().get('transformers')}):\n" \
        + "\n".join(f"  {cell_id}: {error}" for cell_id, error in failing.items())
    found = probe(nb)
    assert found["transformers"] == matrix_run["set"].versions()["transformers"]   # the set's, not the grader's
    assert found["model_type"] == "distilbert"


@pytest.mark.parametrize("matrix_run", MAIN_RUNS, indirect=True, ids=lambda key: "-on-".join(reversed(key)))
def test_the_test_split_predictions_are_each_reviews_own(matrix_run):
    found = probe(matrix_run["nb"])
    assert found["test_labels_in_order"] and found["baseline_labels_in_order"], found
    assert found["difference_to_own_row"] < 1e-3, found      # float rounding of a padded batch
    # the negative control: the comparison tells one review's logits from another's
    assert found["difference_to_next_row"] > max(1e-2, 100 * found["difference_to_own_row"]), found


@pytest.mark.parametrize("matrix_run", MAIN_KEY_RUNS, indirect=True, ids=lambda key: "-on-".join(reversed(key)))
def test_training_resumes_from_the_checkpoint_of_an_ended_session(matrix_run):
    stopped, nb = matrix_run["stopped"], matrix_run["nb"]
    step, max_steps = stopped["global_step"], stopped["max_steps"]
    assert 0 < step < max_steps, stopped                      # stopped after the first of two epochs
    assert f"Resuming from checkpoint-{step}: step {step} of {max_steps}, epoch 1 of 2." in cell_text(nb, "train")
    found = probe(nb)
    assert found["steps"] == list(range(step + 1, max_steps + 1)) and found["global_step"] == max_steps, found


@pytest.mark.parametrize("matrix_run", MAIN_KEY_RUNS, indirect=True, ids=lambda key: "-on-".join(reversed(key)))
def test_the_submit_zip_is_graded_in_verify_mode(matrix_run, reviews, tmp_path):
    from grader import GradingOptions, grade_submissions
    from grader.sandbox import GB, MB, Limits

    outputs = matrix_run["workdir"] / "outputs"
    with zipfile.ZipFile(outputs / "sentiment-model.zip") as archive:
        config = json.loads(archive.read("config.json"))
        assert "model.safetensors" in archive.namelist()
    assert config["model_type"] == "distilbert" and config["n_layers"] == 2
    student = tmp_path / "submissions" / "student"
    student.mkdir(parents=True)
    submitted = copy.deepcopy(matrix_run["nb"])   # the notebook as the student ran it: without the test's cells
    submitted.cells = [cell for cell in submitted.cells if cell.get("id") not in TEST_CELLS]
    nbformat.write(submitted, student / "project.ipynb")
    shutil.copy(outputs / "sentiment-model.zip", student / "sentiment-model.zip")
    # the course's base model is the stand-in the notebook fine-tuned (its MODEL_NAME): the submission must be a
    # fine-tune of it
    options = GradingOptions(output_dir=tmp_path / "out", hidden_set=reviews / "amazon_polarity" / "test.csv", hidden_size=100,
                             hidden_seed=3, mode="verify", max_length=MAX_LENGTH,
                             base_model=str(STANDINS[matrix_run["set"].name]),
                             limits=Limits(memory_bytes=4 * GB, max_processes=64, max_file_bytes=256 * MB,
                                           disk_bytes=1 * GB))
    result, = grade_submissions(tmp_path / "submissions", options, progress=False).results
    verdicts = {check.name: (check.passed, check.message) for check in result.checks}
    assert result.verification and result.verification.loaded, result.reason
    assert all(passed for name, (passed, _) in verdicts.items() if name not in {"accuracy", "f1"}), verdicts
    assert result.verification.accuracy is not None and result.verification.reproduced, result.verification


@pytest.mark.parametrize("matrix_run", [(s, n) for s, n in MATRIX if n == "going-further-answer-key"],
                         indirect=True, ids=lambda key: "-on-".join(reversed(key)))
def test_lora_targets_distilberts_attention(matrix_run):
    found = probe(matrix_run["nb"])
    assert found["targets"] == ["q_lin", "v_lin"] and found["lora_modules"] == ["q_lin", "v_lin"], found
    assert found["trained_in_full"] == ["classifier", "pre_classifier"], found
    assert "LoRA on ['q_lin', 'v_lin'] (all of the attention: ['q_lin', 'k_lin', 'v_lin', 'out_lin']); " \
           "trained in full: ['pre_classifier', 'classifier']" in cell_text(matrix_run["nb"], "lora-targets")
