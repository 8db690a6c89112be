"""The Triton kernels on a real GPU at model sizes, against float64 truth and the torch reference.

Sizes: SmolLM2-135M (d = 576, m = 1536, V = 49,152, 30 layers) and Gemma-3 (V = 262,144, softcap).
"""

from __future__ import annotations

import pytest
import torch
from _reference_check import assert_close_to_reference

from golden_fast.ops.grad_inner import grad_inner
from golden_fast.ops.mom2 import mom2_update, mom2_update_many
from golden_fast.ops.token_logprobs import token_logprobs

CUDA = torch.device("cuda")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator(device=CUDA).manual_seed(seed)


@pytest.mark.parametrize("op", [mom2_update, mom2_update_many, token_logprobs, grad_inner], ids=lambda o: o.name)
def test_automatic_choice_on_cuda_is_triton(op):
    ok, why = op.status("triton", "cuda")
    assert ok, why
    assert op.choose("cuda") == "triton"


@pytest.mark.parametrize("key_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_mom2_update_model_size(key_dtype):
    g = _gen(0)
    keys = torch.randn(4, 509, 1536, device=CUDA, generator=g).to(key_dtype)  # (B, T, m), T odd
    mask = torch.rand(4, 509, device=CUDA, generator=g) < 0.8
    acc0 = torch.randn(1536, 1536, device=CUDA, generator=g)
    acc0 = acc0 + acc0.T
    out = mom2_update(acc0.clone(), keys, mask, backend="triton")
    truth = mom2_update.reference(acc0.to(torch.float64, copy=True), keys.double(), mask)
    baseline = mom2_update.reference(acc0.clone(), keys, mask)
    assert_close_to_reference(out.triu(), truth.triu(), baseline.triu())


def test_mom2_update_float64_accumulator():
    g = _gen(1)
    keys = torch.randn(777, 300, device=CUDA, generator=g)
    out = mom2_update(torch.zeros(300, 300, device=CUDA, dtype=torch.float64), keys, backend="triton")
    truth = keys.double().T @ keys.double()
    torch.testing.assert_close(out.triu(), truth.triu(), rtol=1e-13, atol=1e-11)


def test_mom2_update_many_thirty_layers():
    g = _gen(2)
    L, m = 30, 1536
    keys = torch.randn(L, 2, 130, m, device=CUDA, generator=g).to(torch.bfloat16)
    mask = torch.ones(2, 130, dtype=torch.long, device=CUDA)
    mask[1, :40] = 0  # left padding
    accs = torch.zeros(L, m, m, device=CUDA)
    mom2_update_many(accs, keys, mask, backend="triton")
    for layer in (0, 17, 29):
        truth = mom2_update.reference(torch.zeros(m, m, device=CUDA, dtype=torch.float64), keys[layer].double(), mask)
        baseline = mom2_update.reference(torch.zeros(m, m, device=CUDA), keys[layer], mask)
        assert_close_to_reference(accs[layer].triu(), truth.triu(), baseline.triu())
        single = mom2_update(torch.zeros(m, m, device=CUDA), keys[layer], mask, backend="triton")
        assert torch.equal(single.triu(), accs[layer].triu()), "one layer alone or among many: same bits"


def _logprob_truth(h, w, t, softcap=None):
    z = h.double() @ w.double().T
    if softcap:
        z = softcap * torch.tanh(z / softcap)
    return z.log_softmax(-1).gather(-1, t[:, None]).squeeze(-1), z.argmax(-1), z


@pytest.mark.parametrize(
    "N, V, d, dtype, softcap",
    [
        (256, 49152, 576, torch.float32, None),  # SmolLM2
        (256, 49152, 576, torch.bfloat16, None),
        (61, 262144, 640, torch.bfloat16, 30.0),  # Gemma-3 vocabulary, a Gemma-2-style cap
        (1, 1000, 64, torch.float16, None),
    ],
)
def test_token_logprobs_model_size(N, V, d, dtype, softcap):
    g = _gen(3)
    h = torch.randn(N, d, device=CUDA, generator=g).to(dtype)
    w = (torch.randn(V, d, device=CUDA, generator=g) * (4 / d**0.5)).to(dtype)
    t = torch.randint(0, V, (N,), device=CUDA, generator=g)
    t[: N // 2] = (h[: N // 2].float() @ w.float().T).argmax(-1)  # half the targets are the argmax
    lp, am = token_logprobs(h, w, t, softcap=softcap, backend="triton")
    truth_lp, truth_am, z = _logprob_truth(h, w, t, softcap)
    base_lp, base_am = token_logprobs.reference(h, w, t, softcap=softcap)
    assert_close_to_reference(lp.double(), truth_lp, base_lp.double(), atol=1e-5)
    top2 = z.topk(2, -1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-3  # rows without a near-tie: the argmax is exact
    assert clear.float().mean() > 0.9, "inputs too tie-prone to check the argmax"
    assert torch.equal(am[clear], truth_am[clear])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grad_inner_model_size(dtype):
    g = _gen(4)
    L, B, T1, T2, m, d = 30, 4, 45, 38, 1536, 576
    s = (T1 * T2 * m * d) ** -0.125  # out of order 1 (see tests/ops/test_grad_inner.py)
    k1 = (s * torch.randn(L, B, T1, m, device=CUDA, generator=g)).to(dtype)
    g1 = (s * torch.randn(L, B, T1, d, device=CUDA, generator=g)).to(dtype)
    k2 = (s * torch.randn(L, B, T2, m, device=CUDA, generator=g)).to(dtype)
    g2 = (s * torch.randn(L, B, T2, d, device=CUDA, generator=g)).to(dtype)
    out = grad_inner(k1, g1, k2, g2, backend="triton")
    gg = g1.double() @ g2.double().transpose(-1, -2)  # (L, B, T1, T2)
    truth = (gg * (k1.double() @ k2.double().transpose(-1, -2))).sum((-1, -2))
    baseline = grad_inner.reference(k1, g1, k2, g2)
    assert_close_to_reference(out, truth, baseline)
