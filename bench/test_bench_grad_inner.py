"""LGA's per-sample gradient inner products: `grad_inner` (two Gram matrices per layer and sample,
golden_fast/ops/grad_inner.py) against materialising every weight gradient and taking the inner
product of the two, as the plain autograd route does (bench/bench_lga_memory.py times that route on
the real model, backward passes included; this suite isolates the product itself).

Shapes of the H200 figures in kernels/grad_inner.py: SmolLM2-135M's down-projections (30 layers,
d = 576, m = 1536), 8 samples, 48 tokens each, float32 (the CPU runs models in float32). The old-
and new-answer sequences share their prompt, so their keys agree on the first 40 tokens: the
products are then far from zero, as in LGA. Peak tensor memory of each route is measured once,
untimed, with bench_lga_memory.LiveTensors.

    pytest bench/test_bench_grad_inner.py --benchmark-enable
"""

from __future__ import annotations

import pytest
import torch
from bench_lga_memory import LiveTensors
from conftest import measure

from golden_fast.ops import get_op
from golden_fast.ops.grad_inner import grad_inner

L, B, T, PROMPT, M, D = 30, 8, 48, 40, 1536, 576
GROUP = f"LGA grad inner products: {L} layers, B={B}, T={T}, m={M}, d={D}, float32"


def materialised(k1, g1, k2, g2) -> torch.Tensor:
    """<grad_W a, grad_W b> per (layer, sample) through the gradients themselves: B (d, m) matrices per
    answer and layer, one layer at a time (all layers at once would hold 2 x 850 MB)."""
    out = torch.empty(k1.shape[0], k1.shape[1], dtype=k1.dtype)
    for layer in range(k1.shape[0]):
        ga = g1[layer].transpose(1, 2) @ k1[layer]  # (B, d, m) = sum_t g_t k_tᵀ
        gb = g2[layer].transpose(1, 2) @ k2[layer]  # (B, d, m)
        out[layer] = (ga * gb).sum((1, 2))
    return out


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    k1 = torch.randn(L, B, T, M, generator=g)
    k2 = k1.clone()
    k2[:, :, PROMPT:] = torch.randn(L, B, T - PROMPT, M, generator=g)  # a different answer, same prompt
    g1 = torch.randn(L, B, T, D, generator=g) * 1e-3
    g2 = torch.randn(L, B, T, D, generator=g) * 1e-3
    return k1, g1, k2, g2


@pytest.fixture(scope="module")
def checked(inputs):
    """Both routes against the float64 truth before anything is timed; error scale |a| |b| (Cauchy-
    Schwarz), as bench_lga_memory's check. Also each route's peak live tensor bytes."""
    with torch.no_grad():
        k1, g1, k2, g2 = (x.double() for x in inputs)
        truth = materialised(k1, g1, k2, g2)
        # |a|^2 and |b|^2 by the Gram identity in float64: only the error's scale, not a route under test
        aa = ((g1 @ g1.transpose(-1, -2)) * (k1 @ k1.transpose(-1, -2))).sum((-1, -2))
        bb = ((g2 @ g2.transpose(-1, -2)) * (k2 @ k2.transpose(-1, -2))).sum((-1, -2))
        scale = (aa * bb).sqrt()
        peaks, errs = {}, {}
        for name, fn in (("materialised", materialised), ("gram", grad_inner)):
            with LiveTensors() as live:
                out = fn(*inputs)
            peaks[name] = live.peak
            errs[name] = ((out.double() - truth).abs() / scale).max().item()
    assert max(errs.values()) < 1e-5, f"routes disagree with the float64 truth: {errs}"
    return peaks, errs


@pytest.mark.parametrize("route", ["materialised", "gram"])
def test_grad_inner(benchmark, inputs, checked, route):
    benchmark.group = GROUP
    peaks, errs = checked
    info = {"peak_tensor_bytes": peaks[route], "max_rel_err_vs_f64": errs[route]}
    with torch.no_grad():
        if route == "materialised":
            info["candidate"] = "materialise grad W (B x d x m per layer), then <a, b>"
            measure(benchmark, lambda: materialised(*inputs), role="baseline", rounds=5, **info)
        else:
            backend = get_op("grad_inner").choose("cpu")
            info["candidate"] = f"grad_inner, two Gram matrices (backend {backend})"
            measure(benchmark, lambda: grad_inner(*inputs, backend=backend), role="candidate", **info)
