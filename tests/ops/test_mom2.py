"""mom2_update against its contract (golden_fast/ops/mom2.py), for every backend.

Truth is the reference run in float64 on the same (widened) keys. Only the upper triangle is
part of the contract, so only it is compared; symmetrize_upper rebuilds the full matrix.
"""

from __future__ import annotations

import pytest
import torch
from _reference_check import assert_close_to_reference

from golden_fast.ops.mom2 import mom2_update, mom2_update_many, symmetrize_upper

# (T, m): normal, odd, a single row, no rows, m = 1, tall, wide, and m >= 1024 where the panels
# backend splits the triangle into row panels (test_many_panels_match_reference covers many panels on small m)
SHAPES = [(64, 128), (37, 96), (1, 8), (0, 8), (5, 1), (300, 33), (7, 200), (17, 1100)]
MASKS = ["none", "random", "int"]
# (keys, acc): float32 keys, bf16 / fp16 keys (a 16-bit model), and the float64 accumulation option
DTYPES = [
    (torch.float32, torch.float32),
    (torch.bfloat16, torch.float32),
    (torch.float16, torch.float32),
    (torch.float32, torch.float64),
]


def _inputs(T, m, key_dtype, acc_dtype, mask_kind, seed=0):
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(T, m, generator=g).to(key_dtype)
    acc0 = torch.randn(m, m, generator=g, dtype=torch.float64)
    acc0 = (acc0 + acc0.T).to(acc_dtype)  # a running sum is symmetric
    if mask_kind == "none":
        mask = None
    elif mask_kind == "random":
        mask = torch.rand(T, generator=g) < 0.6
    elif mask_kind == "all-false":
        mask = torch.zeros(T, dtype=torch.bool)
    else:  # an attention mask: int64 0/1
        mask = (torch.rand(T, generator=g) < 0.5).long()
    return keys, acc0, mask


@pytest.mark.op_backends("mom2_update")
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("key_dtype, acc_dtype", DTYPES)
@pytest.mark.parametrize("T, m", SHAPES)
def test_mom2_update_matches_reference(backend, backend_device, T, m, key_dtype, acc_dtype, mask_kind):
    keys, acc0, mask = _inputs(T, m, key_dtype, acc_dtype, mask_kind)
    keys, acc0 = keys.to(backend_device), acc0.to(backend_device)
    mask = mask.to(backend_device) if mask is not None else None
    keys_before = keys.clone()
    truth = mom2_update.reference(acc0.double().clone(), keys.double(), mask)
    baseline = mom2_update.reference(acc0.clone(), keys, mask)
    out = acc0.clone()
    ptr = out.data_ptr()
    result = mom2_update(out, keys, mask, backend=backend)
    assert result is out and out.data_ptr() == ptr, "mom2_update must write acc in place and return it"
    assert torch.equal(keys, keys_before), "keys must not change"
    if T == 0:
        assert torch.equal(out, acc0), "no rows must leave acc bitwise unchanged"
    assert_close_to_reference(out.triu(), truth.triu().to(acc_dtype), baseline.triu())


@pytest.mark.op_backends("mom2_update")
@pytest.mark.parametrize("m", [8, 700])
def test_mom2_update_all_rows_masked_is_a_no_op(backend, backend_device, m):
    keys, acc0, _ = _inputs(9, m, torch.float32, torch.float32, "none")
    out = acc0.clone().to(backend_device)
    mom2_update(out, keys.to(backend_device), torch.zeros(9, dtype=torch.bool, device=backend_device),
                backend=backend)
    assert torch.equal(out, acc0.to(backend_device))


@pytest.mark.op_backends("mom2_update")
def test_mom2_update_batched_keys_with_attention_mask(backend, backend_device):
    """(B, T, m) keys straight from a hook with a (B, T) left-padding mask == the kept rows."""
    g = torch.Generator().manual_seed(1)
    keys = torch.randn(3, 11, 24, generator=g).to(backend_device)
    lengths = [11, 4, 7]
    mask = torch.zeros(3, 11, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, 11 - n :] = 1
    mask = mask.to(backend_device)
    rows = torch.cat([keys[b, 11 - n :] for b, n in enumerate(lengths)])  # (22, 24)
    truth = rows.double().T @ rows.double()
    out = mom2_update(torch.zeros(24, 24, device=backend_device), keys, mask, backend=backend)
    baseline = mom2_update.reference(torch.zeros(24, 24, device=backend_device), rows)
    assert_close_to_reference(out.triu(), truth.triu().float(), baseline.triu())


@pytest.mark.op_backends("mom2_update")
def test_mom2_update_accumulates_over_calls(backend, backend_device):
    g = torch.Generator().manual_seed(2)
    chunks = [torch.randn(n, 40, generator=g).to(backend_device) for n in (13, 1, 29)]
    acc = torch.zeros(40, 40, dtype=torch.float64, device=backend_device)
    for k in chunks:
        mom2_update(acc, k, backend=backend)
    allk = torch.cat(chunks).double()
    torch.testing.assert_close(acc.triu(), (allk.T @ allk).triu(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "acc, keys, mask, match",
    [
        (torch.zeros(4, 5), torch.zeros(2, 5), None, "square"),
        (torch.zeros(4, 4, dtype=torch.float16), torch.zeros(2, 4), None, "float32 or float64"),
        (torch.zeros(4, 4), torch.zeros(2, 5), None, "end in m"),
        (torch.zeros(4, 4), torch.zeros(2, 4, dtype=torch.long), None, "floating point"),
        (torch.zeros(4, 4), torch.zeros(2, 4), torch.ones(3, dtype=torch.bool), "leading shape"),
        (torch.zeros(8, 8)[::2, ::2], torch.zeros(2, 4), None, "contiguous"),
    ],
)
@pytest.mark.op_backends("mom2_update")
def test_mom2_update_rejects_bad_inputs(backend, backend_device, acc, keys, mask, match):
    if not acc.is_contiguous():  # moving a strided view to another device would make it contiguous
        acc = torch.zeros(8, 8, device=backend_device)[::2, ::2]
    acc, keys = acc.to(backend_device), keys.to(backend_device)
    mask = mask.to(backend_device) if mask is not None else None
    with pytest.raises(ValueError, match=match):
        mom2_update(acc, keys, mask, backend=backend)


@pytest.mark.op_backends("mom2_update")
@pytest.mark.parametrize("key_dtype", [torch.float32, torch.float16])
def test_mom2_update_never_reads_padding_rows(backend, backend_device, key_dtype):
    """Masked-out rows may hold anything (NaN, inf): they must not reach acc (no 0 * NaN)."""
    keys, acc0, mask = _inputs(23, 40, key_dtype, torch.float32, "random", seed=3)
    dirty = keys.clone()
    dirty[~mask] = float("nan")
    dirty[~mask, ::3] = float("inf")
    out = mom2_update(acc0.clone().to(backend_device), dirty.to(backend_device), mask.to(backend_device),
                      backend=backend)
    truth = mom2_update.reference(acc0.to(torch.float64, copy=True), keys.double(), mask)
    baseline = mom2_update.reference(acc0.clone(), keys, mask)
    assert_close_to_reference(out.triu(), truth.triu().float(), baseline.triu())


# -- mom2_update_many: every layer of a batch in one call ---------------------------------------
@pytest.mark.op_backends("mom2_update_many")
@pytest.mark.parametrize("key_dtype, acc_dtype", DTYPES)
@pytest.mark.parametrize("L, B, T, m", [(3, 2, 9, 50), (1, 1, 1, 8), (4, 3, 17, 70), (2, 1, 0, 8), (0, 2, 3, 8)])
def test_mom2_update_many_is_mom2_update_per_layer(backend, backend_device, L, B, T, m, key_dtype, acc_dtype):
    g = torch.Generator().manual_seed(L * 100 + T)
    keys = torch.randn(L, B, T, m, generator=g).to(backend_device, key_dtype)
    mask = (torch.rand(B, T, generator=g) < 0.7).to(backend_device)
    acc0 = torch.randn(L, m, m, generator=g, dtype=torch.float64).to(backend_device, acc_dtype)
    accs = acc0.clone()
    ptr = accs.data_ptr()
    result = mom2_update_many(accs, keys, mask, backend=backend)
    assert result is accs and accs.data_ptr() == ptr, "mom2_update_many must write accs in place and return it"
    for layer in range(L):
        truth = mom2_update.reference(acc0[layer].to(torch.float64, copy=True), keys[layer].double(), mask)
        baseline = mom2_update.reference(acc0[layer].clone(), keys[layer], mask)
        assert_close_to_reference(accs[layer].triu(), truth.triu().to(acc_dtype), baseline.triu())
    if T == 0:
        assert torch.equal(accs, acc0)


@pytest.mark.op_backends("mom2_update_many")
def test_mom2_update_many_strided_keys(backend, backend_device):
    # keys gathered from hooks into a (B, T, L, m) buffer and viewed as (L, B, T, m): not contiguous
    g = torch.Generator().manual_seed(7)
    buf = torch.randn(2, 13, 3, 40, generator=g).to(backend_device)
    keys = buf.permute(2, 0, 1, 3)  # (L, B, T, m)
    accs = torch.zeros(3, 40, 40, device=backend_device)
    mom2_update_many(accs, keys, None, backend=backend)
    for layer in range(3):
        rows = keys[layer].reshape(-1, 40)
        truth = rows.double().T @ rows.double()
        baseline = mom2_update.reference(torch.zeros(40, 40, device=backend_device), rows)
        assert_close_to_reference(accs[layer].triu(), truth.triu().float(), baseline.triu())


@pytest.mark.op_backends("mom2_update_many")
def test_mom2_update_many_rejects_bad_inputs(backend, backend_device):
    z = lambda *s, **kw: torch.zeros(*s, device=backend_device, **kw)
    with pytest.raises(ValueError, match="stacked"):
        mom2_update_many(z(8, 8), z(3, 8), backend=backend)
    with pytest.raises(ValueError, match="L = 2"):
        mom2_update_many(z(2, 8, 8), z(3, 5, 8), backend=backend)
    with pytest.raises(ValueError, match="end in m"):
        mom2_update_many(z(2, 8, 8), z(2, 5, 7), backend=backend)
    with pytest.raises(ValueError, match="end in m"):
        mom2_update_many(z(0, 8, 8), z(0, 5, 7), backend=backend)  # also without layers
    with pytest.raises(ValueError, match="leading shape"):
        mom2_update_many(z(2, 8, 8), z(2, 5, 8), z(4, dtype=torch.bool), backend=backend)
    with pytest.raises(ValueError, match="contiguous"):
        mom2_update_many(z(2, 8, 16)[:, :, ::2], z(2, 5, 8), backend=backend)


@pytest.mark.parametrize("min_rows, m", [(8, 37), (8, 64), (4, 9), (1, 5)])
def test_many_panels_match_reference(monkeypatch, min_rows, m):
    """Many row panels (narrow, uneven last one) on small matrices: the panel bookkeeping covers
    every element of the upper triangle exactly once."""
    import golden_fast.ops.mom2 as mom2

    monkeypatch.setattr(mom2, "_PANEL_MIN_ROWS", min_rows)
    assert mom2._panels(m) > 1
    keys, acc0, mask = _inputs(50, m, torch.float32, torch.float32, "random")
    out = mom2.mom2_update_panels(acc0.clone(), keys, mask)
    ref = mom2.mom2_update_torch(acc0.clone(), keys, mask)
    truth = mom2.mom2_update_torch(acc0.double(), keys.double(), mask)
    assert_close_to_reference(out.triu(), truth.triu().float(), ref.triu())


def test_cpu_chooses_panels_before_the_reference(monkeypatch):
    monkeypatch.delenv("GOLDEN_FAST_BACKEND", raising=False)
    assert mom2_update.choose("cpu") == "panels"
    assert mom2_update_many.choose("cpu") == "panels"
    assert "cpp" not in mom2_update.declared_backends  # no C++ mom2: the name says what runs


def test_symmetrize_upper_rebuilds_the_full_matrix():
    a = torch.randn(6, 6, dtype=torch.float64)
    full = a.T @ a
    garbage_below = full.triu() + torch.randn(6, 6, dtype=torch.float64).tril(-1)
    assert torch.equal(symmetrize_upper(garbage_below), full.triu() + full.triu(1).T)
    assert torch.equal(symmetrize_upper(garbage_below), symmetrize_upper(garbage_below).T)
