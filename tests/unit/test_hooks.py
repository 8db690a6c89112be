"""Hooks capture and patch exactly the positions asked, and leave nothing behind."""

from __future__ import annotations

import pytest
import torch

from golden_fast.hooks import StopForward, capture, edit_module_output, patch, run_until, stop_after
from golden_fast.models import get_adapter
from golden_fast.tokens import encode_texts

TEXTS = ["The capital of France is", "Paris is a city in the country of", "Rome"]


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _run(model, tok, sites, adapter):
    batch = encode_texts(tok, TEXTS)
    with torch.no_grad(), capture(adapter, sites) as cap:
        logits = model(**batch.model_inputs()).logits
    return batch, cap, logits


def test_capture_matches_manual_forward(tiny):
    """The captured residual after the last block, passed through norm and head, is the logits."""
    _, model, tok = tiny
    a = get_adapter(model)
    last = a.n_layers - 1
    batch, cap, logits = _run(model, tok, [f"layers.{last}.out"], a)
    with torch.no_grad():
        again = a.lm_head()(a.final_norm()(cap[f"layers.{last}.out"]))
    if a.logit_softcap is None:
        torch.testing.assert_close(again, logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["add", "replace"])
def test_patch_touches_exactly_the_positions(tiny, mode):
    _, model, tok = tiny
    a = get_adapter(model)
    site = "layers.1.mlp.down.out"
    batch, cap, _ = _run(model, tok, [site], a)
    base = cap[site]
    rows, cols = [0, 1, 1], [batch.offsets[0] + 2, batch.offsets[1] + 0, base.shape[1] - 1]
    value = torch.randn(3, a.d_model)
    with torch.no_grad(), patch(a, site, rows, cols, value, mode=mode), capture(a, [site]) as cap2:
        model(**batch.model_inputs())
    got = cap2[site]
    expect = base.clone()
    for i, (r, c) in enumerate(zip(rows, cols)):
        expect[r, c] = base[r, c] + value[i] if mode == "add" else value[i]
    torch.testing.assert_close(got, expect, rtol=0, atol=1e-6)
    mask = torch.ones(base.shape[:2], dtype=torch.bool)
    mask[rows, cols] = False
    assert torch.equal(got[mask], base[mask])  # untouched positions are bitwise the same
    assert _hooks(model) == 0


def test_patch_gradient_reaches_delta(tiny):
    _, model, tok = tiny
    a = get_adapter(model)
    batch = encode_texts(tok, TEXTS[:1])
    delta = torch.zeros(a.d_model, requires_grad=True)
    with patch(a, "layers.2.mlp.down.out", [0], [batch.offsets[0] + 1], delta):
        loss = model(**batch.model_inputs()).logits[0, -1].logsumexp(-1)
    loss.backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0


def test_capture_grads(tiny):
    _, model, tok = tiny
    a = get_adapter(model)
    batch = encode_texts(tok, TEXTS[:2])
    with capture(a, ["layers.1.mlp.down.out"], grads=True) as cap:
        out = model(**batch.model_inputs()).logits
        out[:, -1].sum().backward()
    g = cap.grads["layers.1.mlp.down.out"]
    assert g.shape == cap["layers.1.mlp.down.out"].shape and g.abs().sum() > 0
    model.zero_grad(set_to_none=True)


def test_hooks_removed_after_exception(tiny):
    _, model, tok = tiny
    a = get_adapter(model)
    before = _hooks(model)
    with pytest.raises(RuntimeError, match="boom"):
        with (
            capture(a, ["layers.0.mlp.down.in", "layers.1.out"]),
            patch(a, "layers.0.mlp.down.out", [0], [0], torch.zeros(a.d_model)),
            edit_module_output(a.embeddings(), lambda t: t),
            stop_after(a, 2),
        ):
            assert _hooks(model) == before + 5
            raise RuntimeError("boom")
    assert _hooks(model) == before
    # and after an exception raised by the model itself inside the context
    with pytest.raises(StopForward):
        with stop_after(a, 0):
            model(**encode_texts(tok, TEXTS[:1]).model_inputs())
    assert _hooks(model) == before


def test_run_until_stops_early(tiny):
    _, model, tok = tiny
    a = get_adapter(model)
    batch = encode_texts(tok, TEXTS)
    seen: list[int] = []
    handles = [
        a.block(l).register_forward_hook(lambda m, i, o, l=l: seen.append(l)) for l in range(a.n_layers)
    ]
    try:
        with torch.no_grad(), capture(a, ["layers.1.mlp.down.in"]) as cap:
            run_until(model, a, 1, **batch.model_inputs())
    finally:
        for h in handles:
            h.remove()
    assert seen == [0, 1]
    _, full, _ = _run(model, tok, ["layers.1.mlp.down.in"], a)
    torch.testing.assert_close(cap["layers.1.mlp.down.in"], full["layers.1.mlp.down.in"])
