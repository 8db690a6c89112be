"""LGA against materialised weight gradients (plain float64 autograd), on tiny models of the three
families and for each theta option; then its options, batching, and what it must never do.

The truth here shares nothing with the implementation: one unpadded sequence at a time through the
model's own forward (its own head and logits), the loss written out, torch.autograd.grad on the
parameters themselves, and the inner products of the resulting gradient tensors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from golden_fast.data import EditRequest
from golden_fast.locate import locate
from golden_fast.locate.lga import LGAConfig, lga_inner_products
from golden_fast.models import TINY_NAMES, build_tiny, get_adapter
from golden_fast.tokens import target_span

FACTS = [
    ("The capital of {} is", "France", "Rome", "Paris"),
    ("{} plays the", "Toko Yasuda", "piano", "guitar"),
    ("The mother tongue of {} is", "Danielle Darrieux", "English", "French"),
]


def _requests():
    return [EditRequest(p, s, t, ground_truth=g, index=i) for i, (p, s, t, g) in enumerate(FACTS)]


@pytest.fixture(scope="module", params=TINY_NAMES)
def tiny64(request):
    """A float64 copy of each tiny family: the Gram identity is then checked, not float32 rounding."""
    model, tok = build_tiny(request.param, dtype=torch.float64)
    return request.param, model, tok


def _theta_params(adapter, layer, theta):
    if theta == "down":
        return [adapter.down_proj(layer).weight]
    root = adapter.mlp(layer) if theta == "mlp" else adapter.block(layer)
    return list(root.parameters())


def _truth_grads(model, tok, ids, positions, theta, layers, reduction="mean"):
    """Per layer, the list of weight gradients of the loss over `positions` (predicting ids[p + 1])."""
    adapter = get_adapter(model)
    logits = model(input_ids=torch.tensor([ids])).logits[0].double()  # (T, V), the model's own head
    logp = logits.log_softmax(-1)
    nll = -logp[torch.tensor(positions), torch.tensor([ids[p + 1] for p in positions])]
    loss = nll.mean() if reduction == "mean" else nll.sum()
    params = [_theta_params(adapter, layer, theta) for layer in layers]
    flat = torch.autograd.grad(loss, [p for ps in params for p in ps])
    out, k = [], 0
    for ps in params:
        out.append(flat[k : k + len(ps)])
        k += len(ps)
    return out


def _answer(tok, req, answer, span="answer"):
    sp = target_span(tok, req.text, answer)
    first = sp.start if span == "answer" else 1
    return sp.ids[: sp.end], list(range(first - 1, sp.end - 1))


def _truth(model, tok, reqs, theta, layers, span="answer", reduction="mean", old=None):
    """(ab, aa, bb) (n, L) from materialised gradients."""
    n = len(reqs)
    ab, aa, bb = (np.zeros((n, len(layers))) for _ in range(3))
    for i, r in enumerate(reqs):
        ids_a, pos_a = old[i] if old is not None else _answer(tok, r, r.ground_truth, span)
        ids_b, pos_b = _answer(tok, r, r.target_new, span)
        ga = _truth_grads(model, tok, ids_a, pos_a, theta, layers, reduction)
        gb = _truth_grads(model, tok, ids_b, pos_b, theta, layers, reduction)
        for j in range(len(layers)):
            ab[i, j] = sum(float((x * y).sum()) for x, y in zip(ga[j], gb[j]))
            aa[i, j] = sum(float((x * x).sum()) for x in ga[j])
            bb[i, j] = sum(float((y * y).sum()) for y in gb[j])
    return ab, aa, bb


def _close(out, truth, scale, rel=1e-5):
    """|out - truth| <= rel * scale, elementwise, with the worst offender in the message."""
    err = np.abs(out - truth) / scale
    i = np.unravel_index(np.argmax(err), err.shape)
    assert err.max() <= rel, f"relative error {err.max():.3g} at {i}: {out[i]!r} vs truth {truth[i]!r}"


@pytest.mark.parametrize("theta", ["down", "mlp", "block"])
def test_scores_equal_materialised_gradient_inner_products(tiny64, theta):
    name, model, tok = tiny64
    reqs = _requests()
    layers = list(range(get_adapter(model).n_layers))
    res = lga_inner_products(model, tok, reqs, layers, LGAConfig(theta=theta, batch_size=2))  # padded batches
    ab, aa, bb = _truth(model, tok, reqs, theta, layers)
    # the paper's score S_l = sum_i <a_i, b_i>, per layer: to 1e-5 relative
    _close(res["ab"].sum(0), ab.sum(0), np.abs(ab.sum(0)))
    # per sample: the inner product of two vectors, relative to |a| |b| (its natural scale)
    _close(res["ab"], ab, np.sqrt(aa * bb))
    _close(res["aa"], aa, aa)
    _close(res["bb"], bb, bb)


def test_variants_from_the_same_products(tiny64):
    _, model, tok = tiny64
    reqs = _requests()
    scores = locate(model, tok, reqs, "lga", theta="down", variant="cosine", tukey_k=None)
    layers = scores.layers
    ab, aa, bb = _truth(model, tok, reqs, "down", layers)
    assert np.allclose(scores.variants["signed"], ab.sum(0), rtol=1e-5)
    assert np.allclose(scores.variants["cosine"], (ab / np.sqrt(aa * bb)).mean(0), rtol=1e-4, atol=1e-6)
    assert np.allclose(scores.variants["new_norm"], np.sqrt(bb).mean(0), rtol=1e-5)
    assert scores.scores == scores.variants["cosine"]
    assert scores.chosen == layers[int(np.argmax(scores.variants["cosine"]))]
    assert all(-1 - 1e-6 <= c <= 1 + 1e-6 for c in scores.variants["cosine"])


@pytest.mark.parametrize("span, reduction", [("sequence", "mean"), ("answer", "sum"), ("sequence", "sum")])
def test_loss_options(span, reduction):
    model, tok = build_tiny("tiny-gpt2", dtype=torch.float64)
    reqs = _requests()
    layers = [0, 2, 3]
    res = lga_inner_products(model, tok, reqs, layers, LGAConfig(loss_span=span, loss_reduction=reduction))
    ab, aa, bb = _truth(model, tok, reqs, "down", layers, span, reduction)
    _close(res["ab"], ab, np.sqrt(aa * bb))


def test_greedy_old_answer_is_the_models_own():
    model, tok = build_tiny("tiny-llama", dtype=torch.float64)
    reqs = [EditRequest(p, s, t, index=i) for i, (p, s, t, _) in enumerate(FACTS)]  # no ground truth
    with pytest.raises(ValueError, match=r"record 0.*'ground_truth'"):
        lga_inner_products(model, tok, reqs, None, LGAConfig())
    layers = [1, 3]
    res = lga_inner_products(model, tok, reqs, layers, LGAConfig(old_answer="greedy", greedy_tokens=2))
    old = []
    for r in reqs:  # greedy decoding written out: argmax of the model's own logits, twice
        ids = list(tok(r.text)["input_ids"])
        n = len(ids)
        for _ in range(2):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
        old.append((ids, [n - 1, n]))
    ab, aa, bb = _truth(model, tok, reqs, "down", layers, old=old)
    _close(res["ab"], ab, np.sqrt(aa * bb))
    assert res["old_answer_source"] == ["greedy"] * 3


def test_auto_old_answer_mixes_sources():
    model, tok = build_tiny("tiny-llama")
    reqs = _requests()
    reqs[1] = EditRequest(reqs[1].prompt, reqs[1].subject, reqs[1].target_new, index=1)
    res = lga_inner_products(model, tok, reqs, [0], LGAConfig(old_answer="auto"))
    assert res["old_answer_source"] == ["data", "greedy", "data"]


def test_batching_and_layer_subsets_do_not_change_scores():
    model, tok = build_tiny("tiny-gemma3")
    reqs = _requests()
    one = lga_inner_products(model, tok, reqs, None, LGAConfig(batch_size=1))
    three = lga_inner_products(model, tok, reqs, None, LGAConfig(batch_size=3))
    scale = np.sqrt(one["aa"] * one["bb"])  # float32 model: padding changes rounding, not values
    _close(three["ab"], one["ab"], scale, rel=1e-5)
    sub = lga_inner_products(model, tok, reqs, [3, 1], LGAConfig(batch_size=2))
    _close(sub["ab"], one["ab"][:, [3, 1]], scale[:, [3, 1]], rel=1e-5)


def test_no_weight_gradient_is_ever_allocated_and_flags_are_restored():
    model, tok = build_tiny("tiny-llama")
    model.model.layers[0].mlp.down_proj.weight.requires_grad_(False)  # a user's own setting survives
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.train()
    locate(model, tok, _requests(), "lga", theta="block")
    assert all(p.grad is None for p in model.parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert model.training


def test_bad_options_and_requests_raise_clearly():
    model, tok = build_tiny("tiny-gpt2")
    with pytest.raises(ValueError, match="theta"):
        LGAConfig(theta="attention")
    with pytest.raises(ValueError, match="unknown option"):
        locate(model, tok, _requests(), "lga", thetta="down")
    with pytest.raises(ValueError, match="no proxy request"):
        locate(model, tok, [], "lga")
    with pytest.raises(IndexError, match="layer 9"):
        locate(model, tok, _requests(), "lga", layers=[9])
    trace_only = EditRequest("{} is located in", "Paris", None, ground_truth="France", case_id=77)
    with pytest.raises(ValueError, match=r"case_id 77.*'target_new'"):
        locate(model, tok, [trace_only], "lga")


@pytest.mark.parametrize("theta", ["down", "block"])
def test_checkpointed_blocks_give_the_same_products(tiny64, theta):
    """checkpoint=True recomputes each block in backward: the hooks fire twice, the result must not move."""
    name, model, tok = tiny64
    reqs = _requests()
    layers = [1, 2, 3]
    res = lga_inner_products(model, tok, reqs, layers, LGAConfig(theta=theta, checkpoint=True, batch_size=2))
    ab, aa, bb = _truth(model, tok, reqs, theta, layers)
    _close(res["ab"], ab, np.sqrt(aa * bb))
    _close(res["bb"], bb, bb)
    blocks = [get_adapter(model).block(layer) for layer in range(4)]
    assert not any(b.training or b.gradient_checkpointing for b in blocks)  # the switch is undone
    assert all("_gradient_checkpointing_func" not in b.__dict__ for b in blocks)
