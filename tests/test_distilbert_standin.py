"""The DistilBERT-architecture stand-in is DistilBERT's architecture, and MiniLM's function."""
import pytest

import distilbert_standin


@pytest.fixture(scope="module")
def standin(minilm_dir, tmp_path_factory):
    return distilbert_standin.build(tmp_path_factory.mktemp("distilbert") / "model", layers=6)


def test_it_is_distilbert_and_computes_what_minilm_computes(standin, minilm_dir):
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    texts = ["Absolutely love this blender.", "The lid cracked the first time I used it. Do not buy."]
    tokenizer = AutoTokenizer.from_pretrained(standin)
    inputs = tokenizer(texts, padding=True, return_tensors="pt")
    assert "token_type_ids" not in inputs and tokenizer.unk_token_id not in inputs["input_ids"]
    distilbert, minilm = AutoModel.from_pretrained(standin).eval(), AutoModel.from_pretrained(minilm_dir).eval()
    assert distilbert.config.model_type == "distilbert"
    names = {name for name, _ in distilbert.named_modules()}
    assert any(name.endswith("q_lin") for name in names) and any(name.endswith("v_lin") for name in names)
    with torch.no_grad():
        ours = distilbert(**inputs).last_hidden_state
        theirs = minilm(**AutoTokenizer.from_pretrained(minilm_dir)(texts, padding=True, return_tensors="pt")
                        ).last_hidden_state
    assert (ours - theirs).abs().max() < 1e-3   # float rounding; random weights differ by ~1
    assert hasattr(AutoModelForSequenceClassification.from_pretrained(standin, num_labels=2), "pre_classifier")


def test_random_weights_are_not_minilms(minilm_dir, tmp_path):
    from safetensors.torch import load_file

    pretrained = load_file(str(distilbert_standin.build(tmp_path / "a", layers=1) / "model.safetensors"))
    random = load_file(str(distilbert_standin.build(tmp_path / "b", layers=1, random_weights=True) / "model.safetensors"))
    name = "embeddings.word_embeddings.weight"
    assert pretrained[name].shape == random[name].shape and not (pretrained[name] == random[name]).all()
