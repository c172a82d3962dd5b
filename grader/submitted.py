"""Verify mode (``grade --verify``): grade the model a student submitted, without re-running the notebook.

A submission is the executed notebook plus its saved model: a folder holding ``config.json``, a zip of
that folder, or a Hugging Face Hub model pinned to a commit (recorded by the notebook's submit cell, or
in a ``submission.json`` beside it). The steps, after ``pipeline.read_submission``:

1. saved_contract     test_metrics, predictions and the model reference, from the notebook's saved output
2. ran_in_order       every code cell ran, in order, without an error (the saved execution counts)
3. stage_model        the model's files copied into the working folder, nothing else, within the limits
4. verify             as in execute mode: confined, loaded with safetensors, measured on the hidden set,
                      and it must reproduce the notebook's predictions
5. weights_match      the weights are the very files the notebook recorded (sha256)

What a student submitted is hostile input: the zip may hold links, ``..`` paths, a bomb or thousands of
files; a folder may hold links to the grader's files. Only regular files with plain names and the
suffixes a model needs are staged, byte counts are enforced while copying (never trusted from a header),
and the verifier then runs in the sandbox, as in execute mode.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .contract import Contract, parse_metrics, parse_predictions
from .execute import cell_errors, cell_location, cell_section, student_cell_number
from .results import VERIFY_MODE
from .rubric import notebook_errors
from .sandbox import Limits
from .submissions import SUBMISSION_FILE, is_submission_json

__all__ = ["VERIFY_MODE", "saved_contract", "ran_in_order", "stage_model", "weights_mismatch", "ModelNotStaged"]

# The files a saved model and tokenizer consist of; anything else in a submission is left where it is.
MODEL_SUFFIXES = (".json", ".safetensors", ".txt", ".model")
MAX_MODEL_FILES = 64
MAX_SUBMISSION_JSON_BYTES = 1_000_000
HUB_REPO = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")


class ModelNotStaged(Exception):
    """The submitted model could not be taken in; the message says why, for the student's feedback."""


@dataclass
class SubmittedContract(Contract):
    """The contract as the notebook's submit cell recorded it, with the model it names."""

    model: dict = field(default_factory=dict)


# 1 ------------------------------------------------------------------------------------------
def _submission_outputs(nb):
    """The JSON objects the notebook displayed that look like a submission, the last one first."""
    found = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            data = output.get("data", {}).get("application/json")
            if isinstance(data, dict) and "predictions" in data and "test_metrics" in data:
                found.append(data)
    return found[::-1]


def saved_contract(nb) -> SubmittedContract:
    """What the notebook's submit cell displayed (the grader's contract cell never ran in verify mode)."""
    contract = SubmittedContract()
    outputs = _submission_outputs(nb)
    if not outputs:
        contract.problems.append("the notebook's saved outputs hold no submission (run its last section, Submit)")
        return contract
    payload = outputs[0]
    contract.test_metrics = parse_metrics(payload.get("test_metrics"), contract.problems)
    contract.predictions = parse_predictions(payload.get("predictions"), contract.problems)
    contract.model = payload.get("model") if isinstance(payload.get("model"), dict) else {}
    return contract


# 2 ------------------------------------------------------------------------------------------
def ran_in_order(nb) -> tuple[bool, str, list]:
    """Whether the saved outputs show every code cell run once, top to bottom, without an error;
    with the message and the errors found."""
    errors = cell_errors(nb)
    failures = notebook_errors(errors)
    counts = [(index, cell.get("execution_count")) for index, cell in enumerate(nb.cells)
              if cell.cell_type == "code" and cell.source.strip()]
    never = [index for index, count in counts if not isinstance(count, int)]
    ran = [(index, count) for index, count in counts if isinstance(count, int)]
    out_of_order = next((index for (_, before), (index, count) in zip(ran, ran[1:]) if count <= before), None)

    def where(index: int) -> str:
        return cell_location(cell_section(nb, index), nb.cells[index].get("id", ""), student_cell_number(nb, index))

    if failures:
        first = failures[0]
        return False, f"the saved outputs show {first.where} raised {first.ename}: {first.evalue[:400]}", errors
    if never:
        return False, f"{len(never)} code cell(s) never ran (first: {where(never[0])}): use Restart and run all", errors
    if out_of_order is not None:
        return False, (f"{where(out_of_order)} ran before the cell above it (execution counts out of order): "
                       "use Restart and run all, then submit"), errors
    return True, "the saved outputs show every cell run in order without errors (not re-run)", errors


# 3 ------------------------------------------------------------------------------------------
def _model_file_name(name: str) -> bool:
    return (name == os.path.basename(name) and name not in ("", ".", "..") and not name.startswith(".")
            and name.endswith(MODEL_SUFFIXES) and "\\" not in name and "\x00" not in name)


def _copy_capped(source, target: Path, budget: list[int], limits: Limits) -> None:
    """Copy a stream, counting its real bytes against the file and total limits."""
    written = 0
    with open(target, "xb") as handle:
        while chunk := source.read(1 << 20):
            written += len(chunk)
            budget[0] -= len(chunk)
            if written > limits.max_file_bytes:
                raise ModelNotStaged(f"{target.name} is over the limit of {limits.max_file_bytes} bytes a file")
            if budget[0] < 0:
                raise ModelNotStaged(f"the model is over the limit of {limits.disk_bytes} bytes in all")
            handle.write(chunk)


def _zip_members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The model files of a zip by plain name: at its top, or in one folder (a zipped model folder)."""
    members = [info for info in archive.infolist() if not info.is_dir()
               and not info.filename.startswith("__MACOSX/") and not info.filename.endswith(".DS_Store")]
    if len(members) > MAX_MODEL_FILES:
        raise ModelNotStaged(f"the zip holds {len(members)} files; a model has at most {MAX_MODEL_FILES}")
    tops = {info.filename.split("/")[0] for info in members if "/" in info.filename}
    prefix = f"{tops.pop()}/" if len(tops) == 1 and all("/" in info.filename for info in members) else ""
    chosen = {}
    for info in members:
        name = info.filename[len(prefix):] if info.filename.startswith(prefix) else info.filename
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ModelNotStaged(f"the zip holds a link ({info.filename[:100]!r}), not a file")
        if info.flag_bits & 0x1:
            raise ModelNotStaged("the zip is encrypted")
        if "/" in name or not _model_file_name(name):
            continue   # a notebook, checkpoints, a path that leads elsewhere: not part of the model
        chosen[name] = info
    return chosen


def stage_zip(path: Path, target: Path, limits: Limits) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            budget = [limits.disk_bytes]
            for name, info in _zip_members(archive).items():
                with archive.open(info) as source:
                    _copy_capped(source, target / name, budget, limits)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError) as error:
        raise ModelNotStaged(f"the zip cannot be read: {error}") from error


def stage_folder(folder: Path, target: Path, limits: Limits, links_within: Path | None = None) -> None:
    """Copy a model folder's regular files. Links are refused, except, for a Hub snapshot
    (``links_within``), links into that repository's own cache."""
    entries = sorted(folder.iterdir())
    if len(entries) > MAX_MODEL_FILES * 4:
        raise ModelNotStaged(f"the model folder holds {len(entries)} entries; a model has far fewer")
    budget = [limits.disk_bytes]
    for entry in entries:
        if not _model_file_name(entry.name):
            continue
        real = Path(os.path.realpath(entry))
        if entry.is_symlink() and (links_within is None or not real.is_relative_to(links_within)):
            raise ModelNotStaged(f"{entry.name} in the model folder is a link to another file")
        if not stat.S_ISREG(os.stat(real).st_mode):
            continue
        with open(real, "rb") as source:
            _copy_capped(source, target / entry.name, budget, limits)


def hub_reference(contract: SubmittedContract, submission_json: Path | None) -> tuple[str, str] | None:
    """(repository, commit) the notebook recorded, or a ``submission.json`` beside it names."""
    model = contract.model
    if "hub" not in model and submission_json is not None:
        try:
            if submission_json.stat().st_size > MAX_SUBMISSION_JSON_BYTES:
                raise ModelNotStaged(f"{SUBMISSION_FILE} is over {MAX_SUBMISSION_JSON_BYTES} bytes")
            model = json.loads(submission_json.read_text(encoding="utf-8")).get("model") or {}
        except (OSError, ValueError, AttributeError) as error:
            raise ModelNotStaged(f"{SUBMISSION_FILE} cannot be read: {error}") from error
    if "hub" not in model:
        return None
    repository, revision = model.get("hub"), model.get("revision")
    if not isinstance(repository, str) or not HUB_REPO.match(repository):
        raise ModelNotStaged(f"{str(repository)[:100]!r} is not a Hub model id (owner/name)")
    if not isinstance(revision, str) or not COMMIT.match(revision):
        raise ModelNotStaged("the Hub model is not pinned to a commit (40 hexadecimal digits), so what is graded "
                             "could change after the deadline")
    return repository, revision


def hub_download_size(repository: str, revision: str) -> int | None:
    """Bytes of the model's files at ``revision`` as the Hub lists them, or None when it cannot be asked
    (offline: then only what is already in the cache is used)."""
    from huggingface_hub import HfApi

    try:
        info = HfApi().model_info(repository, revision=revision, files_metadata=True)
    except Exception:   # offline, private, gone: snapshot_download says which, below
        return None
    return sum(sibling.size or 0 for sibling in info.siblings or [] if sibling.rfilename.endswith(MODEL_SUFFIXES))


def download_from_hub(repository: str, revision: str, limits: Limits) -> tuple[Path, Path]:
    """The snapshot folder of ``repository`` at ``revision`` (from the cache, or downloaded: outside the
    sandbox, which has no network), and the repository's cache folder its links may point into. A repository
    larger than the disk limit is refused before a byte is downloaded: it would fill the grader's disk."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    size = hub_download_size(repository, revision)
    if size is not None and size > limits.disk_bytes:
        raise ModelNotStaged(f"{repository}@{revision[:12]} holds {size} bytes of model files, over the limit of "
                             f"{limits.disk_bytes}")
    try:
        snapshot = Path(snapshot_download(repository, revision=revision, repo_type="model",
                                          allow_patterns=[f"*{suffix}" for suffix in MODEL_SUFFIXES]))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as error:
        raise ModelNotStaged(f"{repository}@{revision[:12]} cannot be downloaded: {type(error).__name__}: "
                             f"{str(error)[:300]}") from error
    return snapshot, Path(os.path.realpath(snapshot.parent.parent))


def stage_model(model_source: Path | None, contract: SubmittedContract, target: Path, limits: Limits) -> str:
    """Copy the submitted model's files into ``target``; returns where they came from, in words."""
    target.mkdir(parents=True)
    submission_json = model_source if model_source is not None and is_submission_json(model_source) else None
    if model_source is not None and submission_json is None:
        if model_source.is_symlink():
            raise ModelNotStaged(f"the submitted model {model_source.name} is a link, not a file of its own")
        if model_source.is_dir():
            stage_folder(model_source, target, limits)
        else:
            stage_zip(model_source, target, limits)
        return model_source.name
    reference = hub_reference(contract, submission_json)
    if reference is None:
        raise ModelNotStaged("no model was submitted: upload the zip the submit cell wrote next to the notebook")
    snapshot, cache = download_from_hub(*reference, limits)
    stage_folder(snapshot, target, limits, links_within=cache)
    return f"{reference[0]}@{reference[1][:12]}"


# 5 ------------------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def weights_mismatch(contract: SubmittedContract, model_dir: Path) -> str | None:
    """Why the staged weights are not the files the notebook recorded, or None when they are (or when
    the notebook recorded none: the predictions must still be reproduced)."""
    recorded = contract.model.get("weights_sha256")
    if not isinstance(recorded, dict) or not recorded:
        return None
    staged = {path.name: file_sha256(path) for path in sorted(model_dir.glob("*.safetensors"))}
    if staged != recorded:
        return ("the submitted weights are not the files this notebook saved (their sha256 differs from the one "
                "its submit cell recorded): submit the zip from the same run as the notebook")
    return None
