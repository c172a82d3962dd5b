"""What the model check refuses before anything loads a model: a folder outside the submission, links out of it,
pickled weights, a config or a safetensors header too large to read safely, settings that would cost memory
on the meta device, weights whose size disagrees with the config, a folder without a tokenizer."""
from __future__ import annotations

import json
import math
from pathlib import Path

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
MAX_MODEL_BYTES = 2_000_000_000
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


# What AutoTokenizer reads from a folder. Without any of them it builds an EMPTY tokenizer of the config's
# model type (transformers 5: every word becomes [UNK]), which must never be taken for the student's.
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")
NO_TOKENIZER = ("the saved model folder has no tokenizer (no tokenizer_config.json): save it beside the model with "
                "tokenizer.save_pretrained(SAVE_DIR)")


def has_tokenizer(save_dir: Path) -> bool:
    return any((save_dir / name).is_file() for name in TOKENIZER_FILES)


