"""grad_inner (golden_fast/ops/grad_inner.py) against materialised float64 weight gradients.

Truth: grad_W = sum_t g_t k_tᵀ built explicitly in float64 for each (layer, sample), then the
Frobenius inner product; the op must give the same from the two Gram matrices, for every backend.
"""

from __future__ import annotations

import pytest
import torch
from _reference_check import assert_close_to_reference

from golden_fast.ops.grad_inner import grad_inner


def _truth(k1, g1, k2, g2):
    G1 = torch.einsum("lbtd,lbtm->lbdm", g1.double(), k1.double())  # materialised gradients
    G2 = torch.einsum("lbtd,lbtm->lbdm", g2.double(), k2.double())
    return (G1 * G2).sum((-1, -2))


def _inputs(L, B, T1, T2, m, d, dtype=torch.float32, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(L, B, T, w, generator=g) for T, w in ((T1, m), (T1, d), (T2, m), (T2, d))]
    return [x.to(device, dtype) for x in xs]


# (L, B, T1, T2, m, d): normal, T1 != T2, one token, one layer and sample, wide m
SHAPES = [(3, 4, 7, 5, 16, 8), (2, 3, 1, 9, 12, 6), (1, 1, 1, 1, 5, 3), (2, 2, 6, 6, 96, 24)]


@pytest.mark.op_backends("grad_inner")
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_materialised_gradients(backend, backend_device, shape, dtype):
    k1, g1, k2, g2 = _inputs(*shape, dtype=dtype, device=backend_device)
    truth = _truth(k1, g1, k2, g2)
    base = grad_inner.reference(k1, g1, k2, g2)
    out = grad_inner(k1, g1, k2, g2, backend=backend)
    assert out.dtype == torch.float32 and out.shape == shape[:2]
    assert_close_to_reference(out.double(), truth, base.double(), atol=1e-5)


@pytest.mark.op_backends("grad_inner")
def test_zero_rows_are_padding(backend, backend_device):
    """Appending zero rows (in g, as LGA pads) to either side leaves the result unchanged."""
    k1, g1, k2, g2 = _inputs(2, 3, 4, 5, 10, 6, device=backend_device)
    ref = grad_inner(k1, g1, k2, g2, backend=backend)
    pad_k = torch.randn(2, 3, 3, 10, device=backend_device)  # keys at padding need not be zero
    pad_g = torch.zeros(2, 3, 3, 6, device=backend_device)
    out = grad_inner(torch.cat([pad_k, k1], 2), torch.cat([pad_g, g1], 2), k2, g2, backend=backend)
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5)
    out = grad_inner(k1, g1, torch.cat([k2, pad_k], 2), torch.cat([g2, pad_g], 2), backend=backend)
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_self_product_is_the_squared_norm():
    k, g, _, _ = _inputs(2, 3, 5, 5, 7, 4)
    G = torch.einsum("lbtd,lbtm->lbdm", g.double(), k.double())
    out = grad_inner(k, g, k, g)
    assert torch.allclose(out.double(), (G * G).sum((-1, -2)), rtol=1e-5)
    assert bool((out > 0).all())


def test_empty_tokens_give_zeros():
    k1, g1, _, _ = _inputs(2, 3, 4, 1, 6, 5)
    out = grad_inner(k1, g1, torch.zeros(2, 3, 0, 6), torch.zeros(2, 3, 0, 5))
    assert torch.equal(out, torch.zeros(2, 3))


def test_mixed_dtypes_widen_to_float32():
    k1, g1, k2, g2 = _inputs(1, 2, 3, 4, 8, 5, dtype=torch.float64)
    out = grad_inner(k1.half(), g1.bfloat16(), k2, g2.float())
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), _truth(k1.half(), g1.bfloat16(), k2, g2.float()), rtol=1e-4)


@pytest.mark.parametrize(
    "shapes",
    [
        ((2, 3, 4, 6), (2, 3, 4, 5), (2, 3, 5, 7), (2, 3, 5, 5)),  # m differs
        ((2, 3, 4, 6), (2, 3, 4, 5), (2, 3, 5, 6), (2, 3, 5, 4)),  # d differs
        ((2, 3, 4, 6), (2, 3, 4, 5), (2, 2, 5, 6), (2, 2, 5, 5)),  # B differs
        ((3, 4, 6), (3, 4, 5), (3, 5, 6), (3, 5, 5)),  # 3-D
    ],
)
def test_bad_shapes_raise_naming_them(shapes):
    with pytest.raises(ValueError, match="grad_inner"):
        grad_inner(*[torch.zeros(s) for s in shapes])
