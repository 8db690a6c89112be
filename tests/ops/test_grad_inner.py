"""grad_inner against its contract (golden_fast/ops/grad_inner.py), for every backend.

Truth is computed here in float64 from the definition (the reference itself always works in
float32, so it serves as the same-dtype baseline of the tolerance rule in tests/_reference_check.py,
not as the truth). A second, independent check forms the weight gradients explicitly
(grad_W = sum_t g_t k_tᵀ) and takes their Frobenius inner product: the quantity LGA needs
(golden_fast/FORMULAS.md, section LGA).
"""

from __future__ import annotations

import pytest
import torch
from _reference_check import assert_close_to_reference

from golden_fast.ops.grad_inner import grad_inner


def _truth(k1, g1, k2, g2):
    gg = g1.double() @ g2.double().transpose(-1, -2)  # (L, B, T1, T2)
    kk = k1.double() @ k2.double().transpose(-1, -2)
    return (gg * kk).sum((-1, -2))  # (L, B)


def _inputs(L, B, T1, T2, m, d, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    # Scaled so that out is O(1) (it is a sum of T1 T2 terms of spread ~sqrt(m d)): ATOL is sized for
    # values near 1, and a single output element may by luck be exact in the float32 baseline.
    s = max(1, T1 * T2 * m * d) ** -0.125
    k1, k2 = s * torch.randn(L, B, T1, m, generator=g), s * torch.randn(L, B, T2, m, generator=g)
    g1, g2 = s * torch.randn(L, B, T1, d, generator=g), s * torch.randn(L, B, T2, d, generator=g)
    return tuple(x.to(device, dtype) for x in (k1, g1, k2, g2))


# (L, B, T1, T2, m, d): normal, odd (no multiple of any block size), one token each side, T1 != T2
# across block edges, wide m and d with several width blocks, one layer and sample, empty T1 / T2
SHAPES = [
    (2, 3, 16, 16, 64, 32),
    (3, 2, 17, 9, 37, 23),
    (1, 1, 1, 1, 5, 3),
    (2, 1, 33, 50, 70, 45),
    (1, 2, 6, 7, 130, 100),
    (1, 1, 40, 3, 8, 8),
    (2, 2, 0, 5, 8, 8),
    (2, 2, 4, 0, 8, 8),
]


@pytest.mark.op_backends("grad_inner")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("L, B, T1, T2, m, d", SHAPES)
def test_grad_inner_matches_reference(backend, backend_device, L, B, T1, T2, m, d, dtype):
    k1, g1, k2, g2 = _inputs(L, B, T1, T2, m, d, dtype, backend_device)
    before = [x.clone() for x in (k1, g1, k2, g2)]
    out = grad_inner(k1, g1, k2, g2, backend=backend)
    assert out.dtype == torch.float32 and out.shape == (L, B) and out.device == k1.device
    assert all(torch.equal(x, y) for x, y in zip((k1, g1, k2, g2), before)), "inputs must not change"
    if T1 == 0 or T2 == 0:
        assert torch.equal(out.cpu(), torch.zeros(L, B)), "empty token sets give zeros"
    baseline = grad_inner.reference(k1, g1, k2, g2)
    assert_close_to_reference(out, _truth(k1, g1, k2, g2), baseline)


@pytest.mark.op_backends("grad_inner")
def test_grad_inner_is_the_gradient_inner_product(backend, backend_device):
    # <grad_W a, grad_W b>_F with grad_W = sum_t g_t k_tᵀ (d x m), formed explicitly in float64
    k1, g1, k2, g2 = _inputs(3, 2, 11, 7, 29, 19, device=backend_device, seed=1)
    grad_a = g1.double().transpose(-1, -2) @ k1.double()  # (L, B, d, m)
    grad_b = g2.double().transpose(-1, -2) @ k2.double()
    explicit = (grad_a * grad_b).sum((-1, -2))
    out = grad_inner(k1, g1, k2, g2, backend=backend)
    baseline = grad_inner.reference(k1, g1, k2, g2)
    assert_close_to_reference(out, explicit, baseline)
    # the self product is the squared gradient norm: non-negative
    norms = grad_inner(k1, g1, k1, g1, backend=backend)
    assert bool((norms > 0).all())


@pytest.mark.op_backends("grad_inner")
def test_grad_inner_zero_padding_rows_contribute_nothing(backend, backend_device):
    # ragged samples padded with zero rows (here up to 4 extra tokens, NaN-free) == the unpadded ones
    k1, g1, k2, g2 = _inputs(2, 3, 9, 6, 21, 13, device=backend_device, seed=2)
    pad = lambda x, n: torch.cat([x, torch.zeros(*x.shape[:2], n, x.shape[3], device=x.device)], dim=2)
    padded = grad_inner(pad(k1, 4), pad(g1, 4), pad(k2, 3), pad(g2, 3), backend=backend)
    plain = grad_inner(k1, g1, k2, g2, backend=backend)
    assert torch.allclose(padded, plain, rtol=1e-6, atol=1e-5)
    # a row that is zero in g only (no loss at that token) also contributes nothing
    g1z = g1.clone()
    g1z[:, :, 3] = 0
    k1x = k1.clone()
    k1x[:, :, 3] = 1e3  # whatever the key is there
    assert torch.allclose(
        grad_inner(k1x, g1z, k2, g2, backend=backend), grad_inner(k1, g1z, k2, g2, backend=backend), rtol=1e-5
    )


@pytest.mark.op_backends("grad_inner")
def test_grad_inner_mixed_dtypes_and_strides(backend, backend_device):
    # the four inputs may differ in dtype and be views: transposed storage, a slice of a wider tensor
    k1, g1, k2, g2 = _inputs(2, 3, 10, 12, 24, 20, device=backend_device, seed=3)
    k1 = k1.to(torch.bfloat16)
    g2 = g2.to(torch.float16)
    k2_view = k2.transpose(2, 3).contiguous().transpose(2, 3)  # same values, column-major per matrix
    g1_wide = torch.cat([g1, g1], dim=-1)[..., 20:]  # a slice: row stride 40
    g1_perm = g1.permute(1, 0, 2, 3).contiguous().permute(1, 0, 2, 3)  # B before L in memory
    for g1_in in (g1_wide, g1_perm):
        out = grad_inner(k1, g1_in, k2_view, g2, backend=backend)
        baseline = grad_inner.reference(k1, g1, k2, g2)
        assert_close_to_reference(out, _truth(k1, g1, k2, g2), baseline)


@pytest.mark.op_backends("grad_inner")
@pytest.mark.parametrize(
    "shapes",
    [
        ((2, 1, 3, 4), (2, 1, 3, 5), (2, 1, 6, 4), (2, 1, 6, 6)),  # d differs between g1 and g2
        ((2, 1, 3, 4), (2, 1, 3, 5), (2, 1, 6, 7), (2, 1, 6, 5)),  # m differs between k1 and k2
        ((2, 1, 3, 4), (2, 1, 3, 5), (3, 1, 6, 4), (3, 1, 6, 5)),  # L differs
        ((2, 3, 4), (2, 3, 5), (2, 6, 4), (2, 6, 5)),  # 3-D
    ],
)
def test_grad_inner_rejects_bad_shapes(backend, backend_device, shapes):
    k1, g1, k2, g2 = (torch.zeros(s, device=backend_device) for s in shapes)
    with pytest.raises(ValueError, match="k1"):
        grad_inner(k1, g1, k2, g2, backend=backend)
