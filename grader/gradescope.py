"""Gradescope: the autograder zip (``grade gradescope build``) and what runs inside it (``run_autograder``).

Gradescope's format (https://gradescope-autograders.readthedocs.io/en/latest/specs/): a zip holding
``setup.sh`` and ``run_autograder`` at its root. Gradescope unpacks it into ``/autograder/source``, runs
``setup.sh`` once, as root, to build the image, and for each submission puts the student's files in
``/autograder/submission``, runs ``/autograder/run_autograder`` (in ``/autograder``) and reads
``/autograder/results/results.json``. ``AUTOGRADER_ROOT`` moves ``/autograder`` elsewhere (the tests do).

The zip grades in verify mode (``grade --verify``): the student uploads the executed notebook and the model
zip its submit cell wrote (or a ``submission.json`` naming a Hub commit); nothing of theirs runs. It holds:

    setup.sh, run_autograder   Gradescope's two entry points
    requirements.txt           the grader's requirements, pinned to the versions it was built (and tested) with
    kit/                       the grader package and the answer keys (whose self-check cells it recognises)
    rubric.toml                the course's rubric, or the instructor's
    hidden-set.json            the hidden sample, drawn once at build time: labelled reviews, so keep the zip private
    config.json                the run's settings: what students see of the hidden-set figures, the limits

``run_autograder`` writes a results.json whatever happens: a grader failure becomes a score of 0 that says so.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import time
import zipfile
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path

from .course import ANSWER_KEYS, ROOT
from .errors import UsageError
from .results import GRADED, GRADER_ERROR, NOT_GRADABLE, GradeResult, Mode
from .rubric import CHECKS, DEFAULT_RUBRIC, Rubric, load_rubric
from .sandbox import GB, Limits

AUTOGRADER_ROOT = Path("/autograder")
ROOT_VARIABLE = "AUTOGRADER_ROOT"
CONFIG_FILE, HIDDEN_SET_FILE, RUBRIC_FILE, REQUIREMENTS_FILE = \
    "config.json", "hidden-set.json", "rubric.toml", "requirements.txt"
KIT = "kit"
# What students see of the two hidden-set tests: their figures (visible), or whether they passed and the
# threshold only (pass-fail: a student who resubmits cannot tune their model on the hidden set), or the
# figures once the due date has passed or the grades are published (Gradescope's own visibilities).
HIDDEN_FIGURES = ("pass-fail", "visible", "after_due_date", "after_published")
VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")
# The Python packages verify mode imports, whose requirements (all of them, pinned) the zip installs.
RUNTIME_DISTRIBUTIONS = ("torch", "transformers", "safetensors", "numpy", "nbformat", "nbclient", "jupyter_client",
                         "tqdm", "psutil")
TEST_NAMES = {
    "ran_to_end": "Every cell ran, in order, without an error (saved outputs)",
    "no_todo_left": "No TODO stub left",
    "accuracy": "Accuracy on the hidden set",
    "f1": "F1 on the hidden set",
    "predictions": "Predictions with confidences, made by the submitted model",
    "reload": "The submitted model loads and reproduces the notebook's predictions",
}


@dataclass
class BundleConfig:
    """What ``run_autograder`` is told at build time (config.json in the zip)."""

    hidden_figures: str = "pass-fail"
    hidden_size: int = 500
    hidden_seed: int = 0
    max_length: int = 256
    verify_time_limit_s: float = 480.0     # under Gradescope's default 10 minutes, so that results.json is written
    memory_bytes: int = 3 * GB             # the model check's limit: under the container's, so that it reports
    max_file_bytes: int = 2 * GB
    disk_bytes: int = 4 * GB
    sandbox: str = "auto"
    # The course's base model, of which each submitted model must be a fine-tune (verify mode's check): a Hub id
    # that setup.sh downloads into the image once (source/base-model), "bundled" when the zip carries its files
    # there, or "none" (the check off). "": the rubric's [model] base.
    base_model: str = ""

    @property
    def limits(self) -> Limits:
        return Limits(memory_bytes=self.memory_bytes, max_file_bytes=self.max_file_bytes, disk_bytes=self.disk_bytes)


# --- building the zip ------------------------------------------------------------------------
def pinned_requirements(roots=RUNTIME_DISTRIBUTIONS) -> list[str]:
    """``name==version`` of ``roots`` and everything they require, as installed here (markers evaluated here)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    pending = list(roots)
    while pending:
        name = canonicalize_name(pending.pop())
        if name in pins:
            continue
        try:
            distribution = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue   # required only on another platform, or an optional extra that is not installed
        pins[name] = distribution.version.split("+")[0]   # 2.13.0+cpu: the local build tag is the index's
        for text in distribution.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


SETUP_SH = r"""#!/usr/bin/env bash
# Gradescope runs this once, as root, to build the autograder's image (written by `grade gradescope build`).
set -euo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
SOURCE="$ROOT/source"
VENV="$ROOT/venv"
# Python 3.11 or newer: the base image's, else Ubuntu's python3.11 (22.04's python3 is 3.10).
python_ok() { "$1" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }
PYTHON="${AUTOGRADER_PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null && python_ok "$candidate"; then PYTHON="$candidate"; break; fi
  done
fi
if [ -z "$PYTHON" ]; then
  apt-get install -y -q python3.11 python3.11-venv || { apt-get update -q && apt-get install -y -q python3.11 python3.11-venv; }
  PYTHON=python3.11
fi
# bubblewrap confines the model check where the container allows it; without it the check runs unconfined
# (it loads safetensors only and runs none of the student's code), and the log says so.
command -v bwrap >/dev/null || apt-get install -y -q bubblewrap || echo "setup.sh: bubblewrap not installed" >&2
"$PYTHON" -m venv "$VENV"
# torch first and pinned (an unpinned torch may pull a multi-GB CUDA build), from the index given at build time
TORCH_INDEX_URL="${TORCH_INDEX_URL:-__TORCH_INDEX_URL__}"
"$VENV/bin/python" -m pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "__TORCH_PIN__"
"$VENV/bin/python" -m pip install -q -r "$SOURCE/requirements.txt"
PYTHONPATH="$SOURCE/kit" "$VENV/bin/python" -c "import grader.gradescope, grader.pipeline, transformers" </dev/null
# The course's base model, into the image once (each model is checked to be a fine-tune of it)
PYTHONPATH="$SOURCE/kit" "$VENV/bin/python" -m grader.gradescope fetch-base-model </dev/null
echo "setup.sh: the autograder is ready ($("$VENV/bin/python" --version))"
"""

RUN_AUTOGRADER = r"""#!/usr/bin/env bash
# Gradescope runs this for each submission (written by `grade gradescope build`).
ROOT="${AUTOGRADER_ROOT:-/autograder}"
export PYTHONPATH="$ROOT/source/kit" HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-0}" TOKENIZERS_PARALLELISM=false
cd "$ROOT" && exec "$ROOT/venv/bin/python" -m grader.gradescope run
"""

SETUP_SH, RUN_AUTOGRADER = SETUP_SH.replace("\r", ""), RUN_AUTOGRADER.replace("\r", "")
# The kit's files the zip carries: the package (its code and rubrics) and the answer keys, nothing else.
KIT_SUFFIXES = (".py", ".toml")


def kit_files() -> list[tuple[Path, str]]:
    """(file, its name in the zip) for the grader package and the answer keys."""
    missing = [path for path in ANSWER_KEYS if not path.is_file()]
    if missing:   # a grader installed without its checkout has no answer keys beside it
        raise UsageError(f"{missing[0]} is missing: run grade gradescope build from the kit's checkout")
    package = ROOT / "grader"
    files = [(path, f"{KIT}/{path.relative_to(ROOT)}") for path in sorted(package.rglob("*"))
             if path.is_file() and path.suffix in KIT_SUFFIXES and "__pycache__" not in path.parts]
    files += [(path, f"{KIT}/{path.relative_to(ROOT)}") for path in ANSWER_KEYS]
    return files + [(ROOT / "pyproject.toml", f"{KIT}/pyproject.toml")]


def _zip_text(archive: zipfile.ZipFile, name: str, text: str, executable: bool = False) -> None:
    info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
    info.external_attr = (0o100755 if executable else 0o100644) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, text)


def build_bundle(target: Path, hidden_set: Path | None, config: BundleConfig, rubric_file: Path | None = None,
                 requirements: list[str] | None = None, torch_index_url: str = "",
                 base_model_folder: Path | None = None) -> Path:
    """Write the autograder zip to ``target``; the hidden sample is drawn here, with ``config.hidden_seed``.
    ``base_model_folder``: the course's base model, carried in the zip (``config.base_model`` becomes
    "bundled"); else setup.sh downloads ``config.base_model`` (or the rubric's base) into the image."""
    from .hidden import load_hidden_set

    if base_model_folder is not None:
        config = replace(config, base_model=BUNDLED)

    if config.hidden_figures not in HIDDEN_FIGURES:
        raise UsageError(f"--hidden-figures must be one of {', '.join(HIDDEN_FIGURES)}")
    rubric_file = Path(rubric_file) if rubric_file else DEFAULT_RUBRIC
    load_rubric(rubric_file)   # refused here, not on Gradescope, when it cannot be read
    if hidden_set is not None and not Path(hidden_set).is_file():
        raise UsageError(f"the hidden evaluation set {hidden_set} does not exist")
    rows = load_hidden_set(hidden_set, config.hidden_size, config.hidden_seed)
    requirements = pinned_requirements() if requirements is None else requirements
    torch_pin = next((pin for pin in requirements if pin.startswith("torch==")), "torch")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        with zipfile.ZipFile(temporary, "w") as archive:
            setup = SETUP_SH.replace("__TORCH_PIN__", torch_pin).replace("__TORCH_INDEX_URL__", torch_index_url)
            _zip_text(archive, "setup.sh", setup, executable=True)
            _zip_text(archive, "run_autograder", RUN_AUTOGRADER, executable=True)
            _zip_text(archive, REQUIREMENTS_FILE, "\n".join(requirements) + "\n")
            _zip_text(archive, RUBRIC_FILE, rubric_file.read_text(encoding="utf-8"))
            _zip_text(archive, HIDDEN_SET_FILE, json.dumps(rows))
            _zip_text(archive, CONFIG_FILE, json.dumps(asdict(config), indent=1))
            for path, name in kit_files():
                _zip_text(archive, name, path.read_text(encoding="utf-8"))
            for path in base_model_files(base_model_folder):
                archive.write(path, f"{BASE_MODEL_DIR}/{path.name}")
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return target


BASE_MODEL_DIR, BUNDLED = "base-model", "bundled"


def base_model_files(folder: Path | None) -> list[Path]:
    """The files of a base-model folder the check reads (its config, tokenizer and weights)."""
    if folder is None:
        return []
    from fnmatch import fnmatch

    from .verify_mode import BASE_MODEL_FILES

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise UsageError(f"the base model {folder} holds no config.json")
    return sorted(path for path in folder.iterdir()
                  if path.is_file() and any(fnmatch(path.name, pattern) for pattern in BASE_MODEL_FILES))


def base_model_name(config: BundleConfig, source: Path) -> str:
    """What verify mode is given as the course's base model inside the autograder."""
    if config.base_model.lower() == "none":
        return "none"
    if config.base_model == BUNDLED or (source / BASE_MODEL_DIR / "config.json").is_file():
        return str(source / BASE_MODEL_DIR)
    return config.base_model or load_rubric(source / RUBRIC_FILE).base_model


def fetch_base_model() -> int:
    """setup.sh's step: the course's base model from the Hub into source/base-model (once, at image build)."""
    source = autograder_root() / "source"
    config = load_config(source)
    name = base_model_name(config, source)
    if name == "none" or Path(name) == source / BASE_MODEL_DIR:
        print(f"setup.sh: base model: {name}")
        return 0
    from .verify_mode import resolve_base_model

    fetched = resolve_base_model(name)
    target = source / BASE_MODEL_DIR
    target.mkdir(exist_ok=True)
    for path in base_model_files(fetched):
        shutil.copyfile(path, target / path.name)   # the files, not the cache's links
    print(f"setup.sh: base model {name} in {target}")
    return 0


# --- inside Gradescope: one submission ---------------------------------------------------------
def autograder_root() -> Path:
    return Path(os.environ.get(ROOT_VARIABLE) or AUTOGRADER_ROOT)


def load_config(source: Path) -> BundleConfig:
    data = json.loads((source / CONFIG_FILE).read_text(encoding="utf-8"))
    known = BundleConfig.__dataclass_fields__
    return BundleConfig(**{key: value for key, value in data.items() if key in known})


def student_of(root: Path) -> tuple[str, str]:
    """(an id, the names) from Gradescope's submission_metadata.json, when it is there."""
    try:
        users = json.loads((root / "submission_metadata.json").read_text(encoding="utf-8")).get("users") or []
        names = ", ".join(str(user.get("name", "")) for user in users if isinstance(user, dict))
        first = users[0] if users and isinstance(users[0], dict) else {}
        return str(first.get("id") or "submission"), names
    except (OSError, ValueError, AttributeError):
        return "submission", ""


def _walk_notebooks(folder: Path) -> list[Path]:
    """The notebooks under ``folder``, links to folders not followed, autosaved copies left out."""
    found = []
    for directory, folders, files in os.walk(folder):
        folders[:] = [name for name in folders if name not in (".ipynb_checkpoints", "__MACOSX")]
        found += [Path(directory) / name for name in files if name.endswith(".ipynb") and not name.startswith(".")]
    return sorted(found)


def model_beside(folder: Path) -> Path | None:
    """The model submitted beside the notebook, chosen as ``grade --verify`` chooses it in a student's folder
    (a model folder or a zip before a submission.json, then the newest); else the folder itself when Gradescope
    unpacked the model's zip into it (config.json at its top)."""
    from .submissions import is_submission_json

    candidates = [entry for entry in folder.iterdir() if not entry.name.startswith(".") and (
        (entry.is_dir() and (entry / "config.json").exists()) or entry.suffix.lower() == ".zip"
        or is_submission_json(entry))]
    if candidates:
        return max(candidates, key=lambda p: (not is_submission_json(p), p.lstat().st_mtime, p.name))
    return folder if (folder / "config.json").is_file() and not (folder / "config.json").is_symlink() else None


def find_submission(folder: Path, student_id: str, names: str):
    """The student's Submission: the newest notebook in the upload, and the model beside it; None without one."""
    from .submissions import Submission

    notebooks = _walk_notebooks(folder)
    if not notebooks:
        return None, []
    chosen = max(notebooks, key=lambda path: (path.lstat().st_mtime, str(path)))
    others = [path.relative_to(folder).as_posix() for path in notebooks if path != chosen]
    return Submission(student_id=student_id, notebook=chosen, display_name=names,
                      model=model_beside(chosen.parent)), others


CPU_QUOTA = Path("/sys/fs/cgroup/cpu.max")   # cgroup v2: "quota period" in microseconds, or "max period"
MEMORY_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))  # v2, v1
# What the grader's own process (and the page cache of the model it copies) needs beside the model check, in the
# container: measured at 83 MB for the grader alone (benchmarks/gradescope_fit.py), with room to spare.
GRADER_RESERVE = 400 * 2**20
# What checking a DistilBERT-sized model takes (measured: 1.04 GB for the check, 1.13 GB with the grader, fp32 and
# its bf16 copy, benchmarks/gradescope_fit.py): under this, the result says the container is too small.
CHECK_NEEDS = 1100 * 2**20


def container_cpus(cpu_max: Path = CPU_QUOTA) -> int:
    """The CPUs this container may use: its cgroup's quota (Gradescope gives half a CPU by default), else the
    CPUs this process may run on. os.cpu_count() is the host's, and a thread per host core would thrash."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            return max(1, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def container_memory(files=MEMORY_LIMITS) -> int | None:
    """The container's memory limit in bytes (its cgroup's), or None when it has none."""
    for path in files:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:   # cgroup v1 writes a huge number for "no limit"
            return int(text)
    return None


def check_limits(config: BundleConfig, container: int | None) -> Limits:
    """The model check's limits: the zip's, with the memory kept under the container's. Gradescope kills a
    container over its memory ("Killed", and no results.json); the grader's watchdog stops the check first,
    and the student's result says why."""
    limits = config.limits
    if container is not None and container - GRADER_RESERVE < limits.memory_bytes:
        limits = Limits(memory_bytes=max(container - GRADER_RESERVE, container // 2), max_processes=limits.max_processes,
                        max_file_bytes=limits.max_file_bytes, disk_bytes=limits.disk_bytes)
    return limits


def memory_note(limits: Limits) -> str:
    """What to tell the student and the instructor when the container is too small for the course's model."""
    if limits.memory_bytes >= CHECK_NEEDS:
        return ""
    return (f"This autograder's container leaves the model check {limits.memory_bytes / 2**20:.0f} MB; checking a "
            f"DistilBERT-sized model takes about {CHECK_NEEDS / 2**20:.0f} MB. If the check was stopped for memory, "
            "the autograder's settings are the cause, not your model: tell your instructor (Gradescope: the "
            "assignment's Autograder Settings, memory of at least 2 GB).")


def grade_upload(root: Path, config: BundleConfig) -> tuple[GradeResult, list[str]]:
    """Grade /autograder/submission as ``grade --verify`` grades a student's folder; returns the result and
    the notes for the student about the autograder itself."""
    import warnings

    from .run_folder import job_environment
    from .options import GradingOptions
    from .pipeline import grade_submission
    from .sandbox import SandboxUnavailableWarning, SandboxWithoutNetworkWarning, plan_sandbox

    source, work = root / "source", root / "grading"
    student_id, names = student_of(root)
    submission, others = find_submission(root / "submission", student_id, names)
    if submission is None:
        return GradeResult(student_id=student_id, notebook="", display_name=names, status=NOT_GRADABLE,
                           reason="no notebook (.ipynb) in the submission: upload the executed notebook and the model "
                                  "zip its submit cell wrote"), []
    if others:
        print(f"graded {submission.notebook.name}; other notebooks left aside: {', '.join(others)}")
    limits = check_limits(config, container_memory())
    notes = [note] if (note := memory_note(limits)) else []
    print(f"the model check may use {limits.memory_bytes / 2**20:.0f} MB and {container_cpus()} CPU(s)", *notes)
    options = GradingOptions(output_dir=work, mode=Mode.VERIFY, rubric=load_rubric(source / RUBRIC_FILE),
                             max_length=config.max_length, verify_time_limit_s=config.verify_time_limit_s,
                             limits=limits, sandbox=config.sandbox, base_model=base_model_name(config, source))
    options.jobs = max(1, (os.cpu_count() or 1) // container_cpus())   # the checks' threads: this container's CPUs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Hidden from the model check: the zip's files (the hidden set among them) and where results go.
        sandbox = plan_sandbox(config.sandbox, hidden=[source, root / "results", work], parameters={})
    for warning in caught:
        if issubclass(warning.category, SandboxUnavailableWarning):
            print(f"the model check runs WITHOUT bubblewrap here ({sandbox.problem}); it loads safetensors only and "
                  "runs none of the student's code")
        elif not issubclass(warning.category, SandboxWithoutNetworkWarning):   # verify mode runs no notebook
            print(f"warning: {warning.message}")
    started = time.monotonic()
    result, _ = grade_submission(submission, options, source / HIDDEN_SET_FILE, work / "work",
                                 job_environment(None, options.jobs), sandbox)
    print(f"graded in {time.monotonic() - started:.1f} s, sandboxed: {sandbox.flags is not None}")
    return result, notes


# --- results.json -------------------------------------------------------------------------------
def _metric_output(result: GradeResult, name: str, threshold: float, figures: bool) -> str:
    """The hidden-set test's text: the grader's message with its figures, or only pass/fail and the threshold."""
    check = result.check(name)
    label = "accuracy" if name == "accuracy" else "F1"
    measured = getattr(result.verification, name, None) if result.verification else None
    if figures or check is None:
        text = check.message if check else ""
        notes = [note for note in result.disagreement if f"test {name} " in note]
        return "\n".join([text, *notes]) if figures else text
    if measured is None:
        return check.message   # "not measured: ..." names the problem, and no figure
    verdict = "meets" if check.passed else "is below"
    return (f"The submitted model's {label} on the hidden set {verdict} the threshold of {threshold:.2f}. "
            "(The figure itself is not shown.)")


def gradescope_results(result: GradeResult, rubric: Rubric, hidden_figures: str = "pass-fail",
                       execution_time_s: float | None = None, notes: list[str] = ()) -> dict:
    """Gradescope's results.json for one result: a test per check, the hidden-set figures shown as chosen;
    ``notes`` (about the autograder itself) go in its output."""
    figures = hidden_figures != "pass-fail"
    metric_visibility = hidden_figures if hidden_figures in VISIBILITIES else "visible"
    checks = {check.name: check for check in result.checks}
    tests = []
    for number, name in enumerate(CHECKS, start=1):
        check = checks.get(name)
        if name in ("accuracy", "f1"):
            output = _metric_output(result, name, getattr(rubric, name), figures)
        else:
            output = check.message if check else ""
        if check is None:
            output = f"not graded: {result.reason}" if result.reason else "not graded"
        tests.append({"name": TEST_NAMES.get(name, name), "number": str(number),
                      "score": check.points if check else 0.0, "max_score": rubric.points[name],
                      "output": output, "visibility": metric_visibility if name in ("accuracy", "f1") else "visible"})
    summary = [f"Score: {result.total:g} / {rubric.max_points:g} (verify mode: your notebook was not re-run; its "
               "saved outputs were read and the model you submitted was measured)."]
    if result.status != GRADED:
        summary.append(f"Not graded ({result.status}): {result.reason}")
    if result.verification and result.verification.model_source:
        summary.append(f"Model graded: {result.verification.model_source}")
    summary += [f"Note: {problem}" for problem in result.contract_problems]
    if result.status == GRADER_ERROR:
        summary.append("This is the grader's fault, not yours: tell your instructor.")
    summary += list(notes)
    extra = {"status": result.status, "mode": result.mode, "reason": result.reason}
    if figures and result.verification:
        extra.update(hidden_accuracy=result.verification.accuracy, hidden_f1=result.verification.f1,
                     hidden_size=result.verification.hidden_size)
    answer = {"score": result.total, "output": "\n".join(summary), "visibility": "visible",
              "stdout_visibility": "hidden", "tests": tests, "extra_data": extra}
    if execution_time_s is not None:
        answer["execution_time"] = round(execution_time_s)
    return answer


def write_results(path: Path, results: dict) -> None:
    from .files import write_atomic

    write_atomic(path, json.dumps(results, indent=1))


def failed_results(message: str) -> dict:
    return {"score": 0.0, "output": f"The autograder failed: {message}. This is not your fault: tell your "
                                    "instructor, who sees the details in the autograder's log.",
            "visibility": "visible", "stdout_visibility": "hidden", "tests": []}


def run(root: Path | None = None) -> int:
    """``run_autograder``: grade the submission, write results.json (always), print the details for the instructor."""
    import traceback

    root = root or autograder_root()
    results_file = root / "results" / "results.json"
    started = time.monotonic()
    try:
        config = load_config(root / "source")
        rubric = load_rubric(root / "source" / RUBRIC_FILE)
        result, notes = grade_upload(root, config)
        print(json.dumps(result.to_dict(), indent=1, default=str))   # the instructor's log (stdout is hidden)
        write_results(results_file, gradescope_results(result, rubric, config.hidden_figures,
                                                       time.monotonic() - started, notes))
    except Exception as error:  # whatever broke, Gradescope gets a results.json that says so
        traceback.print_exc(file=sys.stdout)
        write_results(results_file, failed_results(f"{type(error).__name__}: {error}"[:500]))
    return 0


# --- the command -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from .sandbox import size

    parser = argparse.ArgumentParser(prog="grade gradescope build", description="Write a Gradescope autograder zip "
                                     "that grades each upload (the executed notebook and its model zip, or a "
                                     "submission.json naming a Hub commit) as `grade --verify` does.")
    parser.add_argument("-o", "--output", type=Path, default=Path("autograder.zip"),
                        help="the zip to write (default: %(default)s)")
    parser.add_argument("--hidden-set", type=Path, help="CSV with label,title,content to draw the hidden sample from "
                        "(default: the Hub's Amazon Polarity test split)")
    parser.add_argument("--hidden-size", type=int, default=BundleConfig.hidden_size, help="reviews in the hidden "
                        "sample (default: %(default)s)")
    parser.add_argument("--hidden-seed", type=int, help="seed of the sample (default: drawn at random, and printed)")
    parser.add_argument("--hidden-figures", choices=HIDDEN_FIGURES, default=BundleConfig.hidden_figures,
                        help="what students see of the hidden-set accuracy and F1: pass-fail (whether they pass and "
                             "the threshold, not the figure), visible, or the figures after the due date or once "
                             "grades are published (default: %(default)s)")
    parser.add_argument("--rubric", type=Path, help="rubric TOML (default: the course's)")
    parser.add_argument("--torch-index-url", default="", metavar="URL", help="the package index setup.sh installs "
                        "torch from, e.g. PyTorch's CPU-only index (default: pip's own, which on Linux serves the "
                        "CUDA build, several GB)")
    parser.add_argument("--time-limit", type=float, default=BundleConfig.verify_time_limit_s, metavar="SECONDS",
                        help="the model check's limit; keep it under the assignment's autograder timeout "
                             "(default: %(default)s)")
    parser.add_argument("--memory-limit", type=size, default=BundleConfig.memory_bytes, metavar="SIZE",
                        help="the model check's memory limit; keep it under the container's (default: 3G)")
    parser.add_argument("--base-model", default="", metavar="MODEL",
                        help="the course's base model, of which each submitted model must be a fine-tune: a folder "
                             "(its files go in the zip), a Hub id (setup.sh downloads it into the image), or 'none' "
                             "(default: the rubric's [model] base)")
    return parser


def main(argv: list[str]) -> int:
    """``grade gradescope build ...``, or ``python -m grader.gradescope run`` inside Gradescope."""
    if argv[:1] == ["run"]:
        return run()
    if argv[:1] == ["fetch-base-model"]:
        return fetch_base_model()
    if argv[:1] != ["build"]:
        raise UsageError("usage: grade gradescope build [options] (see grade gradescope build --help)")
    args = build_parser().parse_args(argv[1:])
    if args.hidden_size < 1 or args.time_limit <= 0:
        raise UsageError("the hidden-set size and the time limit must be positive")
    seed = secrets.randbits(32) if args.hidden_seed is None else args.hidden_seed
    given = Path(args.base_model).expanduser()
    folder = given if args.base_model and given.is_dir() else None   # else a Hub id, or none
    config = BundleConfig(hidden_figures=args.hidden_figures, hidden_size=args.hidden_size, hidden_seed=seed,
                          verify_time_limit_s=args.time_limit, memory_bytes=args.memory_limit,
                          base_model=args.base_model)   # build_bundle marks a folder's files as bundled
    if any(char in args.torch_index_url for char in "\"'`$\\ \n"):
        raise UsageError("--torch-index-url must be a plain URL")
    path = build_bundle(args.output, args.hidden_set, config, args.rubric, torch_index_url=args.torch_index_url,
                        base_model_folder=folder)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {config.hidden_size} hidden reviews drawn with seed "
          f"{seed}, hidden-set figures {config.hidden_figures}. It holds the hidden set: keep it private.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
