"""Re-derive a student's test split, so that verify mode can re-measure their model on it (``grade --rederive``).

A student's test split is a deterministic function of public data and two of the notebook's parameters: the
answer key shuffles the train split with ``SEED``, keeps ``SUBSET_SIZE`` reviews, joins title and content,
and splits them 70/15/15, stratified, seeded (sections 3 and its "Subset and split"). The submit cell records
what it used (the data, ``SEED``, ``SUBSET_SIZE``, ``MAX_LENGTH``) and a sha256 of the test split it
measured on (texts and labels). The grader rebuilds the split from its own copy of the data with the same
recipe, and uses it only when the digest matches: a student whose split code differs from the course's, or
whose data the grader does not have, is said to be not re-derived, never wrongly compared.

The recipe here mirrors the answer key's cells (``load-data``, ``combine-text``, ``split``); a test runs the
answer key and checks that both give the same digest.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

COURSE_DATASET = "fancyzhx/amazon_polarity"
LABEL_NAMES = ["negative", "positive"]
# The notebook's test metrics and the grader's re-measure differ only where a review sits on the decision
# boundary and the GPU's arithmetic and the grader's CPU disagree: a review or two of 750.
REDERIVED_TOLERANCE = 0.01


def split_digest(texts: list[str], labels: list[int]) -> str:
    """The digest the answer key's submit cell records: sha256 of the JSON list of [text, label] pairs."""
    pairs = [[text, int(label)] for text, label in zip(texts, labels)]
    return hashlib.sha256(json.dumps(pairs).encode("utf-8")).hexdigest()


def combine_title_and_content(example: dict) -> dict:
    title = (example["title"] or "").strip()
    content = (example["content"] or "").strip()
    return {"text": f"{title}. {content}" if title else content}


def course_test_split(source: str, subset_size: int, seed: int) -> tuple[list[str], list[int]]:
    """The test split the answer key draws from ``source`` (a folder holding train.csv, or a Hub dataset id)
    with ``SUBSET_SIZE`` and ``SEED``: (texts, labels)."""
    from datasets import ClassLabel, load_dataset

    if os.path.isdir(source):
        train = load_dataset("csv", data_files=os.path.join(source, "train.csv"), split="train")
        train = train.cast_column("label", ClassLabel(names=LABEL_NAMES))
    else:
        train = load_dataset(source, split="train")
    if subset_size > len(train):
        raise ValueError(f"SUBSET_SIZE={subset_size} but the train split has only {len(train)} reviews")
    with_text = train.map(combine_title_and_content, remove_columns=["title", "content"])
    subset = with_text.shuffle(seed=seed).select(range(subset_size))
    train_rest = subset.train_test_split(test_size=0.30, stratify_by_column="label", seed=seed)
    test = train_rest["test"].train_test_split(test_size=0.50, stratify_by_column="label", seed=seed)["test"]
    return list(test["text"]), [int(label) for label in test["label"]]


@dataclass
class Rederived:
    """A student's test split as the grader re-derived it, or why it was not."""

    split_file: Path | None = None     # JSON rows {"text", "label"}, when re-derived
    max_length: int | None = None      # the notebook's MAX_LENGTH
    reason: str = ""                   # why not, for the feedback


class TestSplits:
    """Re-derived test splits, shared by a batch's students: most use the same data, seed and subset size,
    so each distinct split is built once and kept as a file in ``folder`` (the output folder's private part)."""

    def __init__(self, folder: Path, data: str | None):
        self.folder, self.data = Path(folder), data
        self._built: dict[tuple, tuple[str, Path] | str] = {}
        self._lock = threading.Lock()

    def source_for(self, recorded_data) -> str | None:
        """Where the grader reads the data a student's notebook used: the instructor's folder (--course-data,
        or the LOCAL_DATA_DIR parameter) for a student's local copy or the course's dataset, else the Hub."""
        if self.data:
            return self.data
        return COURSE_DATASET if recorded_data == COURSE_DATASET else None

    def for_student(self, recorded: dict) -> Rederived:
        if not recorded:
            return Rederived(reason="the submit cell recorded no test split (an older notebook)")
        seed, subset, max_length, digest = (recorded.get(name) for name in ("SEED", "SUBSET_SIZE", "MAX_LENGTH",
                                                                            "sha256"))
        if not all(type(value) is int and value > 0 for value in (subset, max_length)) or type(seed) is not int \
                or not isinstance(digest, str):
            return Rederived(reason="the submit cell's record of its test split is incomplete")
        source = self.source_for(recorded.get("data"))
        if source is None:
            return Rederived(reason="the notebook used data the grader was not given (grade --course-data)")
        built = self.split(source, subset, seed)
        if isinstance(built, str):
            return Rederived(reason=built)
        built_digest, path = built
        if built_digest != digest:
            return Rederived(reason="the course's recipe, on the grader's copy of the data, gives another test split "
                                    "than the notebook's (its split code, or its data, differs)")
        return Rederived(split_file=path, max_length=max_length)

    def split(self, source: str, subset: int, seed: int) -> tuple[str, Path] | str:
        """(digest, file) of the course's test split of ``source``, or why it cannot be built."""
        key = (source, subset, seed)
        with self._lock:
            if key not in self._built:
                try:
                    texts, labels = course_test_split(source, subset, seed)
                except Exception as error:   # data missing, offline, too small: the split is not re-derived
                    self._built[key] = f"the grader cannot rebuild the test split: {type(error).__name__}: " \
                                       f"{str(error)[:200]}"
                else:
                    digest = split_digest(texts, labels)
                    path = self.folder / f"test-split-{digest[:16]}.json"
                    self.folder.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps([{"text": text, "label": label}
                                                for text, label in zip(texts, labels)]), encoding="utf-8")
                    self._built[key] = (digest, path)
            return self._built[key]


def check_course_data(folder: str | None) -> None:
    if folder is not None and not (Path(folder) / "train.csv").is_file():
        raise UsageError(f"--course-data {folder} holds no train.csv")


def compare_metrics(printed: dict, measured: dict) -> list[str]:
    """The metrics the notebook printed that the grader's re-measure does not reproduce, in words."""
    return [f"test {name} {printed[name]:.3f} printed, {measured[name]:.3f} re-measured"
            for name in ("accuracy", "precision", "recall", "f1")
            if name in printed and name in measured and abs(printed[name] - measured[name]) > REDERIVED_TOLERANCE]
