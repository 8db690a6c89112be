"""Tukey fences and layer selection on hand-made scores; LayerScores JSON and PNG."""

from __future__ import annotations

import math

import pytest

from golden_fast.locate import LayerScores, select_layers, tukey_fences


def test_fences_by_hand():
    # sorted [0, 1, 2, 3, 4, 100]: linear quartiles at positions 1.25 and 3.75 (of 0..5) -> Q1 = 1.25,
    # Q3 = 3.75, IQR = 2.5: the fences are [-1.25, 6.25] and 100 lies outside
    assert tukey_fences([100, 3, 0, 2, 1, 4], k=1.0) == pytest.approx((-1.25, 6.25))
    assert tukey_fences([100, 3, 0, 2, 1, 4], k=2.0) == pytest.approx((-3.75, 8.75))


def test_outliers_dropped_both_sides():
    # sorted [-50, 1, 2, 3, 4, 5, 6, 60]: positions 1.75 and 5.25 -> Q1 = 1.75, Q3 = 5.25; IQR 3.5
    layers = list(range(8))
    scores = [1, 2, 60, 3, -50, 4, 5, 6]
    chosen, kept, (lo, hi) = select_layers(layers, scores, tukey_k=1.0, top_k=3)
    assert (lo, hi) == pytest.approx((-1.75, 8.75))
    assert kept == [True, True, False, True, False, True, True, True]
    assert chosen == [7, 6, 5]  # 60 would win without the filter
    assert select_layers(layers, scores, tukey_k=None)[0] == [2]


def test_score_on_a_fence_is_kept_and_k_moves_the_fence():
    # sorted [0, 0, 1, 1, 2]: Q1 = 0, Q3 = 1, IQR 1 -> k = 1: hi = 2 exactly (kept); k = 0.5: hi = 1.5
    layers = [10, 11, 12, 13, 14]
    scores = [0, 1, 2, 0, 1]
    chosen, kept, fences = select_layers(layers, scores, tukey_k=1.0)
    assert fences == (-1.0, 2.0) and all(kept) and chosen == [12]
    chosen, kept, _ = select_layers(layers, scores, tukey_k=0.5)
    assert kept == [True, True, False, True, True] and chosen == [11]  # tie 11 / 14: the lower layer


def test_few_layers_and_constant_scores():
    assert select_layers([3], [0.5])[0] == [3]
    chosen, kept, fences = select_layers([0, 1, 2], [1.0, 1.0, 1.0])
    assert fences == (1.0, 1.0) and all(kept) and chosen == [0]


def test_bad_scores_raise():
    with pytest.raises(ValueError, match="non-finite score at layer"):
        select_layers([0, 1, 2], [1.0, math.nan, 2.0])
    with pytest.raises(ValueError, match="2 layers but 3 scores"):
        select_layers([0, 1], [1, 2, 3])
    with pytest.raises(ValueError, match="top_k"):
        select_layers([0, 1], [1, 2], top_k=0)
    with pytest.raises(ValueError, match="k must be"):
        tukey_fences([1, 2, 3], k=-1)


def _scores():
    return LayerScores.build(
        "lga",
        [0, 1, 2, 3, 4, 5],
        {"signed": [1, 2, 3, 2, 1, 40], "cosine": [0.1, 0.2, 0.1, 0.3, 0.2, 0.1]},
        "signed",
        tukey_k=1.0,
        top_k=2,
        wall_time=1.5,
        settings={"theta": "down"},
        n_requests=4,
        n_used=4,
        extra={"note": [1.0, float("nan")]},
    )


def test_build_reselect_and_json_round_trip(tmp_path):
    s = _scores()
    assert s.chosen == 2 and s.top_k == [2, 1] and s.kept[5] is False
    assert s.reselect("cosine", tukey_k=None, top_k=1).chosen == 3
    path = tmp_path / "s.json"
    s.to_json(path)
    back = LayerScores.from_json(path)
    assert back.scores == s.scores and back.fences == s.fences and back.chosen == 2
    assert back.extra["note"] == [1.0, None]  # JSON has no NaN: absent values are null, never NaN text
    assert "layer 2" in s.summary() and "dropped layers: [5]" in s.summary()


def test_plot_writes_a_png(tmp_path):
    out = _scores().plot(tmp_path / "sub" / "lga.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_to_dict_is_plain_json(tmp_path):
    import json

    import numpy as np

    s = _scores()
    s.extra["per_sample"] = {"ab": np.ones((2, 3)), "n": np.int64(4)}
    d = s.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False))["extra"]["per_sample"] == {"ab": [[1.0] * 3] * 2, "n": 4}
