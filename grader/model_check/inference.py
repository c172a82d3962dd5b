"""The model's predictions, fast and exact where they count: batches of about BATCH_TOKENS tokens, and bf16 only
where it cannot change a label (every review near the decision boundary is recomputed in fp32)."""
from __future__ import annotations

import numpy as np

from ..course import LABELS

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


