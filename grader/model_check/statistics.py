"""The hidden set's figures: binary accuracy, precision, recall and F1, with their confidence intervals."""
from __future__ import annotations

import math

import numpy as np

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


