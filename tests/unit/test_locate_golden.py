"""golden.py on hand-made M[request, layer, metric]: golden and sample-wise layers, the gap, its
paired bootstrap interval and Wilcoxon p-value, and the handling of absent metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import wilcoxon

from golden_fast.locate.golden import golden_analysis, layer_comparison, overall

LAYERS = [4, 5, 6]


def _M():
    # 4 requests x 3 layers x 2 metrics
    a = np.array([[0.2, 0.9, 0.5], [0.1, 0.8, 0.9], [0.7, 0.6, 0.1], [0.3, 0.4, 0.2]])  # metric "a"
    b = np.array([[1.0, 0.5, 0.0], [1.0, 0.5, 0.5], [0.5, 1.0, 0.0], [1.0, 1.0, 1.0]])  # metric "b"
    return np.stack([a, b], axis=2)


def test_golden_samplewise_and_gap_by_hand():
    rep = golden_analysis(_M(), LAYERS, ["a", "b"], n_boot=500)
    # metric a: layer means [0.325, 0.675, 0.425] -> layer 5; per-request best 0.9, 0.9, 0.7, 0.4
    assert rep.golden["a"] == 5
    assert rep.mean_by_layer["a"] == pytest.approx([0.325, 0.675, 0.425])
    assert rep.samplewise["a"] == [5, 6, 4, 5]
    g = rep.gap["a"]
    assert g.gap == pytest.approx(np.mean([0.0, 0.1, 0.1, 0.0]))
    assert g.samplewise_mean == pytest.approx(0.725) and g.golden_mean == pytest.approx(0.675)
    assert g.p_value == pytest.approx(wilcoxon([0.9, 0.9, 0.7, 0.4], [0.9, 0.8, 0.6, 0.4]).pvalue)
    assert 0.0 <= g.lo <= g.gap <= g.hi <= 0.1 + 1e-12 and g.n_nonzero == 2
    # metric b: means [0.875, 0.75, 0.375] -> layer 4; ties in a request go to the lowest layer
    assert rep.golden["b"] == 4 and rep.samplewise["b"][3] == 4
    # overall = mean of a and b per (request, layer)
    ov = (_M()[:, :, 0] + _M()[:, :, 1]) / 2
    assert rep.mean_by_layer["overall"] == pytest.approx(ov.mean(0).tolist())
    assert rep.golden["overall"] == LAYERS[int(np.argmax(ov.mean(0)))]
    assert rep.gap["overall"].gap == pytest.approx((ov.max(1) - ov[:, np.argmax(ov.mean(0))]).mean())
    assert rep.metrics == ["a", "b", "overall"]
    assert "golden" in rep.table()


def test_no_gap_gives_p_one_with_a_note():
    M = np.zeros((5, 3, 1))
    M[:, 1, 0] = 1.0  # every request best at layer 5
    g = golden_analysis(M, LAYERS, ["a"]).gap["a"]
    assert (g.gap, g.lo, g.hi, g.p_value) == (0.0, 0.0, 0.0, 1.0) and "p set to 1" in g.note


def test_bootstrap_interval_is_deterministic_and_covers_the_mean():
    rng = np.random.default_rng(3)
    M = rng.random((40, 6, 2))
    r1 = golden_analysis(M, list(range(6)), ["x", "y"], seed=7)
    r2 = golden_analysis(M, list(range(6)), ["x", "y"], seed=7)
    for m in r1.metrics:
        assert r1.gap[m] == r2.gap[m]
        assert r1.gap[m].lo < r1.gap[m].gap < r1.gap[m].hi
        assert 0 < r1.gap[m].p_value < 0.05  # random M: the best of 6 layers beats a fixed one clearly


def test_absent_metric_leaves_the_request_out():
    M = _M()
    M[2, :, 0] = np.nan  # request 2 has no metric "a"
    rep = golden_analysis(M, LAYERS, ["a", "b"])
    assert rep.samplewise["a"][2] is None and rep.gap["a"].n == 3
    keep = [0, 1, 3]
    assert rep.mean_by_layer["a"] == pytest.approx(_M()[keep, :, 0].mean(0).tolist())
    # overall for request 2 is metric b alone
    assert overall(M, ["a", "b"])[2] == pytest.approx(_M()[2, :, 1])


def test_broken_runs_raise_naming_the_request():
    M = _M()
    M[1, 2, 1] = np.nan
    with pytest.raises(ValueError, match=r"req-1: metric 'b' is missing at layer\(s\) \[6\]"):
        golden_analysis(M, LAYERS, ["a", "b"], refs=[f"req-{i}" for i in range(4)])
    with pytest.raises(ValueError, match="shape"):
        golden_analysis(_M(), [1, 2], ["a", "b"])
    with pytest.raises(ValueError, match="overall"):
        golden_analysis(_M(), LAYERS, ["a", "overall"])
    M = _M()
    M[0, 0, 0] = math.inf
    with pytest.raises(ValueError, match="infinite"):
        golden_analysis(M, LAYERS, ["a", "b"])


def test_layer_comparison():
    c = layer_comparison(_M(), LAYERS, ["a", "b"], 6, 5, metric="a", n_boot=300)
    assert c["diff"] == pytest.approx(0.425 - 0.675)
    assert c["lo"] <= c["diff"] <= c["hi"] and c["n"] == 4
