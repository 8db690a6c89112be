"""The CUDA kernels of rank1_apply / rank1_apply_many (csrc/cuda/rank1.cu) on a real GPU."""

from __future__ import annotations

import pytest
import torch
from _reference_check import assert_close_to_reference, ulp_distance

from golden_fast import native
from golden_fast.ops.rank1 import rank1_apply, rank1_apply_many

CUDA = torch.device("cuda")
pytestmark = pytest.mark.skipif(not native.has_op("rank1_apply", "CUDA"), reason=native.reason())


def _dyadic(d, m, n, dtype, seed):
    # as in tests/ops/test_rank1.py: every float32 operation exact, so only the last rounding remains
    g = torch.Generator().manual_seed(seed)
    w = (torch.randint(-128, 129, (d, m), generator=g) / 16).to(dtype)
    u = torch.randint(-8, 9, (d, n), generator=g) / 4
    v = torch.randint(-8, 9, (m, n), generator=g) / 4
    return w, u, v


def test_automatic_choice_on_cuda_is_the_cuda_kernel():
    assert rank1_apply.choose("cuda") == "cuda"
    assert rank1_apply_many.choose("cuda") == "cuda"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("n", [1, 7, 16, 17, 64, 300])  # direct kernel up to 16, SIMT tiles, cuBLAS > 256
def test_cuda_rounds_once_and_matches_cpu(dtype, n):
    # n = 300: sums up to 1200 on a 1/16 grid, still exact in float32 (15 significant bits)
    w, u, v = _dyadic(333, 1111, n, dtype, seed=n)
    expected = rank1_apply.reference(w.to(torch.float64, copy=True), u.double(), v.double()).to(dtype)
    out = rank1_apply(w.to(CUDA), u.to(CUDA), v.to(CUDA), backend="cuda").cpu()
    assert torch.equal(out, expected), f"{int((ulp_distance(out, expected) != 0).sum())} elements differ"
    if native.has_op("rank1_apply"):
        assert torch.equal(out, rank1_apply(w.clone(), u, v, backend="cpp")), "CUDA and C++ bits differ"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("n", [3, 1000])
def test_cuda_gemma_size(dtype, n):
    # a Gemma-3-12B down-projection, 3840 x 15360, stored transposed as GPT-2 would
    g = torch.Generator(device=CUDA).manual_seed(n)
    w = torch.randn(15360, 3840, device=CUDA, generator=g).to(dtype)
    u = 1e-2 * torch.randn(3840, n, device=CUDA, generator=g)
    v = 1e-2 * torch.randn(15360, n, device=CUDA, generator=g)
    truth = rank1_apply.reference(w.to(torch.float64, copy=True), u.double(), v.double(), True)
    baseline = rank1_apply.reference(w.clone(), u, v, True)
    out = rank1_apply(w.clone(), u, v, True, backend="cuda")
    assert_close_to_reference(out, truth, baseline)


def test_cuda_many_is_per_layer_and_writes_through_views():
    g = torch.Generator(device=CUDA).manual_seed(9)
    ws = [torch.randn(576, 1536, device=CUDA, generator=g).to(torch.bfloat16) for _ in range(4)]
    ws.append(torch.randn(1536, 576, device=CUDA, generator=g).to(torch.bfloat16).t())  # transposed view
    ws.append(torch.randn(1536, 700, device=CUDA, generator=g).to(torch.bfloat16).t()[:576])  # and a slice
    us = 1e-2 * torch.randn(6, 576, 40, device=CUDA, generator=g)
    vs = 1e-2 * torch.randn(6, 1536, 40, device=CUDA, generator=g)
    one_by_one = [rank1_apply(w.clone(), u, v, backend="cuda") for w, u, v in zip(ws, us, vs)]
    before = [w.clone() for w in ws]
    rank1_apply_many(ws, us, vs, backend="cuda")
    for i in range(6):
        assert torch.equal(ws[i], one_by_one[i])
        truth = rank1_apply.reference(before[i].to(torch.float64, copy=True), us[i].double(), vs[i].double())
        assert_close_to_reference(ws[i], truth, rank1_apply.reference(before[i].clone(), us[i], vs[i]))


def test_cuda_rejects_and_refuses():
    w = torch.zeros(4, 5, device=CUDA)
    with pytest.raises(ValueError, match="weight is"):
        rank1_apply(w, torch.ones(4, 2, device=CUDA), torch.ones(6, 2, device=CUDA), backend="cuda")
    with pytest.raises(RuntimeError, match="share memory"):
        rank1_apply_many([w, w], torch.ones(2, 4, 1, device=CUDA), torch.ones(2, 5, 1, device=CUDA), backend="cuda")
    with pytest.raises(RuntimeError):
        torch.ops.golden_fast.rank1_apply(w, torch.ones(4, 2), torch.ones(5, 2, device=CUDA))  # u on the CPU
    assert not w.any()


def test_cuda_opcheck():
    g = torch.Generator(device=CUDA).manual_seed(1)
    ws = [torch.randn(12, 20, device=CUDA, generator=g).to(t) for t in (torch.float32, torch.bfloat16)]
    us, vs = torch.randn(2, 12, 20, device=CUDA, generator=g), torch.randn(2, 20, 20, device=CUDA, generator=g)
    torch.library.opcheck(torch.ops.golden_fast.rank1_apply_many.default, (ws, us, vs, False, 0.5))
    torch.library.opcheck(torch.ops.golden_fast.rank1_apply.default, (ws[1], us[0], vs[0], False, 0.5))
