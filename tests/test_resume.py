"""Training survives the end of a Colab session.

The answer key runs with the tiny model (tests/conftest.py) in a working folder, and its kernel is
killed (SIGKILL, as when Colab's machine goes away) once the first checkpoint is complete. Running the
notebook again in the same folder must continue from that checkpoint, finish every epoch and pass its
self-checks. A probe cell the test adds before the train cell counts the optimizer steps each run makes,
so the test does not rely on the notebook's own messages alone; its negative control runs the notebook
without the resume code and sees it start from step 1.

The answer key's resume helpers are also run on their own (``checkpoint_to_resume``), on checkpoint
folders written by hand: other settings, settings never recorded, a checkpoint cut short. The Drive
cell is run with a stand-in for Colab's ``google.colab`` module, and without it.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import sys
import threading
import types

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

from grader.build import ANSWER_KEY
from grader.parameters import inject_parameters
from trainer_probes import STEP_PROBE
from waiting import wait_for

EPOCHS = 6
CALL_WITH_RESUME = "trainer.train(resume_from_checkpoint=resume_checkpoint)"

# Test instrumentation, inserted before the train cell. The pause holds the kernel after each complete
# checkpoint, so that the kill lands after the first one, not at whatever epoch a poll happens to see.
PAUSE_AFTER_EACH_CHECKPOINT = '''
import time
from transformers import TrainerCallback

class PauseAfterEachCheckpoint(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        time.sleep(5)

trainer.add_callback(PauseAfterEachCheckpoint())
'''
REPORT = '''
import json
print("PROBE " + json.dumps({
    "steps": StepProbe.steps, "global_step": trainer.state.global_step, "max_steps": trainer.state.max_steps,
    "eval_epochs": [entry.get("epoch") for entry in trainer.state.log_history if "eval_f1" in entry],
    "test_metrics": test_metrics}))
'''


def cell(nb, cell_id):
    return next(c for c in nb.cells if c.get("id") == cell_id)


def answer_key(parameters: dict, probe: str = STEP_PROBE, edit=None) -> nbformat.NotebookNode:
    """The answer key with ``parameters`` injected, ``probe`` before the train cell and the report at the end.
    OUTPUT_DIR stays the default, relative ``outputs``: each run's working folder holds its checkpoints."""
    nb = nbformat.read(ANSWER_KEY, as_version=4)
    inject_parameters(nb, parameters)
    if edit:
        edit(nb)
    index = nb.cells.index(cell(nb, "train"))
    nb.cells.insert(index, nbformat.v4.new_code_cell(probe))
    if probe is STEP_PROBE:
        nb.cells.append(nbformat.v4.new_code_cell(REPORT))
    return nb


def client(nb, folder) -> NotebookClient:
    return NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}})


def output_text(nb, cell_id) -> str:
    return "".join(output.get("text", "") for output in cell(nb, cell_id).get("outputs", []))


def probe(nb) -> dict:
    text = "".join(output.get("text", "") for output in nb.cells[-1].get("outputs", []))
    return json.loads(text.split("PROBE ", 1)[1])


def complete_checkpoints(folder) -> dict[int, dict]:
    """Step -> trainer state of each checkpoint whose trainer_state.json (written last) is readable."""
    found = {}
    checkpoints = folder / "outputs" / "checkpoints"
    for path in checkpoints.glob("checkpoint-*") if checkpoints.is_dir() else []:
        try:
            found[int(path.name.split("-")[1])] = json.loads((path / "trainer_state.json").read_text())
        except (OSError, ValueError):
            pass
    return found


def assert_self_checks_pass(nb):
    for check in ("check-accuracy", "check-f1", "check-predictions", "check-reload"):
        assert output_text(nb, check).startswith("OK:"), (check, output_text(nb, check))


@pytest.fixture(scope="module")
def parameters(tiny_parameters) -> dict:
    return dict(tiny_parameters, NUM_EPOCHS=EPOCHS)


@pytest.fixture(scope="module")
def interrupted(parameters, tmp_path_factory):
    """A working folder whose run was killed after its first checkpoint: (folder, that checkpoint's state)."""
    folder = tmp_path_factory.mktemp("interrupted")
    run = client(answer_key(parameters, probe=PAUSE_AFTER_EACH_CHECKPOINT), folder)
    errors = []

    def execute():
        try:
            run.execute()
        except Exception as error:   # the kill surfaces here as DeadKernelError
            errors.append(error)

    thread = threading.Thread(target=execute, daemon=True)
    thread.start()
    assert wait_for(lambda: complete_checkpoints(folder), 300), "no checkpoint was completed"
    os.kill(run.km.provisioner.pid, signal.SIGKILL)
    thread.join(120)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], DeadKernelError), errors

    checkpoints = complete_checkpoints(folder)
    assert len(checkpoints) == 1, sorted(checkpoints)
    (step, state), = checkpoints.items()
    assert state["epoch"] == 1 and 0 < step == state["global_step"] < state["max_steps"], state
    assert (folder / "outputs" / "checkpoints" / f"checkpoint-{step}" / "optimizer.pt").is_file()
    assert not (folder / "outputs" / "sentiment-model").exists()   # the run ended during training
    return folder, state


def copy_of(interrupted, target):
    folder, state = interrupted
    shutil.copytree(folder, target)
    return target, state


def test_a_killed_run_resumes_from_its_last_checkpoint_and_meets_the_same_thresholds(interrupted, parameters,
                                                                                      tmp_path):
    folder, state = copy_of(interrupted, tmp_path / "run")
    step, max_steps = state["global_step"], state["max_steps"]
    # As if the session had also ended while writing the next checkpoint: no trainer_state.json yet.
    cut_short = folder / "outputs" / "checkpoints" / f"checkpoint-{2 * step}"
    cut_short.mkdir()
    (cut_short / "config.json").write_text("{}")

    resumed = client(answer_key(parameters), folder).execute()

    printed = output_text(resumed, "train")
    assert f"Deleting outputs/checkpoints/checkpoint-{2 * step}" in printed, printed
    assert f"Resuming from checkpoint-{step}: step {step} of {max_steps}, epoch 1 of {EPOCHS}." in printed, printed
    report = probe(resumed)
    assert report["steps"] == list(range(step + 1, max_steps + 1))   # continued, not restarted
    assert report["global_step"] == report["max_steps"] == max_steps
    assert report["eval_epochs"] == [float(epoch) for epoch in range(1, EPOCHS + 1)]   # every epoch evaluated once
    assert_self_checks_pass(resumed)

    # Restart and run all once more, as the guide asks before submitting: the finished run is resumed,
    # no step is trained again, and the best checkpoint gives the same model and the same test figures.
    again = client(answer_key(parameters), folder).execute()
    assert "That run had finished" in output_text(again, "train")
    assert probe(again)["steps"] == [] and probe(again)["test_metrics"] == report["test_metrics"]
    assert_self_checks_pass(again)


def test_negative_control_without_the_resume_code_the_rerun_starts_from_step_one(interrupted, parameters, tmp_path):
    folder, state = copy_of(interrupted, tmp_path / "run")

    def without_resume(nb):
        train = cell(nb, "train")
        assert CALL_WITH_RESUME in train.source
        train.source = train.source.replace(CALL_WITH_RESUME, "trainer.train()")

    rerun = client(answer_key(parameters, edit=without_resume), folder).execute()
    assert probe(rerun)["steps"] == list(range(1, state["max_steps"] + 1))


def test_checkpoints_of_other_settings_are_not_resumed(interrupted, parameters, tmp_path):
    folder, state = copy_of(interrupted, tmp_path / "run")
    step = state["global_step"]
    other = client(answer_key(dict(parameters, NUM_EPOCHS=EPOCHS - 1)), folder).execute()

    printed = output_text(other, "train")
    assert f"Not resuming outputs/checkpoints/checkpoint-{step}: it comes from a run with other settings" in printed
    assert f"num_train_epochs: {EPOCHS} then, {EPOCHS - 1} now" in printed, printed
    assert "No checkpoint: training from the start." in printed
    report = probe(other)
    assert report["steps"] == list(range(1, report["max_steps"] + 1)) and report["max_steps"] < state["max_steps"]
    assert_self_checks_pass(other)
    # the old run's checkpoints are kept aside, and the folder now records the new settings
    assert (folder / "outputs" / "checkpoints-previous" / f"checkpoint-{step}" / "trainer_state.json").is_file()
    settings = json.loads((folder / "outputs" / "checkpoints" / "run-settings.json").read_text())
    assert settings["num_train_epochs"] == EPOCHS - 1


# --- the resume helpers on their own, on checkpoint folders written by hand ----------------------------
@pytest.fixture
def helpers():
    """``checkpoint_to_resume`` and ``trainer_state``, the function definitions of the answer key's resume cell."""
    source = cell(nbformat.read(ANSWER_KEY, as_version=4), "resume").source
    tree = ast.parse(source)
    keep = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef))]
    namespace = {"os": os}
    exec(compile(ast.Module(body=keep, type_ignores=[]), "resume", "exec"), namespace)
    return namespace["checkpoint_to_resume"]


SETTINGS = {"MODEL_NAME": "distilbert-base-uncased", "SUBSET_SIZE": 5000, "learning_rate": 2e-5,
            "num_train_epochs": 3, "train_data_sha256": "0123456789abcdef"}


def write_checkpoint(folder, step, max_steps=30, epochs=3):
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps(
        {"global_step": step, "max_steps": max_steps, "epoch": step * epochs / max_steps, "num_train_epochs": epochs}))
    return path


def test_no_folder_or_no_checkpoint_trains_from_the_start_and_records_the_settings(helpers, tmp_path, capsys):
    folder = tmp_path / "checkpoints"
    assert helpers(str(folder), SETTINGS) is None
    assert capsys.readouterr().out == "No checkpoint: training from the start.\n"
    assert json.loads((folder / "run-settings.json").read_text()) == SETTINGS


def test_the_last_complete_checkpoint_of_the_same_settings_is_resumed(helpers, tmp_path, capsys):
    folder = tmp_path / "checkpoints"
    write_checkpoint(folder, 10)
    write_checkpoint(folder, 20)
    (folder / "checkpoint-30").mkdir()   # cut short: no trainer_state.json
    (folder / "checkpoint-30" / "model.safetensors").write_bytes(b"partial")
    (folder / "run-settings.json").write_text(json.dumps(SETTINGS))
    assert helpers(str(folder), SETTINGS) == str(folder / "checkpoint-20")
    printed = capsys.readouterr().out
    assert "checkpoint-30: the session ended while it was being written" in printed
    assert "Resuming from checkpoint-20: step 20 of 30, epoch 2 of 3." in printed
    assert not (folder / "checkpoint-30").exists() and (folder / "checkpoint-10").is_dir()


def test_a_finished_run_is_resumed_only_to_load_its_best_checkpoint(helpers, tmp_path, capsys):
    folder = tmp_path / "checkpoints"
    write_checkpoint(folder, 30)
    (folder / "run-settings.json").write_text(json.dumps(SETTINGS))
    assert helpers(str(folder), SETTINGS) == str(folder / "checkpoint-30")
    assert "That run had finished" in capsys.readouterr().out


@pytest.mark.parametrize("recorded", [dict(SETTINGS, learning_rate=5e-5, train_data_sha256="fedcba9876543210"), None],
                         ids=["other-settings", "settings-not-recorded"])
def test_checkpoints_of_another_run_are_moved_aside_never_resumed(helpers, tmp_path, capsys, recorded):
    folder = tmp_path / "checkpoints"
    write_checkpoint(folder, 10)
    if recorded is not None:
        (folder / "run-settings.json").write_text(json.dumps(recorded))
    (tmp_path / "checkpoints-previous").mkdir()   # an older one: replaced
    (tmp_path / "checkpoints-previous" / "old").write_text("older run")

    assert helpers(str(folder), SETTINGS) is None
    printed = capsys.readouterr().out
    assert "Not resuming" in printed and "No checkpoint: training from the start." in printed
    if recorded is None:
        assert "they were not recorded" in printed
    else:
        assert "learning_rate: 5e-05 then, 2e-05 now" in printed
        assert "train_data_sha256: 'fedcba9876543210' then, '0123456789abcdef' now" in printed
    assert sorted(os.listdir(tmp_path / "checkpoints-previous")) == ["checkpoint-10"] + (
        ["run-settings.json"] if recorded else [])
    assert os.listdir(folder) == ["run-settings.json"]
    assert json.loads((folder / "run-settings.json").read_text()) == SETTINGS


def test_settings_are_compared_as_they_read_back_from_the_file(helpers, tmp_path, capsys):
    """Tuples and other values JSON turns into something else must not look like a change of settings."""
    folder = tmp_path / "checkpoints"
    write_checkpoint(folder, 10)
    settings = dict(SETTINGS, shape=(1, 2))
    helpers(str(folder), settings)   # records the settings (no checkpoint of theirs: moved aside)
    write_checkpoint(folder, 10)
    capsys.readouterr()
    assert helpers(str(folder), settings) == str(folder / "checkpoint-10")


# --- the Drive cell -------------------------------------------------------------------------------------
def run_drive_cell(namespace: dict, colab: bool, monkeypatch) -> tuple[dict, list]:
    """Run the Drive cell with a stand-in for Colab's module (``colab``) or where it cannot be imported."""
    source = cell(nbformat.read(ANSWER_KEY, as_version=4), "google-drive").source
    mounted = []
    stand_in = types.ModuleType("google.colab")
    stand_in.drive = types.SimpleNamespace(mount=mounted.append)
    # None in sys.modules makes the import fail, as where the module is not installed
    monkeypatch.setitem(sys.modules, "google.colab", stand_in if colab else None)
    namespace = dict(namespace, os=os)
    exec(source, namespace)
    monkeypatch.undo()
    return namespace, mounted


CONFIG = {"OUTPUT_DIR": "outputs", "USE_GOOGLE_DRIVE": True, "DRIVE_FOLDER": "MLB_FineTuning"}


def test_in_colab_the_drive_cell_mounts_drive_and_moves_output_dir_there_once(capsys, monkeypatch):
    namespace, mounted = run_drive_cell(CONFIG, True, monkeypatch)
    assert mounted == ["/content/drive"]
    assert namespace["OUTPUT_DIR"] == "/content/drive/MyDrive/MLB_FineTuning/outputs"
    assert "Outputs and checkpoints go to /content/drive/MyDrive/MLB_FineTuning/outputs" in capsys.readouterr().out
    again, mounted_again = run_drive_cell(namespace, True, monkeypatch)   # the cell run twice: not moved twice
    assert again["OUTPUT_DIR"] == "/content/drive/MyDrive/MLB_FineTuning/outputs" and mounted_again == []


@pytest.mark.parametrize("config, colab", [(CONFIG, False), (dict(CONFIG, USE_GOOGLE_DRIVE=False), True),
                                           (dict(CONFIG, OUTPUT_DIR="/data/run"), True)],
                         ids=["headless", "drive-off", "absolute-output-dir"])
def test_the_drive_cell_changes_nothing_otherwise(config, colab, monkeypatch):
    namespace, mounted = run_drive_cell(config, colab, monkeypatch)
    assert mounted == [] and namespace["OUTPUT_DIR"] == config["OUTPUT_DIR"]
