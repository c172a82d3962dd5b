"""The hidden evaluation set: reviews no student saw, on which the grader measures each model.

By default a seeded sample of the Hub's Amazon Polarity *test* split (the notebooks draw only
from the train split). Offline, a local CSV with the Hub's columns ``label,title,content``.
"""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from .errors import ConfigError, HiddenSetUnavailable

HUB_DATASET = "fancyzhx/amazon_polarity"


def review_text(title: str | None, content: str | None) -> str:
    """Title and content as one text, the way the course notebook combines them."""
    title, content = (title or "").strip(), (content or "").strip()
    return f"{title}. {content}" if title else content


def _rows_from_csv(path: Path) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = {"label", "title", "content"} - set(reader.fieldnames or [])
            if missing:
                raise ConfigError(f"{path} lacks the column(s) {', '.join(sorted(missing))}; "
                                  "expected label,title,content")
            return [{"text": review_text(row["title"], row["content"]), "label": int(row["label"])}
                    for row in reader]
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError(f"cannot read the hidden set {path}: {error}") from error


def _rows_from_hub() -> list[dict]:
    try:
        from datasets import load_dataset

        test = load_dataset(HUB_DATASET, split="test")
    except Exception as error:  # offline, the Hub down, datasets missing: all mean "pass a local CSV"
        first_line = (str(error).strip().splitlines() or [""])[0][:200]
        raise HiddenSetUnavailable(
            f"the default hidden set is a sample of the Hugging Face Hub's {HUB_DATASET} test split, and it could "
            f"not be loaded ({type(error).__name__}: {first_line}). Without the Hub, pass a local CSV with "
            "--hidden-set FILE (columns label,title,content; label 0 = negative), e.g. Amazon Polarity's test.csv"
        ) from error
    return [{"text": review_text(row["title"], row["content"]), "label": int(row["label"])} for row in test]


def load_hidden_set(source: str | Path | None, size: int, seed: int) -> list[dict]:
    """``size`` reviews ({"text", "label"}) drawn with ``seed`` from a CSV, or the Hub when ``source`` is None."""
    rows = _rows_from_csv(Path(source)) if source else _rows_from_hub()
    if any(row["label"] not in (0, 1) for row in rows):
        raise ConfigError("the hidden set's labels must be 0 (negative) or 1 (positive)")
    if len(rows) < size:
        raise ConfigError(f"the hidden set has {len(rows)} reviews, fewer than the {size} asked for")
    return random.Random(seed).sample(rows, size)


def write_hidden_set(rows: list[dict], path: Path) -> Path:
    from .files import write_atomic
    return write_atomic(path, json.dumps(rows))
