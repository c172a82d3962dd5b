"""Is the submitted model a fine-tune of the course's base model? Its architecture (config.json), its
vocabulary, and how far its weights lie from the base's (cosine similarity of each matrix both hold)."""
from __future__ import annotations

from pathlib import Path

from .refusals import Refusal, read_config_settings, weight_files

# --- is it a fine-tune of the course's model? -------------------------------------------------
# What a model's architecture is: a fine-tune keeps every one of these of its base model.
ARCHITECTURE_SETTINGS = ("model_type", "vocab_size", "hidden_size", "dim", "num_hidden_layers", "n_layers",
                         "num_attention_heads", "n_heads", "intermediate_size", "hidden_dim",
                         "max_position_embeddings", "type_vocab_size")
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
# Cosine similarity of a tensor to the base's (of the flattened matrices). Fine-tuning moves weights a
# little from where pre-training left them; a model trained from another starting point, or initialised at
# random, shares nothing with them (a similarity near 0). Measured (benchmarks/base_model_distance.py,
# docs/verify-mode.md): fine-tunes of 657 steps, up to 50 times the course's learning rate, >= 0.9998 for the
# word embeddings and >= 0.99 for the matrices' median; random and foreign weights within 0.01 of 0.
# The threshold sits far from both.
MIN_BASE_SIMILARITY = 0.5


def base_model_check(save_dir: Path, base_dir: Path, tokenizer, base_name: str) -> tuple[str | None, dict]:
    """Why the model in ``save_dir`` is not a fine-tune of the base model in ``base_dir`` (None when it is),
    with the similarities measured. Reads the two configs, the base's vocabulary, and only the tensors
    compared (safetensors' lazy ``safe_open``)."""
    try:
        settings, base_settings = read_config_settings(save_dir), read_config_settings(base_dir)
        differences = [(f"{key} {settings[key]!r}" if key in settings else f"no {key}")
                       + f" (the course's model has {base_settings[key]!r})"
                       for key in ARCHITECTURE_SETTINGS
                       if key in base_settings and settings.get(key) != base_settings[key]]
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


