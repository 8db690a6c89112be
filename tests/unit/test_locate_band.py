"""The golden band: checked against a plain bootstrap written out here, and its properties."""

from __future__ import annotations

import numpy as np
import pytest

from golden_fast.locate import band as band_mod
from golden_fast.locate.band import golden_band, metric_matrix, paired_intervals
from golden_fast.locate.golden import golden_analysis, overall


def _plain_band(M, n_boot, seed, confidence=0.95):
    """An independent bootstrap: explicit loops over resamples and layers, the documented draws."""
    n, L = M.shape
    means = [sum(M[i, j] for i in range(n)) / n for j in range(L)]
    G = max(range(L), key=lambda j: (means[j], -j))
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    lo, hi, band = [], [], []
    for j in range(L):
        boots = []
        for b in range(n_boot):
            total = 0.0
            for i in idx[b]:
                total += M[i, G] - M[i, j]
            boots.append(total / n)
        a = (1 - confidence) / 2
        lj, hj = np.percentile(boots, [100 * a, 100 * (1 - a)])
        lo.append(lj)
        hi.append(hj)
        if lj <= 0 <= hj:
            band.append(j)
    return G, means, lo, hi, band


@pytest.mark.parametrize("seed", [0, 7])
def test_matches_plain_bootstrap(seed):
    rng = np.random.default_rng(100 + seed)
    n, L = 12, 6
    curve = np.array([0.50, 0.58, 0.60, 0.57, 0.45, 0.30])
    M = curve + rng.normal(0, 0.08, size=(n, L)) + rng.normal(0, 0.1, size=(n, 1))
    gb = golden_band(M, layers=range(10, 10 + L), n_boot=300, seed=seed)
    G, means, lo, hi, band = _plain_band(M, 300, seed)
    assert gb.golden == 10 + G
    np.testing.assert_allclose(gb.mean, means, rtol=0, atol=1e-12)
    np.testing.assert_allclose(gb.lo, lo, rtol=0, atol=1e-12)
    np.testing.assert_allclose(gb.hi, hi, rtol=0, atol=1e-12)
    np.testing.assert_allclose(gb.diff, [means[G] - m for m in means], atol=1e-12)
    assert gb.band == [10 + j for j in band]
    assert gb.golden in gb.band and 1 < len(gb.band) < L  # this matrix has a real, partial band
    assert gb.layers == list(range(10, 16)) and gb.n == n and gb.n_boot == 300


def test_one_clear_best_gives_a_band_of_one():
    rng = np.random.default_rng(1)
    M = rng.uniform(0.3, 0.5, size=(40, 9))
    M[:, 4] += 0.4
    gb = golden_band(M, n_boot=500)
    assert gb.golden == 4 and gb.band == [4]
    assert all(lo > 0 for j, lo in enumerate(gb.lo) if j != 4)


def test_flat_matrix_gives_every_layer():
    rng = np.random.default_rng(2)
    fact = rng.uniform(0, 1, size=(30, 1))
    gb = golden_band(np.repeat(fact, 8, axis=1), n_boot=200)
    assert gb.golden == 0 and gb.band == list(range(8))  # ties: the lower layer; every difference is 0
    noisy = fact + rng.normal(0, 0.05, size=(30, 8))  # flat in expectation: nearly every layer
    gb = golden_band(noisy, n_boot=1000)
    assert len(gb.band) >= 6 and gb.golden in gb.band


def test_deterministic_for_a_seed():
    M = np.random.default_rng(3).normal(size=(20, 5))
    a, b = golden_band(M, seed=4, n_boot=400), golden_band(M, seed=4, n_boot=400)
    assert a == b
    c = golden_band(M, seed=5, n_boot=400)
    assert c.lo != a.lo and c.golden == a.golden and c.mean == a.mean


def test_tensor_overall_and_metric():
    rng = np.random.default_rng(4)
    M = rng.uniform(size=(10, 4, 3))
    M[3, :, 2] = np.nan  # metric 2 absent for fact 3
    metrics = ["rewrite_acc", "rephrase_acc", "locality"]
    gb = golden_band(M, [0, 1, 2, 3], metrics, n_boot=100)
    np.testing.assert_allclose(gb.mean, overall(M, metrics).mean(0))
    assert gb.golden == golden_analysis(M, [0, 1, 2, 3], metrics, n_boot=10).golden["overall"]
    gl = golden_band(M, [0, 1, 2, 3], metrics, metric="locality", n_boot=100)
    assert gl.n == 9
    np.testing.assert_allclose(gl.mean, np.delete(M[:, :, 2], 3, axis=0).mean(0))
    with pytest.raises(ValueError, match="unknown metric"):
        golden_band(M, [0, 1, 2, 3], metrics, metric="fluency")
    with pytest.raises(ValueError, match="needs its metric names"):
        metric_matrix(M)


def test_tensor_mean_of_named_metrics():
    rng = np.random.default_rng(6)
    M = rng.uniform(size=(8, 3, 4))
    M[2, :, 1] = np.nan  # the second named metric absent for fact 2: the mean of the one present
    M[5, :, [0, 1]] = np.nan  # both absent for fact 5: the fact is left out
    metrics = ["rewrite_prob", "rephrase_prob", "locality", "rewrite_acc"]
    values, have = metric_matrix(M, metrics, ("rewrite_prob", "rephrase_prob"))
    plain = []
    for i in range(8):
        row = []
        for j in range(3):
            got = [M[i, j, k] for k in (0, 1) if not np.isnan(M[i, j, k])]
            row.append(sum(got) / len(got) if got else None)
        plain.append(row)
    assert have.tolist() == [row[0] is not None for row in plain]
    np.testing.assert_allclose(values, [row for row in plain if row[0] is not None])
    with pytest.raises(ValueError, match="unknown metric"):
        metric_matrix(M, metrics, ("rewrite_prob", "fluency"))
    with pytest.raises(ValueError, match="unknown metric"):
        metric_matrix(M, metrics, ())


def test_errors():
    M = np.ones((4, 3))
    M[1, 2] = np.nan
    with pytest.raises(ValueError, match="some layers only"):
        golden_band(M)
    with pytest.raises(ValueError, match="layer label"):
        golden_band(np.ones((4, 3)), layers=[0, 1])
    with pytest.raises(ValueError, match="confidence"):
        paired_intervals(np.ones((3, 2)), confidence=1.5)


def test_paired_intervals_are_paired(monkeypatch):
    """The same resample serves every column: two identical columns get identical intervals, and
    the chunked computation equals one pass."""
    d = np.random.default_rng(5).normal(size=(25, 1))
    lo, hi = paired_intervals(np.hstack([d, d, 2 * d]), n_boot=300, rng=9)
    assert lo[0] == lo[1] and hi[0] == hi[1]
    np.testing.assert_allclose([lo[2], hi[2]], [2 * lo[0], 2 * hi[0]], rtol=1e-12)
    monkeypatch.setattr(band_mod, "_CHUNK_CELLS", 30)  # one resample per chunk
    lo2, hi2 = paired_intervals(np.hstack([d, d, 2 * d]), n_boot=300, rng=9)
    np.testing.assert_allclose(lo2, lo, atol=1e-14)
    np.testing.assert_allclose(hi2, hi, atol=1e-14)
