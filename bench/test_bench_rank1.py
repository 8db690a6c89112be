"""Applying n rank-one edits to down-projection weights, W_l += sum_j u_lj v_ljᵀ (issue 6): the C++
`rank1_apply_many` (one OpenMP region for all layers, float32 sums, one rounding per element) against
the per-edit torch loop (one W.addr_ per edit and layer, in W's dtype), one float32 matmul + cast
per layer, and the op's torch reference. The methods are bench/bench_rank1.py's, imported, not
copied; that script adds n = 1,000 / 10,000, Gemma-3-12B's weight and peak memory.

Shapes: 6 of SmolLM2-135M's down-projections (576 x 1536, real shape; 6 rather than 30 layers
because the per-edit loop takes 3 s per call at n = 100 in bfloat16 even so), random weights with
bench_rank1's scales; float32 and bfloat16 weights; n = 1 and 100.

Correctness before timing: bench_rank1.check_correct (dyadic inputs: the C++ op must equal the
float64 truth rounded once, bit for bit); then, on the benchmark's own inputs, every method against
the float64 truth: batched, reference and fp32_mm within 1 bf16 ulp of the truth rounded once
(float32 sums may land on the other side of a rounding boundary), per_edit within its n roundings.

    pytest bench/test_bench_rank1.py --benchmark-enable
"""

from __future__ import annotations

import pytest
import torch
from bench_rank1 import check_correct, make_inputs, run_method, ulps
from conftest import measure

from golden_fast import native
from golden_fast.ops.rank1 import rank1_apply_many

LAYERS, D, M = 6, 576, 1536
NS = (1, 100)
DTYPES = ("float32", "bfloat16")
METHODS = ("per_edit", "reference", "fp32_mm", "batched")  # the baseline first
LABELS = {
    "per_edit": "per-edit torch loop (W.addr_ per edit, in W's dtype)",
    "reference": "rank1_apply_many, torch reference (float32 row blocks)",
    "fp32_mm": "one float32 matmul per layer + cast",
    "batched": "rank1_apply_many, C++ (cpp backend)",
}

pytestmark = pytest.mark.skipif(not native.has_op("rank1_apply_many"), reason=f"C++ op not built: {native.reason()}")


def apply(method: str, ws, us, vs) -> None:
    if method == "reference":
        rank1_apply_many(ws, us, vs, backend="torch")
    else:
        run_method(method, ws, us, vs)


@pytest.fixture(scope="module")
def checked():
    check_correct()  # raises SystemExit on a wrong C++ result
    worst = {}
    for dtype in DTYPES:
        for n in NS:
            ws, us, vs = make_inputs(LAYERS, D, M, n, getattr(torch, dtype))
            truth = [w.double() + u.double() @ v.double().T for w, u, v in zip(ws, us, vs)]
            for method in METHODS:
                out = [w.clone() for w in ws]
                apply(method, out, us, vs)
                if dtype == "float32":  # float32 sums of n terms: a few ulps of float32 at most
                    err = max(((o.double() - t).abs().max() / t.abs().max()).item() for o, t in zip(out, truth))
                    ok = err < 1e-5
                elif method == "per_edit":  # n roundings of W, each at most half a bf16 ulp (2^-9 relative)
                    err = max(((o.double() - t).abs().max() / t.abs().max()).item() for o, t in zip(out, truth))
                    ok = err <= n * 2.0**-8
                else:  # rounded once: the truth rounded to bf16, or its neighbour
                    err = max(ulps(o, t.to(torch.bfloat16)).max().item() for o, t in zip(out, truth))
                    ok = err <= 1
                assert ok, f"{method} {dtype} n={n}: error {err} beyond its bound; not timing it"
                worst[(dtype, n, method)] = err
    return worst


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rank1_apply(benchmark, checked, dtype, n, method):
    benchmark.group = f"rank-one apply: {LAYERS} x (576 x 1536) {dtype} weights, n={n} edits each"
    ws, us, vs = make_inputs(LAYERS, D, M, n, getattr(torch, dtype))
    # the weights keep changing by ~1e-3 per round: irrelevant to the time of an in-place update
    slow = method == "per_edit" and n > 1
    err_key = "max_ulp_vs_f64" if dtype == "bfloat16" and method != "per_edit" else "max_rel_err_vs_f64"
    measure(
        benchmark,
        lambda: apply(method, ws, us, vs),
        role="baseline" if method == "per_edit" else "candidate",
        rounds=3 if slow else None,
        warmup=0 if slow else 1,
        candidate=LABELS[method],
        **{err_key: checked[(dtype, n, method)]},
    )
