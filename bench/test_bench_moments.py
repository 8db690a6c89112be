"""The editors' closed-form solves with C_l (golden_fast/edit/moments.py): `Moments.solve` keeps one
Cholesky factor per (layer, scale, ridge), so every edit after the first costs a triangular solve,
O(m^2 n). Against solving from scratch at every call as the anchors do (torch.linalg.solve: an LU,
O(m^3); torch.linalg.pinv: an eigendecomposition), and against Moments' own first call (condition
number by eigvalsh, then the factorisation).

C: the second moment of 4,096 random keys of SmolLM2's width m = 1536 with column scales spread
over two decades (condition number ~2.5e4: well above the identity's, well below singular), float64
as the editors use it. Right-hand sides: n = 1 (ROME / R-ROME: C^-1 k* per edit) and n = 100
(EMMET's C0^-1 K for a batch of 100 edits).

Correctness before timing: every route's X against the LU solution, relative error < 1e-8
(well-conditioned enough that float64 leaves ~12 digits).

    pytest bench/test_bench_moments.py --benchmark-enable
"""

from __future__ import annotations

import pytest
import torch
from conftest import measure, relative_error

from golden_fast.edit.moments import Moments

M, T_KEYS, LAYER = 1536, 4096, 6
NS = (1, 100)
ROUTES = ("linalg_solve", "pinv", "moments_first_call", "moments_cached")  # the baseline first
LABELS = {
    "linalg_solve": "torch.linalg.solve(C, B) at every call (LU)",
    "pinv": "torch.linalg.pinv(C, hermitian=True) @ B at every call",
    "moments_first_call": "Moments.solve, first call (eigvalsh + Cholesky + solve)",
    "moments_cached": "Moments.solve, cached Cholesky (cholesky_solve)",
}


@pytest.fixture(scope="module")
def C() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(T_KEYS, M, generator=g, dtype=torch.float64) * torch.logspace(-2, 0, M, dtype=torch.float64)
    return keys.T @ keys / T_KEYS  # (m, m)


def route_fn(route: str, C: torch.Tensor, B: torch.Tensor):
    if route == "linalg_solve":
        return lambda: torch.linalg.solve(C, B)
    if route == "pinv":
        return lambda: torch.linalg.pinv(C, hermitian=True) @ B
    if route == "moments_first_call":
        return lambda: Moments({LAYER: C}).solve(LAYER, B)  # a fresh cache: factorises every call
    mom = Moments({LAYER: C})
    mom.solve(LAYER, B)  # the first call factorises; the timed calls reuse the factor
    return lambda: mom.solve(LAYER, B)


@pytest.fixture(scope="module")
def checked(C):
    errs = {}
    for n in NS:
        B = torch.randn(M, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
        truth = torch.linalg.solve(C, B)
        for route in ROUTES:
            errs[(n, route)] = relative_error(route_fn(route, C, B)(), truth)
    bad = {k: v for k, v in errs.items() if not v < 1e-8}
    assert not bad, f"solves disagree with the LU solution: {bad}; not timing them"
    return errs


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("n", NS)
def test_solve(benchmark, C, checked, n, route):
    benchmark.group = f"closed-form solve: C (m={M}, float64) X = B, n={n} columns"
    B = torch.randn(M, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    slow = route in ("pinv", "moments_first_call")  # an eigendecomposition per call: ~0.3-1 s
    measure(
        benchmark,
        route_fn(route, C, B),
        role="baseline" if route == "linalg_solve" else "candidate",
        rounds=3 if slow else None,
        candidate=LABELS[route],
        max_rel_err_vs_lu=checked[(n, route)],
    )
