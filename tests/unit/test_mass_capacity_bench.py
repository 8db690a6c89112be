"""bench/mass_capacity.py's measures against plain computations (the model runs are the benchmark)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import mass_capacity  # noqa: E402


def test_participation_ratio_counts_equal_orthogonal_directions():
    Q, _ = torch.linalg.qr(torch.randn(20, 6, dtype=torch.float64))
    assert abs(mass_capacity.participation_ratio(3.0 * Q) - 6.0) < 1e-9
    one = torch.randn(20, 1, dtype=torch.float64) @ torch.randn(1, 6, dtype=torch.float64)
    assert abs(mass_capacity.participation_ratio(one) - 1.0) < 1e-9
    # unequal directions count less than their number
    assert 1.0 < mass_capacity.participation_ratio(Q @ torch.diag(torch.tensor([1.0, 1, 1, 0.1, 0.1, 0.1],
                                                                             dtype=torch.float64))) < 3.5


def test_mean_cosine_over_distinct_pairs():
    K = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    # cosines: (1,2) 0, (1,3) and (2,3) 1/sqrt(2)
    assert abs(mass_capacity.mean_cosine(K) - (2 / 2**0.5) / 3) < 1e-12


def test_delivered_share_and_miss():
    R = torch.randn(5, 4, dtype=torch.float64)
    assert mass_capacity.delivered(R, R) == (1.0, 0.0)
    share, miss = mass_capacity.delivered(0.25 * R, R)
    assert abs(share - 0.25) < 1e-12 and abs(miss - 0.75) < 1e-12


def test_layer_rows_match_the_editors_solves_written_out():
    torch.manual_seed(0)
    m, d, n = 12, 7, 5
    K = torch.randn(m, n, dtype=torch.float64)
    R = torch.randn(d, n, dtype=torch.float64)
    X = torch.randn(m, 40, dtype=torch.float64) * torch.linspace(0.05, 3.0, m, dtype=torch.float64)[:, None]
    C = X @ X.T / 40

    class Alpha:
        nullspace_rel_threshold, L2 = 0.3, 0.5

    class Memit:
        mom2_update_weight = 2.0

    row = mass_capacity.layer_rows(K, R, C, Alpha, Memit)
    # AlphaEdit written out: P from C's eigenvectors below 0.3 x the largest, ΔW = R Kᵀ P (P K Kᵀ P + αI)⁻¹
    ev, U = torch.linalg.eigh(C)
    U0 = U[:, ev <= 0.3 * ev[-1]]
    P = U0 @ U0.T
    dW = R @ K.T @ P @ torch.linalg.inv(P @ K @ K.T @ P + 0.5 * torch.eye(m, dtype=torch.float64))
    share = float((dW @ K * R).sum() / (R * R).sum())
    assert abs(row["delivered_alphaedit"] - share) < 1e-9 and row["null_rank"] == U0.shape[1]
    # MEMIT written out: ΔW = R Kᵀ (λ C + K Kᵀ)⁻¹
    dW = R @ K.T @ torch.linalg.inv(2.0 * C + K @ K.T)
    assert abs(row["delivered_memit"] - float((dW @ K * R).sum() / (R * R).sum())) < 1e-9
    assert abs(row["miss_memit"] - float((dW @ K - R).norm() / R.norm())) < 1e-9
    assert (row["m"], row["n"]) == (m, n) and 1.0 <= row["eff_rank"] <= n


def test_table_has_a_row_per_measure():
    rows = [{"n": 1000, "layer": 4, "m": 1536, "eff_rank": 12.3, "eff_rank_whitened": 400.0, "null_rank": 1200,
             "eff_rank_PK": 300.0, "mean_cos": 0.5, "delivered_alphaedit": 0.4, "delivered_memit": 0.3}]
    table = mass_capacity.markdown_table(rows)
    assert "| 1,000 | 4 | 1,536 | 12.3 | 400.0 | 1,200 | 300.0 | 0.50 | 0.40 | 0.30 |" in table


def test_key_geometry_beyond_the_width_and_its_table_row():
    """More facts than key dimensions: the keys span at most m directions, whitened or not; a row
    without targets shows no delivered share."""
    torch.manual_seed(1)
    m, n = 6, 40
    K = torch.randn(m, n, dtype=torch.float64)
    X = torch.randn(m, 50, dtype=torch.float64)
    C = X @ X.T / 50

    class Alpha:
        nullspace_rel_threshold = 0.3

    geo, P = mass_capacity.key_geometry(K, C, Alpha)
    assert (geo["m"], geo["n"]) == (m, n)
    assert 1.0 <= geo["eff_rank"] <= m and 1.0 <= geo["eff_rank_whitened"] <= m
    ev, U = torch.linalg.eigh(C)
    W = U @ torch.diag(ev.rsqrt()) @ U.T @ K
    s2 = torch.linalg.svdvals(W).pow(2)
    assert abs(geo["eff_rank_whitened"] - float(s2.sum() ** 2 / s2.pow(2).sum())) < 1e-9
    assert torch.allclose(P @ P, P) and geo["null_rank"] == int(round(float(P.trace())))
    row = geo | {"layer": 4, "delivered_alphaedit": None, "delivered_memit": None}
    assert mass_capacity.markdown_table([row]).splitlines()[-1].endswith("| - | - |")
