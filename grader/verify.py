"""Judge the student's saved model itself, in a process of its own, after the kernel is gone.

The model is loaded from safetensors only, with no remote code and no network, so loading it
runs none of the student's code. It is then measured on the hidden evaluation set and asked to
re-predict the student's own ``predictions`` texts, which shows whether those came from it.

Run as ``python -m grader.verify`` (the request on stdin, the result on stdout), confined like the
kernel; ``verify_in_subprocess`` does that.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .cancel import Cancellation
from .course import LABELS
from .lists import capped
from .results import Verification
from .sandbox import Limits, Watchdog, kernel_environment

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
MAX_MODEL_BYTES = 2_000_000_000
CONFIDENCE_TOLERANCE = 0.01  # a GPU-trained model re-run on a CPU differs far less than this
MAX_CONFIG_BYTES = 1_000_000
MAX_HEADER_BYTES = 100_000_000  # a safetensors header, or a shard index; real ones are a few hundred kB
# Far above any model the course fine-tunes. The config is checked against these before transformers
# reads it: some settings cost memory even on the meta device (num_labels builds a dict of that size,
# every layer or expert is a Python module).
CONFIG_LIMITS = {
    "num_hidden_layers": 64, "n_layers": 64, "n_layer": 64, "num_layers": 64,
    "hidden_size": 8192, "dim": 8192, "d_model": 8192, "n_embd": 8192,
    "intermediate_size": 65536, "hidden_dim": 65536, "d_ff": 65536, "n_inner": 65536,
    "vocab_size": 1_000_000, "max_position_embeddings": 65536, "n_positions": 65536,
    "num_attention_heads": 512, "num_local_experts": 256, "num_experts": 256, "num_labels": 1000,
}
# save_pretrained writes exactly the model's tensors; the slack only forgives odd persistent buffers.
PARAMETER_SLACK_SHARE, PARAMETER_SLACK = 0.01, 10_000
SAFETENSORS_ITEM_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}


def model_folder_problem(save_dir: Path, allowed_root: Path) -> str | None:
    """Why ``save_dir`` cannot be loaded safely, or None when it can."""
    if not save_dir.is_dir():
        return f"the saved model folder {save_dir.name!r} does not exist"
    resolved = save_dir.resolve()
    if not resolved.is_relative_to(allowed_root.resolve()):
        return "SAVE_DIR points outside the submission's own folder"
    files = [path for path in resolved.rglob("*") if path.is_file() or path.is_symlink()]
    for path in files:
        if not path.resolve().is_relative_to(resolved):
            return f"{path.name} is a link that leaves the model folder"
    names = {path.name for path in files}
    if "config.json" not in names:
        return "no config.json in the saved model folder (use save_pretrained)"
    if not any(name.endswith(".safetensors") for name in names):
        if any(name.endswith(PICKLE_SUFFIXES) for name in names):
            return "the weights are pickle files (.bin/.pt), which the grader does not load; save with safetensors"
        return "no model.safetensors in the saved model folder"
    if sum(path.stat().st_size for path in files) > MAX_MODEL_BYTES:
        return f"the saved model folder is over {MAX_MODEL_BYTES // 1_000_000:,} MB"
    return None


class Refusal(Exception):
    """Why the saved model is not loaded, worded for the student."""


def config_problem(save_dir: Path) -> str | None:
    """Why config.json does not describe the weights stored beside it, or None when it does.

    from_pretrained builds the model that config.json describes before it reads a single weight, so a
    config of 2,000 layers next to a small model.safetensors would allocate and initialise gigabytes.
    This check reads the config and the safetensors headers only, and builds the model on the meta device.
    """
    try:
        settings = read_config_settings(save_dir)
        files = weight_files(save_dir, settings)
        stored = sum(safetensors_parameter_count(path) for path in files)
        implied = implied_parameter_count(save_dir)
    except Refusal as refusal:
        return str(refusal)
    except Exception as error:  # the folder is hostile input: whatever breaks here is a problem, never a crash
        return f"the saved model's config.json cannot be checked: {type(error).__name__}: {error}"[:500]
    holder = f"{files[0].name} holds" if len(files) == 1 else f"its {len(files)} safetensors shards hold"
    return parameter_mismatch(implied, stored, holder)


def read_config_settings(save_dir: Path) -> dict:
    """config.json as a dict, refused when it is large, malformed or sets a size over CONFIG_LIMITS."""
    path = save_dir / "config.json"
    if not path.is_file():
        raise Refusal("no config.json at the top of the saved model folder (use save_pretrained)")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise Refusal(f"config.json is over {MAX_CONFIG_BYTES // 1_000_000} MB, far more than a model's settings take")
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as error:
        raise Refusal(f"config.json is not valid JSON: {error}"[:500]) from None
    if not isinstance(settings, dict):
        raise Refusal("config.json is not a JSON object")
    oversized = oversized_setting(settings)
    if oversized:
        raise Refusal(oversized)
    return settings


def oversized_setting(settings) -> str | None:
    """The first setting over CONFIG_LIMITS, nested configs included, as a message; None when all fit."""
    if isinstance(settings, list):
        return next(filter(None, map(oversized_setting, settings)), None)
    if not isinstance(settings, dict):
        return None
    for key, value in settings.items():
        limit = CONFIG_LIMITS.get(key)
        if limit is not None and isinstance(value, (int, float)) and value > limit:
            return (f"config.json sets {key} to {value:,}, over the {limit:,} the grader accepts: "
                    "no model of this course is near that size")
        found = oversized_setting(value)
        if found:
            return found
    return None


def weight_files(save_dir: Path, settings: dict) -> list[Path]:
    """The safetensors files from_pretrained will read, chosen by its rules: the file config.json names
    (transformers_weights), else model.safetensors, else the shards model.safetensors.index.json lists."""
    named = settings.get("transformers_weights")
    if named is not None and not (isinstance(named, str) and plain_file_name(named)
                                  and named.endswith((".safetensors", ".safetensors.index.json"))):
        raise Refusal("config.json's transformers_weights does not name a safetensors file of the model folder")
    if named and named.endswith(".safetensors"):
        candidates = [save_dir / named]
    elif named:
        candidates = shard_files(save_dir / named)
    elif (save_dir / "model.safetensors").is_file():
        candidates = [save_dir / "model.safetensors"]
    elif (save_dir / "model.safetensors.index.json").is_file():
        candidates = shard_files(save_dir / "model.safetensors.index.json")
    else:
        raise Refusal("no model.safetensors at the top of the saved model folder (use save_pretrained)")
    for path in candidates:
        if not path.is_file():
            raise Refusal(f"the model's weights file {path.name} is not in the saved model folder")
    return candidates


def plain_file_name(name: str) -> bool:
    return name not in ("", ".", "..") and Path(name).name == name


def shard_files(index: Path) -> list[Path]:
    """The shard files a model.safetensors.index.json lists, each once; refused when one lies elsewhere."""
    if not index.is_file() or index.stat().st_size > MAX_HEADER_BYTES:
        raise Refusal(f"{index.name} is missing or too large")
    try:
        names = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
    except Exception:
        raise Refusal(f"{index.name} is not a valid shard index") from None
    if not names or not all(isinstance(name, str) and plain_file_name(name) for name in names):
        raise Refusal(f"{index.name} lists shards that are not files of the model folder")
    return [index.parent / name for name in sorted(names)]


def safetensors_parameter_count(path: Path) -> int:
    """How many numbers a safetensors file stores, from its header alone; the tensors are never read.

    The format: 8 bytes, a little-endian header length, then a JSON header giving each tensor's dtype,
    shape and byte range. Each count must be backed by bytes in the file, so a header cannot claim a
    model far bigger than the file to make a matching config pass.
    """
    malformed = Refusal(f"{path.name} is not a valid safetensors file (its header is malformed)")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        header_length = int.from_bytes(prefix, "little")
        if len(prefix) < 8 or header_length > min(MAX_HEADER_BYTES, size - 8):
            raise malformed
        try:
            header = json.loads(handle.read(header_length))
        except (ValueError, RecursionError):
            raise malformed from None
    if not isinstance(header, dict):
        raise malformed
    header.pop("__metadata__", None)
    extents = [tensor_extent(entry) for entry in header.values()]
    if None in extents or sum(nbytes for _, nbytes in extents) > size - 8 - header_length:
        raise malformed
    return sum(count for count, _ in extents)


def tensor_extent(entry) -> tuple[int, int] | None:
    """(numbers, bytes) of one header entry, or None when its dtype, shape or byte range do not agree."""
    if not isinstance(entry, dict) or entry.get("dtype") not in SAFETENSORS_ITEM_BYTES:
        return None
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not isinstance(shape, list) or not all(type(size) is int and size >= 0 for size in shape):
        return None
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(at) is int for at in offsets)):
        return None
    count = math.prod(shape)
    nbytes = count * SAFETENSORS_ITEM_BYTES[entry["dtype"]]
    return (count, nbytes) if 0 <= offsets[0] and offsets[1] - offsets[0] == nbytes else None


def implied_parameter_count(save_dir: Path) -> int:
    """How many numbers save_pretrained would write for this config, counted on the meta device, which
    gives tensors a shape but no memory."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(save_dir, trust_remote_code=False, local_files_only=True)
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    # keep_vars keeps the tensors themselves, so tied weights count once, as save_pretrained stores them
    tensors = {id(tensor): tensor.numel() for tensor in model.state_dict(keep_vars=True).values()}
    return sum(tensors.values())


def parameter_mismatch(implied: int, stored: int, holder: str) -> str | None:
    """A message when the config's model and the stored weights differ by more than the slack."""
    slack = PARAMETER_SLACK_SHARE * min(implied, stored) + PARAMETER_SLACK
    if implied > stored + slack:
        return (f"config.json describes a model of {in_words(implied)} parameters, but {holder} "
                f"{in_words(stored)}: the folder was not written by save_pretrained")
    if stored > implied + slack:
        return (f"{holder} {in_words(stored)} numbers, but config.json describes a model of only "
                f"{in_words(implied)} parameters: the weights are not the model's")
    return None


def in_words(count: int) -> str:
    for size, name in ((1e9, "billion"), (1e6, "million")):
        if count >= size:
            return f"{count / size:.3g} {name}"
    return f"{count:,}"


# --- is it a fine-tune of the course's model? -------------------------------------------------
# What a model's architecture is: a fine-tune keeps every one of these of its base model.
ARCHITECTURE_SETTINGS = ("model_type", "vocab_size", "hidden_size", "dim", "num_hidden_layers", "n_layers",
                         "num_attention_heads", "n_heads", "intermediate_size", "hidden_dim",
                         "max_position_embeddings", "type_vocab_size")
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
# Cosine similarity of a tensor to the base's (of the flattened matrices). Fine-tuning moves weights a
# little from where pre-training left them; a model trained from another starting point, or initialised at
# random, shares nothing with them (a similarity near 0). Measured (benchmarks/base_model_distance.py,
# docs/verify-mode.md): real fine-tunes >= 0.97 for the word embeddings and the encoder's matrices;
# random and foreign weights <= 0.03. The threshold sits far from both.
MIN_BASE_SIMILARITY = 0.5


def base_model_check(save_dir: Path, base_dir: Path, tokenizer, base_name: str) -> tuple[str | None, dict]:
    """Why the model in ``save_dir`` is not a fine-tune of the base model in ``base_dir`` (None when it is),
    with the similarities measured. Reads the two configs, the base's vocabulary, and only the tensors
    compared (safetensors' lazy ``safe_open``)."""
    try:
        settings, base_settings = read_config_settings(save_dir), read_config_settings(base_dir)
        differences = [f"{key} {settings.get(key)!r} (the course's model has {base_settings[key]!r})"
                       for key in ARCHITECTURE_SETTINGS if key in base_settings and settings.get(key) != base_settings[key]]
        if differences:
            return (f"this is not a fine-tune of the course's model {base_name}: its config has "
                    + ", ".join(differences[:4]), {})
        vocabulary = vocabulary_difference(tokenizer, base_dir)
        if vocabulary:
            return f"this is not a fine-tune of the course's model {base_name}: {vocabulary}", {}
        similarity = weight_similarities(save_dir, settings, base_dir, base_settings)
    except Refusal as refusal:
        return str(refusal), {}
    except Exception as error:   # the student's files are hostile input: a problem, never a crash
        return f"the model cannot be compared with the course's model: {type(error).__name__}: {error}"[:500], {}
    if "word_embeddings" not in similarity:
        return f"its weights have no word embeddings of the course's model {base_name} to compare", similarity
    for group, words in (("word_embeddings", "word embeddings"),
                         ("encoder_median", "other weight matrices (attention, feed-forward, positions)")):
        if similarity.get(group, 1.0) < MIN_BASE_SIMILARITY:
            return (f"this is not a fine-tune of the course's model {base_name}: its {words} are not the "
                    f"course model's (cosine similarity {similarity[group]:.3f}; fine-tuning keeps it above "
                    f"{MIN_BASE_SIMILARITY}): trained from another model, or from random weights", similarity)
    return None, similarity


def vocabulary_difference(tokenizer, base_dir: Path) -> str | None:
    """How the tokenizer's vocabulary differs from the base model's, or None (also when the base has none)."""
    from transformers import AutoTokenizer

    try:
        base = AutoTokenizer.from_pretrained(base_dir, trust_remote_code=False, local_files_only=True).get_vocab()
    except Exception:   # a base model folder without a tokenizer: nothing to compare
        return None
    vocabulary = tokenizer.get_vocab()
    if vocabulary == base:
        return None
    differing = sum(vocabulary.get(token) != index for token, index in base.items())
    return (f"its tokenizer's vocabulary is not the course model's ({len(vocabulary):,} tokens, "
            f"{differing:,} of the course's {len(base):,} missing or numbered differently)")


def tensor_names(folder: Path, settings: dict) -> dict[str, tuple[Path, str]]:
    """Each tensor of the model's safetensors by its name without the architecture's prefix
    (``distilbert.embeddings...`` and a bare model's ``embeddings...`` are the same tensor)."""
    from safetensors import safe_open

    prefix = f"{settings.get('model_type')}."
    names = {}
    for path in weight_files(folder, settings):
        with safe_open(path, "pt") as handle:
            for name in handle.keys():
                names[name.removeprefix(prefix)] = (path, name)
    return names


def read_tensor(path: Path, name: str):
    from safetensors import safe_open

    with safe_open(path, "pt") as handle:
        return handle.get_tensor(name)


def cosine_similarity(a, b, chunk: int = 1 << 20) -> float:
    """Cosine similarity of two flat tensors, summed in float64 a chunk at a time (a float32 sum over the
    23 million numbers of DistilBERT's word embeddings drifts past 1)."""
    dot = a_norm = b_norm = 0.0
    for start in range(0, a.numel(), chunk):
        x, y = a[start:start + chunk].double(), b[start:start + chunk].double()
        dot, a_norm, b_norm = dot + float(x @ y), a_norm + float(x @ x), b_norm + float(y @ y)
    return dot / (a_norm * b_norm) ** 0.5 if a_norm > 0 and b_norm > 0 else 0.0


def weight_similarities(save_dir: Path, settings: dict, base_dir: Path, base_settings: dict) -> dict:
    """Cosine similarity to the base of the word embeddings, and the median and lowest over the other
    weight matrices both models have (of one shape), one tensor in memory at a time."""
    mine, base = tensor_names(save_dir, settings), tensor_names(base_dir, base_settings)
    similarities = {}
    for name in sorted(set(mine) & set(base)):
        ours, theirs = read_tensor(*mine[name]), read_tensor(*base[name])
        if ours.dim() == 2 and ours.shape == theirs.shape:
            similarities[name] = cosine_similarity(ours.flatten(), theirs.flatten())
    summary = {"matrices": len(similarities)}
    if WORD_EMBEDDINGS in similarities:
        summary["word_embeddings"] = similarities.pop(WORD_EMBEDDINGS)
    if similarities:
        values = sorted(similarities.values())
        summary.update(encoder_median=values[len(values) // 2], encoder_min=values[0])
    return summary


def wilson_interval(successes: int, total: int, z: float = 1.96) -> tuple[float, float]:
    if total == 0:
        return (0.0, 1.0)
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


def f1_score_binary(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """F1 of the positive class; works on a batch of resamples along the last axis."""
    true_positive = ((predicted == 1) & (labels == 1)).sum(axis=-1)
    false_positive = ((predicted == 1) & (labels == 0)).sum(axis=-1)
    false_negative = ((predicted == 0) & (labels == 1)).sum(axis=-1)
    denominator = 2 * true_positive + false_positive + false_negative
    return np.where(denominator > 0, 2 * true_positive / np.maximum(denominator, 1), 0.0)


def binary_metrics(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Accuracy, and precision, recall and F1 of the positive class (0 where undefined), as the notebook's
    compute_metrics reports them."""
    true_positive = int(((predicted == 1) & (labels == 1)).sum())
    precision = true_positive / max(int((predicted == 1).sum()), 1)
    recall = true_positive / max(int((labels == 1).sum()), 1)
    return {"accuracy": float((predicted == labels).mean()) if len(labels) else 0.0, "precision": precision,
            "recall": recall, "f1": float(f1_score_binary(labels, predicted))}


def bootstrap_f1_interval(labels, predicted, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(labels), size=(resamples, len(labels)))
    scores = f1_score_binary(labels[picks], predicted[picks])
    return (float(np.percentile(scores, 2.5)), float(np.percentile(scores, 97.5)))


def output_to_class(model) -> list[int]:
    """Map each output index of the model to 0 (negative) or 1 (positive) by its label name."""
    names = [str(model.config.id2label.get(index, "")).lower() for index in range(model.config.num_labels)]
    if sorted(names) == sorted(LABELS):
        return [LABELS.index(name) for name in names]
    return list(range(model.config.num_labels))  # LABEL_0 / LABEL_1: index = class, as the data's labels


# Batches are filled up to this many tokens (padding included) rather than to a fixed count of reviews:
# short reviews go many to a batch, long ones few. On the 2-core CPU (MiniLM, bf16 and fp32 alike) 2-4k
# tokens ran fastest; 8k was 10-15 % slower and 12k 20 % (the activations outgrow the caches). A sample
# spread over all lengths batched by tokens alone padded 40 % of its tokens and ran at half speed.
BATCH_TOKENS = 4096
MAX_BATCH_REVIEWS = 256
MAX_PADDING = 0.2
# bf16 may answer only where it cannot change a label. Every review whose top two bf16 logits are closer
# than the threshold is recomputed in fp32. The threshold is BF16_MIN_GAP, or BF16_SAFETY times the largest
# bf16 error measured on this model, whichever is larger. The error is measured on a pilot sample (every
# BF16_PILOT_EVERY-th review by length, run in both precisions first) and on every review recomputed, so a
# model that bf16 disturbs more is recomputed more widely, up to the whole set. When over BF16_MAX_NEAR of
# the pilot lies within the threshold (an untrained model), bf16 would save nothing: fp32 does it all.
# Measured on MiniLM fine-tuned briefly, 500 hidden-set reviews: the largest bf16 error 0.064, the median
# 0.0045, so the threshold is 8 times the largest; 38 reviews of 500 went to fp32 (16 of them the pilot).
BF16_MIN_GAP = 0.5          # logits; a top probability below 0.62 for two labels
BF16_SAFETY = 8
BF16_PILOT_EVERY = 32
BF16_MAX_NEAR = 0.4


def predict_probabilities(model, tokenizer, texts: list[str], max_length: int, batch_size: int | None = None, *,
                          labels_only: bool = False, threads: int | None = None,
                          stats: dict | None = None) -> np.ndarray:
    """Softmax probabilities of ``texts``, in fp32 unless ``labels_only`` allows bf16.

    Reviews are sorted by their number of tokens and each batch is padded to its longest, holding about
    BATCH_TOKENS tokens (at most ``batch_size`` reviews when it is given). With ``labels_only`` the caller
    promises to use only each row's top label: on a CPU with native bf16 (or a CUDA GPU) a bf16 copy of
    the model answers first and every review it places near the decision boundary is recomputed in fp32,
    so the labels are fp32's (see BF16_MIN_GAP) while the probabilities of confident reviews may differ
    from fp32's by bf16's error. Without it, every probability is fp32's. ``threads`` sets torch's thread
    count for the call; ``stats``, when given, receives how the work was done.
    """
    import torch

    encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"] if texts else []
    lengths = [len(ids) for ids in encoded]
    logits = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    info = {"reviews": len(texts), "precision": "fp32"}
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            done = np.zeros(len(texts), dtype=bool)
            if labels_only and texts and bf16_is_native(model.device):
                try:
                    info.update(bf16_then_fp32(model, tokenizer, texts, max_length, lengths, batch_size, logits,
                                               done))
                except Exception:  # no bf16 kernels for this architecture here: fp32 answers it all
                    done[:] = False
            for batch in token_batches(lengths, batch_size, np.flatnonzero(~done)):
                logits[batch] = batch_logits(model, tokenizer, texts, batch, max_length)
            probabilities = torch.softmax(torch.from_numpy(logits), dim=-1).numpy().astype(np.float64)
    finally:
        torch.set_num_threads(previous_threads)
    if stats is not None:
        stats.clear()
        stats.update(info, threads=threads or previous_threads)
    return probabilities


def token_batches(lengths: list[int], batch_size: int | None = None, indices=None) -> list[list[int]]:
    """``indices`` (default all) sorted by token count, in batches of at most BATCH_TOKENS tokens once each
    is padded to its longest (a review alone always makes a batch), at most ``batch_size`` reviews, and at
    most MAX_PADDING of padding: a sample spread over all lengths (the pilot, the reviews recomputed)
    would otherwise pad its short reviews to the long ones'."""
    order = sorted(range(len(lengths)) if indices is None else map(int, indices),
                   key=lambda index: (lengths[index], index))
    batches, current, tokens = [], [], 0
    for index in order:  # sorted, so each review added is its batch's longest
        padded = (len(current) + 1) * lengths[index]
        if current and (padded > BATCH_TOKENS or len(current) >= (batch_size or MAX_BATCH_REVIEWS)
                        or tokens + lengths[index] < (1 - MAX_PADDING) * padded):
            batches.append(current)
            current, tokens = [], 0
        current.append(index)
        tokens += lengths[index]
    return batches + [current] if current else batches


def batch_logits(model, tokenizer, texts: list[str], batch: list[int], max_length: int) -> np.ndarray:
    """The model's logits for one batch of ``texts``, as float32."""
    inputs = tokenizer([texts[index] for index in batch], truncation=True, max_length=max_length,
                       padding=True, return_tensors="pt").to(model.device)
    return model(**inputs).logits.float().cpu().numpy()


_BF16_NATIVE: dict[str, bool] = {}


def bf16_is_native(device) -> bool:
    """Whether ``device`` computes bf16 natively (a CUDA GPU that supports it, a CPU with AVX-512 BF16 or
    AMX; elsewhere bf16 is emulated, slower than fp32) and a bf16 matmul there agrees with fp32's.
    Anything unusual means no."""
    device_type = str(getattr(device, "type", device))
    if device_type not in _BF16_NATIVE:
        import torch

        try:
            if device_type == "cuda":
                native = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
            else:
                native = device_type == "cpu" and torch.backends.mkldnn.is_available() and (
                    torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
            if native:
                generator = torch.Generator().manual_seed(0)
                a, b = (torch.randn(16, 64, generator=generator) for _ in range(2))
                approximate = a.to(device_type, torch.bfloat16) @ b.to(device_type, torch.bfloat16).T
                native = bool(torch.allclose(approximate.float().cpu(), a @ b.T, rtol=0.05, atol=0.2))
        except Exception:
            native = False
        _BF16_NATIVE[device_type] = native
    return _BF16_NATIVE[device_type]


def bf16_then_fp32(model, tokenizer, texts, max_length, lengths, batch_size, logits, done) -> dict:
    """Fill ``logits`` with bf16's answers where no label can depend on bf16's error and with fp32's
    elsewhere, marking ``done`` the rows filled (only a pilot's, in fp32, when bf16 would not pay).
    Returns what was done."""
    import copy

    import torch

    half = copy.deepcopy(model).to(torch.bfloat16)
    bf16 = np.zeros_like(logits)
    exact = np.zeros(len(texts), dtype=bool)   # the rows of ``logits`` that hold fp32's answer

    def run(rows, precise: bool) -> None:
        for batch in token_batches(lengths, batch_size, rows):
            if precise:
                logits[batch] = batch_logits(model, tokenizer, texts, batch, max_length)
            else:
                bf16[batch] = batch_logits(half, tokenizer, texts, batch, max_length)
        exact[rows] |= precise

    def measured_threshold() -> tuple[float, float]:
        # A label flips only where some pair of logits moves, relative to each other, by more than the gap
        # between them: bf16's error is the largest such move seen where both precisions ran. A NaN or an
        # infinite bf16 logit (an overflow) makes it infinite.
        moved = np.nan_to_num(np.ptp(logits[exact] - bf16[exact], axis=-1), nan=np.inf)
        error = float(moved.max()) if len(moved) else 0.0
        return error, max(BF16_MIN_GAP, BF16_SAFETY * error)

    def near(rows, threshold) -> np.ndarray:
        # the bf16 rows whose top logit is within ``threshold`` of the runner-up, or not finite
        top_two = np.sort(bf16[rows], axis=-1)[:, -2:]
        gap = top_two[:, -1] - top_two[:, 0]
        return rows[~(np.isfinite(gap) & (gap >= threshold))] if bf16.shape[1] > 1 else rows[:0]

    pilot = np.array([index for batch in token_batches(lengths, batch_size) for index in batch][::BF16_PILOT_EVERY])
    run(pilot, precise=False)
    run(pilot, precise=True)
    error, threshold = measured_threshold()
    if len(near(pilot, threshold)) > BF16_MAX_NEAR * len(pilot):
        done |= exact
        return {"precision": "fp32 (bf16 would not pay: too many reviews near the boundary)",
                "pilot_reviews": len(pilot), "max_bf16_error": error, "gap_threshold": threshold}
    run(np.flatnonzero(~exact), precise=False)
    while len(again := near(np.flatnonzero(~exact), threshold)):
        run(again, precise=True)
        error, threshold = measured_threshold()
    logits[~exact] = bf16[~exact]
    done[:] = True
    return {"precision": "bf16, near-boundary fp32", "fp32_reviews": int(exact.sum()), "pilot_reviews": len(pilot),
            "max_bf16_error": error, "gap_threshold": threshold}


# What AutoTokenizer reads from a folder. Without any of them it builds an EMPTY tokenizer of the config's
# model type (transformers 5: every word becomes [UNK]), which must never be taken for the student's.
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")
NO_TOKENIZER = ("the saved model folder has no tokenizer (no tokenizer_config.json): save it beside the model with "
                "tokenizer.save_pretrained(SAVE_DIR)")


def has_tokenizer(save_dir: Path) -> bool:
    return any((save_dir / name).is_file() for name in TOKENIZER_FILES)


def verify(request: dict) -> Verification:
    """Load the model and measure it; every failure becomes ``Verification.problem``.

    A folder without a tokenizer is measured with ``request["course_tokenizer"]`` (the course's, which the
    template's tokenize cell loads) only when that tokenizer reproduces the notebook's predictions."""
    result = Verification()
    save_dir = Path(request["save_dir"])
    result.problem = model_folder_problem(save_dir, Path(request["allowed_root"])) or config_problem(save_dir)
    if result.problem:
        return result
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result.tokenizer_missing = not has_tokenizer(save_dir)
    tokenizer_dir = Path(request["course_tokenizer"]) if result.tokenizer_missing and request.get(
        "course_tokenizer") else save_dir
    if result.tokenizer_missing and tokenizer_dir == save_dir:
        result.problem = NO_TOKENIZER
        return result
    try:
        # fp32 whatever the file holds: a model submitted in half precision is measured as the notebook used it
        model = AutoModelForSequenceClassification.from_pretrained(
            save_dir, use_safetensors=True, trust_remote_code=False, local_files_only=True, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=False, local_files_only=True)
    except Exception as error:  # any failure to load is the student's result, not a grader crash
        result.problem = f"the saved model does not load: {type(error).__name__}: {error}"[:500]
        return result
    if model.config.num_labels != 2:
        result.problem = f"the saved model has {model.config.num_labels} labels, not 2"
        return result
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    to_class = np.array(output_to_class(model))

    claimed = request.get("predictions") or []
    if claimed:
        check_predictions(result, model, tokenizer, to_class, claimed, request)
    if result.tokenizer_missing and not result.reproduced:
        return Verification(tokenizer_missing=True, problem=NO_TOKENIZER + (
            "; the course's tokenizer does not reproduce the notebook's predictions either, so the model cannot "
            "be measured with the tokenizer it was trained with"))
    result.loaded = True
    if request.get("base_model"):
        result.base_model_problem, result.base_similarity = base_model_check(
            save_dir, Path(request["base_model"]), tokenizer, request.get("base_model_name") or "")
        result.base_model_checked = True
    measure_hidden_set(result, model, tokenizer, to_class, request)
    if request.get("test_split"):
        measure_test_split(result, model, tokenizer, to_class, request)
    return result


def check_predictions(result: Verification, model, tokenizer, to_class, claimed: list[dict], request: dict) -> None:
    """Whether the model makes the notebook's predictions. The confidences are compared too (fp32 throughout),
    read as the notebook meant them: the probability of the label, or, where the notebook gave P(positive)
    instead (a mistake the predictions check names), that."""
    again = predict_probabilities(model, tokenizer, [p["text"] for p in claimed], request["max_length"],
                                  threads=request.get("torch_threads"))
    positive = int(np.flatnonzero(to_class == LABELS.index("positive"))[0]) if 1 in to_class else 1
    as_positive = 0
    for prediction, row in zip(claimed, again):
        label = LABELS[to_class[row.argmax()]]
        confidence = float(row.max())
        if label == prediction["label"] and abs(confidence - prediction["confidence"]) <= CONFIDENCE_TOLERANCE:
            continue
        if label == prediction["label"] and abs(float(row[positive]) - prediction["confidence"]) <= CONFIDENCE_TOLERANCE:
            as_positive += 1
            continue
        result.mismatches.append(
            f"{prediction['text'][:60]!r}: notebook said {prediction['label']} "
            f"({prediction['confidence']:.3f}), the saved model says {label} ({confidence:.3f})")
    result.reproduced = not result.mismatches
    result.mismatches = capped(result.mismatches, what="mismatch")
    result.confidence_is_positive_probability = result.reproduced and as_positive > 0


def measure_hidden_set(result: Verification, model, tokenizer, to_class, request: dict) -> None:
    hidden = json.loads(Path(request["hidden_set"]).read_text(encoding="utf-8"))
    labels = np.array([row["label"] for row in hidden])
    started = time.perf_counter()
    # Only the labels of the hidden set count, so bf16 may answer where it cannot change one.
    probabilities = predict_probabilities(model, tokenizer, [row["text"] for row in hidden], request["max_length"],
                                          labels_only=True, threads=request.get("torch_threads"))
    result.reviews_per_s = len(hidden) / max(time.perf_counter() - started, 1e-9)
    predicted = to_class[probabilities.argmax(axis=-1)]
    result.hidden_size = len(hidden)
    result.hidden_predictions = [int(label) for label in predicted]
    result.accuracy = float((predicted == labels).mean())
    result.accuracy_ci = wilson_interval(int((predicted == labels).sum()), len(labels))
    result.f1 = float(f1_score_binary(labels, predicted))
    result.f1_ci = bootstrap_f1_interval(labels, predicted)

def measure_test_split(result: Verification, model, tokenizer, to_class, request: dict) -> None:
    """The model's metrics on the student's own test split, re-derived by the grader (verify mode's --rederive)."""
    rows = json.loads(Path(request["test_split"]).read_text(encoding="utf-8"))
    split_labels = np.array([row["label"] for row in rows])
    split_probabilities = predict_probabilities(model, tokenizer, [row["text"] for row in rows],
                                                request.get("test_max_length") or request["max_length"],
                                                labels_only=True, threads=request.get("torch_threads"))
    result.test_split_metrics = binary_metrics(split_labels, to_class[split_probabilities.argmax(axis=-1)])


RESULT_LINE = "grader-verification: "   # marks the result among whatever else the process prints


def verify_in_subprocess(request: dict, timeout_s: float, env: dict | None = None, *, prefix=(),
                         limits: Limits = Limits(), watch_folder: Path = Path("."),
                         cancellation: Cancellation | None = None) -> Verification:
    """Run ``verify`` in a fresh Python process; a crash, a timeout or an exceeded limit becomes the problem.

    ``prefix`` confines it (``sandbox.verifier_prefix``). The request goes in on stdin and the result
    comes back on stdout: the grader writes and reads no file in the student's folder, where a link
    planted by the notebook could send it anywhere. The environment is the kernel's allow-list (no
    tokens), the watchdog holds it to the memory limit, and it has a session of its own, so a Ctrl-C
    in the grader's terminal reaches the grader alone, which stops it through ``cancellation``.
    """
    command = [*prefix, sys.executable, "-P", "-m", "grader.verify"]
    watchdog = Watchdog(limits, watch_folder)
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True, env=kernel_environment(env, sandboxed=bool(prefix)),
                          cwd="/") as process, \
            (cancellation or Cancellation()).register(process.kill):
        watchdog.watch(process.pid)
        try:
            stdout, stderr = process.communicate(json.dumps(request), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            return Verification(problem=f"checking the saved model took over {timeout_s:.0f} s")
        finally:
            watchdog.finish()
    if watchdog.exceeded:
        return Verification(problem=f"checking the saved model was stopped: it {watchdog.exceeded}")
    found = [line[len(RESULT_LINE):] for line in stdout.splitlines() if line.startswith(RESULT_LINE)]
    if process.returncode != 0 or not found:
        tail = stderr.strip().splitlines()[-3:]
        return Verification(problem="checking the saved model failed: " + " | ".join(tail))
    return Verification.from_dict(json.loads(found[-1]))


def main(argv: list[str] | None = None) -> int:
    """``python -m grader.verify``: a request (JSON) on stdin, the result on stdout."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    request = json.loads(sys.stdin.read())
    if request.get("torch_threads"):
        import torch
        torch.set_num_threads(request["torch_threads"])
    result = verify(request)
    print(RESULT_LINE + json.dumps(result.to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
