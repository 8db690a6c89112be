"""Adapters on tiny random models: the (out x in) weight reproduces what the module computes,
Conv1D is hidden, and unsupported architectures get a helpful error."""

from __future__ import annotations

import pytest
import torch

from golden_fast.hooks import capture
from golden_fast.models import get_adapter, supported_model_types
from golden_fast.models.adapters import UnsupportedArchitectureError
from golden_fast.tokens import encode_texts


def test_down_weight_reproduces_module(tiny):
    name, model, tok = tiny
    adapter = get_adapter(model)
    batch = encode_texts(tok, ["The capital of France is", "Paris"])
    sites = [f"layers.{l}.mlp.down.{w}" for l in range(adapter.n_layers) for w in ("in", "out")]
    with torch.no_grad(), capture(adapter, sites) as cap:
        model(**batch.model_inputs())
    for layer in range(adapter.n_layers):
        k = cap[f"layers.{layer}.mlp.down.in"]  # (B, T, m)
        v = cap[f"layers.{layer}.mlp.down.out"]  # (B, T, d)
        W = adapter.down_weight(layer)  # (d, m)
        assert W.shape == (adapter.d_model, adapter.d_ff)
        bias = adapter.down_bias(layer)
        expected = k.double() @ W.double().T + (0 if bias is None else bias.double())
        torch.testing.assert_close(v.double(), expected, rtol=1e-5, atol=1e-5)


def test_down_weight_is_a_view_of_the_parameter(tiny):
    """Writing through down_weight writes the model (so editors never see Conv1D)."""
    name, model, tok = tiny
    adapter = get_adapter(model)
    W = adapter.down_weight(0)
    param = adapter.down_proj(0).weight
    assert W.data_ptr() == param.data_ptr()
    if name == "tiny-gpt2":
        assert adapter.down_transposed and param.shape == (adapter.d_ff, adapter.d_model)
        assert torch.equal(W, param.T)
    else:
        assert not adapter.down_transposed and W is param


def test_conv1d_round_trip():
    """Writing W (out x in) through the adapter and reading it back is exact for Conv1D."""
    from golden_fast.models import load_model

    model, _ = load_model("tiny-gpt2")
    adapter = get_adapter(model)
    W = adapter.down_weight(1)
    new = torch.randn_like(W)
    with torch.no_grad():
        W.copy_(new)
    assert torch.equal(adapter.down_proj(1).weight, new.T)
    assert torch.equal(adapter.down_weight(1), new)


def test_structure_accessors(tiny):
    name, model, tok = tiny
    a = get_adapter(model)
    assert a.n_layers == 4
    assert a.embeddings().weight.shape[0] == len(tok)
    assert a.lm_head().weight.shape == (len(tok), a.d_model)
    ids = tok("The capital of France", return_tensors="pt")
    with torch.no_grad():
        h = a.body()(**ids).last_hidden_state
        torch.testing.assert_close(a.lm_head()(h), model(**ids).logits)
    info = a.describe()
    assert info["n_layers"] == 4 and info["down_weight_shape_out_x_in"] == (a.d_model, a.d_ff)
    with pytest.raises(IndexError, match="out of range"):
        a.block(4)
    with pytest.raises(ValueError, match="unknown hook site"):
        a.site("layers.1.nonsense")


def test_adapter_cached_per_model(tiny):
    _, model, _ = tiny
    assert get_adapter(model) is get_adapter(model)


def test_unsupported_architecture_lists_supported():
    class Fake(torch.nn.Module):
        class config:  # noqa: N801 - mimics a HF config attribute
            model_type = "mamba"

    with pytest.raises(UnsupportedArchitectureError) as err:
        get_adapter(Fake())
    msg = str(err.value)
    assert "mamba" in msg and "llama" in msg and "gpt2" in msg and "adapters/" in msg
    assert {"gpt2", "gptj", "gpt_neox", "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text"} <= set(
        supported_model_types()
    )


@pytest.mark.parametrize(
    "model_type, cfg_kwargs",
    [
        ("gptj", dict(n_embd=32, n_layer=2, n_head=4, rotary_dim=8, vocab_size=50, n_positions=64)),
        (
            "gpt_neox",
            dict(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=64,
                vocab_size=50,
                max_position_embeddings=64,
            ),
        ),
        (
            "qwen2",
            dict(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                intermediate_size=64,
                vocab_size=50,
                max_position_embeddings=64,
            ),
        ),
        (
            "gemma2",
            dict(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=8,
                intermediate_size=64,
                vocab_size=50,
                max_position_embeddings=64,
            ),
        ),
    ],
)
def test_other_families_reproduce_module(model_type, cfg_kwargs):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **cfg_kwargs)).eval()
    a = get_adapter(model)
    ids = torch.randint(0, 50, (2, 7))
    with torch.no_grad(), capture(a, ["layers.1.mlp.down.in", "layers.1.mlp.down.out"]) as cap:
        model(input_ids=ids)
    bias = a.down_bias(1)
    expected = cap["layers.1.mlp.down.in"] @ a.down_weight(1).T + (0 if bias is None else bias)
    torch.testing.assert_close(cap["layers.1.mlp.down.out"], expected, rtol=1e-5, atol=1e-5)
