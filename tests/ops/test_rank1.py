"""rank1_apply against its contract (golden_fast/ops/rank1.py), for every backend.

Truth is always float64. Three kinds of check:
- tolerance (tests/_reference_check.py): random inputs, flash-attn's rule against the same-dtype
  torch reference;
- exact: inputs whose float32 arithmetic is exact, so the contract ("accumulate in float32, round
  into the weight dtype once") fixes every bit of the result;
- one ulp: realistic random edits, where the float32 accumulation error is provably below half a
  unit in the last place of the weight dtype, so the result is the float64 truth rounded once, or
  its neighbour (the float32 sum may fall on either side of a rounding boundary).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _reference_check import assert_close_to_reference, ulp, ulp_distance

from golden_fast import native
from golden_fast.ops.rank1 import rank1_apply, rank1_apply_many

ROOT = Path(__file__).resolve().parents[2]
FLOAT16S = [torch.float32, torch.float16, torch.bfloat16]  # the weight dtypes of real models
# (d, m, n): normal, odd, n = 1, n = 0, d = 1, m = 1, 1x1, and n above the C++ fused-loop limit (16)
# with m above its 512-column tile.
SHAPES = [(64, 96, 4), (37, 53, 3), (5, 7, 1), (8, 8, 0), (1, 17, 2), (19, 1, 5), (1, 1, 1), (33, 700, 40)]


def _inputs(d, m, n, dtype, transposed, device, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn((m, d) if transposed else (d, m), generator=g).to(device, dtype)
    u = (scale * torch.randn(d, n, generator=g)).to(device)
    v = (scale * torch.randn(m, n, generator=g)).to(device)
    return w, u, v


def _truth(w, u, v, transposed, alpha=1.0):
    """The float64 truth, through the reference (it is the spec) on float64 copies."""
    # copy=True: for a float64 weight, w.double() would be w itself, and the in-place reference would
    # update the caller's weight (until 2026-11 that made the float64 rounds-once test compare a tensor
    # with itself on the CPU, and apply every edit twice on the GPU).
    return rank1_apply.reference(w.to(torch.float64, copy=True), u.double(), v.double(), transposed, alpha)


# ----------------------------------------------------------------------------------------------
# Tolerance against the reference
# ----------------------------------------------------------------------------------------------
@pytest.mark.op_backends("rank1_apply")
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("dtype", FLOAT16S)
@pytest.mark.parametrize("d, m, n", SHAPES)
def test_rank1_apply_matches_reference(backend, backend_device, d, m, n, dtype, transposed):
    w, u, v = _inputs(d, m, n, dtype, transposed, backend_device)
    u_before, v_before = u.clone(), v.clone()
    truth = _truth(w, u, v, transposed)
    baseline = rank1_apply.reference(w.clone(), u, v, transposed)
    out = w.clone()
    ptr, version = out.data_ptr(), out._version
    result = rank1_apply(out, u, v, transposed, backend=backend)
    assert result is out and out.data_ptr() == ptr, "rank1_apply must write in place and return the weight"
    assert torch.equal(u, u_before) and torch.equal(v, v_before), "only the weight may change"
    if n == 0:
        assert torch.equal(out, w), "n = 0 must leave the weight bitwise unchanged"
    else:
        assert out._version > version, "the weight's version counter must record the write"
    assert_close_to_reference(out, truth, baseline)


@pytest.mark.op_backends("rank1_apply")
@pytest.mark.parametrize("alpha", [-0.5, 3.0])
def test_rank1_apply_alpha(backend, backend_device, alpha):
    w, u, v = _inputs(40, 70, 6, torch.bfloat16, False, backend_device)
    truth = _truth(w, u, v, False, alpha)
    baseline = rank1_apply.reference(w.clone(), u, v, False, alpha)
    out = rank1_apply(w.clone(), u, v, alpha=alpha, backend=backend)
    assert_close_to_reference(out, truth, baseline)


# ----------------------------------------------------------------------------------------------
# Exact: dyadic inputs make every float32 operation exact, so only the final rounding remains
# ----------------------------------------------------------------------------------------------
def _dyadic_inputs(d, m, n, dtype, transposed, uv_dtype, seed=0):
    # w = i/16 with |i| <= 128 (8 significant bits: exact in bf16); u, v = i/4 with |i| <= 8.
    # Then |sum| <= n * 4 on a 1/16 grid (1/64 with alpha = 0.25): for n <= 64 every partial sum,
    # the alpha product and w + alpha * sum have under 24 significant bits, so float32 and float64
    # agree exactly, in any summation order (BLAS included), with or without FMA.
    g = torch.Generator().manual_seed(seed)
    shape = (m, d) if transposed else (d, m)
    w = (torch.randint(-128, 129, shape, generator=g) / 16).to(dtype)
    u = (torch.randint(-8, 9, (d, n), generator=g) / 4).to(uv_dtype)
    v = (torch.randint(-8, 9, (m, n), generator=g) / 4).to(uv_dtype)
    return w, u, v


EXACT_CASES = [  # (n, dtype of u and v, alpha)
    (1, torch.float32, 1.0),
    (5, torch.bfloat16, -0.25),
    (17, torch.float16, 1.0),
    (40, torch.float64, 2.0),
]


@pytest.mark.op_backends("rank1_apply")
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("dtype", [*FLOAT16S, torch.float64])
@pytest.mark.parametrize("n, uv_dtype, alpha", EXACT_CASES)
def test_rank1_apply_rounds_once(backend, backend_device, n, uv_dtype, alpha, dtype, transposed):
    w, u, v = _dyadic_inputs(29, 531, n, dtype, transposed, uv_dtype)
    expected = _truth(w, u, v, transposed, alpha).to(dtype)  # float64 is exact here: rounded once
    out = rank1_apply(
        w.to(backend_device), u.to(backend_device), v.to(backend_device), transposed, alpha, backend=backend
    )
    bad = ulp_distance(out.cpu(), expected) != 0
    assert not bad.any(), (
        f"{int(bad.sum())} elements differ from the truth rounded once, first at {bad.nonzero()[:4].tolist()}"
    )


@pytest.mark.op_backends("rank1_apply")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rank1_apply_rounds_once_large(backend, backend_device, dtype):
    # 600 x 4000 with n = 20: the C++ BLAS path over more than one 8 MiB accumulator tile.
    w, u, v = _dyadic_inputs(600, 4000, 20, dtype, False, torch.float32, seed=1)
    expected = _truth(w, u, v, False).to(dtype)
    out = rank1_apply(w.to(backend_device), u.to(backend_device), v.to(backend_device), backend=backend)
    assert torch.equal(out.cpu(), expected)


def test_exact_inputs_detect_double_rounding():
    # The exact test has teeth: on the same kind of inputs, rounding the update into bf16 before it
    # meets the weight, or accumulating the terms in bf16, changes elements (hundreds of 15k here).
    w, u, v = _dyadic_inputs(29, 531, 40, torch.bfloat16, False, torch.float32)
    expected = _truth(w, u, v, False).to(torch.bfloat16)
    delta_rounded = w + (u @ v.T).to(torch.bfloat16)
    per_term = w.clone()
    for j in range(u.shape[1]):
        per_term += torch.outer(u[:, j], v[:, j]).to(torch.bfloat16)
    assert (ulp_distance(delta_rounded, expected) != 0).sum() > 100
    assert (ulp_distance(per_term, expected) != 0).sum() > 100


@pytest.mark.op_backends("rank1_apply")
@pytest.mark.parametrize("n", [1, 9])  # the C++ fused path (n <= 8) and its BLAS-tile path
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_rank1_apply_conversions_match_torch(backend, backend_device, dtype, n):
    # Every 16-bit pattern as a weight (to float32 and back), and float32 values of every exponent,
    # subnormal and overflowing ones included, as updates (rounded into the dtype): the results must
    # be torch's own conversions bit for bit. One row of 65,563 columns covers vector bodies and tails.
    g = torch.Generator().manual_seed(5)
    patterns = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    patterns = patterns[~patterns.float().isnan()]
    extra = torch.randn(65563 - patterns.numel(), generator=g).to(dtype)
    w = torch.cat([patterns, extra]).reshape(1, -1)  # (m=1, d) with transposed=True
    bits = torch.randint(0, 2**31 - 1, (w.shape[1],), generator=g, dtype=torch.int64).to(torch.int32)
    x = bits.view(torch.float32) * torch.where(torch.rand(w.shape[1], generator=g) < 0.5, 1.0, -1.0)
    x = torch.where(x.isfinite() & (x != 0), x, torch.ones_like(x))  # (d,), finite and non-zero
    for weight, update in ((w, torch.zeros_like(x)), (torch.zeros_like(w), x)):
        u = torch.zeros(weight.shape[1], n)
        u[:, 0] = update
        v = torch.zeros(1, n)
        v[0, 0] = 1.0  # the sum is update * 1 + 0 * 0 + ...: exact
        expected = (weight.float() + update).to(dtype)  # torch's conversions, one rounding
        out = rank1_apply(
            weight.clone().to(backend_device),
            u.to(backend_device),
            v.to(backend_device),
            True,
            backend=backend,
        ).cpu()
        bad = ulp_distance(out, expected) != 0
        assert not bad.any(), f"{int(bad.sum())} conversions differ, e.g. {bad.nonzero()[:4].tolist()}"


# ----------------------------------------------------------------------------------------------
# One ulp: realistic edits (updates ~1e-3 of weights ~1), float32 error bounded per element
# ----------------------------------------------------------------------------------------------
# float32 with n = 40 is left out: the worst-case bound grows like n 2^-24 sum|u v| and no longer
# fits in a quarter ulp of the result (the exact tests above cover float32 at n = 40 bit for bit).
ONE_ULP_CASES = [(1, torch.float32), (7, torch.float32)] + [(n, t) for n in (1, 7, 40) for t in FLOAT16S[1:]]


@pytest.mark.op_backends("rank1_apply")
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("n, dtype", ONE_ULP_CASES)
def test_rank1_apply_within_one_ulp(backend, backend_device, n, dtype, transposed):
    w, u, v = _inputs(48, 300, n, dtype, transposed, backend_device, scale=0.05, seed=n)
    truth = _truth(w, u, v, transposed)
    expected = truth.to(dtype)
    out = rank1_apply(w.clone(), u, v, transposed, backend=backend).cpu()
    # Rigorous bound on |float32 result before the last rounding - exact|: summing n products in any
    # order errs by at most gamma_n * sum|u v| (Higham, Thm 3.1; gamma_k ~ k 2^-24), plus 2^-24 for
    # the product and 2^-24 of the result for forming w + s in float32 when the weight is 16-bit.
    terms = u.double().abs() @ v.double().abs().T  # (d, m)
    terms = (terms.T if transposed else terms).cpu()
    bound = (n + 2) * 2.0**-24 * terms
    if dtype != torch.float32:
        bound = bound + 2.0**-24 * truth.abs().cpu()
    # Below half the spacing (half of it again at a power of two, where the spacing halves below),
    # the float32 value rounds to one of the two neighbours of the truth: within one ulp of `expected`.
    eligible = bound < 0.25 * ulp(expected)
    assert eligible.float().mean() > 0.5, "test inputs too cancellation-prone to say anything"
    dist = ulp_distance(out, expected)
    assert (dist[eligible] <= 1).all(), f"max {int(dist[eligible].max())} ulps from the truth rounded once"


# ----------------------------------------------------------------------------------------------
# Layouts, aliasing, errors
# ----------------------------------------------------------------------------------------------
def _view(kind, d, m, dtype, device):
    """(base storage, weight view (d, m) into it, mask of the base elements the view covers)."""
    g = torch.Generator().manual_seed(3)
    if kind == "transposed-view":  # stride(0) == 1
        base = torch.randn(m, d, generator=g).to(device, dtype)
        return base, base.t(), torch.ones_like(base, dtype=torch.bool)
    if kind == "column-slice":  # columns of a wider matrix: row stride m + 6
        base = torch.randn(d, m + 6, generator=g).to(device, dtype)
        mask = torch.zeros_like(base, dtype=torch.bool)
        mask[:, 3 : m + 3] = True
        return base, base[:, 3 : m + 3], mask
    base = torch.randn(2 * d, 3 * m, generator=g).to(device, dtype)  # "strided": no unit stride at all
    mask = torch.zeros_like(base, dtype=torch.bool)
    mask[::2, ::3] = True
    return base, base[::2, ::3], mask


@pytest.mark.op_backends("rank1_apply")
@pytest.mark.parametrize("dtype", FLOAT16S)
@pytest.mark.parametrize("view", ["transposed-view", "column-slice", "strided"])
def test_rank1_apply_writes_through_views(backend, backend_device, view, dtype):
    d, m, n = 21, 34, 3
    base, w, mask = _view(view, d, m, dtype, backend_device)
    g = torch.Generator().manual_seed(4)
    u = torch.randn(n, d, generator=g).to(backend_device).T  # non-contiguous u and v too
    v = torch.randn(n, m, generator=g).to(backend_device, torch.float64).T
    untouched = base[~mask].clone()
    truth = _truth(w, u, v, False)
    baseline = rank1_apply.reference(w.contiguous().clone(), u, v)
    rank1_apply(w, u, v, backend=backend)
    assert torch.equal(base[~mask], untouched), f"{view}: elements outside the view changed"
    assert_close_to_reference(w, truth, baseline)


@pytest.mark.op_backends("rank1_apply")
def test_rank1_apply_refuses_overlapping_weight(backend, backend_device):
    w = torch.randn(4, 1, device=backend_device).expand(4, 5)  # 5 columns share one element
    with pytest.raises(RuntimeError):
        rank1_apply(w, torch.randn(4, 2, device=backend_device), torch.randn(5, 2, device=backend_device),
                    backend=backend)


@pytest.mark.op_backends("rank1_apply")
def test_rank1_apply_edits_parameters(backend, backend_device):
    # Editing a model's nn.Parameter (a leaf that requires grad) works: the op runs under no_grad.
    p = torch.nn.Parameter(torch.zeros(3, 2, device=backend_device))
    rank1_apply(p, torch.ones(3, 1, device=backend_device), torch.ones(2, 1, device=backend_device), backend=backend)
    assert torch.equal(p.detach().cpu(), torch.ones(3, 2)) and p.grad_fn is None


BAD_INPUTS = [  # (weight shape, u shape, v shape, transposed, weight dtype, u dtype, message part)
    ((4, 5), (4, 2), (6, 2), False, torch.float32, torch.float32, "weight [4, 5], u [4, 2], v [6, 2]"),
    ((4, 5), (4, 2), (5, 3), False, torch.float32, torch.float32, "same n"),
    ((4, 5), (4, 2), (5, 2), True, torch.float32, torch.float32, "transposed=True"),
    ((20,), (4, 2), (5, 2), False, torch.float32, torch.float32, "2-D"),
    ((4, 5), (4, 2), (5, 2), False, torch.int32, torch.float32, "torch.int32|Int"),
    ((4, 5), (4, 2), (5, 2), False, torch.float32, torch.int64, "floating point"),
]


@pytest.mark.op_backends("rank1_apply")
@pytest.mark.parametrize("w_shape, u_shape, v_shape, transposed, w_dtype, u_dtype, message", BAD_INPUTS)
def test_rank1_apply_rejects_bad_inputs(
    backend, backend_device, w_shape, u_shape, v_shape, transposed, w_dtype, u_dtype, message
):
    w = torch.zeros(w_shape, dtype=w_dtype, device=backend_device)
    u = torch.ones(u_shape, device=backend_device).to(u_dtype)
    v = torch.ones(v_shape, device=backend_device)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        rank1_apply(w, u, v, transposed, backend=backend)
    assert not w.any(), "a rejected call must not write"


# ----------------------------------------------------------------------------------------------
# The C++ op as a torch.library op
# ----------------------------------------------------------------------------------------------
@pytest.mark.skipif(not native.has_op("rank1_apply"), reason=native.reason())
@pytest.mark.parametrize("n", [3, 40])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("dtype", FLOAT16S)
def test_rank1_apply_cpp_opcheck(dtype, transposed, n):
    w, u, v = _inputs(12, 20, n, dtype, transposed, "cpu")
    torch.library.opcheck(torch.ops.golden_fast.rank1_apply.default, (w, u, v, transposed, 0.5))


ISA_PROBE = """
import sys, torch
torch.set_num_threads(2)
from golden_fast import native
from golden_fast.ops import rank1_apply
assert native.cpu_isa() == sys.argv[2], (native.cpu_isa(), sys.argv[2])
outs = []
for n in (1, 5, 9, 20):  # fused path and BLAS-tile path
    for dtype in (torch.bfloat16, torch.float16):
        for transposed in (False, True):
            g = torch.Generator().manual_seed(n)
            w = torch.randn((531, 37) if transposed else (37, 531), generator=g).to(dtype)
            u, v = 0.1 * torch.randn(37, n, generator=g), 0.1 * torch.randn(531, n, generator=g)
            outs.append(rank1_apply(w, u, v, transposed, backend="cpp"))
torch.save(outs, sys.argv[1])
"""


@pytest.mark.skipif(not native.has_op("rank1_apply"), reason=native.reason())
@pytest.mark.parametrize("isa", ["default", "avx2", "avx512"])
def test_rank1_apply_cpp_same_bits_on_every_isa(isa, tmp_path):
    # The kernels are compiled for SSE2/NEON, AVX2 and AVX-512 and picked at run time; a CI machine
    # runs only its best. GOLDEN_FAST_CPU_ISA lowers the choice in a child process: every variant the
    # CPU can run must give the same bits as this process (no FMA contraction, same order of sums).
    order = ["default", "avx2", "avx512"]
    if order.index(isa) > order.index(native.cpu_isa() or "default"):
        pytest.skip(f"this CPU runs {native.cpu_isa()!r} at best")
    env = dict(os.environ, GOLDEN_FAST_CPU_ISA=isa)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", ISA_PROBE, str(tmp_path / "out.pt"), isa],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    theirs = torch.load(tmp_path / "out.pt")
    ours = []
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # as the probe: two OpenMP threads split the work, same bits expected
    try:
        for n in (1, 5, 9, 20):
            for dtype in (torch.bfloat16, torch.float16):
                for transposed in (False, True):
                    g = torch.Generator().manual_seed(n)
                    w = torch.randn((531, 37) if transposed else (37, 531), generator=g).to(dtype)
                    u, v = 0.1 * torch.randn(37, n, generator=g), 0.1 * torch.randn(531, n, generator=g)
                    ours.append(rank1_apply(w, u, v, transposed, backend="cpp"))
    finally:
        torch.set_num_threads(threads)  # the session's count (tests/conftest.py), not 2, for later tests
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert torch.equal(a, b), f"case {i}: {isa} differs from {native.cpu_isa()}"


@pytest.mark.skipif(not native.has_op("rank1_apply"), reason=native.reason())
def test_rank1_apply_cpp_schema_defaults():
    w, u, v = _inputs(6, 5, 2, torch.float32, False, "cpu")
    truth, baseline = _truth(w, u, v, False), rank1_apply.reference(w.clone(), u, v)
    torch.ops.golden_fast.rank1_apply(w, u, v)  # transposed=False, alpha=1.0 by default
    assert_close_to_reference(w, truth, baseline)


# ----------------------------------------------------------------------------------------------
# rank1_apply_many: several weights (layers) in one call
# ----------------------------------------------------------------------------------------------
def _many_inputs(L, d, m, n, dtypes, transposed, device, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    shape = (m, d) if transposed else (d, m)
    ws = [torch.randn(shape, generator=g).to(device, dtypes[i % len(dtypes)]) for i in range(L)]
    us = (scale * torch.randn(L, d, n, generator=g)).to(device)
    vs = (scale * torch.randn(L, m, n, generator=g)).to(device)
    return ws, us, vs


# (L, d, m, n): layers of a small model with the fused path (n <= 8) and the tile path, a weight of
# several 256 x 512 tiles with ragged edges, one layer, no terms, no layers
MANY_SHAPES = [(3, 24, 40, 1), (4, 37, 53, 6), (3, 29, 70, 20), (2, 300, 1100, 12), (1, 9, 5, 3), (3, 8, 8, 0),
               (0, 8, 8, 2)]


@pytest.mark.op_backends("rank1_apply_many")
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("L, d, m, n", MANY_SHAPES)
def test_rank1_apply_many_is_rank1_apply_per_layer(backend, backend_device, L, d, m, n, transposed):
    # Bitwise what rank1_apply does to each weight on the same backend (a journal can replay entry by
    # entry), and within the tolerance of the float64 truth; weights of mixed dtypes in one call.
    ws, us, vs = _many_inputs(L, d, m, n, FLOAT16S, transposed, backend_device)
    one_by_one = [rank1_apply(w.clone(), u, v, transposed, 0.75, backend=backend) for w, u, v in zip(ws, us, vs)]
    out = [w.clone() for w in ws]
    ptrs = [w.data_ptr() for w in out]
    result = rank1_apply_many(out, us, vs, transposed, 0.75, backend=backend)
    assert [w.data_ptr() for w in result] == ptrs and all(r is w for r, w in zip(result, out)), "in place"
    for i, (w, u, v) in enumerate(zip(ws, us, vs)):
        assert torch.equal(out[i], one_by_one[i]), f"layer {i} ({w.dtype}) differs from rank1_apply"
        truth = _truth(w, u, v, transposed, 0.75)
        assert_close_to_reference(out[i], truth, rank1_apply.reference(w.clone(), u, v, transposed, 0.75))


@pytest.mark.op_backends("rank1_apply_many")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("n", [3, 40])
def test_rank1_apply_many_rounds_once(backend, backend_device, dtype, n):
    # dyadic inputs: float32 sums are exact, so every element is the float64 truth rounded once
    layers = [_dyadic_inputs(300, 700, n, dtype, False, torch.float32, seed=s) for s in range(3)]
    ws = [w.to(backend_device) for w, _, _ in layers]
    us = torch.stack([u for _, u, _ in layers]).to(backend_device)
    vs = torch.stack([v for _, _, v in layers]).to(backend_device)
    expected = [_truth(w, u, v, False).to(dtype) for w, u, v in layers]
    rank1_apply_many(ws, us, vs, backend=backend)
    for w, e in zip(ws, expected):
        assert torch.equal(w.cpu(), e)


@pytest.mark.op_backends("rank1_apply_many")
def test_rank1_apply_many_writes_through_views(backend, backend_device):
    # one call over a transposed view, a column slice and a strided view of bigger tensors
    d, m, n = 21, 34, 9
    kinds = ("transposed-view", "column-slice", "strided")
    views = [_view(kind, d, m, torch.bfloat16, backend_device) for kind in kinds]
    g = torch.Generator().manual_seed(8)
    us = torch.randn(3, d, n, generator=g).to(backend_device)
    vs = torch.randn(3, n, m, generator=g).to(backend_device).transpose(1, 2)  # non-contiguous vs
    untouched = [base[~mask].clone() for base, _, mask in views]
    before = [w.clone() for _, w, _ in views]
    rank1_apply_many([w for _, w, _ in views], us, vs, backend=backend)
    for i, (base, w, mask) in enumerate(views):
        assert torch.equal(base[~mask], untouched[i]), "elements outside the views changed"
        truth = _truth(before[i], us[i], vs[i], False)
        assert_close_to_reference(w, truth, rank1_apply.reference(before[i].clone(), us[i], vs[i]))


@pytest.mark.op_backends("rank1_apply_many")
def test_rank1_apply_many_checks_every_layer_before_writing(backend, backend_device):
    ws = [torch.zeros(4, 5, device=backend_device) for _ in range(3)]
    ws[2] = torch.zeros(4, 6, device=backend_device)  # the last layer has the wrong shape
    us, vs = torch.ones(3, 4, 2, device=backend_device), torch.ones(3, 5, 2, device=backend_device)
    with pytest.raises(ValueError, match=r"weight \[4, 6\]"):
        rank1_apply_many(ws, us, vs, backend=backend)
    assert not any(w.any() for w in ws), "a rejected call must not write any layer"
    with pytest.raises(ValueError, match="L = 3 weights"):
        rank1_apply_many(ws, us[:2], vs[:2], backend=backend)
    with pytest.raises(ValueError, match="L = 3 weights"):
        rank1_apply_many(ws, us[0], vs[0], backend=backend)


@pytest.mark.skipif(not native.has_op("rank1_apply_many"), reason=native.reason())
def test_rank1_apply_many_cpp_refuses_shared_weights():
    w = torch.zeros(4, 5)
    with pytest.raises(RuntimeError, match="share memory"):
        rank1_apply_many([w, w], torch.ones(2, 4, 1), torch.ones(2, 5, 1), backend="cpp")
    base = torch.zeros(8, 5)
    with pytest.raises(RuntimeError, match="share memory"):  # rows 0-3 and 3-6 of one matrix
        rank1_apply_many([base[:4], base[3:7]], torch.ones(2, 4, 1), torch.ones(2, 5, 1), backend="cpp")
    with pytest.raises(RuntimeError, match="share memory"):  # strided views (no simple overlap test)
        rank1_apply_many([base[:4, ::2], base[3:7, ::2]], torch.ones(2, 4, 1), torch.ones(2, 3, 1), backend="cpp")
    assert not w.any() and not base.any()
    # disjoint parts of one tensor are fine
    rank1_apply_many([base[:4], base[4:]], torch.ones(2, 4, 1), torch.ones(2, 5, 1), backend="cpp")
    assert torch.equal(base, torch.ones(8, 5))


@pytest.mark.skipif(not native.has_op("rank1_apply_many"), reason=native.reason())
@pytest.mark.parametrize("n", [3, 40])
@pytest.mark.parametrize("transposed", [False, True])
def test_rank1_apply_many_cpp_opcheck(transposed, n):
    ws, us, vs = _many_inputs(3, 12, 20, n, FLOAT16S, transposed, "cpu")
    torch.library.opcheck(torch.ops.golden_fast.rank1_apply_many.default, (ws, us, vs, transposed, 0.5))
